//! Shadow models: a candidate judging copies of a recipe's live frames beside the live model.
//! The live recipe and the candidate run the same tiny anomaly model at different thresholds,
//! so each comparison's scores must be equal (the same frame was paired) and the candidate's
//! verdicts follow its threshold; the agreement report must match a hand count of what was
//! stored, the line never sees the candidate, and one call promotes it.

mod common;

use axum::http::StatusCode;
use linesight::api::LiveRecipes;
use linesight::config;
use linesight::pipeline::messages::{Inspection, OUTPUT_QUEUE_DEPTH};
use linesight::pipeline::{RecordPort, Verdict};
use linesight::shadow::Shadows;
use linesight::topology::{RunOptions, Station};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn station_config(package: &Path, threshold: Option<f32>, fps: f64) -> String {
    format!(
        r#"
[[camera]]
id = "cam"
fps = {fps}
backpressure = "block"
[camera.source]
kind = "synthetic"
surface = "brushed_metal"
width = 64
height = 64
defect_probability = 0.5
seed = 11

[model]

[[recipe]]
name = "part"
package = "{}"
{}
"#,
        package.display(),
        threshold.map_or_else(String::new, |t| format!("threshold = {t:?}"))
    )
}

/// The tiny model's image scores of the camera's first `n` frames, sorted.
fn scores(package: &Path, n: u64) -> Vec<f32> {
    let loaded = config::load_str(&station_config(package, None, 0.0), "scores", common::repo()).unwrap();
    let (tx, rx) = crossbeam_channel::bounded::<Inspection>(OUTPUT_QUEUE_DEPTH);
    let options = RunOptions { max_frames: Some(n), outputs: vec![RecordPort::results(tx)], ..Default::default() };
    let station = Station::build(&loaded, options).unwrap_or_else(|e| panic!("{e}"));
    let collector = std::thread::spawn(move || rx.iter().map(|r| r.image_score).collect::<Vec<f32>>());
    station.run();
    let mut scores = collector.join().unwrap();
    scores.sort_by(f32::total_cmp);
    scores
}

/// A station running with the shadow tap in its outputs and the API over `db` (admin token
/// `admin-token`, operator `op-token`).
struct Running {
    api: common::api::Client,
    accounting: Arc<linesight::pipeline::Accounting>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    collector: std::thread::JoinHandle<Vec<Inspection>>,
    runner: std::thread::JoinHandle<Arc<linesight::pipeline::Accounting>>,
}

fn run_with_api(loaded: &config::LoadedConfig, db: &Path) -> Running {
    let (tx, rx) = crossbeam_channel::bounded::<Inspection>(OUTPUT_QUEUE_DEPTH);
    let names = loaded.recipes().into_iter().map(|r| r.name).collect();
    let switch = Arc::new(
        linesight::pipeline::RecipeSwitch::new(&loaded.starting_recipes(), loaded.recipes().len())
            .named(names, loaded.config.cameras.iter().map(|c| c.id.clone()).collect()),
    );
    let (shadow_port, tap) = linesight::pipeline::shadow_tap::shadow_port(Arc::clone(&switch));
    let options = RunOptions {
        outputs: vec![shadow_port, RecordPort::results(tx)],
        recipe_switch: Some(switch),
        ..Default::default()
    };
    let station = Station::build(loaded, options).unwrap_or_else(|e| panic!("{e}"));
    let state = common::api::state(db, &[("op", config::ApiRole::Operator, "op-token")]);
    let mut live = LiveRecipes::of(&station);
    live.shadows =
        Some(Arc::new(Shadows::new(tap, loaded, db.to_path_buf(), Arc::clone(&live.switch), Arc::clone(&live.models))));
    assert!(state.recipes.set(Arc::new(live)).is_ok());
    let api = common::api::Client::new(state);
    let accounting = station.accounting();
    let stop = station.stop_handle();
    let collector = std::thread::spawn(move || rx.iter().collect::<Vec<Inspection>>());
    let runner = std::thread::spawn(move || station.run());
    Running { api, accounting, stop, collector, runner }
}

#[test]
fn a_shadow_model_is_compared_on_the_same_frames_counted_by_hand_and_promoted() {
    let _one = common::one_station();
    let dir = tempfile::tempdir().unwrap();
    let live_package = common::tiny_anomaly_package(dir.path(), "tiny-live", 2.0);
    // Thresholds at the quartiles of the camera's scores: the two disagree on about half.
    let seen = scores(&live_package, 80);
    let (low, high) = (seen[seen.len() / 4], seen[3 * seen.len() / 4]);
    assert!(low < high, "the tiny model scores the parts differently: {seen:?}");
    let candidate = common::tiny_anomaly_package(dir.path(), "tiny-candidate", high);
    let loaded = config::load_str(&station_config(&live_package, Some(low), 80.0), "shadow", common::repo())
        .unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("shadow.db");
    let Running { api, accounting, stop, collector, runner } = run_with_api(&loaded, &db);
    let uri = "/api/v1/recipes/part/shadow";
    let body = format!(r#"{{"package": "{}", "share": 1.0}}"#, candidate.display());
    assert_eq!(api.get(uri)["state"], "none");
    assert_eq!(api.send("POST", uri, Some("op-token"), &body).0, StatusCode::FORBIDDEN);
    let (status, refused) = api.send("POST", uri, Some("admin-token"), r#"{"package": "no/such"}"#);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("not started as a shadow of part"), "{refused}");
    let (status, run) = api.send("POST", uri, Some("admin-token"), &body);
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["model"]["name"], "tiny-candidate", "{run}");

    let running = common::wait_for(
        Duration::from_secs(60),
        || "40 parts compared by the shadow".into(),
        || {
            let status = api.get(uri);
            (status["counts"]["compared"].as_u64().unwrap_or(0) >= 40).then_some(status)
        },
    );
    assert_eq!(running["state"], "running");
    assert_eq!(running["share"], 1.0);
    let counts = &running["counts"];
    let (offered, skipped, compared) = (
        counts["offered"].as_u64().unwrap(),
        counts["skipped"].as_u64().unwrap(),
        counts["compared"].as_u64().unwrap(),
    );
    assert!(compared + skipped <= offered, "{counts}");
    let (status, stopped) = api.send("DELETE", uri, Some("admin-token"), "");
    assert_eq!(status, StatusCode::OK, "{stopped}");
    // The shadow drains what it holds ("stopping"); once "stopped", its comparisons stay put.
    let report = common::wait_for(
        Duration::from_secs(30),
        || "the stopped shadow's last comparisons written".into(),
        || {
            let status = api.get(uri);
            assert!(status["state"] == "stopping" || status["state"] == "stopped", "{status}");
            (status["state"] == "stopped").then_some(status)
        },
    );
    assert_eq!(report["candidate"]["outcome"], "stopped");

    // Promote a new shadow run of the same candidate: the recipe runs it from `first_seq` on.
    let (status, _) = api.send("POST", uri, Some("admin-token"), &body);
    assert_eq!(status, StatusCode::CREATED);
    let (status, promoted) = api.send("POST", &format!("{uri}/promote"), Some("admin-token"), "");
    assert_eq!(status, StatusCode::OK, "{promoted}");
    assert_eq!(promoted["recipe"]["model"]["name"], "tiny-candidate", "{promoted}");
    let first_seq = promoted["first_seq"]["cam"].as_u64().expect("first frame under the promoted model");
    assert_eq!(api.get(uri)["candidate"]["outcome"], "promoted");
    let (status, _) = api.send("POST", &format!("{uri}/promote"), Some("admin-token"), "");
    assert_eq!(status, StatusCode::CONFLICT, "nothing left to promote");
    common::wait_for(
        Duration::from_secs(30),
        || "frames under the promoted model".into(),
        || (accounting.snapshot()[0].inspected() > first_seq + 10).then_some(()),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runner.join().unwrap();
    let records = collector.join().unwrap();
    let snaps = accounting.snapshot();
    assert!(snaps.iter().all(|s| s.dropped() == 0 && s.in_flight() == 0), "{snaps:?}");

    // The line saw only the live model: before the promotion, every record was judged at the
    // live threshold; from `first_seq` on, at the candidate's.
    let by_seq: HashMap<u64, &Inspection> = records.iter().map(|r| (r.meta.seq, r)).collect();
    for r in &records {
        let expected = if r.meta.seq < first_seq { low } else { high };
        assert_eq!(r.threshold, expected, "seq {}", r.meta.seq);
    }

    // Hand count over the first run's stored comparisons.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let run_id = report["candidate"]["run"].as_i64().unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT seq, live_verdict, live_score, shadow_verdict, shadow_score FROM shadow_results WHERE run_id = ?1",
        )
        .unwrap();
    let rows: Vec<(u64, String, f64, String, f64)> = stmt
        .query_map([run_id], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(rows.len() as u64 >= compared, "{} rows, {compared} compared", rows.len());
    let verdicts = ["OK", "NG", "FAILSAFE"];
    let mut matrix = [[0u64; 3]; 3];
    let mut disagreements = 0;
    for (seq, live_verdict, live_score, shadow_verdict, shadow_score) in &rows {
        let r = by_seq[seq];
        assert_eq!(live_verdict, r.verdict.as_str(), "seq {seq}: the live verdict stored is the line's");
        assert!((f64::from(r.image_score) - live_score).abs() < 1e-6);
        // The same frame, the same model: the same score (so the pairing is right).
        assert!((shadow_score - live_score).abs() < 1e-4, "seq {seq}: live {live_score}, shadow {shadow_score}");
        if (shadow_score - f64::from(high)).abs() > 1e-4 {
            let expected = if *shadow_score >= f64::from(high) { "NG" } else { "OK" };
            assert_eq!(shadow_verdict, expected, "seq {seq}: score {shadow_score} against the candidate's {high}");
        }
        let (l, s) = (
            verdicts.iter().position(|v| v == live_verdict).unwrap(),
            verdicts.iter().position(|v| v == shadow_verdict).unwrap(),
        );
        matrix[l][s] += 1;
        disagreements += usize::from(l != s);
    }
    assert_eq!(report["parts"].as_u64(), Some(rows.len() as u64));
    for (l, live_verdict) in verdicts.iter().enumerate() {
        for (s, shadow_verdict) in verdicts.iter().enumerate() {
            assert_eq!(report["confusion"][live_verdict][shadow_verdict].as_u64(), Some(matrix[l][s]), "{report}");
        }
    }
    assert!(matrix[1][0] > 0 && matrix[1][1] > 0, "the thresholds split the parts: {report}");
    let agree = (matrix[0][0] + matrix[1][1] + matrix[2][2]) as f64 / rows.len() as f64;
    assert!((report["agreement"].as_f64().unwrap() - agree).abs() < 1e-12);
    let listed = report["disagreements"].as_array().unwrap();
    assert_eq!(listed.len(), disagreements);
    for d in listed {
        assert_eq!(
            (d["live"]["verdict"].as_str(), d["candidate"]["verdict"].as_str()),
            (Some("NG"), Some("OK")),
            "{d}"
        );
        let seq = d["seq"].as_u64().unwrap();
        assert_eq!(by_seq[&seq].verdict, Verdict::Ng);
    }
    let audit = api.get("/api/v1/audit");
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|i| i["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["recipe.shadow.promote", "recipe.shadow.start", "recipe.shadow.stop", "recipe.shadow.start"],
        "{audit}"
    );
}

/// A teach job from the next parts of a camera (the operator vouches they are good), taught in
/// the background while the camera runs, and started as the recipe's shadow candidate.
#[test]
fn a_teach_job_from_a_cameras_next_parts_starts_a_shadow_candidate() {
    let _one = common::one_station();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[[camera]]
id = "cam"
fps = 40
[camera.source]
kind = "synthetic"
surface = "brushed_metal"
width = 256
height = 256
defect_probability = 0.0
seed = 21

[model]

[[recipe]]
name = "inspect"
package = "{}"
"#,
        common::demo_model()
    );
    let loaded = config::load_str(&text, "teach", common::repo()).unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("teach.db");
    let Running { api, accounting, stop, collector, runner } = run_with_api(&loaded, &db);
    let teach = |body: &str| api.send("POST", "/api/v1/teach", Some("admin-token"), body);
    for (body, says) in [
        (r#"{"recipe": "inspect", "camera": "cam"}"#, "parts"),
        (r#"{"recipe": "inspect", "camera": "cam", "parts": 3}"#, "parts"),
        (r#"{"recipe": "inspect", "camera": "nope", "parts": 12}"#, "no camera"),
        (r#"{"recipe": "inspect", "images": "good", "parts": 12}"#, "only with"),
        (r#"{"recipe": "inspect", "images": "good", "camera": "cam", "parts": 12}"#, "one source"),
        (
            r#"{"recipe": "inspect", "camera": "cam", "parts": 12, "install": true, "shadow": true}"#,
            "install or shadow",
        ),
    ] {
        let (status, answer) = teach(body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{body}: {answer}");
    }
    let (status, started) = teach(r#"{"recipe": "inspect", "camera": "cam", "parts": 12, "shadow": true}"#);
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_u64().unwrap();
    let job = common::wait_for(
        Duration::from_secs(300),
        || "the teach job done".into(),
        || {
            let job = api.get(&format!("/api/v1/teach/{id}"));
            (job["state"] == "done" || job["state"] == "failed").then_some(job)
        },
    );
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["teach"]["images"], 12, "{job}");
    let package = job["package"].as_str().unwrap();
    assert!(!Path::new(package).with_extension("images").exists(), "the captured parts are cleaned up");
    assert_eq!(job["shadow"]["package"], package, "{job}");
    let shadow = common::wait_for(
        Duration::from_secs(60),
        || "parts compared by the taught candidate".into(),
        || {
            let status = api.get("/api/v1/recipes/inspect/shadow");
            (status["counts"]["compared"].as_u64().unwrap_or(0) >= 5).then_some(status)
        },
    );
    assert_eq!(shadow["state"], "running", "{shadow}");
    assert_eq!(shadow["share"], linesight::shadow::DEFAULT_SHARE, "{shadow}");
    assert!(shadow["candidate"]["model"]["name"].as_str().unwrap().ends_with("inspect"), "{shadow}");
    // The line ran the demo model throughout: the candidate never judged a part on it.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runner.join().unwrap();
    let records = collector.join().unwrap();
    assert!(records.iter().all(|r| r.image_score.is_nan()), "the live (demo) model has no image score");
    let snaps = accounting.snapshot();
    assert!(snaps.iter().all(|s| s.in_flight() == 0), "{snaps:?}");
}
