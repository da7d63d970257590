//! Recipes through the API: which recipe each camera runs, and switching it while the station
//! runs (`POST /api/v1/recipes/{name}/activate`, operator token). A switch takes effect between
//! two frames of a camera (see `pipeline::recipe_switch`); the answer says, per camera, the first
//! frame judged under the new recipe.

use super::error::ApiError;
use crate::config::RuleConfig;
use crate::pipeline::{LiveThresholds, RecipeSwitch, Slots};
use crate::sinks::RecipeContext;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::time::Duration;

/// How long an activation waits for each camera's next frame before it answers without that
/// camera's first sequence number (an idle or triggered camera: its next frame is judged under
/// the new recipe whenever it comes).
pub const ACTIVATION_WAIT: Duration = Duration::from_secs(5);

/// What the API knows of the running station's recipes, set once it is built: the switch
/// (recipe names, camera ids, which model slot each recipe and camera runs), the live
/// thresholds and each slot's model, by slot.
pub struct LiveRecipes {
    pub switch: Arc<RecipeSwitch>,
    pub thresholds: Arc<LiveThresholds>,
    pub models: Arc<Slots<RecipeContext>>,
    /// Installs new models (`POST .../model`); none where the station cannot (tests).
    pub installer: Option<Arc<crate::topology::Installer>>,
    /// Shadow models (`.../shadow`); none without a result store to keep their comparisons.
    pub shadows: Option<Arc<crate::shadow::Shadows>>,
}

impl LiveRecipes {
    /// A running station's.
    pub fn of(station: &crate::topology::Station) -> Self {
        Self {
            switch: Arc::clone(&station.switch),
            thresholds: Arc::clone(&station.thresholds),
            models: station.recipe_contexts(),
            installer: Some(Arc::clone(&station.installer)),
            shadows: None,
        }
    }
}

/// `PATCH /api/v1/recipes/{name}`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    #[serde(default)]
    pub threshold: Option<f32>,
    #[serde(default)]
    pub rules: Option<Json>,
}

/// `POST .../activate`'s body: the cameras to switch (all when left out).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    #[serde(default)]
    pub cameras: Option<Vec<String>>,
}

impl LiveRecipes {
    /// `GET /api/v1/recipes`.
    pub fn list(&self) -> Json {
        let recipes: Vec<Json> = (0..self.switch.recipes()).map(|r| self.recipe_json(r)).collect();
        json!({ "recipes": recipes })
    }

    /// One recipe as `GET /api/v1/recipes` lists it: the model of the slot it runs in.
    pub fn recipe_json(&self, recipe: usize) -> Json {
        let slot = self.switch.current_slot(recipe);
        let cameras = self.switch.camera_ids();
        let active: Vec<&str> = (0..cameras.len())
            .filter(|&c| self.switch.recipe_of(self.switch.wanted(c)) == Some(recipe as u16))
            .map(|c| cameras[c].as_str())
            .collect();
        let model = self.models.get(usize::from(slot));
        let package = self.installer.as_ref().and_then(|i| i.package_of(usize::from(slot)));
        json!({
            "name": self.switch.recipe_names().get(recipe),
            "model": {
                "name": model.map(|m| &m.model_name), "sha256": model.map(|m| &m.model_sha256),
                "package": package, "taught": package.as_deref().and_then(taught_summary),
            },
            "cameras": active, "threshold": self.thresholds.get(usize::from(slot)),
            "rules": model.and_then(|m| serde_json::from_str::<Json>(&m.rules_json).ok()),
        })
    }

    /// The cameras' ids, in config order.
    pub fn cameras(&self) -> &[String] {
        self.switch.camera_ids()
    }

    /// The model slot recipe `recipe` runs in now.
    pub fn slot(&self, recipe: usize) -> u16 {
        self.switch.current_slot(recipe)
    }

    /// The model recipe `recipe` runs now.
    pub fn model(&self, recipe: usize) -> Option<&RecipeContext> {
        self.models.get(usize::from(self.slot(recipe)))
    }

    /// The index of the recipe named `name`.
    pub fn index(&self, name: &str) -> Result<usize, ApiError> {
        let names = self.switch.recipe_names();
        names.iter().position(|r| r == name).ok_or_else(|| {
            ApiError::NotFound(format!("no recipe named {name:?}: the station has {}", names.join(", ")))
        })
    }

    /// Apply `change`'s threshold to recipe `name` from the next frame decided; returns (what,
    /// old, new) for the audit log. (Rules are an install: see [`parse_rules`].)
    pub fn change_threshold(&self, name: &str, threshold: f32) -> Result<(String, String, String), ApiError> {
        let recipe = self.index(name)?;
        let old = self
            .thresholds
            .set(usize::from(self.slot(recipe)), threshold)
            .map_err(|why| ApiError::BadRequest(format!("threshold {threshold}: {why}")))?;
        Ok(("recipe.threshold".into(), old.to_string(), threshold.to_string()))
    }

    /// The slot the recipe runs in and the camera indices an activation names; unknown ones are
    /// refused.
    pub fn resolve(&self, name: &str, activation: &Activation) -> Result<(u16, Vec<usize>), ApiError> {
        let recipe = self.index(name)?;
        let all = self.cameras();
        let cameras = match &activation.cameras {
            None => (0..all.len()).collect(),
            Some(ids) if ids.is_empty() => {
                return Err(ApiError::BadRequest("cameras: name at least one camera, or leave it out for all".into()));
            }
            Some(ids) => ids
                .iter()
                .map(|id| {
                    all.iter().position(|c| c == id).ok_or_else(|| {
                        ApiError::BadRequest(format!("no camera {id:?}: the station has {}", all.join(", ")))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok((self.slot(recipe), cameras))
    }

    /// Switch `cameras` to `recipe` and wait (up to [`ACTIVATION_WAIT`]) until each camera has
    /// stamped a frame with it. Returns, per camera id, the first frame under it (null: no
    /// frame yet) and what each camera ran before.
    pub async fn activate(&self, slot: u16, cameras: &[usize]) -> (Json, Vec<(String, String)>) {
        let ids = self.cameras();
        let before: Vec<(String, String)> = cameras
            .iter()
            .map(|&c| {
                let old = self.models.get(usize::from(self.switch.wanted(c))).map_or("?", |m| m.name.as_str());
                (ids[c].clone(), old.to_string())
            })
            .collect();
        let firsts = self.switch.switch_and_wait(slot, cameras, ACTIVATION_WAIT).await;
        let first_seq: serde_json::Map<String, Json> =
            cameras.iter().zip(firsts).map(|(&c, seq)| (ids[c].clone(), json!(seq))).collect();
        (Json::Object(first_seq), before)
    }

    /// [`Self::move_cameras`] for a thread outside any async runtime (a teach job).
    pub fn move_cameras_blocking(&self, from: u16, to: u16) -> Json {
        let cameras = self.switch.cameras_on(from);
        let firsts = self.switch.switch_and_wait_blocking(to, &cameras, ACTIVATION_WAIT);
        let ids = self.cameras();
        let first_seq: serde_json::Map<String, Json> =
            cameras.iter().zip(firsts).map(|(&c, seq)| (ids[c].clone(), json!(seq))).collect();
        Json::Object(first_seq)
    }

    /// Move the cameras running slot `from` to slot `to` (a model installed or rolled back),
    /// waiting for each one's first frame there.
    pub async fn move_cameras(&self, from: u16, to: u16) -> Json {
        let cameras = self.switch.cameras_on(from);
        self.activate(to, &cameras).await.0
    }
}

/// `PATCH`'s `rules`: a list of rules as in `[[rule]]`, every key known (a misspelt criterion
/// would otherwise be dropped silently and judge with its default), checked as a config's rules
/// are against the station's cameras and scales.
pub fn parse_rules(rules: &Json, loaded: &crate::config::LoadedConfig) -> Result<Vec<RuleConfig>, ApiError> {
    let bad = |why: String| ApiError::BadRequest(format!("rules: {why}"));
    let items = rules.as_array().ok_or_else(|| bad("send a list of rules, as in [[rule]]".into()))?;
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let rule: RuleConfig = serde_json::from_value(item.clone()).map_err(|e| bad(format!("rules[{i}]: {e}")))?;
        let known = serde_json::to_value(&rule).unwrap_or_default();
        if let Some(key) = item.as_object().and_then(|o| o.keys().find(|k| known.get(k.as_str()).is_none())) {
            let names: Vec<&str> =
                known.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
            return Err(bad(format!("rules[{i}]: unknown key {key:?}; a rule has {}", names.join(", "))));
        }
        parsed.push(rule);
    }
    crate::config::check_rules(loaded, &parsed).map_err(|e| bad(format!("\n{e}")))?;
    Ok(parsed)
}

/// What the package's `model.toml` says of how it was taught, for people: when (the manifest's
/// modification time), from how many images, the input recipe chosen, and the operating point
/// teach expected. `None` for a package not made by teach.
fn taught_summary(package: &std::path::Path) -> Option<Json> {
    let path = package.join("model.toml");
    let manifest: crate::model::manifest::Manifest = toml::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    let teach = manifest.teach?;
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let at = modified.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_millis() as i64);
    let op = teach.operating_point.as_ref();
    Some(json!({
        "at": at.map(super::db::rfc3339), "images": teach.images, "defect_images": teach.defect_images,
        "recipe": teach.recipe.as_ref().map(|r| &r.chosen), "seconds": teach.seconds_total,
        "threshold_rule": op.map(|o| &o.rule),
        "estimated_overkill": op.map(|o| o.estimated_overkill),
        "estimated_escape_synthetic": op.and_then(|o| o.estimated_escape_synthetic),
    }))
}
