//! Recipes through the API: which recipe each camera runs, and switching it while the station
//! runs (`POST /api/v1/recipes/{name}/activate`, operator token). A switch takes effect between
//! two frames of a camera (see `pipeline::recipe_switch`); the answer says, per camera, the first
//! frame judged under the new recipe.

use super::error::ApiError;
use crate::pipeline::{LiveThresholds, RecipeSwitch};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::time::Duration;

/// How long an activation waits for each camera's next frame before it answers without that
/// camera's first sequence number (an idle or triggered camera: its next frame is judged under
/// the new recipe whenever it comes).
pub const ACTIVATION_WAIT: Duration = Duration::from_secs(5);

/// What the API knows of the running station's recipes, set once it is built.
pub struct LiveRecipes {
    pub switch: Arc<RecipeSwitch>,
    pub thresholds: Arc<LiveThresholds>,
    pub cameras: Vec<String>,
    pub recipes: Vec<RecipeSummary>,
}

/// One recipe as `GET /api/v1/recipes` shows it.
#[derive(Clone, Debug)]
pub struct RecipeSummary {
    pub name: String,
    pub model_name: String,
    pub model_sha256: String,
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
        let recipes: Vec<Json> = self
            .recipes
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let active: Vec<&str> = (0..self.cameras.len())
                    .filter(|&c| usize::from(self.switch.wanted(c)) == index)
                    .map(|c| self.cameras[c].as_str())
                    .collect();
                json!({
                    "name": r.name, "model": { "name": r.model_name, "sha256": r.model_sha256 },
                    "cameras": active, "threshold": self.thresholds.get(index),
                })
            })
            .collect();
        json!({ "recipes": recipes })
    }

    /// The index of the recipe named `name`.
    pub fn index(&self, name: &str) -> Result<usize, ApiError> {
        self.recipes.iter().position(|r| r.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.recipes.iter().map(|r| r.name.as_str()).collect();
            ApiError::NotFound(format!("no recipe named {name:?}: the station has {}", known.join(", ")))
        })
    }

    /// Apply `change` to recipe `name` from the next frame decided; returns (what, old, new)
    /// for the audit log.
    pub fn change(&self, name: &str, change: &Change) -> Result<Vec<(String, String, String)>, ApiError> {
        let recipe = self.index(name)?;
        if change.rules.is_some() {
            return Err(ApiError::BadRequest(
                "rules cannot be changed while the station runs yet: edit the recipe's [[recipe.rule]] and restart (thresholds can)".into(),
            ));
        }
        let Some(threshold) = change.threshold else {
            return Err(ApiError::BadRequest("nothing to change: send {\"threshold\": number}".into()));
        };
        let old = self
            .thresholds
            .set(recipe, threshold)
            .map_err(|why| ApiError::BadRequest(format!("threshold {threshold}: {why}")))?;
        Ok(vec![("recipe.threshold".into(), old.to_string(), threshold.to_string())])
    }

    /// The recipe's index and the camera indices an activation names; unknown ones are refused.
    pub fn resolve(&self, name: &str, activation: &Activation) -> Result<(u16, Vec<usize>), ApiError> {
        let recipe = self.index(name)?;
        let cameras = match &activation.cameras {
            None => (0..self.cameras.len()).collect(),
            Some(ids) if ids.is_empty() => {
                return Err(ApiError::BadRequest("cameras: name at least one camera, or leave it out for all".into()));
            }
            Some(ids) => ids
                .iter()
                .map(|id| {
                    self.cameras.iter().position(|c| c == id).ok_or_else(|| {
                        ApiError::BadRequest(format!("no camera {id:?}: the station has {}", self.cameras.join(", ")))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok((recipe as u16, cameras))
    }

    /// Switch `cameras` to `recipe` and wait (up to [`ACTIVATION_WAIT`]) until each camera has
    /// stamped a frame with it. Returns, per camera id, the first frame under it (null: no
    /// frame yet) and what each camera ran before.
    pub async fn activate(&self, recipe: u16, cameras: &[usize]) -> (Json, Vec<(String, String)>) {
        let before: Vec<(String, String)> = cameras
            .iter()
            .map(|&c| {
                let old = self.recipes.get(usize::from(self.switch.wanted(c))).map_or("?", |r| r.name.as_str());
                (self.cameras[c].clone(), old.to_string())
            })
            .collect();
        let firsts = self.switch.switch_and_wait(recipe, cameras, ACTIVATION_WAIT).await;
        let first_seq: serde_json::Map<String, Json> =
            cameras.iter().zip(firsts).map(|(&c, seq)| (self.cameras[c].clone(), json!(seq))).collect();
        (Json::Object(first_seq), before)
    }
}
