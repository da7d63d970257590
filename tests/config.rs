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
