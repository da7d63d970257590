//! Shared helpers for the integration tests: station configs written to temporary folders,
//! pointing at the repository's demo model.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn demo_model() -> String {
    repo().join("models/demo").display().to_string()
}

/// A one-camera synthetic station config.
pub fn synthetic_station(fps: f64, extra_camera: &str, extra_pipeline: &str) -> String {
    format!(
        r#"
[[camera]]
id = "cam"
fps = {fps}
{extra_camera}
[camera.source]
kind = "synthetic"
surface = "brushed_metal"
defect_probability = 0.5
seed = 11

[model]
package = "{model}"

[pipeline]
{extra_pipeline}

[[rule]]
class = "defect"
min_score = 0.5
min_area_px = 12
"#,
        model = demo_model()
    )
}

/// A one-camera folder-replay station config.
pub fn folder_station(dir: &Path) -> String {
    format!(
        r#"
[[camera]]
id = "replay"
[camera.source]
kind = "folder"
path = "{dir}"

[model]
package = "{model}"
"#,
        dir = dir.display(),
        model = demo_model()
    )
}

/// Write config text into `dir/station.toml` and return its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("station.toml");
    std::fs::write(&path, text).unwrap();
    path
}
