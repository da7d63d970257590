//! `linesight eval`: runs a model over a labelled data set through the real pipeline (the same
//! code path as production: folder source → camera thread → preprocess → inference → stitch →
//! decode → decide) and measures it: image AUROC, pixel AUROC where masks exist, and escape and
//! overkill rates with the confusion matrix at an operating point.
//!
//! **Results back to files.** The data set's images are listed (see [`dataset`]) and replayed
//! from a private staging folder of symbolic links named `0000000.<ext>`, `0000001.<ext>`, … in
//! list order. The folder source stamps each frame's part id from its file name, so a part id is
//! the image's index in the list: exact even when several class folders hold the same file name,
//! and independent of which frames fail to decode. The staging folder is removed afterwards.
//!
//! **Scores.** Anomaly models: the inspection's `image_score`. Other tasks: the highest
//! `max_score` of the inspection's defects (0 when it has none). A frame whose inference failed
//! (FAILSAFE `inference_error`) has no score: it is left out of the AUROC and counted as
//! rejected at the operating point, as the line would.
//!
//! **Operating point.** By default the pipeline's own verdicts: the model's threshold and the
//! rules (`--config` takes the rules, pipeline and model settings of a station config; without it
//! there are no rules, so any defect the model reports rejects). `--threshold X` rejects scores
//! ≥ X instead; `--target-escape PCT` picks the highest such threshold whose escape rate is at
//! most PCT %.
//!
//! **Pixel AUROC.** The assembler sends each frame's stitched per-pixel scores (see
//! [`crate::topology::Station::with_score_maps`]); pixels of good images are negatives, mask
//! pixels > 0 of defective images with a mask are positives, the rest of those images negatives.
//! Defective images without a mask are left out. Scores are binned (see [`pixel_bin`]).

pub mod dataset;
pub mod metrics;
pub mod report;

use crate::config::{self, LoadedConfig};
use crate::model::manifest::TaskSpec;
use crate::pipeline::RecordPort;
use crate::pipeline::messages::OUTPUT_QUEUE_DEPTH;
use crate::pipeline::messages::{Inspection, ScoreMap};
use crate::pipeline::{FailsafeCause, Verdict};
use crate::topology::{RunOptions, Station};
use anyhow::{Context, Result, anyhow, bail};
use dataset::{Dataset, Item};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// What to evaluate, and how.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    pub model: PathBuf,
    pub dataset: PathBuf,
    /// A station config whose rules, `[pipeline]` and `[model]` settings (not its package) apply.
    pub config: Option<PathBuf>,
    /// Reject scores ≥ this instead of using the pipeline's verdicts.
    pub threshold: Option<f32>,
    /// Pick the threshold that meets this escape rate, in percent.
    pub target_escape_pct: Option<f64>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// One image's outcome.
#[derive(Clone, Debug)]
pub struct ImageResult {
    pub item: Item,
    /// The pipeline's verdict; `None` when the image never became a frame (unreadable).
    pub verdict: Option<Verdict>,
    /// `None` when not inspected or when inference failed.
    pub score: Option<f32>,
    /// Rejected at the operating point (`None` when not inspected).
    pub rejected: Option<bool>,
    /// Why it was not inspected.
    pub error: Option<String>,
}

/// Run the evaluation: its report, and each image's outcome in data set order.
pub fn run(opts: &EvalOptions) -> Result<(report::Report, Vec<ImageResult>)> {
    let started = Instant::now();
    let data = Dataset::load(&opts.dataset)?;
    if let Some(pct) = opts.target_escape_pct
        && !(0.0..=100.0).contains(&pct)
    {
        bail!("--target-escape {pct}: expected a percentage 0..=100");
    }
    let staging = Staging::new(&data.items)?;
    let loaded = station_config(opts, staging.dir())?;
    let (tx, rx) = crossbeam_channel::bounded::<Inspection>(OUTPUT_QUEUE_DEPTH);
    let station = Station::build(&loaded, RunOptions { outputs: vec![RecordPort::results(tx)], ..Default::default() })
        .map_err(|e| anyhow!("model {}: {e}", opts.model.display()))?;
    let task = station.package().manifest.task.clone();
    let model_name = station.package().manifest.name.clone();
    let teach_estimate = station.package().manifest.teach.as_ref().and_then(|t| t.operating_point.clone());
    let model_sha = station.package().sha256.clone();
    let want_maps = data.masks() > 0 && matches!(task, TaskSpec::Anomaly(_) | TaskSpec::Segmentation(_));
    let (station, pixel_thread) = if want_maps {
        let (map_tx, map_rx) = crossbeam_channel::bounded::<ScoreMap>(8);
        let items = Arc::new(data.items.clone());
        let handle = std::thread::Builder::new()
            .name("eval-pixels".into())
            .spawn(move || PixelAuroc::collect(&items, map_rx))
            .context("spawning the pixel AUROC thread")?;
        (station.with_score_maps(map_tx), Some(handle))
    } else {
        (station, None)
    };
    let accounting = station.accounting();
    let supervisor = station.supervisor();
    let runner = std::thread::Builder::new().name("station".into()).spawn(move || station.run())?;

    let bar = if opts.progress {
        let bar = indicatif::ProgressBar::new(data.items.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("evaluating {bar:40} {pos}/{len} images, {per_sec}, eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut results: Vec<ImageResult> = data
        .items
        .iter()
        .map(|item| ImageResult { item: item.clone(), verdict: None, score: None, rejected: None, error: None })
        .collect();
    let anomaly = matches!(task, TaskSpec::Anomaly(_));
    for inspection in rx.iter() {
        bar.inc(1);
        let Some(index) = inspection.meta.part_id.and_then(|id| id.parse::<usize>().ok()) else { continue };
        let Some(r) = results.get_mut(index) else { continue };
        r.verdict = Some(inspection.verdict);
        r.score = score(&inspection, anomaly);
    }
    bar.finish_and_clear();
    runner.join().map_err(|_| anyhow!("the pipeline panicked"))?;
    // A stage that died leaves images unjudged: no figures from a half-run pipeline.
    if let Some(failure) = supervisor.failure() {
        anyhow::bail!("evaluation stopped: {failure}");
    }
    let pixel = match pixel_thread {
        Some(h) => Some(h.join().map_err(|_| anyhow!("the pixel AUROC thread panicked"))?),
        None => None,
    };
    let dropped = accounting.results_dropped.load(Relaxed);
    if dropped > 0 {
        bail!("{dropped} inspection records were lost on the way to eval; rerun it (the machine was overloaded)");
    }
    drop(staging);
    for r in results.iter_mut().filter(|r| r.verdict.is_none()) {
        // Never became a frame: say why, from the image decoder itself.
        r.error = Some(match image::ImageReader::open(&r.item.path).and_then(|i| i.with_guessed_format()) {
            Ok(reader) => match reader.decode() {
                Ok(_) => "not inspected (dropped by the pipeline)".into(),
                Err(e) => format!("unreadable: {e}"),
            },
            Err(e) => format!("unreadable: {e}"),
        });
    }

    let configured = match &task {
        TaskSpec::Anomaly(a) => Some(a.threshold),
        TaskSpec::Segmentation(s) => Some(s.pixel_threshold),
        TaskSpec::Detection(d) => Some(d.score_threshold),
        TaskSpec::Classification(_) => None,
    };
    let ctx = report::Context {
        model: opts.model.display().to_string(),
        model_name,
        model_sha256: model_sha,
        task: task.kind().to_string(),
        dataset: opts.dataset.display().to_string(),
        configured_threshold: configured,
        teach_estimate,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    let pixel = match pixel {
        Some(p) => report::PixelStatus::from(p),
        None if data.masks() == 0 => {
            report::PixelStatus::not_computed("no ground-truth masks in <parent of DIR>/ground_truth/<defect>/")
        }
        None => report::PixelStatus::not_computed(&format!("{} models give no per-pixel scores", task.kind())),
    };
    let report = report::Report::build(ctx, &data, &mut results, opts.threshold, opts.target_escape_pct, pixel);
    Ok((report, results))
}

/// An inspection's image score (see the module docs).
fn score(inspection: &Inspection, anomaly: bool) -> Option<f32> {
    if matches!(inspection.verdict, Verdict::Failsafe(FailsafeCause::InferenceError | FailsafeCause::InvalidOutput)) {
        return None;
    }
    if anomaly {
        return Some(inspection.image_score).filter(|s| !s.is_nan());
    }
    Some(inspection.defects.iter().map(|d| d.defect.max_score).fold(0.0f32, f32::max))
}

/// The station config eval runs: one camera replaying the staging folder with block
/// backpressure (no frame lost), no verdict deadline to speak of (offline, a slow machine must not
/// turn verdicts into timeouts), and the model given. `--config` adds its rules and settings.
fn station_config(opts: &EvalOptions, staging: &Path) -> Result<LoadedConfig> {
    let quote = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let model = std::path::absolute(&opts.model).unwrap_or_else(|_| opts.model.clone());
    let text = format!(
        r#"
[station]
name = "eval"

[[camera]]
id = "eval"
fps = 0
backpressure = "block"
stall_timeout_ms = 3600000
[camera.source]
kind = "folder"
path = {staging}
looping = false

[model]
package = {model}

[pipeline]
# The longest deadline a config may set: eval judges accuracy, not speed, so no image may fail
# safe for time on a slow machine.
verdict_deadline_ms = 3600000

[admin]
enabled = false
"#,
        staging = quote(staging),
        model = quote(&model),
    );
    let mut loaded = config::load_str(&text, "eval station", PathBuf::from("."))?;
    if let Some(path) = &opts.config {
        let station = config::load_file(path)?;
        let cfg = &mut loaded.config;
        cfg.rules = station.config.rules;
        cfg.pipeline = station.config.pipeline;
        cfg.pipeline.verdict_deadline_ms = 3_600_000;
        let m = station.config.model;
        (
            cfg.model.provider,
            cfg.model.workers,
            cfg.model.intra_threads,
            cfg.model.intra_spinning,
            cfg.model.pin_workers,
            cfg.model.device_id,
        ) = (m.provider, m.workers, m.intra_threads, m.intra_spinning, m.pin_workers, m.device_id);
    }
    Ok(loaded)
}

/// A private folder of links `NNNNNNN.<ext>` → the data set's images, in list order; removed
/// when dropped.
struct Staging(PathBuf);

impl Staging {
    fn new(items: &[Item]) -> Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("linesight-eval-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating the staging folder {}", dir.display()))?;
        let staging = Self(dir);
        for (i, item) in items.iter().enumerate() {
            let target = std::fs::canonicalize(&item.path).with_context(|| format!("{}", item.path.display()))?;
            let ext = item.path.extension().and_then(|e| e.to_str()).unwrap_or("png").to_ascii_lowercase();
            let link = staging.0.join(format!("{i:07}.{ext}"));
            link_or_copy(&target, &link).with_context(|| format!("staging {}", item.path.display()))?;
        }
        Ok(staging)
    }

    fn dir(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
fn link_or_copy(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn link_or_copy(target: &Path, link: &Path) -> std::io::Result<()> {
    std::fs::copy(target, link).map(|_| ())
}

/// Number of pixel-score bins: the order-preserving bit pattern of an f32 cut to its top 20
/// bits (sign, exponent, 11 mantissa bits), so scores within about 0.05% of each other tie.
const PIXEL_BINS: usize = 1 << 20;

/// The bin of a pixel score; bins increase with the score (NaN last).
pub fn pixel_bin(score: f32) -> usize {
    let bits = score.to_bits();
    let key = if bits & 0x8000_0000 != 0 { !bits } else { bits | 0x8000_0000 };
    (key >> 12) as usize
}

/// Pixel AUROC accumulated image by image (binned counts of good and defect pixels).
pub struct PixelAuroc {
    good: Vec<u64>,
    defect: Vec<u64>,
    /// Images whose pixels counted.
    pub images: usize,
    /// Problems met (mask unreadable or of another size); those images are left out.
    pub skipped: Vec<String>,
}

impl PixelAuroc {
    fn collect(items: &[Item], maps: crossbeam_channel::Receiver<ScoreMap>) -> Self {
        let mut acc = Self { good: vec![0; PIXEL_BINS], defect: vec![0; PIXEL_BINS], images: 0, skipped: Vec::new() };
        for map in maps {
            let Some(item) = map.part_id.and_then(|id| id.parse::<usize>().ok()).and_then(|i| items.get(i)) else {
                continue;
            };
            if let Err(e) = acc.add(item, &map) {
                acc.skipped.push(format!("{}: {e}", item.path.display()));
            }
        }
        acc
    }

    fn add(&mut self, item: &Item, map: &ScoreMap) -> Result<()> {
        let mask = match (&item.mask, item.defective) {
            (_, false) => None,
            (Some(path), true) => {
                let mask = image::open(path).with_context(|| format!("mask {}", path.display()))?.to_luma8();
                if mask.dimensions() != (map.width, map.height) {
                    bail!(
                        "mask {} is {}×{}, the image {}×{}",
                        path.display(),
                        mask.width(),
                        mask.height(),
                        map.width,
                        map.height
                    );
                }
                Some(mask.into_raw())
            }
            // A defective image without a mask: its pixels' labels are unknown.
            (None, true) => return Ok(()),
        };
        for (i, &s) in map.scores.iter().enumerate() {
            let bin = pixel_bin(s);
            match &mask {
                Some(m) if m[i] > 0 => self.defect[bin] += 1,
                _ => self.good[bin] += 1,
            }
        }
        self.images += 1;
        Ok(())
    }

    /// The AUROC (`None` without defect pixels or without good pixels).
    pub fn auroc(&self) -> Option<f64> {
        metrics::auroc_binned(&self.good, &self.defect)
    }

    pub fn defect_pixels(&self) -> u64 {
        self.defect.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_bins_keep_the_order_of_scores() {
        let scores = [f32::NEG_INFINITY, -1e9, -2.0, -1.0, -1e-30, 0.0, 1e-30, 0.25, 0.5, 0.5005, 1.0, 3.0, 1e9];
        for pair in scores.windows(2) {
            assert!(pixel_bin(pair[0]) <= pixel_bin(pair[1]), "{pair:?}");
        }
        assert!(pixel_bin(0.5) < pixel_bin(0.502));
        assert!(pixel_bin(f32::INFINITY) < PIXEL_BINS);
        assert!(pixel_bin(f32::NAN) < PIXEL_BINS);
    }
}
