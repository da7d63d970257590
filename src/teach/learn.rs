//! `linesight teach`: a PatchCore-style anomaly model learned from a folder of good images.
//!
//! 1. **Split.** The images (sorted by name) are shuffled with the seed; `holdout_fraction` of them
//!    (at least [`MIN_HOLDOUT`]) are held out for calibration, the rest teach.
//! 2. **Features.** Each image is fed exactly as the runtime will feed frames — squashed to the
//!    model size (`resize`) or cut into overlapping model-size tiles (`tile`), with the runtime's
//!    own preprocessing functions — through the feature graph ([`super::onnx::feature_graph`]):
//!    backbone taps, 3×3 local averaging, per-tap L2 normalisation, one row per feature cell.
//!    Very large teach sets are thinned to `max_patches` rows by a seeded per-tile sample.
//! 3. **PCA** to `pca_dims` ([`super::pca`]), fitted on a seeded 200,000-row sample, then
//!    whitened to the power `whiten` (1: each component scaled to unit variance, so the search
//!    measures Mahalanobis distances in the PCA space; worth +0.014 image AUROC on MTD).
//! 4. **Coreset.** Greedy k-center selection of `coreset_ratio` of the rows, at most
//!    `max_bank_rows` (default: what the backbone's scoring budget allows) ([`super::coreset`]): the
//!    memory bank.
//!    With `local_scale_k` > 0, each bank row also gets its local scale (mean distance to its k
//!    nearest other rows, [`super::knn::Bank::local_scales`]), which divides its patches' distances.
//! 5. **Calibration.** Steps 3–4 on the teach split alone give a calibration model (backbone +
//!    scoring graph, [`super::onnx::scoring_model`]) that scores the held-out good images (image
//!    score = max over a frame's tiles, as the runtime does). Threshold = mean +
//!    `threshold_sigmas` × std of their scores; the held-out statistics and how many of them the
//!    threshold rejects are written to the manifest so the margin can be judged.
//! 6. **Model.** Steps 3–4 again on every image, the held-out ones included (a bank from all the
//!    goods scores better), with the backbone and the bank baked into one ONNX graph and the
//!    threshold from step 5.
//!
//! The package (`model.onnx` + `model.toml`, task `anomaly`) is written to a temporary folder next
//! to `out` and renamed into place, so a failed teach never leaves half a package.

use super::backbone::Backbone;
use super::coreset::{CoresetParams, CoresetSize, greedy_coreset};
use super::knn::Bank;
use super::onnx::{self, InputShape, Scoring};
use super::pca;
use crate::config::InputMode;
use crate::frame::{Frame, FrameMeta, PixelFormat};
use crate::model::manifest::{
    AnomalySpec, InputSpec, Layout, Manifest, Normalization, Provenance, TaskSpec, TeachInfo,
};
use crate::pool::BufferPool;
use crate::stages::infer::runtime;
use crate::stages::preprocess::{Normalizer, resize_to_tensor, tile_to_tensor};
use crate::stages::tiling::TileGrid;
use anyhow::{Context, Result, anyhow, bail};
use ort::session::Session;
use ort::value::TensorRef;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// Fewest images `teach` accepts: enough for a bank and a held-out set of [`MIN_HOLDOUT`].
pub const MIN_IMAGES: usize = 8;
/// Fewest held-out images for calibration.
pub const MIN_HOLDOUT: usize = 2;
/// Rows drawn for the PCA fit.
const PCA_SAMPLE_ROWS: usize = 200_000;
/// Images per feature-graph run.
const BATCH: usize = 8;
/// Multiply-adds per input pixel the nearest-neighbour search may cost by default (query patches
/// × bank rows × dims ÷ pixels) when `backbone.toml` does not say
/// (`scoring_budget_macs_per_pixel`): 2,048, i.e. 2²⁷ ≈ 134 M for a 256² input. The backbone's
/// cost grows with the input's area too, so a per-pixel budget keeps scoring below the backbone
/// at any size. Lite2 uses this (`make bench-teach`: scoring 0.65–0.73 of its backbone on one
/// CPU thread with local scales): 8,192 bank rows on the stride-16 grid with 64 dims, 2,048 on
/// stride 8, whatever the input size. Lite0 is a third cheaper per pixel, so its package says
/// 1,536 (6,144 and 1,536 rows).
pub const SCORING_BUDGET_MACS_PER_PIXEL: usize = 2048;

/// Everything `teach` can be told.
#[derive(Clone, Debug)]
pub struct TeachOptions {
    pub images: PathBuf,
    pub out: PathBuf,
    pub backbone: PathBuf,
    /// Model name in the manifest (default: the output folder's name).
    pub name: Option<String>,
    pub input_mode: InputMode,
    /// Model input height and width (tile size, or the size frames are squashed to).
    pub size: u32,
    /// Pixels per patch: the stride of the grid patches are scored on (a backbone tap's stride).
    pub grid_stride: usize,
    pub tile_overlap_px: u32,
    pub coreset_ratio: f64,
    /// Upper bound on the bank (the run-time cost); `None` = [`budget_bank_rows`].
    pub max_bank_rows: Option<usize>,
    /// Divide each patch's distance by its nearest bank row's mean distance to this many nearest
    /// other rows ([`super::knn::Bank::local_scales`]); 0 = plain distances.
    pub local_scale_k: usize,
    pub pca_dims: usize,
    /// PCA whitening power ([`pca::Pca::whiten`]): 1 = every component scaled to unit variance
    /// (Mahalanobis distances in the PCA space), 0 = plain projection.
    pub whiten: f64,
    pub holdout_fraction: f64,
    pub threshold_sigmas: f32,
    pub blur_sigma_px: f32,
    pub top_fraction: f32,
    pub max_patches: usize,
    pub seed: u64,
    /// ONNX Runtime and coreset threads; 0 = all cores.
    pub threads: usize,
    pub progress: bool,
    /// If `out` already holds a package when teaching ends (another process taught it), keep
    /// that one and discard this one, instead of replacing it.
    pub keep_existing: bool,
}

impl TeachOptions {
    /// The defaults `linesight teach` uses, for a folder of images and an output folder.
    pub fn new(images: impl Into<PathBuf>, out: impl Into<PathBuf>, backbone: impl Into<PathBuf>) -> Self {
        Self {
            images: images.into(),
            out: out.into(),
            backbone: backbone.into(),
            name: None,
            input_mode: InputMode::Resize,
            size: 256,
            grid_stride: 16,
            tile_overlap_px: 32,
            coreset_ratio: 0.25,
            max_bank_rows: None,
            local_scale_k: 3,
            pca_dims: 64,
            whiten: 1.0,
            holdout_fraction: 0.15,
            threshold_sigmas: 3.0,
            blur_sigma_px: 16.0,
            top_fraction: 0.05,
            max_patches: 1_000_000,
            seed: 0,
            threads: 0,
            progress: false,
            keep_existing: false,
        }
    }
}

/// What a teach run did, for the command's summary and the manifest.
#[derive(Clone, Debug)]
pub struct TeachReport {
    pub out: PathBuf,
    pub info: TeachInfo,
    pub threshold: f32,
}

/// Teach a model package from good images. See the module docs for the procedure.
pub fn teach(opts: &TeachOptions) -> Result<TeachReport> {
    let started = Instant::now();
    check_options(opts)?;
    let backbone = Backbone::load(&opts.backbone).map_err(|e| anyhow!(e))?;
    let size = opts.size as usize;
    if !size.is_multiple_of(backbone.multiple_of) {
        bail!("--size {size} must be a multiple of {} for backbone {}", backbone.multiple_of, backbone.name);
    }
    let grid = opts.grid_stride;
    let shape = InputShape { channels: 3, height: size, width: size };
    let feature_model = onnx::feature_graph(&backbone, shape, grid).map_err(|e| anyhow!("--grid-stride: {e}"))?;
    let files = list_images(&opts.images)?;
    let (teach_set, holdout) = split(&files, opts.holdout_fraction, opts.seed);
    let threads =
        if opts.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { opts.threads };
    let feeder = Feeder::new(opts, shape);
    let cells = (size / grid).pow(2);
    let dim = backbone.feature_dim();

    // Features of every image, the teach split's first: the calibration bank is taught from the
    // teach split alone, the shipped bank from all of them.
    let t0 = Instant::now();
    let ordered: Vec<&PathBuf> = teach_set.iter().chain(&holdout).collect();
    let tiles_per_image: Vec<usize> = ordered.iter().map(|p| feeder.tile_count(p)).collect::<Result<_>>()?;
    let total_tiles: usize = tiles_per_image.iter().sum();
    let teach_tiles: usize = tiles_per_image[..teach_set.len()].iter().sum();
    let keep_per_tile = (opts.max_patches / total_tiles.max(1)).clamp(1, cells);
    let mut session = session_from_bytes(&feature_model, threads).context("loading the feature graph")?;
    let bar = progress_bar(opts.progress, ordered.len() as u64, "features");
    let mut patches: Vec<f32> = Vec::with_capacity(total_tiles * keep_per_tile * dim);
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x7465_6163_6800);
    let mut batch = Vec::new();
    let mut failures = Vec::new();
    for path in &ordered {
        if let Err(e) = feeder.tensors(path, &mut batch) {
            failures.push(format!("{}: {e}", path.display()));
        }
        if batch.len() >= BATCH * shape.item_len() {
            run_features(&mut session, &mut batch, shape, cells, dim, keep_per_tile, &mut rng, &mut patches)?;
        }
        bar.inc(1);
    }
    run_features(&mut session, &mut batch, shape, cells, dim, keep_per_tile, &mut rng, &mut patches)?;
    bar.finish_and_clear();
    if !failures.is_empty() {
        bail!(
            "{} teach image(s) could not be read; remove or replace them and teach again:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    drop(session);
    let feature_s = t0.elapsed().as_secs_f64();
    let rows = patches.len() / dim;
    let teach_rows = teach_tiles * keep_per_tile;
    tracing::info!(images = files.len(), tiles = total_tiles, patches = rows, seconds = feature_s, "teach features");
    let max_bank_rows = opts
        .max_bank_rows
        .unwrap_or_else(|| budget_bank_rows(backbone.scoring_budget_macs_per_pixel, grid, opts.pca_dims));
    let mut fit_s = 0.0;
    let mut coreset_s = 0.0;
    let mut scale_s = 0.0;
    let mut bank_of = |rows_in: &[f32], what: &str| -> Result<(pca::Pca, Vec<f32>, Option<Vec<f32>>)> {
        let ((fitted, bank), pca_s, cs) = learn_bank(rows_in, dim, opts, max_bank_rows, what)?;
        fit_s += pca_s;
        coreset_s += cs;
        let t = Instant::now();
        let scales = match opts.local_scale_k {
            0 => None,
            k => Some(floor_scales(Bank::new(bank.clone(), fitted.dims)?.local_scales(k, opts.threads)?)),
        };
        scale_s += t.elapsed().as_secs_f64();
        Ok((fitted, bank, scales))
    };
    let scoring_of = |fitted: &pca::Pca, bank: &[f32], scales: &Option<Vec<f32>>| -> Result<Vec<u8>> {
        let scoring = Scoring {
            mean: &fitted.mean,
            projection: &fitted.components,
            bank,
            grid_stride: grid,
            blur_sigma_px: opts.blur_sigma_px,
            top_fraction: opts.top_fraction,
            local_scale: scales.as_deref(),
        };
        onnx::scoring_model(&backbone, shape, &scoring).map_err(|e| anyhow!(e))
    };

    // Calibration: a model taught without the held-out images scores them.
    let (cal_fit, cal_bank, cal_scales) = bank_of(&patches[..teach_rows * dim], "calibration bank")?;
    let t3 = Instant::now();
    let mut scorer = session_from_bytes(&scoring_of(&cal_fit, &cal_bank, &cal_scales)?, threads)
        .context("loading the calibration model")?;
    drop((cal_fit, cal_bank, cal_scales));
    let bar = progress_bar(opts.progress, holdout.len() as u64, "calibrating");
    let mut scores = Vec::with_capacity(holdout.len());
    for path in &holdout {
        feeder.tensors(path, &mut batch).map_err(|e| anyhow!("{}: {e}; remove or replace it", path.display()))?;
        scores.push(image_score(&mut scorer, &mut batch, shape)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    drop(scorer);
    let calibrate_s = t3.elapsed().as_secs_f64();
    let stats = ScoreStats::of(&scores);
    let threshold = next_up((stats.mean + opts.threshold_sigmas as f64 * stats.std) as f32);

    // The shipped model: taught again from every image, held-out ones included (research round
    // 3: a bank from all the goods is worth ~0.015 image AUROC on MTD), with the threshold above.
    let (fitted, bank, scales) = bank_of(&patches, "bank")?;
    drop(patches);
    let model_bytes = scoring_of(&fitted, &bank, &scales)?;
    let bank_rows = bank.len() / fitted.dims;

    let info = TeachInfo {
        backbone: backbone.name.clone(),
        backbone_sha256: backbone.sha256.clone(),
        input_mode: opts.input_mode,
        images: files.len(),
        teach_images: teach_set.len(),
        holdout_images: holdout.len(),
        tiles: total_tiles,
        patches: rows,
        feature_dim: dim,
        grid_stride: grid,
        pca_dims: fitted.dims,
        pca_explained: round4(fitted.explained),
        pca_whiten: opts.whiten,
        coreset_ratio: opts.coreset_ratio,
        max_bank_rows,
        bank_rows,
        local_scale_k: opts.local_scale_k,
        seed: opts.seed,
        blur_sigma_px: opts.blur_sigma_px,
        top_fraction: opts.top_fraction,
        threshold_rule: format!(
            "mean + {} std of the held-out good scores under a model taught without them; the shipped bank is \
             taught from all {} images",
            opts.threshold_sigmas,
            files.len()
        ),
        holdout_score_mean: stats.mean as f32,
        holdout_score_std: stats.std as f32,
        holdout_score_max: stats.max as f32,
        holdout_rejected: scores.iter().filter(|&&s| s as f32 >= threshold).count(),
        seconds_features: round1(feature_s),
        seconds_pca: round1(fit_s),
        seconds_coreset: round1(coreset_s),
        seconds_local_scale: round1(scale_s),
        seconds_calibration: round1(calibrate_s),
        seconds_total: round1(started.elapsed().as_secs_f64()),
        peak_memory_mb: peak_memory_mb(),
        linesight_version: env!("CARGO_PKG_VERSION").into(),
    };
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| opts.out.file_name().map_or_else(|| "taught".into(), |n| n.to_string_lossy().into_owned()));
    write_package(&opts.out, &name, &model_bytes, shape, threshold, &info, opts.keep_existing)?;
    Ok(TeachReport { out: opts.out.clone(), info, threshold })
}

/// Local scales with a floor of 1/1000 of their mean (1 when all are 0): a bank row whose nearest
/// rows coincide with it (a teach set with fewer distinct patches than bank rows, e.g. flat
/// synthetic parts) would otherwise divide its patches' distances by 0.
fn floor_scales(mut scales: Vec<f32>) -> Vec<f32> {
    let mean = scales.iter().map(|&v| v as f64).sum::<f64>() / scales.len().max(1) as f64;
    let floor = if mean > 0.0 { (mean * 1e-3) as f32 } else { 1.0 };
    scales.iter_mut().for_each(|v| *v = v.max(floor));
    scales
}

/// Bank rows that keep the scoring step within `macs_per_pixel` (the backbone's
/// [`Backbone::scoring_budget_macs_per_pixel`]) on the patch grid of stride `grid` (one patch per
/// grid² pixels) with `dims`-d patches.
pub fn budget_bank_rows(macs_per_pixel: usize, grid: usize, dims: usize) -> usize {
    (macs_per_pixel * grid * grid / dims.max(1)).max(1)
}

/// PCA fitted on `rows` (`dim` wide), then the greedy coreset of the projected rows:
/// `coreset_ratio` of them, at most `max_bank_rows`. Returns the fit, the bank and the seconds
/// each step took.
fn learn_bank(
    rows: &[f32],
    dim: usize,
    opts: &TeachOptions,
    max_bank_rows: usize,
    what: &str,
) -> Result<((pca::Pca, Vec<f32>), f64, f64)> {
    let t1 = Instant::now();
    let mut fitted = pca::fit(rows, dim, opts.pca_dims, PCA_SAMPLE_ROWS, opts.seed)?;
    fitted.whiten(opts.whiten);
    let projected = fitted.project(rows)?;
    let pca_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let n = projected.len() / fitted.dims;
    let k = CoresetSize::Ratio(opts.coreset_ratio).resolve(n)?.min(max_bank_rows);
    let params = CoresetParams {
        size: CoresetSize::Count(k),
        // Already ≤ 64-d after PCA: greedy distances on the projected rows themselves.
        proj_dim: 0,
        seed: opts.seed,
        threads: opts.threads,
    };
    let spinner = progress_spinner(opts.progress, &format!("{what}: selecting {k} of {n} patches"));
    let picked = greedy_coreset(&projected, fitted.dims, &params)?;
    spinner.finish_and_clear();
    let mut bank = Vec::with_capacity(picked.len() * fitted.dims);
    for &r in &picked {
        bank.extend_from_slice(&projected[r * fitted.dims..(r + 1) * fitted.dims]);
    }
    Ok(((fitted, bank), pca_s, t2.elapsed().as_secs_f64()))
}

fn check_options(o: &TeachOptions) -> Result<()> {
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
    if !(0.0..=1.0).contains(&o.whiten) {
        problems.push(format!("--whiten {} must be in [0, 1] (1 = full whitening, 0 = plain PCA)", o.whiten));
    }
    if !(o.blur_sigma_px > 0.0 && o.blur_sigma_px.is_finite()) {
        problems.push(format!("--blur-sigma {} must be > 0 pixels", o.blur_sigma_px));
    }
    if !(o.top_fraction > 0.0 && o.top_fraction <= 1.0) {
        problems.push(format!("--top-fraction {} must be in (0, 1]", o.top_fraction));
    }
    if !(o.threshold_sigmas >= 0.0 && o.threshold_sigmas.is_finite()) {
        problems.push(format!("--threshold-sigmas {} must be ≥ 0", o.threshold_sigmas));
    }
    if o.size < 32 {
        problems.push(format!("--size {} is too small (at least 32 px)", o.size));
    }
    if o.input_mode == InputMode::Tile && o.tile_overlap_px >= o.size {
        problems.push(format!("--tile-overlap {} must be smaller than --size {}", o.tile_overlap_px, o.size));
    }
    if problems.is_empty() { Ok(()) } else { bail!("invalid teach options:\n  {}", problems.join("\n  ")) }
}

/// The image files directly in `dir`, sorted by name; at least [`MIN_IMAGES`].
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!("cannot read the teach folder {} (pass --images a folder of good images)", dir.display())
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && crate::sources::folder::has_image_extension(p))
        .collect();
    files.sort();
    if files.len() < MIN_IMAGES {
        bail!(
            "{} holds {} image(s) (png, jpg, bmp, tif); teach needs at least {MIN_IMAGES} good images — {} to teach from and \
             {MIN_HOLDOUT} held out to set the threshold — and a few hundred for a robust model",
            dir.display(),
            files.len(),
            MIN_IMAGES - MIN_HOLDOUT,
        );
    }
    Ok(files)
}

/// Seeded split into (teach, held out); both keep name order.
fn split(files: &[PathBuf], holdout_fraction: f64, seed: u64) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let n = files.len();
    let held = ((holdout_fraction * n as f64).round() as usize).clamp(MIN_HOLDOUT, n - 1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen = rand::seq::index::sample(&mut rng, n, held).into_vec();
    chosen.sort_unstable();
    let mut teach = Vec::with_capacity(n - held);
    let mut holdout = Vec::with_capacity(held);
    for (i, f) in files.iter().enumerate() {
        if chosen.binary_search(&i).is_ok() { holdout.push(f.clone()) } else { teach.push(f.clone()) }
    }
    (teach, holdout)
}

impl InputShape {
    fn item_len(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Turns image files into model input tensors exactly as the runtime's preprocessing does.
struct Feeder {
    mode: InputMode,
    shape: InputShape,
    overlap: u32,
    norm: Normalizer,
}

impl Feeder {
    fn new(opts: &TeachOptions, shape: InputShape) -> Self {
        Self { mode: opts.input_mode, shape, overlap: opts.tile_overlap_px, norm: Normalizer::new(&input_spec(shape)) }
    }

    /// Tiles the runtime will cut from this image (1 when squashing). Reads only the header.
    fn tile_count(&self, path: &Path) -> Result<usize> {
        if self.mode == InputMode::Resize {
            return Ok(1);
        }
        let (w, h) = image::image_dimensions(path)
            .with_context(|| format!("{}: cannot read the image header; remove or replace it", path.display()))?;
        let mut grid = TileGrid::default();
        grid.plan(w, h, self.shape.width as u32, self.shape.height as u32, self.overlap);
        Ok(grid.len())
    }

    /// Append the image's tensors (one per tile) to `out`.
    fn tensors(&self, path: &Path, out: &mut Vec<f32>) -> Result<(), String> {
        let mut pixels = Vec::new();
        let (width, height, format) = crate::sources::folder::decode_into(path, &mut pixels)?;
        let frame = frame_of(pixels, width, height, format);
        let (tw, th) = (self.shape.width as u32, self.shape.height as u32);
        let item = self.shape.item_len();
        match self.mode {
            InputMode::Resize => {
                let start = out.len();
                out.resize(start + item, 0.0);
                resize_to_tensor(&frame, tw, th, &self.norm, &mut out[start..]);
            }
            InputMode::Tile => {
                let mut grid = TileGrid::default();
                grid.plan(width, height, tw, th, self.overlap);
                for i in 0..grid.len() {
                    let (x0, y0) = grid.origin(i);
                    let start = out.len();
                    out.resize(start + item, 0.0);
                    tile_to_tensor(&frame, x0, y0, tw, th, &self.norm, &mut out[start..]);
                }
            }
        }
        Ok(())
    }
}

fn frame_of(pixels: Vec<u8>, width: u32, height: u32, format: PixelFormat) -> Frame {
    let pool = BufferPool::<u8>::new(1);
    let mut buf = pool.take(pixels.len());
    buf.copy_from_slice(&pixels);
    let meta =
        FrameMeta { camera: 0, seq: 0, part_id: None, captured_at: Instant::now(), captured_wall: SystemTime::now() };
    Frame { meta, format, width, height, pixels: buf }
}

/// The taught model's input: RGB in [0, 1] (the backbone applies the ImageNet normalisation);
/// gray frames are repeated on the three channels by the runtime's preprocessing.
fn input_spec(shape: InputShape) -> InputSpec {
    InputSpec {
        name: onnx::INPUT.into(),
        width: shape.width as u32,
        height: shape.height as u32,
        channels: shape.channels as u32,
        layout: Layout::Nchw,
        batch: 0,
        normalization: Normalization { mean: vec![0.0], std: vec![1.0] },
        mode: None,
        min_width: None,
        min_height: None,
    }
}

pub fn session_from_bytes(model: &[u8], threads: usize) -> Result<Session> {
    let env = runtime::environment().map_err(|e| anyhow!(e))?;
    let ort_err = |e: &dyn std::fmt::Display| anyhow!("ONNX Runtime: {e}");
    let session = Session::builder(env)
        .map_err(|e| ort_err(&e))?
        .with_intra_threads(threads)
        .map_err(|e| ort_err(&e))?
        .with_inter_threads(1)
        .map_err(|e| ort_err(&e))?
        .commit_from_memory(model)
        .map_err(|e| anyhow!("ONNX Runtime cannot load the graph: {e}"))?;
    Ok(session)
}

/// Run the feature graph on the tensors in `batch` (emptied), keeping `keep` seeded rows of each
/// tile's `cells` patch rows (all when `keep == cells`).
#[allow(clippy::too_many_arguments)]
fn run_features(
    session: &mut Session,
    batch: &mut Vec<f32>,
    shape: InputShape,
    cells: usize,
    dim: usize,
    keep: usize,
    rng: &mut ChaCha8Rng,
    patches: &mut Vec<f32>,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let n = batch.len() / shape.item_len();
    let tensor = TensorRef::from_array_view(([n, shape.channels, shape.height, shape.width], &batch[..]))?;
    let outputs = session.run(ort::inputs![onnx::INPUT => tensor])?;
    let (_, values) = outputs[onnx::PATCHES].try_extract_tensor::<f32>()?;
    if values.len() != n * cells * dim {
        bail!("feature graph returned {} values for {n} tiles of {cells} × {dim}", values.len());
    }
    for tile in values.chunks_exact(cells * dim) {
        if keep >= cells {
            patches.extend_from_slice(tile);
        } else {
            let mut rows = rand::seq::index::sample(rng, cells, keep).into_vec();
            rows.sort_unstable();
            for r in rows {
                patches.extend_from_slice(&tile[r * dim..(r + 1) * dim]);
            }
        }
    }
    batch.clear();
    Ok(())
}

/// Score one image's tiles (in `batch`, emptied) with the taught model: max over tiles.
fn image_score(session: &mut Session, batch: &mut Vec<f32>, shape: InputShape) -> Result<f64> {
    let n = batch.len() / shape.item_len();
    let tensor = TensorRef::from_array_view(([n, shape.channels, shape.height, shape.width], &batch[..]))?;
    let outputs = session.run(ort::inputs![onnx::INPUT => tensor])?;
    let (_, values) = outputs[onnx::SCORE].try_extract_tensor::<f32>()?;
    let score = values.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    batch.clear();
    if !score.is_finite() {
        bail!("the taught model gave a non-finite score on a held-out image");
    }
    Ok(score as f64)
}

/// Mean, standard deviation (n − 1) and maximum of the held-out scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreStats {
    pub mean: f64,
    pub std: f64,
    pub max: f64,
}

impl ScoreStats {
    pub fn of(scores: &[f64]) -> Self {
        let n = scores.len().max(1) as f64;
        let mean = scores.iter().sum::<f64>() / n;
        let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Self { mean, std: var.sqrt(), max: scores.iter().copied().fold(f64::NEG_INFINITY, f64::max) }
    }
}

/// The smallest f32 above `x`: "scores ≥ threshold are anomalous", so a held-out score equal to
/// the f32-rounded threshold must not count as a reject.
fn next_up(x: f32) -> f32 {
    if x.is_finite() { f32::from_bits(if x >= 0.0 { x.to_bits() + 1 } else { x.to_bits() - 1 }) } else { x }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB; 0 where unknown.
pub fn peak_memory_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| round1(kb / 1024.0))
}

fn progress_bar(show: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what:>12} {{bar:40}} {{pos}}/{{len}} images, {{per_sec}}, eta {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn progress_spinner(show: bool, message: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    spinner.set_message(message.to_string());
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    spinner
}

/// Write `model.onnx` + `model.toml` into a temporary sibling of `out`, then rename it into place
/// (replacing an older package there, unless `keep_existing`).
fn write_package(
    out: &Path,
    name: &str,
    model: &[u8],
    shape: InputShape,
    threshold: f32,
    info: &TeachInfo,
    keep_existing: bool,
) -> Result<()> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.teach-{}",
        out.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut input = input_spec(shape);
    input.mode = Some(info.input_mode);
    let manifest = Manifest {
        name: name.into(),
        onnx_file: "model.onnx".into(),
        sha256: hex::encode(Sha256::digest(model)),
        input,
        task: TaskSpec::Anomaly(AnomalySpec {
            score_output: onnx::SCORE.into(),
            map_output: onnx::MAP.into(),
            threshold,
            defect_class: "anomaly".into(),
        }),
        provenance: Provenance {
            made_by: format!("linesight teach {}", env!("CARGO_PKG_VERSION")),
            licence: "the backbone's (see its backbone.toml): Apache-2.0 for the shipped ones".into(),
            notes: format!(
                "PatchCore-style model taught from {} good images with backbone {}; threshold {threshold} from {} held-out good images",
                info.teach_images, info.backbone, info.holdout_images
            ),
        },
        teach: Some(info.clone()),
    };
    let text = toml::to_string_pretty(&manifest).context("serialising model.toml")?;
    let header = "# A taught anomaly model, written by `linesight teach`: the backbone and the scoring step\n\
                  # (memory bank baked in) as one ONNX graph. Teach again rather than editing by hand.\n";
    std::fs::write(tmp.join("model.onnx"), model).context("writing model.onnx")?;
    std::fs::write(tmp.join("model.toml"), format!("{header}{text}")).context("writing model.toml")?;
    let taken = || out.join("model.toml").is_file();
    if keep_existing && taken() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok(());
    }
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("cannot replace the old package {}", out.display()))?;
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        let _ = std::fs::remove_dir_all(&tmp);
        if keep_existing && taken() {
            return Ok(());
        }
        return Err(e).with_context(|| format!("cannot move the package into {}", out.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_and_keeps_name_order() {
        let files: Vec<PathBuf> = (0..20).map(|i| PathBuf::from(format!("{i:02}.png"))).collect();
        let (a, b) = split(&files, 0.15, 0);
        assert_eq!((a.len(), b.len()), (17, 3));
        assert!(a.windows(2).all(|w| w[0] < w[1]) && b.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(split(&files, 0.15, 0), (a.clone(), b.clone()));
        assert_ne!(split(&files, 0.15, 1).1, b, "another seed holds out other images");
        let (_, few) = split(&files[..8], 0.01, 0);
        assert_eq!(few.len(), MIN_HOLDOUT);
    }

    #[test]
    fn local_scales_never_divide_by_zero() {
        assert_eq!(floor_scales(vec![0.0, 2.0, 4.0]), vec![0.002, 2.0, 4.0]);
        assert_eq!(floor_scales(vec![0.0, 0.0]), vec![1.0, 1.0]);
    }

    #[test]
    fn score_stats_and_threshold_rounding() {
        let s = ScoreStats::of(&[1.0, 2.0, 3.0]);
        assert_eq!((s.mean, s.std, s.max), (2.0, 1.0, 3.0));
        assert!(next_up(3.0) > 3.0 && next_up(3.0) - 3.0 < 1e-6);
    }
}
