//! Recipes: a station with two recipes switched back and forth through the API while both
//! cameras run flat out. No frame is lost, every record names the recipe that judged it (the
//! activation answers say from which frame on), and the recipes judge differently (the "blind"
//! one looks at a 1-pixel region, so it never rejects a part). Plus the config's bad recipes.

mod common;

use axum::http::StatusCode;
use linesight::api::LiveRecipes;
use linesight::config;
use linesight::pipeline::RecordPort;
use linesight::pipeline::messages::{Inspection, OUTPUT_QUEUE_DEPTH};
use linesight::topology::{RunOptions, Station};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Two synthetic cameras at full speed; recipe `inspect` (the station's rules) on both at
/// start, recipe `blind` (regions of interest of one pixel: nothing counts) available.
fn two_recipe_station() -> String {
    let model = common::demo_model();
    let camera = |id: &str, surface: &str, seed: u32| {
        format!(
            r#"
[[camera]]
id = "{id}"
fps = 0
backpressure = "block"
[camera.source]
kind = "synthetic"
surface = "{surface}"
width = 256
height = 256
defect_probability = 0.5
seed = {seed}
"#
        )
    };
    format!(
        r#"{}{}
[model]

[[recipe]]
name = "inspect"
package = "{model}"
cameras = ["metal", "tile"]

[[recipe]]
name = "blind"
package = "{model}"
roi_px = {{ metal = [[0, 0, 1, 1]], tile = [[0, 0, 1, 1]] }}

[[rule]]
class = "*"
min_score = 0.5
min_area_px = 12
"#,
        camera("metal", "brushed_metal", 3),
        camera("tile", "ceramic_tile", 4)
    )
}

#[test]
fn switching_recipes_under_load_loses_no_frame_and_every_record_names_its_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = config::load_str(&two_recipe_station(), "recipes", common::repo()).unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = crossbeam_channel::bounded::<Inspection>(OUTPUT_QUEUE_DEPTH);
    let station = Station::build(&loaded, RunOptions { outputs: vec![RecordPort::results(tx)], ..Default::default() })
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = station.recipes.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, ["inspect", "blind"]);

    // The API over a store (the audit log), with the station's recipes.
    let db = dir.path().join("r.db");
    let state = common::api::state(&db, &[]);
    assert!(state.accounting.set(station.accounting()).is_ok());
    assert!(state.recipes.set(Arc::new(LiveRecipes::of(&station))).is_ok());
    let api = common::api::Client::new(state);

    let accounting = station.accounting();
    let stop = station.stop_handle();
    let collector = std::thread::spawn(move || rx.iter().collect::<Vec<Inspection>>());
    let runner = std::thread::spawn(move || station.run());

    // Before any switch: both cameras run `inspect`.
    let listed = api.get("/api/v1/recipes");
    assert_eq!(listed["recipes"][0]["cameras"], serde_json::json!(["metal", "tile"]), "{listed}");
    assert_eq!(listed["recipes"][1]["cameras"], serde_json::json!([]), "{listed}");

    // 100 switches back and forth, each for both cameras (an empty body) or one of them.
    let mut switches: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    switches.insert("metal".into(), vec![(0, "inspect".into())]);
    switches.insert("tile".into(), vec![(0, "inspect".into())]);
    let mut latencies = Vec::new();
    let mut changes = 0;
    for k in 0..100 {
        let recipe = if k % 2 == 0 { "blind" } else { "inspect" };
        let body = match k % 5 {
            3 => r#"{"cameras": ["metal"]}"#,
            4 => r#"{"cameras": ["tile"]}"#,
            _ => "",
        };
        let t0 = Instant::now();
        let (status, answer) = api.post(&format!("/api/v1/recipes/{recipe}/activate"), "admin-token", body);
        latencies.push(t0.elapsed());
        assert_eq!(status, StatusCode::OK, "{answer}");
        for (camera, seq) in answer["first_seq"].as_object().unwrap() {
            let seq = seq.as_u64().unwrap_or_else(|| panic!("camera {camera} captured no frame in time: {answer}"));
            let list = switches.get_mut(camera).unwrap();
            // Switching a camera to the recipe it already runs changes nothing.
            let last = list.last_mut().unwrap();
            if last.1 != recipe {
                changes += 1;
                if seq == 0 && last.0 == 0 {
                    // Switched before the camera's first frame: it never ran the old recipe.
                    *last = (0, recipe.into());
                    continue;
                }
                assert!(seq > last.0, "first frames move forward: {answer}");
                list.push((seq, recipe.into()));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runner.join().unwrap();
    let records = collector.join().unwrap();

    // No frame lost: every captured frame has exactly one record, none dropped.
    let snaps = accounting.snapshot();
    for s in &snaps {
        assert_eq!(s.dropped(), 0, "{s:?}");
        assert_eq!(s.in_flight(), 0, "{s:?}");
    }
    let captured: u64 = snaps.iter().map(|s| s.captured).sum();
    assert_eq!(records.len() as u64, captured, "one record per captured frame");
    assert_eq!(accounting.results_dropped.load(std::sync::atomic::Ordering::Relaxed), 0);

    // Every record names the recipe that was in force from the activation's first frame on.
    let cameras = ["metal", "tile"];
    let (mut ng_inspect, mut ng_blind, mut by_recipe) = (0, 0, [0u64; 2]);
    for r in &records {
        let camera = cameras[usize::from(r.meta.camera)];
        let list = &switches[camera];
        let expected = list.iter().rev().find(|(first, _)| *first <= r.meta.seq).unwrap().1.as_str();
        assert_eq!(names[usize::from(r.meta.recipe)], expected, "camera {camera} seq {}", r.meta.seq);
        by_recipe[usize::from(r.meta.recipe)] += 1;
        if r.verdict == linesight::pipeline::Verdict::Ng {
            if r.meta.recipe == 0 { ng_inspect += 1 } else { ng_blind += 1 }
        }
    }
    assert!(by_recipe[0] > 50 && by_recipe[1] > 50, "both recipes judged parts: {by_recipe:?}");
    assert!(ng_inspect > 0, "the inspecting recipe rejects defective parts");
    assert_eq!(ng_blind, 0, "the blind recipe counts no defect outside its 1-pixel region");
    let switched: usize = switches.values().map(|l| l.len() - 1).sum();
    assert!(switched >= 90, "{switched} switches took effect");

    // Every switch is in the audit log, with who did it and old → new.
    let audit = api.get("/api/v1/audit?limit=1000");
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), changes, "one audit record per camera whose recipe changed");
    assert!(items.iter().all(|i| i["who"] == "LINESIGHT_API_TOKEN" && i["action"] == "recipe.activate"));
    assert!(items.iter().all(|i| i["old"] != i["new"]));

    latencies.sort();
    eprintln!(
        "switch latency (request → answer, first frame stamped): p50 {:?}, p99 {:?}, max {:?}; {} frames, {switched} switches",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies.last().unwrap(),
        records.len()
    );
}

#[test]
fn switches_need_an_operator_and_name_real_recipes_and_cameras() {
    let loaded = config::load_str(&two_recipe_station(), "recipes", common::repo()).unwrap_or_else(|e| panic!("{e}"));
    let station = Station::build(&loaded, RunOptions { max_frames: Some(1), ..Default::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let state = common::api::state(&db, &[("dash", linesight::config::ApiRole::Viewer, "viewer-token")]);
    assert!(state.recipes.set(Arc::new(LiveRecipes::of(&station))).is_ok());
    let api = common::api::Client::new(state);
    assert_eq!(api.post("/api/v1/recipes/blind/activate", "viewer-token", "").0, StatusCode::FORBIDDEN);
    assert_eq!(api.post("/api/v1/recipes/blind/activate", "nope", "").0, StatusCode::UNAUTHORIZED);
    let (status, body) = api.post("/api/v1/recipes/shiny/activate", "admin-token", "");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("inspect, blind"), "{body}");
    let (status, body) = api.post("/api/v1/recipes/blind/activate", "admin-token", r#"{"cameras": ["lens"]}"#);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("metal, tile"), "{body}");
    assert_eq!(
        api.post("/api/v1/recipes/blind/activate", "admin-token", r#"{"camera": []}"#).0,
        StatusCode::BAD_REQUEST
    );
    // Nothing was switched by the refused requests.
    assert_eq!((station.switch.wanted(0), station.switch.wanted(1)), (0, 0));
}

#[test]
fn bad_recipes_are_named_with_the_fix() {
    let good = two_recipe_station();
    for (edit, says) in [
        (good.replace("name = \"blind\"", "name = \"inspect\""), "another recipe has this name"),
        (good.replace("name = \"blind\"", "name = \"bl ind\""), "letters, digits"),
        (good.replace("cameras = [\"metal\", \"tile\"]", "cameras = [\"metal\", \"lens\"]"), "no camera with this id"),
        (good.replace("[model]\n", "[model]\npackage = \"x\"\n"), "each recipe names its package"),
        (good.replace("roi_px = { metal", "roi_px = { lens"), "no camera with this id"),
        (
            good.replace("name = \"blind\"\npackage", "name = \"blind\"\nthreshold = 2.0\npackage"),
            "applies to anomaly models",
        ),
    ] {
        let problem = match config::load_str(&edit, "recipes", common::repo()) {
            Err(e) => e.to_string(),
            Ok(loaded) => match Station::build(&loaded, RunOptions::default()) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted: {edit}"),
            },
        };
        assert!(problem.contains(says), "expected {says:?} in: {problem}");
    }
}

/// A model package around the tiny anomaly fixture: score = the brightest pixel of the frame
/// squashed to 8×8 (0..1), map = the pixels; threshold 2.0 (no part is anomalous).
fn tiny_anomaly_package(dir: &std::path::Path) -> std::path::PathBuf {
    common::tiny_anomaly_package(dir, "tiny-anomaly", 2.0)
}

#[test]
fn a_threshold_changed_while_running_judges_from_the_next_frame_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let package = tiny_anomaly_package(dir.path());
    let text = format!(
        r#"
[[camera]]
id = "cam"
fps = 0
backpressure = "block"
[camera.source]
kind = "synthetic"
surface = "brushed_metal"
width = 64
height = 64
seed = 5

[model]

[[recipe]]
name = "tiny"
package = "{}"

[[recipe]]
name = "demo"
package = "{}"
"#,
        package.display(),
        common::demo_model()
    );
    let loaded = config::load_str(&text, "threshold", common::repo()).unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = crossbeam_channel::bounded::<Inspection>(OUTPUT_QUEUE_DEPTH);
    let station = Station::build(&loaded, RunOptions { outputs: vec![RecordPort::results(tx)], ..Default::default() })
        .unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("t.db");
    let state = common::api::state(&db, &[("op", linesight::config::ApiRole::Operator, "op-token")]);
    assert!(state.recipes.set(Arc::new(LiveRecipes::of(&station))).is_ok());
    let api = common::api::Client::new(state);

    // Refused: an operator (thresholds are admin's), a recipe without a threshold, bad values.
    let patch = |token: &str, uri: &str, body: &str| api.send("PATCH", uri, Some(token), body);
    assert_eq!(patch("op-token", "/api/v1/recipes/tiny", r#"{"threshold": -1}"#).0, StatusCode::FORBIDDEN);
    let (status, body) = patch("admin-token", "/api/v1/recipes/demo", r#"{"threshold": 0.5}"#);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("not an anomaly model"), "{body}");
    assert_eq!(patch("admin-token", "/api/v1/recipes/tiny", r#"{"threshold": "high"}"#).0, StatusCode::BAD_REQUEST);
    assert_eq!(patch("admin-token", "/api/v1/recipes/tiny", r#"{"threshold": 1e39}"#).0, StatusCode::BAD_REQUEST);
    assert_eq!(patch("admin-token", "/api/v1/recipes/none", r#"{"threshold": 1}"#).0, StatusCode::NOT_FOUND);

    let accounting = station.accounting();
    let stop = station.stop_handle();
    let collector = std::thread::spawn(move || rx.iter().collect::<Vec<Inspection>>());
    let runner = std::thread::spawn(move || station.run());
    let frames = |n: u64| {
        let t0 = Instant::now();
        while accounting.snapshot()[0].inspected() < n && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    frames(20);
    // Every part passes at 2.0; from the next frame decided, every part fails at -1.
    let (status, body) = patch("admin-token", "/api/v1/recipes/tiny", r#"{"threshold": -1.0}"#);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["threshold"], -1.0);
    let changed_at = accounting.snapshot()[0].inspected();
    frames(changed_at + 20);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runner.join().unwrap();
    let records = collector.join().unwrap();

    let thresholds: Vec<f32> = records.iter().map(|r| r.threshold).collect();
    let switch_at = thresholds.iter().position(|t| *t == -1.0).expect("records judged at the new threshold");
    assert!(switch_at >= 20, "the old threshold judged the parts before the change");
    assert!(thresholds[..switch_at].iter().all(|t| *t == 2.0) && thresholds[switch_at..].iter().all(|t| *t == -1.0));
    for r in &records {
        let expected =
            if r.threshold == 2.0 { linesight::pipeline::Verdict::Ok } else { linesight::pipeline::Verdict::Ng };
        assert_eq!(r.verdict, expected, "score {} at threshold {}", r.image_score, r.threshold);
    }
    let audit = api.get("/api/v1/audit");
    let item = &audit["items"][0];
    assert_eq!((item["action"].as_str(), item["target"].as_str()), (Some("recipe.threshold"), Some("tiny")), "{audit}");
    assert_eq!((item["old"].as_str(), item["new"].as_str()), (Some("2"), Some("-1")), "{audit}");
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "refused changes are not audited");
}

/// A new model installed for a recipe under load, a package that cannot load, and a rollback:
/// each camera's frames are judged by one model up to the answer's `first_seq`, by the other
/// from it on; none is lost; the failed install changes nothing; both changes are audited.
#[test]
fn a_model_installed_while_running_takes_over_between_two_frames_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = tiny_anomaly_package(dir.path());
    let loaded = config::load_str(&two_recipe_station(), "recipes", common::repo()).unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = crossbeam_channel::bounded::<Inspection>(OUTPUT_QUEUE_DEPTH);
    let telemetry = Arc::new(linesight::telemetry::Telemetry::new());
    let options = RunOptions {
        outputs: vec![RecordPort::results(tx)],
        telemetry: Some(Arc::clone(&telemetry)),
        ..Default::default()
    };
    let station = Station::build(&loaded, options).unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("m.db");
    let state = common::api::state(&db, &[]);
    assert!(state.recipes.set(Arc::new(LiveRecipes::of(&station))).is_ok());
    let api = common::api::Client::new(state);
    let accounting = station.accounting();
    let stop = station.stop_handle();
    let collector = std::thread::spawn(move || rx.iter().collect::<Vec<Inspection>>());
    let runner = std::thread::spawn(move || station.run());
    std::thread::sleep(Duration::from_millis(300));

    let uri = "/api/v1/recipes/inspect/model";
    let (status, body) = api.post(uri, "admin-token", r#"{"package": "no/such/package"}"#);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"].as_str().unwrap().contains("recipe inspect keeps its model"), "{body}");
    let (status, installed) = api.post(uri, "admin-token", &format!(r#"{{"package": "{}"}}"#, tiny.display()));
    assert_eq!(status, StatusCode::OK, "{installed}");
    assert_eq!(installed["recipe"]["model"]["name"], "tiny-anomaly", "{installed}");
    std::thread::sleep(Duration::from_millis(300));
    let (status, rolled) = api.post("/api/v1/recipes/inspect/rollback", "admin-token", "");
    assert_eq!(status, StatusCode::OK, "{rolled}");
    assert_eq!(rolled["recipe"]["model"]["name"], "demo", "{rolled}");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runner.join().unwrap();
    let records = collector.join().unwrap();

    let snaps = accounting.snapshot();
    assert!(snaps.iter().all(|s| s.dropped() == 0 && s.in_flight() == 0), "{snaps:?}");
    assert_eq!(records.len() as u64, snaps.iter().map(|s| s.captured).sum::<u64>(), "one record per frame");
    for (c, camera) in ["metal", "tile"].iter().enumerate() {
        let on = installed["first_seq"][camera].as_u64().expect("first frame under the new model");
        let off = rolled["first_seq"][camera].as_u64().expect("first frame after the rollback");
        assert!(on < off, "{camera}: {on} {off}");
        let mine: Vec<&Inspection> = records.iter().filter(|r| usize::from(r.meta.camera) == c).collect();
        for r in &mine {
            let anomaly_model = (on..off).contains(&r.meta.seq);
            // The installed model scores every part (an image score; threshold 2.0: all pass);
            // the demo model has no image score.
            assert_eq!(!r.image_score.is_nan(), anomaly_model, "{camera} seq {}: score {}", r.meta.seq, r.image_score);
            if anomaly_model {
                assert_eq!(r.verdict, linesight::pipeline::Verdict::Ok);
                assert_eq!(r.threshold, 2.0);
            }
        }
        assert!(mine.iter().any(|r| r.meta.seq >= off), "{camera} ran the demo model again");
    }
    let audit = api.get("/api/v1/audit");
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|i| i["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["recipe.rollback", "recipe.model"], "the failed install is not a change: {audit}");
    // The metrics follow: the installed model's inference time was measured, and after the
    // rollback it is loaded but no recipe runs it.
    let metrics = telemetry.render();
    let line = |prefix: &str| -> f64 {
        let l = metrics.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"));
        l.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(line("linesight_inference_seconds_count{model=\"tiny-anomaly\"}") > 0.0);
    assert_eq!(line("linesight_model_info{model=\"tiny-anomaly\""), 0.0);
    assert_eq!(line("linesight_model_info{model=\"demo\""), 1.0);
    assert!(audit["items"][1]["new"].as_str().unwrap().starts_with("tiny-anomaly"), "{audit}");
}

/// A teach job from the station: good parts in a folder on it, taught in the background while
/// both cameras run, then installed for the recipe between two frames.
#[test]
fn a_teach_job_teaches_and_installs_a_model_while_the_station_runs() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let params = linesight::synth::SynthParams {
        width: 256,
        height: 256,
        surface: "brushed_metal".parse().unwrap(),
        defect_probability: 0.0,
        seed: 99,
    };
    linesight::synth::write_dataset(&good, 16, &params).unwrap();
    // The overkill the plant accepts in the recipe's teach settings, and a few labelled defective
    // parts given with the job (read as `linesight teach` reads --max-overkill and --defects).
    let defects = dir.path().join("defects");
    let defective = linesight::synth::SynthParams { defect_probability: 1.0, seed: 7, ..params.clone() };
    linesight::synth::write_dataset(&defects, 6, &defective).unwrap();
    let teach_settings = format!(
        "cameras = [\"metal\", \"tile\"]\n[recipe.teach]\nimages = \"{}\"\nmax_overkill = 0.05\n",
        good.join("images").display()
    );
    let text = two_recipe_station().replacen("cameras = [\"metal\", \"tile\"]\n", &teach_settings, 1);
    let loaded = config::load_str(&text, "recipes", common::repo()).unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = crossbeam_channel::bounded::<Inspection>(OUTPUT_QUEUE_DEPTH);
    let station = Station::build(&loaded, RunOptions { outputs: vec![RecordPort::results(tx)], ..Default::default() })
        .unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("t.db");
    let state = common::api::state(&db, &[]);
    assert!(state.recipes.set(Arc::new(LiveRecipes::of(&station))).is_ok());
    let api = common::api::Client::new(state);
    let stop = station.stop_handle();
    let collector = std::thread::spawn(move || rx.iter().collect::<Vec<Inspection>>());
    let runner = std::thread::spawn(move || station.run());

    for (body, status) in [
        (r#"{"recipe": "inspect"}"#.to_string(), StatusCode::BAD_REQUEST),
        (
            format!(r#"{{"recipe": "inspect", "images": "{}", "archived_ok": true}}"#, good.display()),
            StatusCode::BAD_REQUEST,
        ),
        (r#"{"recipe": "inspect", "archived_ok": true}"#.to_string(), StatusCode::BAD_REQUEST),
        (format!(r#"{{"recipe": "shiny", "images": "{}"}}"#, good.display()), StatusCode::NOT_FOUND),
        (
            format!(r#"{{"recipe": "inspect", "images": "{}", "max_overkill": 1}}"#, good.display()),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"recipe": "inspect", "images": "{}", "defects": "nowhere"}}"#, good.display()),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        assert_eq!(api.post("/api/v1/teach", "admin-token", &body).0, status, "{body}");
    }
    let images = good.join("images");
    let (status, started) = api.post(
        "/api/v1/teach",
        "admin-token",
        &format!(
            r#"{{"recipe": "inspect", "images": "{}", "defects": "{}", "install": true}}"#,
            images.display(),
            defects.join("images").display()
        ),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_u64().unwrap();
    let t0 = Instant::now();
    let job = loop {
        let job = api.get(&format!("/api/v1/teach/{id}"));
        if job["state"] != "running" || t0.elapsed() > Duration::from_secs(300) {
            break job;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["installed"], true, "{job}");
    assert_eq!(job["teach"]["images"], 16, "{job}");
    // Parts of the product, no backbone, input, grid, contrast or threshold rule in the config:
    // chosen as `linesight teach` chooses them: its backbone, the input size, grid and contrast
    // by validation, the threshold at the recipe's stated overkill instead of mean + 3 std.
    assert!(job["teach"]["backbone"].as_str().unwrap().contains("lite2"), "{job}");
    let candidates = job["teach"]["recipe"]["candidates"].as_array().expect("the recipe search's candidates");
    let tried: Vec<&str> = candidates.iter().filter_map(|c| c["recipe"].as_str()).collect();
    assert_eq!(tried.first(), Some(&"resize 160×160 grid 16 standardised"), "{job}");
    // The sizes, then on the winner the finer grid, raw contrast and (with labelled defects to
    // judge it) the places' Gaussians.
    assert!(
        tried.len() == 6
            && tried.iter().any(|r| r.contains("grid 8"))
            && tried.iter().any(|r| r.ends_with("raw"))
            && tried.iter().any(|r| r.ends_with(" placed")),
        "{tried:?}"
    );
    let rule = job["teach"]["threshold_rule"].as_str().unwrap();
    assert!(rule.contains("95th percentile of the held-out good scores (expected overkill 5%)"), "{rule}");
    assert_eq!(job["teach"]["defect_images"], 6, "the job's labelled defects were used: {job}");
    let on = job["first_seq"]["metal"].as_u64().expect("the metal camera's first frame under the taught model");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runner.join().unwrap();
    let records = collector.join().unwrap();
    // The taught (anomaly) model scores every part from its first frame on; the demo model did not.
    for r in records.iter().filter(|r| r.meta.camera == 0) {
        assert_eq!(!r.image_score.is_nan(), r.meta.seq >= on, "seq {} score {}", r.meta.seq, r.image_score);
    }
    assert!(records.iter().any(|r| r.meta.camera == 0 && r.meta.seq >= on), "parts judged by the taught model");
    let recipes = api.get("/api/v1/recipes");
    assert!(recipes["recipes"][0]["model"]["name"].as_str().unwrap().ends_with("inspect"), "{recipes}");
}

/// New rules while running: the recipe's model built again with them takes over between two
/// frames (everything before `first_seq` judged by the old rules, everything from it by the new),
/// bad rules are refused naming the problem and change nothing, and a rollback restores the old
/// rules. Audited.
#[test]
fn rules_changed_while_running_judge_from_the_first_frame_named_and_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = config::load_str(&two_recipe_station(), "recipes", common::repo()).unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = crossbeam_channel::bounded::<Inspection>(OUTPUT_QUEUE_DEPTH);
    let station = Station::build(&loaded, RunOptions { outputs: vec![RecordPort::results(tx)], ..Default::default() })
        .unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("r.db");
    let state = common::api::state(&db, &[]);
    assert!(state.recipes.set(Arc::new(LiveRecipes::of(&station))).is_ok());
    let api = common::api::Client::new(state);
    let patch = |body: &str| api.send("PATCH", "/api/v1/recipes/inspect", Some(common::api::ADMIN), body);
    let accounting = station.accounting();
    let stop = station.stop_handle();
    let collector = std::thread::spawn(move || rx.iter().collect::<Vec<Inspection>>());
    let runner = std::thread::spawn(move || station.run());
    std::thread::sleep(Duration::from_millis(300));

    // Refused, nothing changed: a misspelt criterion, a class the model lacks, a rule in mm on
    // cameras without a scale, a threshold on a model without one (even beside good rules).
    for (body, status, says) in [
        (r#"{"rules": [{"class": "*", "min_scor": 0.9}]}"#, StatusCode::BAD_REQUEST, "unknown key \"min_scor\""),
        (r#"{"rules": [{"class": "rust"}]}"#, StatusCode::UNPROCESSABLE_ENTITY, "rust"),
        (r#"{"rules": [{"class": "*", "min_area_mm2": 1.0}]}"#, StatusCode::BAD_REQUEST, "no millimetre scale"),
        (r#"{"rules": [], "threshold": 0.5}"#, StatusCode::BAD_REQUEST, "not an anomaly model"),
    ] {
        let (got, answer) = patch(body);
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{body}: {answer}");
    }
    // Nothing counts any more: every part passes from `first_seq` on.
    let (status, changed) = patch(r#"{"rules": [{"class": "*", "min_area_px": 1e9}]}"#);
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["rules"][0]["min_area_px"], 1e9, "{changed}");
    std::thread::sleep(Duration::from_millis(300));
    let (status, rolled) = api.post("/api/v1/recipes/inspect/rollback", "admin-token", "");
    assert_eq!(status, StatusCode::OK, "{rolled}");
    assert_eq!(rolled["recipe"]["rules"][0]["min_area_px"], 12.0, "{rolled}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runner.join().unwrap();
    let records = collector.join().unwrap();

    let snaps = accounting.snapshot();
    assert!(snaps.iter().all(|s| s.dropped() == 0 && s.in_flight() == 0), "{snaps:?}");
    for (c, camera) in ["metal", "tile"].iter().enumerate() {
        let on = changed["first_seq"][camera].as_u64().expect("first frame under the new rules");
        let off = rolled["first_seq"][camera].as_u64().expect("first frame after the rollback");
        let mine: Vec<&Inspection> = records.iter().filter(|r| usize::from(r.meta.camera) == c).collect();
        let ng = |range: &dyn Fn(u64) -> bool| {
            mine.iter().filter(|r| range(r.meta.seq) && r.verdict == linesight::pipeline::Verdict::Ng).count()
        };
        assert_eq!(ng(&|s| (on..off).contains(&s)), 0, "{camera}: the new rules count nothing");
        assert!(ng(&|s| s < on) > 0 && ng(&|s| s >= off) > 0, "{camera}: the old rules reject defective parts");
    }
    let audit = api.get("/api/v1/audit");
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|i| i["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["recipe.rollback", "recipe.rules"], "refused changes are not audited: {audit}");
    assert!(audit["items"][1]["new"].as_str().unwrap().contains("1000000000"), "{audit}");
}
