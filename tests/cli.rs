//! The `linesight` binary as users and scripts call it: exit codes, one-line errors that name the
//! problem and the fix, JSON results, and graceful shutdown on SIGTERM.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn check_accepts_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &synthetic_station(10.0, "", ""));
    let (ok, stdout, stderr) = output(linesight().args(["check", "--config"]).arg(&cfg));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("OK") && stdout.contains("segmentation"), "{stdout}");
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            found.push(p.strip_prefix(dir).unwrap().to_path_buf());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    found.sort();
    found
}

/// `check` never writes: a model still to be taught on first start is reported, not taught.
#[test]
fn check_reports_a_model_to_teach_without_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let text = synthetic_station(10.0, "", "").replace(
        &format!("package = \"{}\"", demo_model()),
        &format!(
            "package = \"taught\"\n[model.teach]\nsynthetic_parts = 20\nbackbone = \"{}\"",
            repo().join("models/backbone-lite0").display()
        ),
    );
    assert!(text.contains("[model.teach]"), "{text}");
    let cfg = write_config(dir.path(), &text.replace("class = \"defect\"", "class = \"anomaly\""));
    let before = files_under(dir.path());
    let (ok, stdout, stderr) = output(linesight().args(["check", "--config"]).arg(&cfg));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("would be taught on first start"), "{stdout}");
    assert!(stdout.contains("20 good parts from each of 1 synthetic camera(s)"), "{stdout}");
    assert_eq!(files_under(dir.path()), before, "check wrote files");
    assert!(!dir.path().join("taught").exists());
    // From a folder of images: the count and the folder are named.
    let images = dir.path().join("good");
    std::fs::create_dir(&images).unwrap();
    for i in 0..12 {
        image::GrayImage::new(32, 32).save(images.join(format!("{i:02}.png"))).unwrap();
    }
    let text = std::fs::read_to_string(&cfg).unwrap().replace("synthetic_parts = 20", "images = \"good\"");
    std::fs::write(&cfg, text).unwrap();
    let before = files_under(dir.path());
    let (ok, stdout, stderr) = output(linesight().args(["check", "--config"]).arg(&cfg));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("would be taught on first start") && stdout.contains("12 images in"), "{stdout}");
    assert_eq!(files_under(dir.path()), before, "check wrote files");
}

#[test]
fn a_model_whose_hash_does_not_match_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = edited_demo_model(dir.path(), |manifest| {
        manifest
            .lines()
            .map(|l| if l.starts_with("sha256") { format!("sha256 = \"{}\"", "0".repeat(64)) } else { l.to_string() })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let text = synthetic_station(10.0, "", "").replace(&demo_model(), &model.display().to_string());
    let cfg = write_config(dir.path(), &text);
    let (ok, _, stderr) = output(linesight().args(["check", "--config"]).arg(&cfg));
    assert!(!ok);
    assert!(stderr.contains("sha256") && stderr.contains("restore it"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn a_missing_model_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let text = synthetic_station(10.0, "", "").replace(&demo_model(), "/no/such/model");
    let cfg = write_config(dir.path(), &text);
    let (ok, _, stderr) = output(linesight().args(["check", "--config"]).arg(&cfg));
    assert!(!ok);
    assert!(stderr.contains("model.package") && stderr.contains("/no/such/model"), "{stderr}");
}

#[test]
fn a_missing_onnx_runtime_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &synthetic_station(10.0, "", ""));
    let (ok, _, stderr) =
        output(linesight().env("ORT_DYLIB_PATH", "/no/such/libonnxruntime.so").args(["check", "--config"]).arg(&cfg));
    assert!(!ok);
    assert!(stderr.contains("ONNX Runtime library not found") && stderr.contains("make setup"), "{stderr}");
}

#[test]
fn an_unopenable_camera_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = synthetic_station(10.0, "", "").replace(
        "kind = \"synthetic\"\nsurface = \"brushed_metal\"\ndefect_probability = 0.5\nseed = 11",
        "kind = \"opencv\"\nuri = \"/no/such/video.avi\"",
    );
    assert!(text.contains("opencv"));
    let cfg = write_config(dir.path(), &text);
    let (ok, _, stderr) = output(linesight().args(["check", "--config"]).arg(&cfg));
    assert!(!ok);
    assert!(stderr.contains("camera cam") && stderr.contains("/no/such/video.avi"), "{stderr}");
}

#[test]
fn results_are_json_lines_with_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &synthetic_station(0.0, "backpressure = \"block\"", ""));
    let (ok, stdout, stderr) =
        output(linesight_run().args(["--max-frames", "5", "--results", "-", "--config"]).arg(&cfg));
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    for field in [
        "camera",
        "seq",
        "part_id",
        "captured_unix_ms",
        "infer_start_unix_ms",
        "infer_end_unix_ms",
        "verdict_unix_ms",
        "verdict",
        "defects",
    ] {
        assert!(lines[0].get(field).is_some(), "missing {field}: {}", lines[0]);
    }
    for l in &lines {
        let t = |k: &str| l[k].as_f64().unwrap();
        assert!(t("captured_unix_ms") <= t("infer_start_unix_ms"));
        assert!(t("infer_start_unix_ms") <= t("infer_end_unix_ms"));
        assert!(t("infer_end_unix_ms") <= t("verdict_unix_ms"));
        assert!(["OK", "NG", "FAILSAFE"].contains(&l["verdict"].as_str().unwrap()));
    }
}

#[test]
fn sigterm_stops_capture_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &synthetic_station(20.0, "", ""));
    let summary = dir.path().join("summary.json");
    let results = dir.path().join("results.jsonl");
    let mut child = linesight_run()
        .arg("--config")
        .arg(&cfg)
        .arg("--summary")
        .arg(&summary)
        .arg("--results")
        .arg(&results)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "did not stop within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let cam = &summary["cameras"][0];
    let n = |k: &str| cam[k].as_u64().unwrap();
    assert!(n("captured") > 10, "{cam}");
    let terminal = n("ok")
        + n("ng")
        + n("failsafe_inference_error")
        + n("failsafe_timeout")
        + n("dropped_queue_full")
        + n("dropped_invalid_frame");
    assert_eq!(n("captured"), terminal, "{cam}");
    let lines = std::fs::read_to_string(&results).unwrap().lines().count() as u64;
    assert_eq!(lines, n("ok") + n("ng") + n("failsafe_inference_error") + n("failsafe_timeout"), "results flushed");
    // Where the CPU went: every pipeline stage's threads, within the whole process's.
    let cpu = &summary["cpu_s"];
    let s = |k: &str| cpu[k].as_f64().unwrap_or_else(|| panic!("no cpu_s.{k}: {cpu}"));
    for stage in ["camera", "preprocess", "infer", "assemble"] {
        assert!(s(stage) >= 0.0, "{cpu}");
    }
    assert!(s("infer") > 0.0, "inference ran on a core: {cpu}");
    let stages: f64 = ["camera", "preprocess", "infer", "assemble"].iter().map(|k| s(k)).sum();
    // The process figure is in 10 ms ticks; the stages' in nanoseconds.
    assert!(s("process") + 0.02 >= stages, "the process used at least its stages' CPU: {cpu}");
}

#[test]
fn an_unavailable_gpu_provider_falls_back_to_cpu_with_a_clear_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = synthetic_station(10.0, "", "").replace("[model]\n", "[model]\nprovider = \"cuda\"\n");
    let cfg = write_config(dir.path(), &text);
    let (ok, stdout, stderr) = output(linesight().env("LINESIGHT_LOG", "info").args(["check", "--config"]).arg(&cfg));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("OK"));
    assert!(stderr.contains("falling back to CPU"), "{stderr}");
}

#[test]
fn a_model_whose_inputs_do_not_match_its_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The hash still matches (the ONNX file is intact); the manifest's input size does not.
    let model = edited_demo_model(dir.path(), |manifest| manifest.replacen("width = 256", "width = 320", 1));
    let text = synthetic_station(10.0, "", "").replace(&demo_model(), &model.display().to_string());
    let cfg = write_config(dir.path(), &text);
    let (ok, _, stderr) = output(linesight().args(["check", "--config"]).arg(&cfg));
    assert!(!ok);
    assert!(stderr.contains("does not match its manifest") && stderr.contains("W=320"), "{stderr}");
}
