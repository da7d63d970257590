//! The model manifest (`model.toml`): what a model package says about its ONNX file — task,
//! input tensor, outputs and how to decode them, labels, thresholds, hash and provenance.
//!
//! Parsed strictly (unknown keys rejected) so a typo in a manifest is an error, not a silent default.

use serde::{Deserialize, Serialize};

/// The top-level `model.toml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Short model name, used in logs, metrics and results.
    pub name: String,
    /// File name of the ONNX graph inside the package (default `model.onnx`).
    #[serde(default = "default_onnx_file")]
    pub onnx_file: String,
    /// Hex sha256 of the ONNX file; checked at load, a mismatch refuses the model.
    pub sha256: String,
    pub input: InputSpec,
    /// How the outputs are read; the variant is the model's task.
    pub task: TaskSpec,
    #[serde(default)]
    pub provenance: Provenance,
    /// How `linesight teach` made this model (taught packages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teach: Option<TeachInfo>,
}

/// Largest model input side accepted (a tile count per frame must fit the `u16` that carries it,
/// and no real model is wider than this).
pub const MAX_INPUT_SIDE: u32 = 16_384;

impl Manifest {
    /// Every semantic problem of a manifest that parsed: classes, channels, normalisation and
    /// thresholds that the decoders rely on. Empty = usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        let i = &self.input;
        check(
            i.channels == 1 || i.channels == 3,
            format!("input.channels = {}: must be 1 (grayscale) or 3 (RGB)", i.channels),
        );
        for (key, v) in [("input.width", i.width), ("input.height", i.height)] {
            check((1..=MAX_INPUT_SIDE).contains(&v), format!("{key} = {v}: must be in 1..={MAX_INPUT_SIDE}"));
        }
        check(i.batch <= 64, format!("input.batch = {}: must be 0 (dynamic) or at most 64", i.batch));
        let n = &i.normalization;
        for (key, values) in [("mean", &n.mean), ("std", &n.std)] {
            check(
                values.len() == 1 || values.len() == i.channels as usize,
                format!(
                    "input.normalization.{key} has {} values: give 1 or one per channel ({})",
                    values.len(),
                    i.channels
                ),
            );
            check(
                values.iter().all(|v| v.is_finite()),
                format!("input.normalization.{key} = {values:?}: every value must be a finite number"),
            );
        }
        check(
            n.std.iter().all(|v| *v != 0.0),
            format!("input.normalization.std = {:?}: a standard deviation of 0 divides by zero", n.std),
        );
        let classes = self.task.classes();
        check(!classes.is_empty(), "task.classes is empty: list one label per class the model outputs".into());
        check(
            classes.len() <= usize::from(u16::MAX),
            format!("task.classes has {} labels: at most {} are supported", classes.len(), u16::MAX),
        );
        let mut seen = std::collections::HashSet::new();
        for c in &classes {
            check(seen.insert(c), format!("task.classes lists {c:?} twice: class labels must be unique"));
            check(!c.trim().is_empty(), "task.classes has an empty label".into());
        }
        let finite = |key: &str, v: f32| -> Option<String> {
            (!v.is_finite()).then(|| format!("task.{key} = {v}: must be a finite number"))
        };
        match &self.task {
            TaskSpec::Segmentation(s) => {
                problems.extend(finite("pixel_threshold", s.pixel_threshold));
                if let Some(b) = s.background_class
                    && b >= s.classes.len()
                {
                    problems.push(format!(
                        "task.background_class = {b}: the model has {} classes (index 0..{})",
                        s.classes.len(),
                        s.classes.len().saturating_sub(1)
                    ));
                }
            }
            TaskSpec::Classification(c) => {
                if let Some(g) = &c.good_class
                    && !c.classes.contains(g)
                {
                    problems
                        .push(format!("task.good_class = {g:?} is not one of task.classes ({})", c.classes.join(", ")));
                }
            }
            TaskSpec::Detection(d) => {
                problems.extend(finite("score_threshold", d.score_threshold));
                if !(0.0..=1.0).contains(&d.iou_threshold) {
                    problems.push(format!("task.iou_threshold = {}: must be a number in [0, 1]", d.iou_threshold));
                }
            }
            TaskSpec::Anomaly(a) => {
                problems.extend(finite("threshold", a.threshold));
            }
        }
        problems
    }
}

fn default_onnx_file() -> String {
    "model.onnx".to_string()
}

/// The single image input of the model.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input tensor name in the graph.
    pub name: String,
    /// Tensor width and height in pixels (tiles are cut at this size).
    pub width: u32,
    pub height: u32,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: u32,
    /// Tensor layout; only NCHW float32 is supported today.
    #[serde(default)]
    pub layout: Layout,
    /// Batch size the graph accepts: `0` = dynamic (any), otherwise the fixed size.
    #[serde(default)]
    pub batch: u32,
    /// x' = (x / 255 − mean[c]) / std[c]; defaults map 0..255 to 0..1.
    #[serde(default)]
    pub normalization: Normalization,
    /// How frames should be fed to this model when the station config does not say
    /// (`[pipeline].input_mode`): `tile` or `resize`. Taught models record how they were taught.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<crate::config::InputMode>,
    /// Smallest frame inspected, in pixels: smaller frames (a 1×1 image, a thumbnail) are
    /// dropped as invalid, never judged. Default: a quarter of the input's width and height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_height: Option<u32>,
}

impl InputSpec {
    /// The smallest frame inspected (see `min_width`, `min_height`), at least 1×1.
    pub fn min_size(&self) -> (u32, u32) {
        let w = self.min_width.unwrap_or(self.width / 4).max(1);
        let h = self.min_height.unwrap_or(self.height / 4).max(1);
        (w, h)
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Layout {
    #[default]
    Nchw,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Default for Normalization {
    fn default() -> Self {
        Self { mean: vec![0.0], std: vec![1.0] }
    }
}

/// Output activation applied before thresholds.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// The graph already outputs probabilities.
    #[default]
    None,
    Sigmoid,
    Softmax,
}

/// Detection output layouts the decoder understands.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DetectionFormat {
    /// `[N, anchors, 5 + classes]`: cx, cy, w, h, objectness, class scores.
    Yolov5,
    /// `[N, 4 + classes, anchors]`: cx, cy, w, h, class scores (no objectness).
    Yolov8,
}

/// Task and decoding parameters.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskSpec {
    /// Per-class probability maps `[N, C, H, W]` → connected components → defects.
    Segmentation(SegmentationSpec),
    /// Scores `[N, C]` → label and score.
    Classification(ClassificationSpec),
    /// YOLO boxes → class-aware NMS.
    Detection(DetectionSpec),
    /// anomalib-style `pred_score` `[N]`/`[N,1]` and `anomaly_map` `[N,1,H,W]`, thresholded at run time.
    Anomaly(AnomalySpec),
}

impl TaskSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            TaskSpec::Segmentation(_) => "segmentation",
            TaskSpec::Classification(_) => "classification",
            TaskSpec::Detection(_) => "detection",
            TaskSpec::Anomaly(_) => "anomaly",
        }
    }

    /// Names of the graph outputs this task reads.
    pub fn output_names(&self) -> Vec<&str> {
        match self {
            TaskSpec::Segmentation(s) => vec![s.output.as_str()],
            TaskSpec::Classification(s) => vec![s.output.as_str()],
            TaskSpec::Detection(s) => vec![s.output.as_str()],
            TaskSpec::Anomaly(s) => vec![s.score_output.as_str(), s.map_output.as_str()],
        }
    }

    /// Class labels the model can report.
    pub fn classes(&self) -> Vec<String> {
        match self {
            TaskSpec::Segmentation(s) => s.classes.clone(),
            TaskSpec::Classification(s) => s.classes.clone(),
            TaskSpec::Detection(s) => s.classes.clone(),
            TaskSpec::Anomaly(s) => vec![s.defect_class.clone()],
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentationSpec {
    pub output: String,
    /// One label per output channel.
    pub classes: Vec<String>,
    #[serde(default)]
    pub activation: Activation,
    /// A pixel belongs to a defect of class c when its probability is ≥ this.
    pub pixel_threshold: f32,
    /// Index of a background channel to ignore (e.g. softmax models), if any.
    #[serde(default)]
    pub background_class: Option<usize>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassificationSpec {
    pub output: String,
    pub classes: Vec<String>,
    #[serde(default)]
    pub activation: Activation,
    /// The label that means "good part" (not a defect), if the model has one.
    #[serde(default)]
    pub good_class: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionSpec {
    pub output: String,
    pub format: DetectionFormat,
    pub classes: Vec<String>,
    /// Boxes scoring below this are discarded before NMS.
    pub score_threshold: f32,
    /// Same-class boxes overlapping more than this IoU are suppressed.
    pub iou_threshold: f32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalySpec {
    #[serde(default = "default_pred_score")]
    pub score_output: String,
    #[serde(default = "default_anomaly_map")]
    pub map_output: String,
    /// Raw-score threshold applied at run time: image and pixel scores ≥ this are anomalous.
    pub threshold: f32,
    /// Label given to anomalous regions.
    #[serde(default = "default_anomaly_class")]
    pub defect_class: String,
}

fn default_pred_score() -> String {
    "pred_score".into()
}
fn default_anomaly_map() -> String {
    "anomaly_map".into()
}
fn default_anomaly_class() -> String {
    "anomaly".into()
}

/// How the ONNX file was made, and under what licence.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    #[serde(default)]
    pub made_by: String,
    #[serde(default)]
    pub licence: String,
    #[serde(default)]
    pub notes: String,
}

fn exact_search() -> String {
    "exact".into()
}

/// The `[teach]` table of a taught model: the recipe, the data it saw, and what teaching cost.
/// Written by `linesight teach` for people and for `check`; the runtime only needs the graph and
/// the threshold.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TeachInfo {
    pub backbone: String,
    pub backbone_sha256: String,
    /// The model was composed on an INT8 copy of the backbone (`teach --precision int8`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backbone_int8: bool,
    /// Teach images' inputs the INT8 backbone's ranges were calibrated on when teach quantized it
    /// itself (`teach::int8`); 0 for FP32 and for INT8 copies made beforehand.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub int8_calibration_inputs: usize,
    /// Bits of the INT8 backbone's weights when teach quantized it: 8 (taught on a CPU with
    /// VNNI-class instructions; on a CPU without them its sums can saturate) or 7 (safe on any
    /// x86 CPU); 0 for FP32 and for INT8 copies made beforehand (7, `scripts/quantize-backbone.py`).
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub int8_weight_bits: u8,
    /// How the scoring step finds each patch's nearest bank row: `exact` (float), or `int8` (the
    /// search in 8-bit integers, the distance to the row found in float; INT8 backbones).
    #[serde(default = "exact_search")]
    pub nearest_search: String,
    pub input_mode: crate::config::InputMode,
    pub images: usize,
    pub teach_images: usize,
    pub holdout_images: usize,
    pub tiles: usize,
    pub patches: usize,
    pub feature_dim: usize,
    /// Input pixels per scored patch.
    #[serde(default)]
    pub grid_stride: usize,
    /// What the graph does to each input's contrast before the backbone (`raw` in packages
    /// taught before it existed).
    #[serde(default)]
    pub input_contrast: crate::config::InputContrast,
    pub pca_dims: usize,
    pub pca_explained: f64,
    /// PCA whitening power (0 = plain projection, also in packages taught before it existed).
    #[serde(default)]
    pub pca_whiten: f64,
    pub coreset_ratio: f64,
    /// Bound on the bank size (the scoring cost); 0 in packages taught before it existed.
    #[serde(default)]
    pub max_bank_rows: usize,
    /// Distances divided by the nearest bank row's mean distance to this many neighbours (0 = off).
    #[serde(default)]
    pub local_scale_k: usize,
    pub bank_rows: usize,
    /// Patches are scored by a Gaussian of the goods at their place on the grid
    /// (`teach::placed`), not by the bank (then `bank_rows` is 0).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub placed: bool,
    /// Each place's patch scores are divided by the held-out goods' typical score there
    /// (`teach::place_scale`).
    #[serde(default)]
    pub place_scale: bool,
    /// How much the places' typical good scores differ (what `place_scale` was decided on);
    /// absent for tiles and the places' Gaussians.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place_structure: Option<f64>,
    pub seed: u64,
    pub blur_sigma_px: f32,
    pub top_fraction: f32,
    pub threshold_rule: String,
    pub holdout_score_mean: f32,
    pub holdout_score_std: f32,
    pub holdout_score_max: f32,
    /// Held-out good images the threshold rejects (expected overkill on that sample).
    #[serde(default)]
    pub holdout_rejected: usize,
    pub seconds_features: f64,
    pub seconds_pca: f64,
    pub seconds_coreset: f64,
    #[serde(default)]
    pub seconds_local_scale: f64,
    pub seconds_calibration: f64,
    /// Quantizing the backbone to INT8 (calibration included).
    #[serde(default)]
    pub seconds_quantize: f64,
    pub seconds_total: f64,
    pub peak_memory_mb: f64,
    pub linesight_version: String,
    /// Labelled defective images given to teach (`--defects`) and used; 0 in older packages.
    #[serde(default)]
    pub defect_images: usize,
    /// The threshold and what it is expected to cost; absent in packages taught before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_point: Option<OperatingPointEstimate>,
    /// The recipes teach tried and the one it chose; absent in older packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<RecipeSearch>,
    /// The learned correction from labelled defects, when teach tried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadInfo>,
}

/// `[teach.head]`: the distance correction learned from labelled defects (mixed supervision) and
/// whether it earned its place.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeadInfo {
    /// Whether the shipped graph applies it.
    pub used: bool,
    pub labelled_defects: usize,
    /// Its L2 penalty per negative patch, chosen by leave-one-defect-out.
    pub lambda: f64,
    /// Leave-one-defect-out AUROC with the head, and with the plain distance.
    pub loo_auroc: f64,
    pub baseline_loo_auroc: f64,
}

/// `[teach.operating_point]`: how the threshold was chosen and what teach expects it to cost,
/// measured with the calibration model (taught without the held-out images) on the held-out
/// goods, the synthetic defects painted on them, and the labelled defects if any.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OperatingPointEstimate {
    /// The rule, in words (e.g. "at most 1% overkill on held-out goods").
    pub rule: String,
    pub threshold: f32,
    pub holdout_goods: usize,
    pub holdout_goods_rejected: usize,
    /// Fraction of held-out goods at or above the threshold.
    pub estimated_overkill: f64,
    /// One-sided 95% upper confidence bound on the overkill given how many goods were held out
    /// (Clopper–Pearson).
    pub estimated_overkill_upper95: f64,
    pub synthetic_defects: usize,
    /// Fraction of the synthetic defects scoring below the threshold (none: none were painted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_escape_synthetic: Option<f64>,
    #[serde(default)]
    pub labelled_defects: usize,
    /// Fraction of the labelled defects below the threshold (in-sample when they chose it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_escape_labelled: Option<f64>,
    /// What the estimates do not account for.
    #[serde(default)]
    pub caveat: String,
}

/// `[teach.recipe]`: the input handling and scoring recipes teach tried, each judged on held-out
/// goods against synthetic (and labelled) defects, and the one it chose.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecipeSearch {
    pub chosen: String,
    /// How the choice was made, in words.
    pub criterion: String,
    pub seconds: f64,
    #[serde(default)]
    pub candidates: Vec<RecipeTrial>,
    /// Candidates not tried, each with why: beyond the time budget, or too narrow for the map's
    /// blur.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// The map smoothing and image-score rule chosen on the winning recipe, when teach chose it
    /// (not fixed by the user, and labelled defects to judge by): `post_candidates` is what it
    /// tried, with the labelled defects' AUROC as the validation figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_chosen: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_candidates: Vec<RecipeTrial>,
}

/// One recipe teach tried.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecipeTrial {
    pub recipe: String,
    /// The figure the choice maximises (see [`RecipeSearch::criterion`]).
    pub validation: f64,
    /// Image AUROC of the held-out goods against the synthetic defects.
    pub synthetic_auroc: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelled_auroc: Option<f64>,
    pub seconds: f64,
    /// The search's default recipe, kept unless another is better with confidence.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preferred: bool,
    /// Share of paired bootstrap resamples of the validation set in which this recipe beat the
    /// search's best at the time it was tried (none for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beat_best: Option<f64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_u8(n: &u8) -> bool {
    *n == 0
}
