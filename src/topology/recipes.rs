//! A station's recipes, loaded: each recipe's model package loaded, checked against the pipeline
//! settings and warmed up in every inference worker, with what the preprocess threads and the
//! assembler need to judge the frames stamped with it.

use super::BuildError;
use super::assemble::RecipePlan;
use super::preprocess_thread::Cut;
use crate::config::{InputMode, LoadedConfig, RecipeConfig, RuleConfig};
use crate::model::ModelPackage;
use crate::model::manifest::TaskSpec;
use crate::pipeline::{LiveThresholds, MAX_SLOTS, RecipeSwitch, Slots};
use crate::sinks::RecipeContext;
use crate::stages::decide::Rules;
use crate::stages::infer::session::{InferSession, SessionOptions};
use crate::stages::infer::worker::BatchPolicy;
use crate::stages::infer::worker::WorkerModel;
use crate::stages::preprocess::Normalizer;
use crate::telemetry::StationMetrics;
use crossbeam_channel::Sender;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One recipe as the running station holds it.
pub struct LoadedRecipe {
    pub name: String,
    pub package: ModelPackage,
    /// The decision rules in force, and as JSON text (records and the store keep them).
    pub rules: Vec<RuleConfig>,
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
    if opts.provider == crate::config::Provider::Cpu
        && let Some(teach) = &m.teach
    {
        match int8_on_this_cpu(teach.backbone_int8, teach.int8_weight_bits, crate::stages::infer::cpu::has_vnni()) {
            Ok(None) => {}
            Ok(Some(warning)) => tracing::warn!(model = %m.name, "{warning}"),
            Err(e) => return Err(BuildError::Config(format!("model {}: {e}", m.name))),
        }
    }
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
    let fixed_batch = (m.input.batch > 0).then_some(m.input.batch as usize);
    let policy = BatchPolicy {
        max_batch: max_batch_for(&cfg.pipeline, fixed_batch),
        max_wait: Duration::from_micros(cfg.pipeline.max_wait_us),
        fixed_batch,
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
        recipe: LoadedRecipe { name: rc.name.clone(), package, rules: rule_configs.to_vec(), rules_json, threshold },
        cut,
        plan,
        sessions,
    })
}

/// What an install did.
pub struct Installed {
    /// The slot the recipe runs in now, and the one it left (kept loaded for rollback).
    pub slot: u16,
    pub previous: u16,
    pub recipe: LoadedRecipe,
}

/// Installs a recipe's new model while the station runs. The model gets the next model slot: it
/// is loaded, checked and warmed up in every worker first (a model that fails any of it changes
/// nothing), then handed to every pipeline thread — each worker's session through its own
/// queue, the preprocess cut, the assembler plan and the outputs' record context through
/// write-once tables — and only then does the recipe run there. Moving its cameras is the
/// caller's (`RecipeSwitch::switch_and_wait`), so a switch is the same as any recipe switch:
/// between two frames of each camera.
pub struct Installer {
    loaded: LoadedConfig,
    opts: SessionOptions,
    workers: usize,
    pub(super) cuts: Arc<Slots<Cut>>,
    pub(super) plans: Arc<Slots<RecipePlan>>,
    /// What records need about each slot (the outputs read it).
    pub contexts: Arc<Slots<RecipeContext>>,
    pub(super) thresholds: Arc<LiveThresholds>,
    pub(super) switch: Arc<RecipeSwitch>,
    pub(super) worker_models: Vec<Sender<(u16, WorkerModel)>>,
    metric_classes: Mutex<Vec<String>>,
    metrics: Arc<StationMetrics>,
    /// By model slot: the package folder and rules it was built from (a rules change builds the
    /// same package with new rules; a new package keeps the rules in force). Also the one-install-
    /// at-a-time lock.
    built_from: Mutex<Vec<(PathBuf, Vec<RuleConfig>)>>,
}

impl Installer {
    #[allow(clippy::too_many_arguments)] // The station's tables, handed over once.
    pub(super) fn new(
        loaded: &LoadedConfig,
        opts: SessionOptions,
        workers: usize,
        cuts: Arc<Slots<Cut>>,
        plans: Arc<Slots<RecipePlan>>,
        contexts: Arc<Slots<RecipeContext>>,
        thresholds: Arc<LiveThresholds>,
        switch: Arc<RecipeSwitch>,
        worker_models: Vec<Sender<(u16, WorkerModel)>>,
        metric_classes: Vec<String>,
        metrics: Arc<StationMetrics>,
        built_from: Vec<(PathBuf, Vec<RuleConfig>)>,
    ) -> Self {
        Self {
            loaded: loaded.clone(),
            opts,
            workers,
            cuts,
            plans,
            contexts,
            thresholds,
            switch,
            worker_models,
            metric_classes: Mutex::new(metric_classes),
            metrics,
            built_from: Mutex::new(built_from),
        }
    }

    /// The package folder model slot `slot` was built from.
    pub fn package_of(&self, slot: usize) -> Option<PathBuf> {
        self.built_from.lock().unwrap_or_else(|e| e.into_inner()).get(slot).map(|(p, _)| p.clone())
    }

    /// The station's config (teach jobs read their recipe's teach settings from it).
    pub fn config(&self) -> &LoadedConfig {
        &self.loaded
    }

    /// Load `package` as recipe `name`'s model (see [`Installer`]), with the rules the recipe
    /// runs now and the package's own threshold. One install at a time.
    pub fn install(&self, name: &str, package: &Path) -> Result<Installed, String> {
        let mut built_from = self.built_from.lock().unwrap_or_else(|e| e.into_inner());
        let (recipe, rc) = self.recipe_config(name)?;
        let current = usize::from(self.switch.current_slot(recipe));
        let rules = built_from.get(current).map(|(_, rules)| rules.clone());
        let rc = RecipeConfig { package: self.loaded.resolve(package), threshold: None, rules, ..rc };
        self.install_config(&mut built_from, recipe, rc)
            .map_err(|e| format!("model {} not installed, recipe {name} keeps its model: {e}", package.display()))
    }

    /// Recipe `name`'s model with new decision rules, as an install: the same package, built
    /// again with `rules` and the threshold in force, into the next slot; the slot before is
    /// kept for rollback. Rules that do not fit the model change nothing.
    pub fn install_rules(&self, name: &str, rules: Vec<RuleConfig>) -> Result<Installed, String> {
        let mut built_from = self.built_from.lock().unwrap_or_else(|e| e.into_inner());
        let (recipe, rc) = self.recipe_config(name)?;
        let current = usize::from(self.switch.current_slot(recipe));
        let package = built_from.get(current).map(|(p, _)| p.clone()).ok_or("the recipe's model slot is unknown")?;
        let rc = RecipeConfig { package, threshold: self.thresholds.get(current), rules: Some(rules), ..rc };
        self.install_config(&mut built_from, recipe, rc)
            .map_err(|e| format!("rules not changed, recipe {name} keeps its rules: {e}"))
    }

    fn recipe_config(&self, name: &str) -> Result<(usize, RecipeConfig), String> {
        let recipes = self.loaded.recipes();
        let recipe = recipes.iter().position(|r| r.name == name).ok_or_else(|| format!("no recipe named {name:?}"))?;
        Ok((recipe, recipes[recipe].clone()))
    }

    /// Build `rc` into the next model slot and make recipe `recipe` run there.
    fn install_config(
        &self,
        built_from: &mut Vec<(PathBuf, Vec<RuleConfig>)>,
        recipe: usize,
        rc: RecipeConfig,
    ) -> Result<Installed, String> {
        let mut metric_classes = self.metric_classes.lock().unwrap_or_else(|e| e.into_inner());
        let slot = self.cuts.len();
        if slot >= MAX_SLOTS {
            return Err(format!(
                "this station run holds {MAX_SLOTS} models already (each install keeps the one before for rollback): restart it to install more"
            ));
        }
        let name = rc.name.clone();
        let built = build_recipe(&self.loaded, &rc, &self.opts, self.workers, &mut metric_classes)
            .map_err(|e| e.to_string())?;
        let slot16 = slot as u16;
        let m = &built.recipe.package.manifest;
        let context = RecipeContext {
            name: name.clone(),
            model_name: m.name.clone(),
            model_sha256: built.recipe.package.sha256.clone(),
            classes: built.recipe.classes(),
            rules_json: built.recipe.rules_json.clone(),
        };
        // Every table before the cut: a frame can only be cut for the slot once the rest of the
        // pipeline has it.
        let _ = self.contexts.set(slot, context);
        let _ = self.plans.set(slot, built.plan);
        self.thresholds.install(slot, built.recipe.threshold);
        for (tx, session) in self.worker_models.iter().zip(built.sessions) {
            let model = WorkerModel {
                session,
                name: m.name.clone(),
                input_name: m.input.name.clone(),
                input_shape: [m.input.channels as usize, m.input.height as usize, m.input.width as usize],
                output_names: m.task.output_names().iter().map(|s| s.to_string()).collect(),
            };
            // A worker that is gone is a stopping station: its frames fail safe anyway.
            let _ = tx.send((slot16, model));
        }
        let _ = self.cuts.set(slot, built.cut);
        built_from.push((absolute(&built.recipe.package.dir), built.recipe.rules.clone()));
        self.metrics.model_installed(slot, &m.name);
        let previous = self.switch.install(recipe, slot16).map_err(String::from)?;
        self.update_model_info();
        Ok(Installed { slot: slot16, previous, recipe: built.recipe })
    }

    /// Go back to the model recipe `name` ran before: returns (from, to) slots.
    pub fn rollback(&self, recipe: usize) -> Option<(u16, u16)> {
        let moved = self.switch.rollback(recipe)?;
        self.update_model_info();
        Some(moved)
    }

    /// `linesight_model_info`: 1 for the models a recipe runs now, 0 for those kept for rollback.
    fn update_model_info(&self) {
        let model = |slot: usize| self.contexts.get(slot).map(|c| (c.model_name.clone(), c.model_sha256.clone()));
        let loaded: Vec<(String, String)> = (0..self.contexts.len()).filter_map(model).collect();
        let running: Vec<(String, String)> =
            (0..self.switch.recipes()).filter_map(|r| model(usize::from(self.switch.current_slot(r)))).collect();
        self.metrics.models_running(&loaded, &running);
    }
}

/// `dir` as an absolute path (resolving it again against the config's folder must not move it).
pub(super) fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Whether a model taught on an INT8 backbone can run on this CPU: without VNNI-class
/// instructions it runs slower than FP32 (a warning), and one quantized with 8-bit weights would
/// also score wrongly (ONNX Runtime's kernels there add pairs of 8-bit products in 16 bits, which
/// saturate), so it is refused with the fix.
fn int8_on_this_cpu(backbone_int8: bool, weight_bits: u8, has_vnni: bool) -> Result<Option<String>, String> {
    if !backbone_int8 || has_vnni {
        return Ok(None);
    }
    if weight_bits == 8 {
        return Err(format!(
            "taught on an INT8 backbone with 8-bit weights on a CPU with VNNI-class instructions; this CPU has none, \
             and its INT8 kernels would saturate on those weights and score parts wrongly. Teach the model again on this \
             machine (`linesight teach` picks FP32 here), or with --precision fp32 (INT8 pays on {})",
            crate::stages::infer::cpu::VNNI_CPUS
        ));
    }
    Ok(Some(format!(
        "the model was taught on an INT8 backbone and this CPU has no VNNI-class instructions: it runs slower here \
         than the same model taught with --precision fp32 (INT8 pays on {})",
        crate::stages::infer::cpu::VNNI_CPUS
    )))
}

/// The most tiles gathered into one run: `max_batch`, except that a model with a fixed batch size
/// gathers that many when the file left `max_batch` to the defaults (padding one tile up to a
/// fixed batch of four would run the model four times for one).
fn max_batch_for(pipeline: &crate::config::PipelineConfig, fixed_batch: Option<usize>) -> usize {
    match fixed_batch {
        Some(fixed) if pipeline.max_batch_is_default => fixed.clamp(1, crate::pipeline::messages::MAX_BATCH),
        _ => pipeline.max_batch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PipelineConfig;

    #[test]
    fn a_fixed_batch_model_gathers_its_batch_unless_the_file_says_otherwise() {
        let defaults = PipelineConfig { max_batch: 1, max_batch_is_default: true, ..Default::default() };
        assert_eq!(max_batch_for(&defaults, Some(4)), 4, "not one tile padded up to four");
        assert_eq!(max_batch_for(&defaults, None), 1);
        let set = PipelineConfig { max_batch: 2, max_batch_is_default: false, ..Default::default() };
        assert_eq!(max_batch_for(&set, Some(4)), 2, "the file decides");
    }

    #[test]
    fn an_int8_model_with_8_bit_weights_is_refused_on_a_cpu_without_vnni() {
        assert_eq!(int8_on_this_cpu(false, 0, false), Ok(None), "FP32 runs anywhere");
        assert_eq!(int8_on_this_cpu(true, 7, true), Ok(None));
        let slower = int8_on_this_cpu(true, 7, false).unwrap().expect("a warning");
        assert!(slower.contains("slower"), "{slower}");
        assert_eq!(int8_on_this_cpu(true, 0, false).map(|w| w.is_some()), Ok(true), "a copy made beforehand: 7 bits");
        assert_eq!(int8_on_this_cpu(true, 8, true), Ok(None));
        let refused = int8_on_this_cpu(true, 8, false).unwrap_err();
        assert!(refused.contains("saturate") && refused.contains("--precision fp32"), "{refused}");
    }
}
