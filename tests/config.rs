//! Config files: every example in the repository is accepted; bad ones are refused with every
//! problem listed, each with its field path and value.

use linesight::config::{self, LoadError, timing};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    assert!(problem.contains("overlaps the status block (holding registers 0..=9)"), "{problem}");
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

/// Every section the loader knows, each with at least one key: the demo station plus a folder
/// and an OpenCV camera, results, and a line with every adapter.
fn every_section() -> String {
    demo_with(
        r#"
[[camera]]
id = "replay"
[camera.source]
kind = "folder"
path = "configs"

[[camera]]
id = "usb"
[camera.source]
kind = "opencv"
uri = "0"

[outputs]
results = "-"

[line]
delay_ms = 250
[line.modbus]
address = "127.0.0.1:502"
[line.modbus.map]
input_register = 100
[line.mqtt]
broker = "127.0.0.1:1883"
[line.webhook]
url = "http://127.0.0.1:9/x"
[line.command]
"#,
    )
}

fn load_errors(text: &str) -> config::ConfigErrors {
    match load(text) {
        Err(LoadError::Invalid { errors, .. }) => errors,
        other => panic!("expected every problem in one list, got {other:?}"),
    }
}

#[test]
fn every_unknown_key_is_reported_at_once_with_its_path_and_a_suggestion() {
    let text = every_section()
        .replacen("[station]", "nonsense_key = 1\n[cameras]\nfps = 3\n[station]", 1)
        .replacen("fps = 5", "fsp = 5", 1)
        .replacen("kind = \"folder\"", "kind = \"folder\"\nnonsense_key = true\nlooping_ = false", 1)
        .replacen("workers = 1", "workers = 0\nthreads = 4", 1)
        .replacen("input_register = 100", "input_registr = 100", 1)
        .replacen("max_count = 0", "max_count = 0\nmin_scor = 0.5", 1);
    let errors = load_errors(&text);
    let find = |path: &str| {
        errors.0.iter().find(|e| e.path == path).unwrap_or_else(|| panic!("{path} not reported in:\n{errors}"))
    };
    assert!(find("nonsense_key").problem.contains("unknown key in the top level"), "{errors}");
    assert!(find("cameras").problem.contains("did you mean `camera`?"), "{errors}");
    assert!(find("camera[0].fsp").problem.contains("did you mean `fps`?"), "{errors}");
    // A key in the source table, whose struct serde picks by `kind`.
    let nonsense = find("camera[2].source.nonsense_key");
    assert_eq!(nonsense.value, "true");
    assert!(nonsense.problem.contains("path, looping") || nonsense.problem.contains("kind, path, looping"), "{errors}");
    assert!(find("camera[2].source.looping_").problem.contains("did you mean `looping`?"), "{errors}");
    assert!(find("model.threads").problem.contains("did you mean `intra_threads`?"), "{errors}");
    assert!(find("line.modbus.map.input_registr").problem.contains("`input_register`"), "{errors}");
    assert!(find("rule[0].min_scor").problem.contains("`min_score`"), "{errors}");
    // The invalid values are in the same report.
    find("model.workers");
    assert_eq!(errors.0.len(), 9, "{errors}");
}

/// A key the loader does not know is refused in every section and every array entry (so no
/// section's keys are silently ignored, however the struct behind it is parsed).
#[test]
fn an_unknown_key_is_refused_in_every_section() {
    let base = every_section();
    load(&base).unwrap_or_else(|e| panic!("the every-section config must be valid: {e}"));
    let table: toml::Table = toml::from_str(&base).unwrap();
    // Add `zz_unknown` to every table, recording where.
    fn plant(value: &mut toml::Value, path: String, planted: &mut Vec<String>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t.iter_mut() {
                    let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    plant(v, child, planted);
                }
                t.insert("zz_unknown".into(), toml::Value::Integer(1));
                planted.push(if path.is_empty() { "zz_unknown".into() } else { format!("{path}.zz_unknown") });
            }
            toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                for (i, item) in items.iter_mut().enumerate() {
                    plant(item, format!("{path}[{i}]"), planted);
                }
            }
            _ => {}
        }
    }
    let mut value = toml::Value::Table(table);
    let mut planted = Vec::new();
    plant(&mut value, String::new(), &mut planted);
    assert!(planted.len() >= 20, "{planted:?}");
    let errors = load_errors(&toml::to_string(&value).unwrap());
    let reported: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    for path in &planted {
        assert!(reported.contains(&path.as_str()), "{path} not reported: {reported:?}");
    }
    assert_eq!(reported.len(), planted.len(), "{errors}");
}

#[test]
fn a_wrong_type_is_reported_with_the_unknown_keys() {
    let text = config::DEMO_CONFIG.replacen("fps = 5", "fps = \"fast\"\nfsp = 5", 1);
    let Err(LoadError::Parse { message, .. }) = load(&text) else { panic!("expected a parse error") };
    assert!(
        message.contains("fps") && message.contains("camera[0].fsp") && message.contains("did you mean"),
        "{message}"
    );
}

/// Values that validation used to accept and that killed a thread at run time, and the limits
/// of every rate and delay: each refused at load with its path, value and range.
#[test]
fn rates_delays_and_sizes_outside_their_ranges_are_refused() {
    let cases: [(&str, &str, &str, &str); 12] = [
        ("fps = 5", "fps = 1e-20", "camera[0].fps", "10000 frames per second"),
        ("fps = 5", "fps = 10001", "camera[0].fps", "10000"),
        ("fps = 5", "fps = nan", "camera[0].fps", "frames per second"),
        ("fps = 5", "fps = 5\nstall_timeout_ms = 3600001", "camera[0].stall_timeout_ms", "1 hour"),
        ("fps = 5", "fps = 5\nreconnect_max_ms = 99999999", "camera[0].reconnect_max_ms", "1 hour"),
        ("fps = 5", "fps = 5\nroi_px = [[4294967295, 0, 10, 10]]", "camera[0].roi_px[0]", "65536"),
        ("fps = 5", "fps = 5\nmm_per_px = inf", "camera[0].mm_per_px", "at most 1000"),
        (
            "verdict_deadline_ms = 1000",
            "verdict_deadline_ms = 9223372036854775807",
            "pipeline.verdict_deadline_ms",
            "1 hour",
        ),
        (
            "retention_days = 7",
            "retention_days = 7\nmax_inspections = 9223372036854775807",
            "store.max_inspections",
            "0 = no limit",
        ),
        ("workers = 1", "workers = 1\ndevice_id = -1", "model.device_id", "GPU index"),
        ("whiten = 0.5", "whiten = 0.5\nthreshold_sigmas = 1e30", "model.teach.threshold_sigmas", "pass every part"),
        ("whiten = 0.5", "whiten = 0.5\nsize = 65536", "model.teach.size", "32..=2048"),
    ];
    for (from, to, path, says) in cases {
        let text = config::DEMO_CONFIG.replacen(from, to, 1);
        assert_ne!(text, config::DEMO_CONFIG, "{from} not in the demo config");
        let errors = load_errors(&text);
        let e = errors.0.iter().find(|e| e.path == path).unwrap_or_else(|| panic!("{to}: {path} not in {errors}"));
        assert!(e.problem.contains(says), "{to}: {}", e.problem);
    }
    let line = |settings: &str| demo_with(&format!("[line]\n{settings}\n[line.command]\n"));
    for (settings, path, says) in [
        ("delay_ms = 1e22", "line.delay_ms", "1 hour"),
        ("delay_ms = inf", "line.delay_ms", "1 hour"),
        ("delay_ms = 0", "line.delay_ms", "more than 0"),
        ("delay_counts = 100\nencoder_counts_per_s = -5", "line.encoder_counts_per_s", "> 0"),
        ("delay_counts = 9223372036854775807\nencoder_counts_per_s = 1000", "line.delay_counts", "3600 s"),
        ("delay_ms = 100\nmargin_ms = 1e300", "line.margin_ms", "3600000"),
        ("delay_ms = 100\nheartbeat_ms = 86400000", "line.heartbeat_ms", "60000"),
        ("delay_ms = 100\ncpu_wake_latency_us = 4294967295", "line.cpu_wake_latency_us", "1000000"),
    ] {
        let errors = load_errors(&line(settings));
        let e =
            errors.0.iter().find(|e| e.path == path).unwrap_or_else(|| panic!("{settings}: {path} not in {errors}"));
        assert!(e.problem.contains(says), "{settings}: {}", e.problem);
    }
    // The limits themselves are accepted, and convert exactly.
    let edge = load(&line("delay_ms = 3600000\nmargin_ms = 3599999\nheartbeat_ms = 60000")).unwrap();
    let l = edge.config.line.unwrap();
    assert_eq!((l.delay(), l.margin()), (Duration::from_secs(3600), Duration::from_millis(3_599_999)));
    let slow = load(&config::DEMO_CONFIG.replacen("fps = 5", "fps = 0.000278", 1)).unwrap();
    assert!(slow.config.cameras[0].frame_period().unwrap() <= timing::MAX_DURATION);
}

/// One numeric setting of the generated configs: where it goes and the value put there.
#[derive(Clone, Debug)]
struct Setting {
    table: &'static [&'static str],
    key: &'static str,
    value: toml::Value,
}

/// Every rate, duration, size and count of the config, by the section that holds it.
const NUMERIC: &[(&[&str], &str)] = &[
    (&["camera", "0"], "fps"),
    (&["camera", "0"], "queue_depth"),
    (&["camera", "0"], "stall_timeout_ms"),
    (&["camera", "0"], "reconnect_initial_ms"),
    (&["camera", "0"], "reconnect_max_ms"),
    (&["camera", "0"], "mm_per_px"),
    (&["camera", "1"], "fps"),
    (&["camera", "0", "source"], "width"),
    (&["camera", "0", "source"], "height"),
    (&["camera", "0", "source"], "defect_probability"),
    (&["camera", "0", "source"], "seed"),
    (&["camera", "3", "source"], "read_timeout_ms"),
    (&["model"], "workers"),
    (&["model"], "intra_threads"),
    (&["model"], "device_id"),
    (&["model", "teach"], "synthetic_parts"),
    (&["model", "teach"], "size"),
    (&["model", "teach"], "grid_stride"),
    (&["model", "teach"], "coreset_ratio"),
    (&["model", "teach"], "max_bank_rows"),
    (&["model", "teach"], "local_scale_k"),
    (&["model", "teach"], "whiten"),
    (&["model", "teach"], "blur_sigma_px"),
    (&["model", "teach"], "top_fraction"),
    (&["model", "teach"], "threshold_sigmas"),
    (&["model", "teach"], "holdout_fraction"),
    (&["model", "teach"], "max_overkill"),
    (&["model", "teach"], "target_escape"),
    (&["model", "teach"], "time_budget_s"),
    (&["pipeline"], "tile_overlap_px"),
    (&["pipeline"], "max_batch"),
    (&["pipeline"], "max_wait_us"),
    (&["pipeline"], "preprocess_workers"),
    (&["pipeline"], "max_in_flight"),
    (&["pipeline"], "verdict_deadline_ms"),
    (&["rule", "0"], "min_score"),
    (&["rule", "0"], "min_area_px"),
    (&["rule", "0"], "max_count"),
    (&["store"], "retention_days"),
    (&["store"], "max_inspections"),
    (&["archive"], "ok_sample_rate"),
    (&["archive"], "max_bytes"),
    (&["archive"], "max_age_days"),
    (&["api"], "utc_offset_minutes"),
    (&["api"], "stats_cache_ms"),
    (&["line"], "delay_ms"),
    (&["line"], "delay_counts"),
    (&["line"], "encoder_counts_per_s"),
    (&["line"], "margin_ms"),
    (&["line"], "pulse_ms"),
    (&["line"], "fire_window_ms"),
    (&["line"], "heartbeat_ms"),
    (&["line"], "cpu_wake_latency_us"),
    (&["line", "modbus"], "timeout_ms"),
    (&["line", "modbus"], "poll_ms"),
    (&["line", "modbus"], "reconnect_initial_ms"),
    (&["line", "modbus"], "reconnect_max_ms"),
    (&["line", "modbus"], "results_buffer"),
    (&["line", "modbus"], "unit_id"),
    (&["line", "mqtt"], "keep_alive_s"),
    (&["line", "webhook"], "timeout_ms"),
    (&["line", "webhook"], "retries"),
];

/// Extreme and ordinary numbers, as TOML integers and floats.
fn number() -> impl Strategy<Value = toml::Value> {
    use toml::Value::{Float, Integer};
    prop_oneof![
        prop::sample::select(vec![
            0i64,
            -1,
            1,
            2,
            10,
            100,
            1000,
            3_600_000,
            3_600_001,
            i64::MAX,
            i64::MIN,
            u32::MAX as i64
        ])
        .prop_map(Integer),
        any::<i64>().prop_map(Integer),
        (0i64..10_000_000).prop_map(Integer),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            1e-20,
            1e-300,
            1e22,
            f64::MAX,
            f64::MIN_POSITIVE,
            -1.0,
            0.5,
            3_600_000.0,
            3_600_000.000_001,
            1.0 / 3600.0,
            10_000.0,
        ])
        .prop_map(Float),
        any::<f64>().prop_map(Float),
        (0.0f64..1e7).prop_map(Float),
    ]
}

fn setting() -> impl Strategy<Value = Setting> {
    (prop::sample::select(NUMERIC), number()).prop_map(|((table, key), value)| Setting { table, key, value })
}

/// `base` with each setting written in (a `delay_counts` replaces `delay_ms`, as it must).
fn with_settings(base: &toml::Table, settings: &[Setting]) -> String {
    let mut root = toml::Value::Table(base.clone());
    for s in settings {
        let mut at = &mut root;
        for step in s.table {
            at = match at {
                toml::Value::Table(t) => t.get_mut(*step).unwrap(),
                toml::Value::Array(a) => &mut a[step.parse::<usize>().unwrap()],
                _ => unreachable!(),
            };
        }
        let t = at.as_table_mut().unwrap();
        if s.key == "delay_counts" {
            t.remove("delay_ms");
        }
        t.insert(s.key.into(), s.value.clone());
    }
    toml::to_string(&root).unwrap()
}

/// The durations the run time derives from a loaded config, computed as the run time computes
/// them (and through the `timing` helpers): none of this may panic for a config `check` accepts.
fn derive_every_duration(loaded: &config::LoadedConfig) {
    let cfg = &loaded.config;
    let now = Instant::now();
    for cam in &cfg.cameras {
        if cam.fps > 0.0 {
            // What the camera thread does with a non-zero fps.
            let period = Duration::from_secs_f64(1.0 / cam.fps);
            assert_eq!(timing::checked_frame_period(cam.fps), Some(period));
            assert_eq!(cam.frame_period(), Some(period));
            assert!(period <= timing::MAX_DURATION && now.checked_add(period).is_some());
        } else {
            assert_eq!(cam.fps, 0.0);
            assert_eq!(cam.frame_period(), None);
        }
        for (raw, d) in [
            (cam.stall_timeout_ms, cam.stall_timeout()),
            (cam.reconnect_initial_ms, cam.reconnect_initial()),
            (cam.reconnect_max_ms, cam.reconnect_max()),
        ] {
            assert_eq!(Duration::from_millis(raw), d, "clamped: {raw}");
            assert!(now.checked_add(d * 2).is_some());
        }
    }
    let pl = &cfg.pipeline;
    assert_eq!(pl.verdict_deadline(), Duration::from_millis(pl.verdict_deadline_ms));
    assert_eq!(pl.max_wait(), Duration::from_micros(pl.max_wait_us));
    if let Some(line) = &cfg.line {
        // The line runner's conversions, as written there.
        let delay = Duration::from_secs_f64(line.delay_s());
        let margin = Duration::from_secs_f64(line.margin_ms / 1000.0);
        let pulse = Duration::from_secs_f64(line.pulse_ms / 1000.0);
        let fire_window = Duration::from_secs_f64(line.fire_window_ms.unwrap_or(line.pulse_ms / 2.0) / 1000.0);
        assert_eq!(timing::checked_line_delay(line), Some(delay));
        assert_eq!(
            (line.delay(), line.margin(), line.pulse(), line.fire_window()),
            (delay, margin, pulse, fire_window)
        );
        assert!(margin < delay && !delay.is_zero());
        let deadline = now.checked_add(delay).expect("capture + delay");
        assert!(deadline.checked_add(fire_window + pulse).is_some());
        assert!(deadline.checked_sub(margin).is_some());
        assert_eq!(line.heartbeat(), Duration::from_millis(line.heartbeat_ms));
        if let Some(m) = &line.modbus {
            assert!(m.reconnect_max() <= timing::MAX_DURATION && m.timeout() <= timing::MAX_DURATION);
            assert_eq!(m.reconnect_max(), Duration::from_millis(m.reconnect_max_ms));
            assert_eq!(m.poll(), Duration::from_millis(m.poll_ms));
        }
        if let Some(w) = &line.webhook {
            assert_eq!(w.timeout(), Duration::from_millis(w.timeout_ms));
        }
    }
}

/// How many generated cases: `PROPTEST_CASES` when set (`make fuzz`-style long runs), else `ci`.
fn cases(ci: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(ci)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3000), ..ProptestConfig::default() })]

    /// Configs of valid structure with extreme numbers anywhere: loading never panics, and a
    /// config it accepts gives durations the run time can compute without panicking.
    #[test]
    fn loading_extreme_numbers_refuses_or_gives_usable_durations(
        settings in prop::collection::vec(setting(), 1..6),
    ) {
        thread_local! {
            static BASE: toml::Table = toml::from_str(&every_section()).unwrap();
        }
        let text = BASE.with(|base| with_settings(base, &settings));
        if let Ok(loaded) = load(&text) {
            derive_every_duration(&loaded);
        }
    }
}
