//! Station configuration: one TOML file describes cameras, model, pipeline, decision rules and
//! outputs.
//!
//! Parsing is strict (`deny_unknown_fields` everywhere, so a misspelt key is an error rather than
//! a silently ignored setting); [`validate`] then checks the meaning of every field and returns
//! every problem at once, each with its field path and bad value.

mod line;
mod types;
mod validate;

pub use line::*;
pub use types::*;
pub use validate::{ConfigError, ConfigErrors};

use crate::calibration::CameraGeometry;
use std::path::{Path, PathBuf};

/// The demo station's configuration, used by `linesight run` without `--config`.
pub const DEMO_CONFIG: &str = include_str!("../../configs/demo.toml");

/// A parsed and validated station config, plus the folder that relative paths in it are
/// resolved against.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: StationConfig,
    pub base_dir: PathBuf,
    /// Per camera, in config order: its calibration (loaded and checked) and scale.
    pub geometry: Vec<CameraGeometry>,
}

impl LoadedConfig {
    /// Resolve a path from the config: relative paths are relative to the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}: {source} (check the path given to --config)")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin} has {} invalid setting(s):\n{errors}", errors.0.len())]
    Invalid { origin: String, errors: ConfigErrors },
}

/// Read, parse and validate a config file.
pub fn load_file(path: &Path) -> Result<LoadedConfig, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() { PathBuf::from(".") } else { base_dir };
    load_str(&text, &path.display().to_string(), base_dir)
}

/// Parse and validate config text; `origin` names it in errors, `base_dir` resolves its paths.
pub fn load_str(text: &str, origin: &str, base_dir: PathBuf) -> Result<LoadedConfig, LoadError> {
    let config: StationConfig = toml::from_str(text).map_err(|e| LoadError::Parse {
        origin: origin.to_string(),
        // toml's message already names the key and line; keep it on one line.
        message: e.to_string().trim().replace('\n', " "),
    })?;
    let mut loaded = LoadedConfig { config, base_dir, geometry: Vec::new() };
    loaded.geometry =
        validate::validate(&loaded).map_err(|errors| LoadError::Invalid { origin: origin.to_string(), errors })?;
    Ok(loaded)
}

/// The demo station's config. Its relative paths (the model) resolve against `project_dir`.
pub fn demo(project_dir: PathBuf) -> Result<LoadedConfig, LoadError> {
    load_str(DEMO_CONFIG, "built-in demo config", project_dir)
}
