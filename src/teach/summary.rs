//! What `linesight teach` prints when it is done.

use super::learn::TeachReport;
use std::fmt::Write as _;

/// What `linesight teach` prints: the recipes tried, the model, the operating point and its
/// expected cost, and the time taken.
pub fn summary(report: &TeachReport) -> String {
    let i = &report.info;
    let mut s = String::new();
    let pct = |v: f64| format!("{:.1}%", 100.0 * v);
    if let Some(r) = &i.recipe {
        let _ = writeln!(s, "recipes tried ({:.1} s), judged by the {}:", r.seconds, r.criterion);
        trials(&mut s, &r.candidates, &r.chosen);
        if let Some(chosen) = &r.post_chosen {
            let _ = writeln!(s, "ways to read the map tried on {}, judged by the labelled defects alone:", r.chosen);
            trials(&mut s, &r.post_candidates, chosen);
        }
    }
    let scorer = if i.placed {
        "a Gaussian of the goods at each place on the grid".to_string()
    } else {
        format!("bank of {}", i.bank_rows)
    };
    let _ = writeln!(
        s,
        "taught {}: {} images ({} teach, {} held out{}), {} patches → {scorer} × {} (PCA keeps {:.1}% of the variance; {})",
        report.out.display(),
        i.images,
        i.teach_images,
        i.holdout_images,
        if i.defect_images > 0 { format!(", {} labelled defects", i.defect_images) } else { String::new() },
        i.patches,
        i.pca_dims,
        100.0 * i.pca_explained,
        match i.pca_whiten {
            0.0 => "not whitened".to_string(),
            1.0 => "whitened".to_string(),
            p => format!("whitened to the power {p}"),
        }
    );
    if let Some(structure) = i.place_structure {
        let _ = writeln!(
            s,
            "places of the grid: {} (their typical good scores differ by {structure:.2}; scaled from {} on)",
            if i.place_scale {
                "each place's patch scores divided by what good parts score there"
            } else {
                "every place alike"
            },
            super::place_scale::MIN_STRUCTURE
        );
    }
    let precision = match (i.backbone_int8, i.int8_calibration_inputs) {
        (false, _) => "FP32".to_string(),
        (true, 0) => "INT8 copy".to_string(),
        (true, n) => format!("INT8, quantized here, ranges from {n} inputs of the teach images"),
    };
    let _ = writeln!(s, "backbone {} ({precision})", i.backbone);
    match &i.operating_point {
        Some(op) => {
            let _ = writeln!(s, "threshold {:.4}: {}", report.threshold, op.rule);
            let labelled = op
                .estimated_escape_labelled
                .map_or_else(String::new, |e| format!(", {} of the {} labelled defects", pct(e), op.labelled_defects));
            // Painted marks are a proxy, written for no product in particular: on real parts they
            // have mostly been harder to catch than the real defects (docs/TEACH.md, step 6), so
            // without labelled defects the operator is told what would give a real estimate.
            let proxy = if op.estimated_escape_labelled.is_none() {
                " (painted marks, a proxy that is usually harsher than real defects; `--defects DIR` with a few \
                 real ones estimates it on them)"
            } else {
                ""
            };
            let synthetic = op.estimated_escape_synthetic.map_or_else(
                || "no synthetic defect could be painted".to_string(),
                |e| format!("{} of {} synthetic defects{proxy}", pct(e), op.synthetic_defects),
            );
            let _ = writeln!(
                s,
                "  held-out goods at or above it: {} of {} ({}; the overkill is at most {} with 95% confidence); escape: {synthetic}{labelled}",
                op.holdout_goods_rejected,
                op.holdout_goods,
                pct(op.estimated_overkill),
                pct(op.estimated_overkill_upper95),
            );
        }
        None => {
            let _ = writeln!(s, "threshold {:.4}", report.threshold);
        }
    }
    if let Some(h) = &i.head {
        let _ = writeln!(
            s,
            "distance correction learned from the {} labelled defects: {} (leave-one-defect-out AUROC {:.4} with it, {:.4} without)",
            h.labelled_defects,
            if h.used { "used" } else { "not used, it does not beat the plain distance" },
            h.loo_auroc,
            h.baseline_loo_auroc
        );
    }
    let _ = writeln!(
        s,
        "  held-out good scores: mean {:.4}, std {:.4}, max {:.4}",
        i.holdout_score_mean, i.holdout_score_std, i.holdout_score_max
    );
    let _ = writeln!(
        s,
        "teach time {:.1} s ({}features {:.1} s, PCA {:.1} s, coreset {:.1} s, local scales {:.1} s, validation {:.1} s); peak memory {:.0} MiB",
        i.seconds_total,
        if i.int8_calibration_inputs > 0 {
            format!("INT8 quantization {:.1} s, ", i.seconds_quantize)
        } else {
            String::new()
        },
        i.seconds_features,
        i.seconds_pca,
        i.seconds_coreset,
        i.seconds_local_scale,
        i.seconds_calibration,
        i.peak_memory_mb
    );
    s
}

/// One line per candidate tried, the chosen one marked.
fn trials(s: &mut String, candidates: &[crate::model::manifest::RecipeTrial], chosen: &str) {
    for c in candidates {
        let labelled = c.labelled_auroc.map_or_else(String::new, |a| format!(", labelled {a:.4}"));
        let mark = if c.recipe == chosen { "  <- chosen" } else { "" };
        let default = if c.preferred { " (default)" } else { "" };
        let beat = c
            .beat_best
            .map_or_else(String::new, |p| format!(", beat the best so far in {:.0}% of resamples", 100.0 * p));
        let _ = writeln!(
            s,
            "  {:<22} validation {:.4} (synthetic {:.4}{labelled}){beat}, {:.1} s{default}{mark}",
            c.recipe, c.validation, c.synthetic_auroc, c.seconds
        );
    }
}
