//! Fail safe, never fail open, through the real binary: a part the station could not judge is
//! never OK. Faults are injected on purpose (`LINESIGHT_FAULT_NAN_OUTPUTS`,
//! `LINESIGHT_FAULT_PANIC`) and the outcome is judged where it lands: the results stream (what
//! was decided), the line's audit trail (what the line did with each part), what a program on the
//! command adapter received (the PLC's view: rejects and the station-ready signal), `/readyz`,
//! `/metrics` and the exit code.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// A synthetic station whose parts reach the actuator `delay_ms` after capture, with the line's
/// audit trail and the command adapter's view in files, a store, an archive and the API off.
fn station(dir: &Path, fps: f64, delay_ms: u64) -> String {
    // The fault injections count each thread's own batches (`after=20`, `from=20,count=40`): one
    // inference worker with batches of up to 4 tiles, as the expectations below are written for,
    // whatever the defaults make of this machine's cores.
    station_with(dir, fps, delay_ms, 1, 4)
}

/// [`station`] with `workers` inference workers gathering up to `max_batch` tiles.
fn station_with(dir: &Path, fps: f64, delay_ms: u64, workers: usize, max_batch: usize) -> String {
    synthetic_station(fps, "", &format!("max_batch = {max_batch}"))
        .replace("[model]\n", &format!("[model]\nworkers = {workers}\n"))
        + &format!(
            r#"
[store]
path = "{store}"

[api]
enabled = false

[archive]
dir = "{archive}"
ok_sample_rate = 0.2

[line]
delay_ms = {delay_ms}
margin_ms = 10
pulse_ms = 100
fire_window_ms = 50
failsafe = "reject"
events = "{events}"
heartbeat_ms = 50

[line.command]
program = ["sh", "-c", "cat > '{received}'"]
"#,
            store = dir.join("station.db").display(),
            archive = dir.join("archive").display(),
            events = dir.join("events.jsonl").display(),
            received = dir.join("received.jsonl").display(),
        )
}

/// The line's terminal record per part of the station in `dir` (see `line_actions`).
fn actions(dir: &Path) -> HashMap<u64, Value> {
    line_actions(&read_jsonl(&dir.join("events.jsonl")))
}

/// The station-ready signals the command adapter received, in order: (ready, error).
fn statuses(dir: &Path) -> Vec<(bool, String)> {
    read_jsonl(&dir.join("received.jsonl"))
        .into_iter()
        .filter(|e| e["event"] == "status")
        .map(|e| (e["ready"].as_bool().unwrap(), e["error"].as_str().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn non_finite_model_outputs_fail_every_affected_part_safe_and_drop_readiness() {
    // Batches 20 to 59 come out as NaN: a model (or a device) gone bad for a while.
    non_finite_outputs_fail_safe(1, 4, 40);
}

/// The same with the CPU defaults of a 2-core box (two single-threaded workers, batches of one
/// tile): each worker's own batches 20 to 59 are NaN, so the bad window covers fewer parts, and
/// every one of them must still be rejected.
#[test]
fn non_finite_outputs_fail_safe_with_two_workers_and_batches_of_one() {
    non_finite_outputs_fail_safe(2, 1, 10);
}

fn non_finite_outputs_fail_safe(workers: usize, max_batch: usize, at_least: usize) {
    let _one = one_station();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &station_with(dir.path(), 40.0, 150, workers, max_batch));
    let results = dir.path().join("results.jsonl");
    let (ok, _, stderr) = output(
        linesight_run()
            .args(["--config", config.to_str().unwrap(), "--max-frames", "160", "--results"])
            .arg(&results)
            .env("LINESIGHT_FAULT_NAN_OUTPUTS", "from=20,count=40"),
    );
    assert!(ok, "the station must keep running through bad outputs:\n{stderr}");
    assert!(stderr.contains("FAULT INJECTION"), "the fault must be announced loudly");

    let records = read_jsonl(&results);
    assert_eq!(records.len(), 160, "every part has a record");
    let invalid: HashSet<u64> = records
        .iter()
        .filter(|r| r["failsafe_cause"] == "invalid_output")
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    eprintln!("{workers} worker(s), batches of up to {max_batch}: {} of 160 parts invalid_output", invalid.len());
    assert!(invalid.len() >= at_least, "only {} parts were judged invalid_output", invalid.len());
    for r in &records {
        if invalid.contains(&r["seq"].as_u64().unwrap()) {
            assert_eq!(r["verdict"], "FAILSAFE", "a part without a valid model output got {r}");
        }
    }
    assert!(records.iter().any(|r| r["verdict"] == "OK"), "parts before and after the fault are judged normally");

    // The physical outcome: every part without a valid output was rejected at the line.
    let acts = actions(dir.path());
    assert_eq!(acts.len(), 160, "every captured part got exactly one action");
    for seq in &invalid {
        let r = &acts[seq];
        assert_eq!(r["fate"], "fired", "part {seq} had no valid model output and was not rejected: {r}");
        assert_eq!(r["failsafe"], "invalid_output", "{r}");
    }

    // Readiness dropped while the model gave nothing usable, and came back after.
    let status = statuses(dir.path());
    let bad = status.iter().position(|(ready, e)| !ready && e == "invalid_output");
    let bad = bad.unwrap_or_else(|| panic!("the line was never told the outputs are invalid: {status:?}"));
    assert!(status[bad..].iter().any(|(ready, _)| *ready), "ready again after the fault: {status:?}");
    assert!(stderr.contains("not finite"), "the bad outputs are logged:\n{stderr}");
}

/// One stage panics at its 20th unit of work; see `fault_and_check`.
fn stage_panic(stage: &str) {
    let _one = one_station();
    let dir = tempfile::tempdir().unwrap();
    // A long line delay keeps the station alive after the failure while the line acts on the
    // parts it holds, so /readyz and /metrics can be read meanwhile.
    let config = write_config(dir.path(), &station(dir.path(), 50.0, 1500));
    let results = dir.path().join("results.jsonl");
    let mut cmd = linesight_run();
    cmd.args(["--config", config.to_str().unwrap(), "--results"])
        .arg(&results)
        .env("LINESIGHT_FAULT_PANIC", format!("stage={stage},after=20"));
    let (mut child, admin, log) = spawn_with_admin(cmd);
    if stage == "line" {
        // The line thread itself is gone: nothing holds parts to act on, so the station drains
        // and exits at once (too soon to read /readyz reliably); the PLC is left "not ready" and
        // its heartbeat stops.
        let status = wait_exit(&mut child, Duration::from_secs(30));
        let log = log.lock().unwrap().clone();
        assert!(!status.success(), "the line thread died but the station exited {status}");
        assert!(log.contains("STAGE FAILED") && log.contains("stage line failed"), "{log}");
        let status = statuses(dir.path());
        assert_eq!(status.last().map(|s| s.0), Some(false), "{status:?}");
        return;
    }
    let what = || format!("/readyz to name stage {stage}; log:\n{}", log.lock().unwrap());
    let body = wait_for(Duration::from_secs(30), what, || {
        let (code, body) = http_get(admin, "/readyz").ok()?;
        (code == 503 && body.contains(&format!("stage {stage} failed"))).then_some(body)
    });
    assert!(body.contains("panicked"), "{body}");
    assert_eq!(metric(admin, &format!("linesight_stage_failures_total{{stage=\"{stage}\"}}")), Some(1.0));
    assert_eq!(metric(admin, "linesight_ready"), Some(0.0));
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let log = log.lock().unwrap().clone();
    assert!(
        !status.success(),
        "stage {stage} died but the station exited {status}: a service manager would not restart it"
    );
    assert!(log.contains("STAGE FAILED") && log.contains(stage), "logged at once:\n{log}");

    // Every part the line registered got its action at its deadline: its own verdict where one
    // came, the fail-safe (a reject) where none did. None was lost, none passed unjudged.
    let acts = actions(dir.path());
    assert!(acts.len() >= 20, "only {} parts were acted on", acts.len());
    let decided: HashMap<u64, String> = read_jsonl(&results)
        .iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r["verdict"].as_str().unwrap().to_string()))
        .collect();
    for (seq, r) in &acts {
        assert_ne!(r["fate"], "missed", "part {seq} missed its fire window: {r}");
        if r["verdict"] == "OK" {
            assert_eq!(r["fate"], "passed", "{r}");
            if stage != "results" {
                assert_eq!(decided.get(seq).map(String::as_str), Some("OK"), "part {seq} passed without an OK verdict");
            }
        } else {
            assert_eq!(r["fate"], "fired", "part {seq} was not rejected: {r}");
        }
    }
    let status = statuses(dir.path());
    assert!(status.iter().any(|(ready, e)| !ready && e == "stage_failed"), "the PLC was told: {status:?}");
    assert_eq!(status.last().map(|s| s.0), Some(false), "ends not ready: {status:?}");
}

#[test]
fn a_panicking_camera_stops_the_station_from_pretending() {
    stage_panic("camera");
}

#[test]
fn a_panicking_preprocess_stage_stops_the_station_from_pretending() {
    stage_panic("preprocess");
}

#[test]
fn a_panicking_inference_worker_stops_the_station_from_pretending() {
    stage_panic("infer");
}

#[test]
fn a_panicking_assembler_stops_the_station_from_pretending() {
    stage_panic("assemble");
}

#[test]
fn a_panicking_line_thread_stops_the_station_from_pretending() {
    stage_panic("line");
}

#[test]
fn a_panicking_store_writer_stops_the_station_from_pretending() {
    stage_panic("store");
}

#[test]
fn a_panicking_archive_writer_stops_the_station_from_pretending() {
    stage_panic("archive");
}

#[test]
fn a_panicking_results_writer_stops_the_station_from_pretending() {
    stage_panic("results");
}

#[test]
fn a_model_whose_outputs_disagree_with_its_manifest_is_refused_at_check() {
    let dir = tempfile::tempdir().unwrap();
    // The demo model outputs one channel per pixel; a manifest listing two classes is wrong.
    let model =
        edited_demo_model(dir.path(), |m| m.replace("classes = [\"defect\"]", "classes = [\"defect\", \"dent\"]"));
    let text = synthetic_station(20.0, "", "").replace(&demo_model(), &model.display().to_string());
    let config = write_config(dir.path(), &text);
    let (ok, _, stderr) = output(linesight().args(["check", "--config", config.to_str().unwrap()]));
    assert!(!ok, "check accepted a mismatched model:\n{stderr}");
    assert!(stderr.contains("classes = 2") && stderr.contains("[1, "), "names expected and actual shapes:\n{stderr}");

    std::fs::create_dir(dir.path().join("e")).unwrap();
    let empty = edited_demo_model(&dir.path().join("e"), |m| m.replace("classes = [\"defect\"]", "classes = []"));
    let text = synthetic_station(20.0, "", "").replace(&demo_model(), &empty.display().to_string());
    let config = write_config(dir.path(), &text);
    let (ok, _, stderr) = output(linesight().args(["check", "--config", config.to_str().unwrap()]));
    assert!(!ok && stderr.contains("task.classes is empty"), "{stderr}");
}

#[test]
fn images_cut_short_or_too_small_are_never_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let whole = image::ImageBuffer::from_fn(128, 128, |x, y| image::Luma([((x + y) % 256) as u8]));
    let mut jpeg = std::io::Cursor::new(Vec::new());
    whole.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let jpeg = jpeg.into_inner();
    std::fs::write(images.join("1-whole.jpg"), &jpeg).unwrap();
    std::fs::write(images.join("2-cut.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    image::ImageBuffer::from_pixel(1, 1, image::Luma([0u8])).save(images.join("3-tiny.png")).unwrap();
    std::fs::write(images.join("4-cut.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    let config = write_config(dir.path(), &folder_station(&images));
    let results = dir.path().join("results.jsonl");
    let (ok, _, stderr) = output(
        linesight_run()
            .args(["--config", config.to_str().unwrap(), "--results"])
            .arg(&results)
            .env("LINESIGHT_LOG", "warn"),
    );
    assert!(ok, "{stderr}");
    let judged: Vec<String> = read_jsonl(&results).iter().map(|r| r["part_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(judged, ["1-whole"], "only the whole image gets a verdict");
    for name in ["2-cut.jpg", "4-cut.jpg"] {
        assert!(stderr.contains(name), "every bad file is named in the log ({name}):\n{stderr}");
    }
    assert!(stderr.contains("1×1 frame is smaller than the model input's minimum"), "{stderr}");
}

/// A two-camera station: `good` (synthetic) and `silent`, a network stream nobody sends to.
fn one_silent_camera(dir: &Path) -> String {
    // A free UDP port nobody sends to.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let silent = format!(
        r#"
[[camera]]
id = "silent"
open_timeout_ms = 1000
stall_timeout_ms = 1000
[camera.source]
kind = "opencv"
uri = "udpsrc address=127.0.0.1 port={port} ! application/x-rtp,media=video,encoding-name=JPEG,payload=26,clock-rate=90000 ! rtpjpegdepay ! jpegdec ! videoconvert ! appsink"
"#
    );
    let text = synthetic_station(20.0, "", "").replace("id = \"cam\"", "id = \"good\"");
    // The silent camera after the good one (a second [[camera]] table before [model]).
    let (cameras, rest) = text.split_at(text.find("[model]").unwrap());
    let _ = dir;
    format!("{cameras}{silent}\n{rest}")
}

#[test]
fn a_camera_that_never_delivers_does_not_block_the_others_and_sigint_still_stops_the_station() {
    let _one = one_station();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &one_silent_camera(dir.path()));
    let results = dir.path().join("results.jsonl");
    let mut cmd = linesight_run();
    cmd.args(["--config", config.to_str().unwrap(), "--results"]).arg(&results);
    let (mut child, admin, log) = spawn_with_admin(cmd);
    // The good camera is inspected while the silent one is marked down with why.
    wait_for(
        Duration::from_secs(30),
        || format!("records of camera good; log:\n{}", log.lock().unwrap()),
        || (read_jsonl(&results).iter().filter(|r| r["camera"] == "good").count() >= 20).then_some(()),
    );
    let body = wait_for(
        Duration::from_secs(30),
        || format!("/readyz naming camera silent; log:\n{}", log.lock().unwrap()),
        || {
            let (code, body) = http_get(admin, "/readyz").ok()?;
            (code == 503 && body.contains("camera silent is down") && body.contains("did not open within"))
                .then_some(body)
        },
    );
    assert!(!body.contains("camera good is down"), "{body}");
    assert_eq!(metric(admin, "linesight_camera_up{camera=\"good\"}"), Some(1.0));
    // SIGINT while the silent camera is (again) stuck opening: the station stops within 2 s.
    let t0 = std::time::Instant::now();
    let pid = child.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "SIGINT took {took:?} to stop the station");
    assert!(status.success(), "a clean stop exits 0: {status}");

    // `check` names the silent camera and returns instead of hanging.
    let t0 = std::time::Instant::now();
    let (ok, _, stderr) = output(linesight().args(["check", "--config", config.to_str().unwrap()]));
    assert!(!ok && stderr.contains("camera silent") && !stderr.contains("camera good:"), "{stderr}");
    assert!(t0.elapsed() < Duration::from_secs(20), "check took {:?}", t0.elapsed());
}

#[test]
fn a_frozen_camera_backlog_is_dropped_as_stale_and_its_parts_fail_safe() {
    let _one = one_station();
    let dir = tempfile::tempdir().unwrap();
    // Every 15th grab freezes 700 ms and then delivers the frame it took when it froze (as a
    // stalled stream delivers its backlog): older than max_frame_age_ms on arrival.
    // The line's delay (1.5 s) is longer than the freeze, so those parts can still be rejected.
    let text = station(dir.path(), 40.0, 1500).replace("fps = 40", "fps = 40\nmax_frame_age_ms = 300");
    let config = write_config(dir.path(), &text);
    let results = dir.path().join("results.jsonl");
    let summary = dir.path().join("summary.json");
    let (ok, _, stderr) = output(
        linesight_run()
            .args(["--config", config.to_str().unwrap(), "--max-frames", "90", "--results"])
            .arg(&results)
            .arg("--summary")
            .arg(&summary)
            .env("LINESIGHT_FAULT_CAMERA", "freeze_every=15,freeze_ms=700"),
    );
    assert!(ok, "{stderr}");
    let cams = &serde_json::from_str::<Value>(&std::fs::read_to_string(&summary).unwrap()).unwrap()["cameras"];
    let stale = cams[0]["dropped_stale"].as_u64().unwrap();
    assert_eq!(stale, 6, "90 grabs, every 15th frozen: {cams}");
    let decided: HashSet<u64> = read_jsonl(&results).iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    let acts = actions(dir.path());
    assert_eq!(acts.len(), 90, "every captured part got one action, stale ones too");
    let undecided: Vec<&Value> = acts.iter().filter(|(seq, _)| !decided.contains(seq)).map(|(_, r)| r).collect();
    assert_eq!(undecided.len(), 6, "only the stale frames went undecided");
    for r in undecided {
        assert_eq!((r["fate"].as_str(), r["failsafe"].as_str()), (Some("fired"), Some("no_verdict")), "{r}");
    }
    assert!(stderr.contains("stale"), "{stderr}");
}
