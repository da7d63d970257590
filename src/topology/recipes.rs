//! A station's recipes, loaded: each recipe's model package loaded, checked against the pipeline
//! settings and warmed up in every inference worker, with what the preprocess threads and the
//! assembler need to judge the frames stamped with it.

use super::BuildError;
use super::assemble::RecipePlan;
use super::preprocess_thread::Cut;
use crate::config::{InputMode, LoadedConfig, RecipeConfig};
use crate::model::ModelPackage;
use crate::model::manifest::TaskSpec;
use crate::stages::decide::Rules;
use crate::stages::infer::session::{InferSession, SessionOptions};
use crate::stages::infer::worker::BatchPolicy;
use crate::stages::preprocess::Normalizer;
use std::time::Duration;

/// One recipe as the running station holds it.
pub struct LoadedRecipe {
    pub name: String,
    pub package: ModelPackage,
    /// The decision rules in force, as JSON text (records and the store keep them).
    pub rules_json: String,
    /// Anomaly models: the image-score threshold in force (the recipe's, else the package's).
    pub threshold: Option<f32>,
}

impl LoadedRecipe {
    /// The model's class labels (records carry the index).
    pub fn classes(&self) -> Vec<String> {
        self.package.manifest.task.classes()
    }
}

/// Everything built for one recipe.
pub(super) struct BuiltRecipe {
    pub recipe: LoadedRecipe,
    pub cut: Cut,
    pub plan: RecipePlan,
    /// One per inference worker.
    pub sessions: Vec<InferSession>,
}

/// Load recipe `rc`: its package, its rules and threshold, one warmed-up session per worker.
/// Its classes are added to `metric_classes` (every recipe's, each name once) and mapped there.
pub(super) fn build_recipe(
    loaded: &LoadedConfig,
    rc: &RecipeConfig,
    opts: &SessionOptions,
    workers: usize,
    metric_classes: &mut Vec<String>,
) -> Result<BuiltRecipe, BuildError> {
    let cfg = &loaded.config;
    let package = ModelPackage::load(&loaded.resolve(&rc.package))?;
    let m = &package.manifest;
    let classes = m.task.classes();
    let rule_configs = rc.rules.as_deref().unwrap_or(&cfg.rules);
    let rules = Rules::resolve(rule_configs, &classes).map_err(BuildError::Config)?;
    let mut task = m.task.clone();
    let threshold = match (&mut task, rc.threshold) {
        (TaskSpec::Anomaly(a), Some(t)) => {
            a.threshold = t;
            Some(t)
        }
        (TaskSpec::Anomaly(a), None) => Some(a.threshold),
        (_, Some(_)) => {
            return Err(BuildError::Config(format!(
                "threshold = {:?} applies to anomaly models; model {} is a {} model: set its thresholds in [[rule]] min_score instead",
                rc.threshold,
                m.name,
                m.task.kind()
            )));
        }
        (_, None) => None,
    };
    let (tile_w, tile_h) = (m.input.width, m.input.height);
    let input_mode = cfg.pipeline.input_mode.or(m.input.mode).unwrap_or_default();
    if input_mode == InputMode::Tile && cfg.pipeline.tile_overlap_px >= tile_w.min(tile_h) {
        return Err(BuildError::Config(format!(
            "pipeline.tile_overlap_px = {} must be smaller than the model input ({tile_w}×{tile_h})",
            cfg.pipeline.tile_overlap_px
        )));
    }
    let policy = BatchPolicy {
        max_batch: cfg.pipeline.max_batch,
        max_wait: Duration::from_micros(cfg.pipeline.max_wait_us),
        fixed_batch: (m.input.batch > 0).then_some(m.input.batch as usize),
    };
    let mut sessions = Vec::with_capacity(workers);
    for _ in 0..workers {
        sessions.push(InferSession::new(&package, opts, &policy.shapes())?);
    }
    let output_item_shape = sessions[0].output_item_shape.clone();
    let rois = cfg.cameras.iter().map(|c| rc.roi_px.get(&c.id).unwrap_or(&c.roi_px).clone()).collect();
    let metric_classes = classes
        .iter()
        .map(|c| match metric_classes.iter().position(|k| k == c) {
            Some(k) => k,
            None => {
                metric_classes.push(c.clone());
                metric_classes.len() - 1
            }
        })
        .collect();
    let cut =
        Cut { input_mode, tile_w, tile_h, normalizer: Normalizer::new(&m.input), policy, min_size: m.input.min_size() };
    let plan = RecipePlan { task, input_mode, tile_w, tile_h, output_item_shape, rules, rois, metric_classes };
    let rules_json = serde_json::to_string(rule_configs).unwrap_or_else(|_| "[]".into());
    Ok(BuiltRecipe {
        recipe: LoadedRecipe { name: rc.name.clone(), package, rules_json, threshold },
        cut,
        plan,
        sessions,
    })
}
