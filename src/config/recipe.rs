//! `[[recipe]]`: the named inspection programs a station switches between while it runs (a
//! product change on the line, "job change" on Cognex and Keyence devices): each its own model
//! package, rules, regions of interest and threshold. Without any `[[recipe]]` the station has
//! one, named [`DEFAULT_RECIPE`], made of `[model]` and `[[rule]]`.

use super::{LoadedConfig, ModelTeachConfig, RuleConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The recipe of a station without `[[recipe]]`.
pub const DEFAULT_RECIPE: &str = "default";

/// One `[[recipe]]`.
#[derive(Clone, Debug, Deserialize)]
pub struct RecipeConfig {
    /// Letters, digits, `-` and `_`; what the API, the PLC register map and records call it.
    pub name: String,
    /// Model package folder (relative paths start at the config file's folder).
    pub package: PathBuf,
    /// Teach this recipe's model on first start, like `[model.teach]`; `synthetic_parts` come
    /// from the synthetic cameras this recipe starts on (all of them when it starts on none).
    #[serde(default)]
    pub teach: Option<ModelTeachConfig>,
    /// Decision rules; absent: the station's `[[rule]]`.
    #[serde(default, rename = "rule")]
    pub rules: Option<Vec<RuleConfig>>,
    /// Anomaly models: the image-score threshold to judge with, instead of the package's.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Per camera id: its regions of interest under this recipe, instead of the camera's `roi_px`.
    #[serde(default)]
    pub roi_px: BTreeMap<String, Vec<[u32; 4]>>,
    /// The cameras that start with this recipe (the others start with the first recipe).
    #[serde(default)]
    pub cameras: Vec<String>,
}

impl LoadedConfig {
    /// The station's recipes in config order: its `[[recipe]]`s, or the one made of `[model]`
    /// and `[[rule]]`.
    pub fn recipes(&self) -> Vec<RecipeConfig> {
        let cfg = &self.config;
        if !cfg.recipes.is_empty() {
            return cfg.recipes.clone();
        }
        vec![RecipeConfig {
            name: DEFAULT_RECIPE.into(),
            package: cfg.model.package.clone(),
            teach: cfg.model.teach.clone(),
            rules: None,
            threshold: None,
            roi_px: BTreeMap::new(),
            cameras: Vec::new(),
        }]
    }

    /// Per camera in config order: the index (in [`Self::recipes`]) of the recipe it starts with.
    pub fn starting_recipes(&self) -> Vec<u16> {
        let recipes = self.recipes();
        self.config
            .cameras
            .iter()
            .map(|cam| recipes.iter().position(|r| r.cameras.contains(&cam.id)).unwrap_or(0) as u16)
            .collect()
    }
}

/// Whether `name` can name a recipe: 1 to 64 letters, digits, `-` and `_`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
