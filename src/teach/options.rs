//! Everything `linesight teach` can be told ([`TeachOptions`], with the command's defaults), and
//! the check that refuses impossible values before any work starts.

use super::head::HeadMode;
use crate::config::{InputContrast, InputMode};
use anyhow::{Result, bail};
use std::path::PathBuf;

/// Everything `teach` can be told.
#[derive(Clone, Debug)]
pub struct TeachOptions {
    pub images: PathBuf,
    pub out: PathBuf,
    pub backbone: PathBuf,
    /// Model name in the manifest (default: the output folder's name).
    pub name: Option<String>,
    /// `None`: chosen by validation ([`super::recipe::candidates`]).
    pub input_mode: Option<InputMode>,
    /// Model input height and width (tile size, or the size frames are squashed to); `None`:
    /// chosen by validation, with inputs of the images' own aspect ratio among the candidates.
    pub size: Option<u32>,
    /// Pixels per patch: the stride of the grid patches are scored on (a backbone tap's stride);
    /// `None`: 16, and 8 tried on the winning input recipe.
    pub grid_stride: Option<usize>,
    /// `None`: chosen by validation ([`super::recipe::CONTRAST`] first, the other on the winner).
    pub input_contrast: Option<InputContrast>,
    /// `--scorer`: `Some(true)` scores patches by their place's Gaussian ([`super::placed`]),
    /// `Some(false)` by the bank; `None` chooses by validation.
    pub placed: Option<bool>,
    /// `--place-scale`: each place's patch scores divided by the held-out goods' typical score
    /// there ([`super::place_scale`]); `None` when the places differ enough.
    pub place_scale: Option<bool>,
    pub tile_overlap_px: u32,
    pub coreset_ratio: f64,
    /// Upper bound on the bank (the run-time cost); `None` = [`super::learn::budget_bank_rows`].
    pub max_bank_rows: Option<usize>,
    /// Divide each patch's distance by its nearest bank row's mean distance to this many nearest
    /// other rows ([`super::knn::Bank::local_scales`]); 0 = plain distances.
    pub local_scale_k: usize,
    pub pca_dims: usize,
    /// PCA whitening power ([`super::pca::Pca::whiten`]): 1 = every component scaled to unit variance
    /// (Mahalanobis distances in the PCA space), 0 = plain projection.
    pub whiten: f64,
    pub holdout_fraction: f64,
    /// The old threshold rule, mean + K·std of the held-out scores; `None` = the rules of
    /// [`super::operating_point`].
    pub threshold_sigmas: Option<f32>,
    /// Most overkill (fraction of held-out goods rejected) the threshold may cost.
    pub max_overkill: f64,
    /// Fraction of defects (labelled, else synthetic) the threshold may let through.
    pub target_escape: Option<f64>,
    /// Folder of labelled defective images (masks optional in `masks/<stem>_mask.png`).
    pub defects: Option<PathBuf>,
    /// Seconds the whole teach, recipe search included, should take at most: candidates that
    /// would not fit are skipped.
    pub time_budget_s: f64,
    /// The learned distance correction ([`super::head`]) when labelled defects are given.
    pub head: HeadMode,
    /// Gaussian smoothing of the anomaly map, pixels; `None`: chosen by validation
    /// ([`super::post`]).
    pub blur_sigma_px: Option<f32>,
    /// Image score = mean of this share of the map's highest pixels; `None`: chosen by validation.
    pub top_fraction: Option<f32>,
    pub max_patches: usize,
    /// FP32, or INT8 (the backbone quantized on the teach images, [`super::int8`]); `Auto`: INT8
    /// on a CPU with VNNI-class instructions. A backbone that is already an INT8 copy is used as
    /// it is.
    pub precision: super::precision::Precision,
    pub seed: u64,
    /// ONNX Runtime and coreset threads; 0 = all cores.
    pub threads: usize,
    pub progress: bool,
    /// If `out` already holds a package when teaching ends (another process taught it), keep
    /// that one and discard this one, instead of replacing it.
    pub keep_existing: bool,
    /// Where the teach says which step it is in (a teach job's progress on the station's UI).
    pub stage: Option<Stage>,
}

/// A teach's current step, in words, shared with whoever shows its progress.
pub type Stage = std::sync::Arc<std::sync::Mutex<String>>;

/// Say which step the teach is in.
pub(super) fn set_stage(opts: &TeachOptions, what: impl FnOnce() -> String) {
    if let Some(stage) = &opts.stage {
        *stage.lock().unwrap_or_else(|e| e.into_inner()) = what();
    }
}

impl TeachOptions {
    /// The defaults `linesight teach` uses, for a folder of images and an output folder.
    pub fn new(images: impl Into<PathBuf>, out: impl Into<PathBuf>, backbone: impl Into<PathBuf>) -> Self {
        Self {
            images: images.into(),
            out: out.into(),
            backbone: backbone.into(),
            name: None,
            input_mode: None,
            size: None,
            grid_stride: None,
            input_contrast: None,
            placed: None,
            place_scale: None,
            tile_overlap_px: 32,
            coreset_ratio: 0.25,
            max_bank_rows: None,
            local_scale_k: 3,
            pca_dims: 64,
            whiten: 1.0,
            holdout_fraction: 0.15,
            threshold_sigmas: None,
            max_overkill: 0.01,
            target_escape: None,
            defects: None,
            time_budget_s: 600.0,
            head: HeadMode::Auto,
            blur_sigma_px: None,
            top_fraction: None,
            max_patches: 1_000_000,
            precision: super::precision::Precision::Auto,
            seed: 0,
            threads: 0,
            progress: false,
            keep_existing: false,
            stage: None,
        }
    }
}

pub(super) fn check_options(o: &TeachOptions) -> Result<()> {
    let mut problems = Vec::new();
    if !(o.coreset_ratio > 0.0 && o.coreset_ratio <= 1.0) {
        problems.push(format!("--coreset-ratio {} must be in (0, 1] (e.g. 0.01 = 1% of the patches)", o.coreset_ratio));
    }
    if !(o.holdout_fraction > 0.0 && o.holdout_fraction < 1.0) {
        problems.push(format!("--holdout {} must be in (0, 1) (e.g. 0.15)", o.holdout_fraction));
    }
    if o.max_bank_rows == Some(0) {
        problems.push("--max-bank-rows must be at least 1 (leave it out for the scoring budget's size)".into());
    }
    if o.pca_dims == 0 {
        problems.push("--pca-dims must be at least 1".into());
    }
    if o.placed == Some(true) && o.input_mode == Some(InputMode::Tile) {
        problems.push(
            "--scorer placed judges each place of a whole part; a tile can come from anywhere in the frame \
             (use --input-mode resize, or --scorer bank)"
                .into(),
        );
    }
    if !(0.0..=1.0).contains(&o.whiten) {
        problems.push(format!("--whiten {} must be in [0, 1] (1 = full whitening, 0 = plain PCA)", o.whiten));
    }
    if let Some(sigma) = o.blur_sigma_px
        && !(sigma > 0.0 && sigma.is_finite())
    {
        problems.push(format!("--blur-sigma {sigma} must be > 0 pixels"));
    }
    if let Some(share) = o.top_fraction
        && !(share > 0.0 && share <= 1.0)
    {
        problems.push(format!("--top-fraction {share} must be in (0, 1]"));
    }
    if let Some(k) = o.threshold_sigmas
        && !(k >= 0.0 && k.is_finite())
    {
        problems.push(format!("--threshold-sigmas {k} must be ≥ 0"));
    }
    if !(o.max_overkill >= 0.0 && o.max_overkill < 1.0) {
        problems.push(format!("--max-overkill {}% must be in [0, 100)", 100.0 * o.max_overkill));
    }
    if let Some(e) = o.target_escape
        && !(0.0..1.0).contains(&e)
    {
        problems.push(format!("--target-escape {}% must be in [0, 100)", 100.0 * e));
    }
    if o.time_budget_s.is_nan() || o.time_budget_s <= 0.0 {
        problems.push(format!("--time-budget {} must be > 0 seconds", o.time_budget_s));
    }
    if let Some(size) = o.size
        && size < 32
    {
        problems.push(format!("--size {size} is too small (at least 32 px)"));
    }
    // Unless the input is fixed to whole images, teach may tile: tiles of --size, else 256².
    let tile = o.size.unwrap_or(super::recipe::TILE);
    if o.input_mode != Some(InputMode::Resize) && o.tile_overlap_px >= tile {
        problems.push(format!(
            "--tile-overlap {} must be smaller than the tile side {tile} (--size, else 256)",
            o.tile_overlap_px
        ));
    }
    if problems.is_empty() { Ok(()) } else { bail!("invalid teach options:\n  {}", problems.join("\n  ")) }
}
