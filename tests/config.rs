//! Config files: every example in the repository is accepted; bad ones are refused with every
//! problem listed, each with its field path and value.

use linesight::config::{self, LoadError};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_example_config_in_the_repository_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if path.file_name().is_some_and(|n| n == "demo.toml") {
                // The built-in demo config: its relative paths start at the project folder.
                let text = std::fs::read_to_string(&path).unwrap();
                config::load_str(&text, "demo.toml", repo()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            } else {
                config::load_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            seen += 1;
        }
    }
    assert!(seen >= 3, "expected the example configs, found {seen}");
    config::demo(repo()).expect("built-in demo config");
}

fn load(text: &str) -> Result<config::LoadedConfig, LoadError> {
    config::load_str(text, "test.toml", repo())
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let text = config::DEMO_CONFIG.replace("[model]", "[model]\nthreads = 4");
    let err = load(&text).unwrap_err().to_string();
    assert!(err.contains("threads"), "{err}");
    let text = config::DEMO_CONFIG.replacen("surface = ", "surfce = ", 1);
    let err = load(&text).unwrap_err().to_string();
    assert!(err.contains("surfce"), "{err}");
}

#[test]
fn every_invalid_setting_is_reported_at_once_with_path_and_value() {
    let text = r#"
[[camera]]
id = "a b"
queue_depth = 0
[camera.source]
kind = "synthetic"
defect_probability = 1.5

[[camera]]
id = "cam2"
[camera.source]
kind = "folder"
path = "no/such/folder"

[model]
package = "no/such/model"
workers = 0

[pipeline]
max_batch = 0

[[rule]]
class = "defect"
min_score = 2.0
"#;
    let LoadError::Invalid { errors, .. } = load(text).unwrap_err() else { panic!("expected validation errors") };
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "camera[0].id",
        "camera[0].queue_depth",
        "camera[0].source.defect_probability",
        "camera[1].source.path",
        "model.package",
        "model.workers",
        "pipeline.max_batch",
        "rule[0].min_score",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
    let bad = errors.0.iter().find(|e| e.path == "camera[0].source.defect_probability").unwrap();
    assert_eq!(bad.value, "1.5");
    assert!(errors.to_string().lines().count() >= 8);
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let loaded = config::load_file(&repo().join("configs/folder-replay.toml")).unwrap();
    assert_eq!(loaded.resolve(Path::new("x")), repo().join("configs").join("x"));
}

#[test]
fn the_admin_listener_defaults_to_loopback_and_a_bad_address_is_reported() {
    let demo = config::demo(repo()).unwrap();
    assert!(demo.config.admin.enabled);
    assert_eq!(demo.config.admin.listen, config::DEFAULT_ADMIN_LISTEN);
    let text = config::DEMO_CONFIG.replace("listen = \"127.0.0.1:9464\"", "listen = \"localhost\"");
    let LoadError::Invalid { errors, .. } = load(&text).unwrap_err() else { panic!("expected validation errors") };
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!((errors.0[0].path.as_str(), errors.0[0].value.as_str()), ("admin.listen", "\"localhost\""));
}

/// The demo station with `extra` appended (sections it does not have yet).
fn demo_with(extra: &str) -> String {
    format!("{}\n{extra}", config::DEMO_CONFIG)
}

fn invalid_paths(text: &str) -> Vec<(String, String)> {
    let LoadError::Invalid { errors, .. } = load(text).unwrap_err() else { panic!("expected validation errors") };
    errors.0.iter().map(|e| (e.path.clone(), e.problem.clone())).collect()
}

#[test]
fn archive_settings_are_checked() {
    let text = config::DEMO_CONFIG.replace("ok_sample_rate = 0.01", "ok_sample_rate = 1.5\nmax_age_days = 99999");
    let paths = invalid_paths(&text);
    for expected in ["archive.ok_sample_rate", "archive.max_age_days"] {
        assert!(paths.iter().any(|(p, _)| p == expected), "missing {expected} in {paths:?}");
    }
}

#[test]
fn a_valid_line_section_loads_with_its_defaults() {
    let loaded = load(&demo_with("[line]\ndelay_ms = 250\n[line.modbus]\naddress = \"127.0.0.1:502\"\n")).unwrap();
    let line = loaded.config.line.expect("[line] parsed");
    assert_eq!(line.delay_s(), 0.25);
    assert_eq!(line.failsafe, config::FailsafeAction::Reject, "the fail-safe defaults to reject");
    let modbus = line.modbus.unwrap();
    assert_eq!((modbus.map.status_register, modbus.map.input_register), (0, 100));
    let encoder =
        load(&demo_with("[line]\ndelay_counts = 3000\nencoder_counts_per_s = 12000\n[line.command]\n")).unwrap();
    assert_eq!(encoder.config.line.unwrap().delay_s(), 0.25, "3000 counts at 12000 counts/s");
}

#[test]
fn invalid_line_settings_are_refused_at_check_time_with_their_paths() {
    let text = demo_with(
        r#"
[line]
delay_counts = 100
margin_ms = -1
pulse_ms = 0
failsafe = "reject"
[line.modbus]
address = "plc:502"
unit_id = 300
results_buffer = 0
[line.modbus.map]
status_register = 65530
input_register = 65534
reject_coil = 3
stop_line_coil = 3
[line.mqtt]
broker = "localhost"
topic_prefix = "plant/#"
[line.webhook]
url = "ftp://x"
"#,
    );
    let paths = invalid_paths(&text);
    for expected in [
        "line.encoder_counts_per_s",
        "line.margin_ms",
        "line.pulse_ms",
        "line.modbus.address",
        "line.modbus.unit_id",
        "line.modbus.results_buffer",
        "line.modbus.map.status_register",
        "line.modbus.map.input_register",
        "line.modbus.map.stop_line_coil",
        "line.mqtt.broker",
        "line.mqtt.topic_prefix",
        "line.webhook.url",
    ] {
        assert!(paths.iter().any(|(p, _)| p == expected), "missing {expected} in {paths:?}");
    }
    // Overlapping blocks say which registers collide.
    let overlap = demo_with(
        "[line]\ndelay_ms = 100\n[line.modbus]\naddress = \"127.0.0.1:502\"\n[line.modbus.map]\ninput_register = 4\n",
    );
    let paths = invalid_paths(&overlap);
    let (_, problem) = paths.iter().find(|(p, _)| p == "line.modbus.map.input_register").expect("overlap refused");
    assert!(problem.contains("overlaps the status block (holding registers 0..=8)"), "{problem}");
    // A line without any adapter, and a margin that leaves no time, are refused too.
    let paths = invalid_paths(&demo_with("[line]\ndelay_ms = 10\nmargin_ms = 10\n"));
    assert!(paths.iter().any(|(p, _)| p == "line"), "{paths:?}");
    assert!(paths.iter().any(|(p, _)| p == "line.margin_ms"), "{paths:?}");
}

#[test]
fn a_camera_triggered_by_the_line_needs_the_plc_adapter() {
    let triggered = config::DEMO_CONFIG.replacen("fps = 5", "fps = 5\ntrigger = \"line\"", 1);
    let paths = invalid_paths(&triggered);
    assert!(paths.iter().any(|(p, _)| p == "camera.trigger"), "{paths:?}");
    let with_plc = format!("{triggered}\n[line]\ndelay_ms = 100\n[line.modbus]\naddress = \"127.0.0.1:502\"\n");
    load(&with_plc).expect("a triggered camera with [line.modbus] is valid");
}
