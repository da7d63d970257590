//! Station configuration: one TOML file describes cameras, model, pipeline, decision rules and
//! outputs.
//!
//! Parsing is strict: an unknown key (a misspelt one, say) is an error rather than a silently
//! ignored setting, and every unknown key is reported, with a "did you mean" where one is close
//! ([`unknown`]). [`validate`] then checks the meaning of every field against its documented range
//! and returns every problem at once, the unknown keys included, each with its field path and bad
//! value. [`timing`] turns the accepted values into the durations the station runs on.

pub mod fleet;
mod install;
mod line;
pub mod recipe;
mod threads;
pub mod timing;
mod types;
mod unknown;
mod validate;

pub use install::{default_backbone, project_dir};
pub use line::*;
pub use recipe::{DEFAULT_RECIPE, RecipeConfig};
pub use threads::available_cores;
pub use types::*;
pub use validate::{ConfigError, ConfigErrors, check_rules};

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
///
/// Every unknown key and every invalid value is reported in one [`LoadError::Invalid`]. A value
/// of the wrong type (or a missing required key) stops the typed parse: that is a
/// [`LoadError::Parse`], which still lists the unknown keys found.
pub fn load_str(text: &str, origin: &str, base_dir: PathBuf) -> Result<LoadedConfig, LoadError> {
    // toml's message already names the key and line; keep it on one line.
    let parse_error = |e: toml::de::Error| e.to_string().trim().replace('\n', " ");
    let table: toml::Table =
        toml::from_str(text).map_err(|e| LoadError::Parse { origin: origin.to_string(), message: parse_error(e) })?;
    let mut unknown = unknown::walk(&table);
    let mut ignored = Vec::new();
    let typed = toml::Deserializer::parse(text)
        .and_then(|de| serde_ignored::deserialize(de, |path| ignored.push(unknown::steps(&path))));
    // The typed parse's safety net: any key it ignored that the walk has no schema for.
    for path in ignored {
        let shown = unknown::display(&path);
        if !unknown.iter().any(|e| e.path == shown) {
            unknown.push(unknown::unknown(&path, unknown::lookup(&table, &path), None));
        }
    }
    let mut config: StationConfig = match typed {
        Ok(config) => config,
        Err(e) if unknown.is_empty() => {
            return Err(LoadError::Parse { origin: origin.to_string(), message: parse_error(e) });
        }
        Err(e) => {
            let message =
                format!("{}; and {} unknown key(s):\n{}", parse_error(e), unknown.len(), ConfigErrors(unknown));
            return Err(LoadError::Parse { origin: origin.to_string(), message });
        }
    };
    threads::fill_unset(&mut config, &table, threads::available_cores());
    let mut loaded = LoadedConfig { config, base_dir, geometry: Vec::new() };
    match validate::validate(&loaded) {
        Ok(geometry) if unknown.is_empty() => {
            loaded.geometry = geometry;
            Ok(loaded)
        }
        Ok(_) => Err(LoadError::Invalid { origin: origin.to_string(), errors: ConfigErrors(unknown) }),
        Err(ConfigErrors(invalid)) => {
            unknown.extend(invalid);
            Err(LoadError::Invalid { origin: origin.to_string(), errors: ConfigErrors(unknown) })
        }
    }
}

/// The demo station's config. Its relative paths (the model) resolve against `project_dir`.
pub fn demo(project_dir: PathBuf) -> Result<LoadedConfig, LoadError> {
    load_str(DEMO_CONFIG, "built-in demo config", project_dir)
}
