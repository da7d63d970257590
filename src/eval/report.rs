//! The evaluation report: JSON (serde), a human table, and the per-image CSV.

use super::dataset::Dataset;
use super::metrics::{Confusion, auroc, threshold_for_escape};
use super::{ImageResult, PixelAuroc};
use crate::model::manifest::OperatingPointEstimate;
use crate::pipeline::Verdict;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write;

/// Facts about the run that the report repeats.
pub struct Context {
    pub model: String,
    pub model_name: String,
    pub model_sha256: String,
    pub task: String,
    pub dataset: String,
    /// The model's own threshold (anomaly: image/pixel score; segmentation: pixel probability;
    /// detection: box score), reported with the pipeline's verdicts.
    pub configured_threshold: Option<f32>,
    /// What teach expected of the model's own threshold (taught models).
    pub teach_estimate: Option<OperatingPointEstimate>,
    pub elapsed_s: f64,
}

/// Pixel AUROC, or why there is none.
#[derive(Clone, Debug, Serialize)]
pub struct PixelStatus {
    pub auroc: Option<f64>,
    pub images: usize,
    pub defect_pixels: u64,
    pub note: String,
    pub skipped: Vec<String>,
}

impl PixelStatus {
    pub fn not_computed(why: &str) -> Self {
        Self { auroc: None, images: 0, defect_pixels: 0, note: format!("not computed: {why}"), skipped: Vec::new() }
    }
}

impl From<PixelAuroc> for PixelStatus {
    fn from(p: PixelAuroc) -> Self {
        let auroc = p.auroc();
        let note = match auroc {
            Some(_) => "over good images and defective images with a mask; scores binned to 11 mantissa bits".into(),
            None => "undefined: no defect pixels or no good pixels among the images with per-pixel labels".into(),
        };
        Self { auroc, images: p.images, defect_pixels: p.defect_pixels(), note, skipped: p.skipped }
    }
}

/// One class folder's figures at the operating point.
#[derive(Clone, Debug, Serialize)]
pub struct ClassReport {
    pub class: String,
    pub defective: bool,
    pub images: u64,
    pub inspected: u64,
    pub rejected: u64,
    /// Defect classes: share passed as OK (escapes); good: share rejected (overkill).
    pub error_rate: Option<f64>,
    pub mean_score: Option<f64>,
    /// Defect classes: AUROC of this class against the good images.
    pub auroc_vs_good: Option<f64>,
}

/// A failed image: not inspected, with the reason.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub file: String,
    pub class: String,
    pub error: String,
}

/// The pipeline's own verdicts as an operating point.
#[derive(Clone, Debug, Serialize)]
pub struct PipelinePoint {
    pub escape_rate: Option<f64>,
    pub overkill_rate: Option<f64>,
    pub confusion: Confusion,
    pub failsafe: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub model_name: String,
    pub model_sha256: String,
    pub task: String,
    pub dataset: String,
    /// Images listed in the data set.
    pub images: u64,
    pub good: u64,
    pub defective: u64,
    /// Images that got a verdict.
    pub inspected: u64,
    /// Images with a score (inspected, inference did not fail): those the AUROC counts.
    pub scored: u64,
    /// `null` (undefined) without scored good or defective images.
    pub image_auroc: Option<f64>,
    /// `null` when not computed or undefined; `pixel` says which and why.
    pub pixel_auroc: Option<f64>,
    pub pixel: PixelStatus,
    /// How the operating point was chosen: `pipeline`, `threshold` or `target_escape`.
    pub operating_point: String,
    /// The score threshold at the operating point (`pipeline`: the model's own threshold; the
    /// rules apply too).
    pub threshold: Option<f64>,
    /// `--target-escape`, in percent.
    pub target_escape_pct: Option<f64>,
    /// The model's own threshold (what the pipeline's verdicts use).
    pub model_threshold: Option<f64>,
    pub escape_rate: Option<f64>,
    pub overkill_rate: Option<f64>,
    pub confusion: Confusion,
    /// The pipeline's verdicts (model threshold and rules), whatever the operating point.
    pub pipeline: PipelinePoint,
    /// Teach's estimate of the pipeline's operating point (taught models), to compare with the
    /// measured `pipeline` figures.
    pub teach_estimate: Option<OperatingPointEstimate>,
    pub classes: Vec<ClassReport>,
    pub problems: Vec<Problem>,
    pub elapsed_s: f64,
}

impl Report {
    /// Compute every figure, and set each result's `rejected` at the operating point.
    pub fn build(
        ctx: Context,
        data: &Dataset,
        results: &mut [ImageResult],
        threshold: Option<f32>,
        target_escape_pct: Option<f64>,
        pixel: PixelStatus,
    ) -> Self {
        let scored = |defective: bool| -> Vec<f32> {
            results.iter().filter(|r| r.item.defective == defective).filter_map(|r| r.score).collect()
        };
        let (good_scores, bad_scores) = (scored(false), scored(true));
        let image_auroc = auroc(&good_scores, &bad_scores);

        // The operating point: a score threshold, or the pipeline's verdicts.
        let (operating_point, score_threshold) = match (threshold, target_escape_pct) {
            (Some(t), _) => ("threshold", Some(t)),
            (None, Some(pct)) => ("target_escape", threshold_for_escape(&bad_scores, pct / 100.0)),
            (None, None) => ("pipeline", None),
        };
        let mut pipeline = Confusion::default();
        let mut confusion = Confusion::default();
        let mut failsafe = 0;
        for r in results.iter_mut() {
            let Some(verdict) = r.verdict else { continue };
            let by_pipeline = verdict != Verdict::Ok;
            failsafe += u64::from(matches!(verdict, Verdict::Failsafe(_)));
            pipeline.add(r.item.defective, by_pipeline);
            // No score (inference failed): rejected, as the line would.
            let rejected = match (score_threshold, r.score) {
                (Some(t), Some(s)) => s >= t,
                (Some(_), None) => true,
                (None, _) => by_pipeline,
            };
            r.rejected = Some(rejected);
            confusion.add(r.item.defective, rejected);
        }

        let classes = data
            .classes
            .iter()
            .map(|class| {
                let of: Vec<&ImageResult> = results.iter().filter(|r| &r.item.class == class).collect();
                let defective = class != super::dataset::GOOD;
                let inspected = of.iter().filter(|r| r.rejected.is_some()).count() as u64;
                let rejected = of.iter().filter(|r| r.rejected == Some(true)).count() as u64;
                let scores: Vec<f32> = of.iter().filter_map(|r| r.score).collect();
                let errors = if defective { inspected - rejected } else { rejected };
                ClassReport {
                    class: class.clone(),
                    defective,
                    images: of.len() as u64,
                    inspected,
                    rejected,
                    error_rate: (inspected > 0).then(|| errors as f64 / inspected as f64),
                    mean_score: (!scores.is_empty())
                        .then(|| scores.iter().map(|&s| f64::from(s)).sum::<f64>() / scores.len() as f64),
                    auroc_vs_good: if defective { auroc(&good_scores, &scores) } else { None },
                }
            })
            .collect();
        let problems = results
            .iter()
            .filter_map(|r| {
                let error = r.error.clone()?;
                Some(Problem { file: r.item.path.display().to_string(), class: r.item.class.clone(), error })
            })
            .collect();
        let threshold = match operating_point {
            "pipeline" => ctx.configured_threshold.map(f64::from),
            _ => score_threshold.map(f64::from),
        };
        let count = |pred: &dyn Fn(&ImageResult) -> bool| results.iter().filter(|r| pred(r)).count() as u64;
        Self {
            model: ctx.model,
            model_name: ctx.model_name,
            model_sha256: ctx.model_sha256,
            task: ctx.task,
            dataset: ctx.dataset,
            images: results.len() as u64,
            good: data.good() as u64,
            defective: data.defective() as u64,
            inspected: count(&|r| r.verdict.is_some()),
            scored: count(&|r| r.score.is_some()),
            image_auroc,
            pixel_auroc: pixel.auroc,
            pixel,
            operating_point: operating_point.into(),
            threshold,
            target_escape_pct,
            model_threshold: ctx.configured_threshold.map(f64::from),
            escape_rate: confusion.escape_rate(),
            overkill_rate: confusion.overkill_rate(),
            confusion,
            pipeline: PipelinePoint {
                escape_rate: pipeline.escape_rate(),
                overkill_rate: pipeline.overkill_rate(),
                confusion: pipeline,
                failsafe,
            },
            teach_estimate: ctx.teach_estimate,
            classes,
            problems,
            elapsed_s: ctx.elapsed_s,
        }
    }

    /// The human-readable summary.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let pct = |v: Option<f64>| v.map_or_else(|| "undefined".to_string(), |v| format!("{:.1}%", 100.0 * v));
        let num = |v: Option<f64>| v.map_or_else(|| "undefined".to_string(), |v| format!("{v:.4}"));
        let _ = writeln!(s, "model    {} ({}, sha256 {:.12})", self.model_name, self.task, self.model_sha256);
        let _ = writeln!(
            s,
            "dataset  {}: {} images ({} good, {} defective), {} inspected, {} unreadable, {:.1} s",
            self.dataset,
            self.images,
            self.good,
            self.defective,
            self.inspected,
            self.problems.len(),
            self.elapsed_s
        );
        let why = if self.image_auroc.is_none() { " (needs good and defective images)" } else { "" };
        let _ = writeln!(s, "image AUROC  {}{why}", num(self.image_auroc));
        let _ = match self.pixel.auroc {
            Some(a) => writeln!(
                s,
                "pixel AUROC  {a:.4} ({} images, {} defect pixels)",
                self.pixel.images, self.pixel.defect_pixels
            ),
            None => writeln!(s, "pixel AUROC  {}", self.pixel.note),
        };
        let point = match self.operating_point.as_str() {
            "pipeline" => "the pipeline's verdicts (model threshold and rules)".to_string(),
            "threshold" => "--threshold".to_string(),
            _ => format!("--target-escape {}%", self.target_escape_pct.unwrap_or(0.0)),
        };
        let threshold = self.threshold.map_or_else(|| "none".to_string(), |t| format!("{t}"));
        let _ = writeln!(s, "operating point: {point}, score threshold {threshold}");
        let _ = writeln!(
            s,
            "  escape rate {} (defective passed as OK), overkill rate {} (good rejected)",
            pct(self.escape_rate),
            pct(self.overkill_rate)
        );
        let c = &self.confusion;
        let _ = writeln!(s, "  {:<12} {:>10} {:>10}", "", "rejected", "passed");
        let _ = writeln!(s, "  {:<12} {:>10} {:>10}", "defective", c.defective_rejected, c.defective_passed);
        let _ = writeln!(s, "  {:<12} {:>10} {:>10}", "good", c.good_rejected, c.good_passed);
        if self.operating_point != "pipeline" {
            let _ = writeln!(
                s,
                "pipeline verdicts: escape rate {}, overkill rate {}",
                pct(self.pipeline.escape_rate),
                pct(self.pipeline.overkill_rate)
            );
        }
        if let Some(e) = &self.teach_estimate {
            let labelled = e.estimated_escape_labelled.map_or_else(String::new, |v| {
                format!(", {} of its {} labelled defects (in-sample)", pct(Some(v)), e.labelled_defects)
            });
            let synthetic = e.estimated_escape_synthetic.map_or_else(
                || "no synthetic defects".to_string(),
                |v| format!("{} of {} synthetic defects", pct(Some(v)), e.synthetic_defects),
            );
            let _ = writeln!(
                s,
                "teach expected at threshold {}: overkill {} (at most {} with 95% confidence; {} held-out goods), \
                 escape {synthetic}{labelled}; measured here at the model's threshold: overkill {}, escape {}",
                e.threshold,
                pct(Some(e.estimated_overkill)),
                pct(Some(e.estimated_overkill_upper95)),
                e.holdout_goods,
                pct(self.pipeline.overkill_rate),
                pct(self.pipeline.escape_rate),
            );
            if let Some(t) = self.model_threshold.filter(|&t| t as f32 != e.threshold) {
                let _ = writeln!(
                    s,
                    "  (the model's threshold is now {t}: it was edited after teaching, so the estimate is for another operating point)"
                );
            }
        }
        if self.pipeline.failsafe > 0 {
            let _ = writeln!(s, "fail-safe verdicts: {} (counted as rejected)", self.pipeline.failsafe);
        }
        let _ = writeln!(
            s,
            "{:<20} {:>7} {:>9} {:>22} {:>11} {:>10}",
            "class", "images", "rejected", "escape/overkill rate", "mean score", "AUROC"
        );
        for k in &self.classes {
            let _ = writeln!(
                s,
                "{:<20} {:>7} {:>9} {:>22} {:>11} {:>10}",
                k.class,
                k.images,
                k.rejected,
                format!("{} {}", pct(k.error_rate), if k.defective { "escape" } else { "overkill" }),
                k.mean_score.map_or_else(|| "-".into(), |m| format!("{m:.4}")),
                k.auroc_vs_good.map_or_else(|| "-".into(), |a| format!("{a:.4}")),
            );
        }
        for p in &self.problems {
            let _ = writeln!(s, "not inspected: {} ({})", p.file, p.error);
        }
        s
    }
}

/// One line per image: file, class, label, score, verdict (the pipeline's), decision (at the
/// operating point).
pub fn write_csv(results: &[ImageResult], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "file,class,label,score,verdict,decision")?;
    for r in results {
        let score = r.score.map_or_else(String::new, |s| format!("{s}"));
        let verdict = r.verdict.map_or("UNREADABLE", Verdict::as_str);
        let decision = match r.rejected {
            Some(true) => "NG",
            Some(false) => "OK",
            None => "",
        };
        let label = if r.item.defective { "defective" } else { "good" };
        writeln!(
            out,
            "{},{},{label},{score},{verdict},{decision}",
            csv_field(&r.item.path.display().to_string()),
            csv_field(&r.item.class)
        )?;
    }
    Ok(())
}

/// A CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}
