//! The operating point of a taught model: the threshold, chosen from the calibration model's
//! scores on held-out goods (and on defects, synthetic or labelled), with the overkill and escape
//! it is expected to cost.
//!
//! Rules, in order of precedence:
//! - `--threshold-sigmas K`: mean + K·std of the held-out good scores (the old rule, kept for
//!   stations that were tuned with it);
//! - `--target-escape PCT`: the highest threshold that lets at most PCT% of the labelled defects
//!   through (of the synthetic ones when fewer than [`MIN_LABELLED`] labelled defects are usable);
//! - labelled defects given: the `--max-overkill` threshold, lowered as far as needed to catch
//!   all but [`DEFAULT_LABELLED_ESCAPE`] of them, but never below the threshold that rejects
//!   [`OVERKILL_CAP`] of the held-out goods: the defects a user showed should be caught, at a
//!   bounded cost in good parts;
//! - otherwise (the default): the `1 − max_overkill` quantile of the held-out good scores
//!   (`--max-overkill`, 1%: the 99th percentile).
//!
//! Every score here is ≥ the threshold → rejected, as at run time.

use crate::eval::metrics::{auroc, next_up, threshold_for_escape};
use crate::model::manifest::OperatingPointEstimate;

/// Fewest usable labelled defects that take part in choosing the recipe and the target-escape
/// threshold; fewer only adjust the threshold.
pub const MIN_LABELLED: usize = 3;
/// With labelled defects and no `--target-escape`, the escape they may have.
pub const DEFAULT_LABELLED_ESCAPE: f64 = 0.05;
/// With labelled defects and no `--target-escape`, the most overkill (on held-out goods) the
/// threshold may be lowered to in order to catch them.
pub const OVERKILL_CAP: f64 = 0.05;

/// How to choose the threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    /// Mean + K·std (overrides the rest).
    pub sigmas: Option<f32>,
    /// Fraction of defects allowed to escape (0..=1).
    pub target_escape: Option<f64>,
    /// Fraction of held-out goods allowed to be rejected (0..=1).
    pub max_overkill: f64,
}

/// The calibration model's scores.
#[derive(Clone, Debug, Default)]
pub struct Scores {
    pub goods: Vec<f32>,
    pub synthetic: Vec<f32>,
    pub labelled: Vec<f32>,
}

impl Scores {
    /// AUROC of the held-out goods against the synthetic and against the labelled defects.
    pub fn aurocs(&self) -> (Option<f64>, Option<f64>) {
        (auroc(&self.goods, &self.synthetic), auroc(&self.goods, &self.labelled))
    }
}

/// The threshold the rule picks, and what it is expected to cost. `None` without held-out goods.
pub fn choose(scores: &Scores, rule: &Rule) -> Option<OperatingPointEstimate> {
    let goods = &scores.goods;
    if goods.is_empty() {
        return None;
    }
    let pct = |f: f64| format!("{}%", (f * 1000.0).round() / 10.0);
    let labelled = scores.labelled.len() >= MIN_LABELLED;
    let (threshold, rule_text) = if let Some(k) = rule.sigmas {
        let stats = ScoreStats::of(goods);
        (next_up((stats.mean + f64::from(k) * stats.std) as f32), format!("mean + {k} std of the held-out good scores"))
    } else if let Some(target) = rule.target_escape {
        let (defects, which) = if labelled { (&scores.labelled, "labelled") } else { (&scores.synthetic, "synthetic") };
        match threshold_for_escape(defects, target) {
            Some(t) => (t, format!("at most {} escape of the {which} defects", pct(target))),
            None => overkill_rule(goods, rule.max_overkill),
        }
    } else if !scores.labelled.is_empty() {
        let (at_max, text) = overkill_rule(goods, rule.max_overkill);
        let cap = threshold_for_overkill(goods, OVERKILL_CAP.max(rule.max_overkill));
        let catch = threshold_for_escape(&scores.labelled, DEFAULT_LABELLED_ESCAPE).unwrap_or(at_max);
        let t = at_max.min(catch.max(cap));
        let text = if t < at_max {
            format!(
                "lowered from {text} to catch the labelled defects (at most {} escape of them), but not below {} overkill",
                pct(DEFAULT_LABELLED_ESCAPE),
                pct(OVERKILL_CAP)
            )
        } else {
            format!("{text} (it already catches the labelled defects)")
        };
        (t, text)
    } else {
        overkill_rule(goods, rule.max_overkill)
    };
    Some(estimate(scores, threshold, rule_text))
}

fn overkill_rule(goods: &[f32], max_overkill: f64) -> (f32, String) {
    let pct = (max_overkill * 1000.0).round() / 10.0;
    (
        threshold_for_overkill(goods, max_overkill),
        format!("the {}th percentile of the held-out good scores (expected overkill {pct}%)", 100.0 - pct),
    )
}

/// The figures of `threshold` on the scores.
pub fn estimate(scores: &Scores, threshold: f32, rule: String) -> OperatingPointEstimate {
    let rejected = scores.goods.iter().filter(|&&s| s >= threshold).count();
    let n = scores.goods.len();
    let below = |v: &[f32]| v.iter().filter(|&&s| s < threshold).count() as f64 / v.len().max(1) as f64;
    OperatingPointEstimate {
        rule,
        threshold,
        holdout_goods: n,
        holdout_goods_rejected: rejected,
        estimated_overkill: rejected as f64 / n.max(1) as f64,
        estimated_overkill_upper95: clopper_pearson_upper(rejected, n, 0.95),
        synthetic_defects: scores.synthetic.len(),
        estimated_escape_synthetic: (!scores.synthetic.is_empty()).then(|| below(&scores.synthetic)),
        labelled_defects: scores.labelled.len(),
        estimated_escape_labelled: (!scores.labelled.is_empty()).then(|| below(&scores.labelled)),
        caveat: "measured with the calibration model, taught without the held-out goods; the shipped model is \
                 taught from every good image and usually scores goods a little lower, so the real overkill \
                 tends to be at or below the estimate and the escape at or above it"
            .into(),
    }
}

/// The `1 − fraction` quantile of the good scores (linear interpolation between order statistics,
/// "type 7"): the threshold at which `fraction` of good parts like these are expected to be
/// rejected. Unlike "at most that many of the held-out goods", it does not jump to the largest
/// score when fewer than 1/`fraction` goods were held out. `fraction` 0: just above the largest.
pub fn threshold_for_overkill(goods: &[f32], fraction: f64) -> f32 {
    let mut sorted = goods.to_vec();
    sorted.sort_by(f32::total_cmp);
    let Some(&max) = sorted.last() else { return 0.0 };
    if fraction <= 0.0 {
        return next_up(max);
    }
    let h = (sorted.len() - 1) as f64 * (1.0 - fraction.min(1.0));
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let t = f64::from(sorted[lo]) + (h - lo as f64) * (f64::from(sorted[hi]) - f64::from(sorted[lo]));
    // Just above: where the quantile falls on a score (or on tied scores), that good part is
    // not rejected (n = 101 at 1% rejects one, not two; equal scores reject none).
    next_up(t as f32)
}

/// One-sided upper confidence bound (level `confidence`) on a binomial proportion after `k`
/// successes in `n` trials (Clopper–Pearson): the p at which seeing ≤ k would have probability
/// 1 − confidence. 1 when n = 0.
pub fn clopper_pearson_upper(k: usize, n: usize, confidence: f64) -> f64 {
    if n == 0 || k >= n {
        return 1.0;
    }
    let alpha = 1.0 - confidence;
    let (mut lo, mut hi) = (k as f64 / n as f64, 1.0);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if binomial_cdf(k, n, mid) > alpha { lo = mid } else { hi = mid }
    }
    0.5 * (lo + hi)
}

/// P(X ≤ k) for X ~ Binomial(n, p), summed in log space.
fn binomial_cdf(k: usize, n: usize, p: f64) -> f64 {
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return if k >= n { 1.0 } else { 0.0 };
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut log_choose = 0.0f64; // ln C(n, 0)
    let mut sum = 0.0;
    for i in 0..=k {
        if i > 0 {
            log_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        sum += (log_choose + i as f64 * lp + (n - i) as f64 * lq).exp();
    }
    sum.min(1.0)
}

/// Mean, standard deviation (n − 1) and maximum of scores (the held-out goods').
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreStats {
    pub mean: f64,
    pub std: f64,
    pub max: f64,
}

impl ScoreStats {
    pub fn of(scores: &[f32]) -> Self {
        let n = scores.len().max(1) as f64;
        let mean = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
        let var = scores.iter().map(|&s| (f64::from(s) - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Self { mean, std: var.sqrt(), max: scores.iter().map(|&s| f64::from(s)).fold(f64::NEG_INFINITY, f64::max) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goods_0_to_99() -> Vec<f32> {
        (0..100).map(|i| i as f32).collect()
    }

    #[test]
    fn score_stats_and_threshold_rounding() {
        let s = ScoreStats::of(&[1.0, 2.0, 3.0]);
        assert_eq!((s.mean, s.std, s.max), (2.0, 1.0, 3.0));
        assert!(next_up(3.0) > 3.0 && next_up(3.0) - 3.0 < 1e-6);
    }

    #[test]
    fn overkill_rule_rejects_at_most_the_fraction() {
        let goods = goods_0_to_99();
        for (fraction, rejected) in [(0.01, 1), (0.05, 5), (0.0, 0), (0.015, 2)] {
            let t = threshold_for_overkill(&goods, fraction);
            assert_eq!(goods.iter().filter(|&&s| s >= t).count(), rejected, "fraction {fraction}");
        }
        // Fewer goods than 1/fraction: between the two largest, not above the largest.
        let t = threshold_for_overkill(&[1.0, 2.0, 3.0, 10.0], 0.01);
        assert!(t > 3.0 && t < 10.0, "{t}");
        // The quantile on a score, and ties: that score is not rejected.
        let hundred_and_one: Vec<f32> = (0..101).map(|i| i as f32).collect();
        let t = threshold_for_overkill(&hundred_and_one, 0.01);
        assert_eq!(hundred_and_one.iter().filter(|&&s| s >= t).count(), 1);
        let t = threshold_for_overkill(&[2.0; 30], 0.05);
        assert!(t > 2.0);
        assert!(threshold_for_overkill(&[5.0], 0.01) > 5.0);
    }

    #[test]
    fn clopper_pearson_matches_known_values() {
        // 0 of n: the "rule of three" upper bound 1 − 0.05^(1/n).
        for n in [10usize, 114, 1000] {
            let exact = 1.0 - 0.05f64.powf(1.0 / n as f64);
            assert!((clopper_pearson_upper(0, n, 0.95) - exact).abs() < 1e-9, "n={n}");
        }
        // 1 of 100: 0.0466 (tables of the one-sided 95% bound).
        assert!((clopper_pearson_upper(1, 100, 0.95) - 0.0466).abs() < 5e-4);
        assert_eq!(clopper_pearson_upper(3, 3, 0.95), 1.0);
    }

    #[test]
    fn labelled_defects_lower_the_threshold_within_the_cap() {
        let goods = goods_0_to_99();
        let rule = Rule { sigmas: None, target_escape: None, max_overkill: 0.01 };
        // Defects far above the goods: the 1% threshold stands.
        let easy = Scores { goods: goods.clone(), synthetic: vec![], labelled: vec![200.0; 10] };
        let op = choose(&easy, &rule).unwrap();
        assert_eq!(op.holdout_goods_rejected, 1);
        assert_eq!(op.estimated_escape_labelled, Some(0.0));
        // One defect at 97: lowered to catch it (2 more goods rejected).
        let mid = Scores { labelled: vec![97.0, 150.0, 150.0, 150.0], ..easy.clone() };
        let op = choose(&mid, &rule).unwrap();
        assert_eq!((op.threshold, op.holdout_goods_rejected), (97.0, 3));
        // One at 10: caught only down to the 5% cap.
        let hard = Scores { labelled: vec![10.0, 150.0, 150.0, 150.0], ..easy };
        let op = choose(&hard, &rule).unwrap();
        assert_eq!(op.holdout_goods_rejected, 5);
        assert_eq!(op.estimated_escape_labelled, Some(0.25));
    }

    #[test]
    fn target_escape_and_sigmas_override() {
        let goods = goods_0_to_99();
        let synthetic: Vec<f32> = (50..150).map(|i| i as f32).collect();
        let s = Scores { goods: goods.clone(), synthetic, labelled: vec![] };
        let op = choose(&s, &Rule { sigmas: None, target_escape: Some(0.1), max_overkill: 0.01 }).unwrap();
        assert!((op.estimated_escape_synthetic.unwrap() - 0.1).abs() < 1e-9 && op.threshold == 60.0, "{op:?}");
        let op = choose(&s, &Rule { sigmas: Some(0.0), target_escape: Some(0.1), max_overkill: 0.01 }).unwrap();
        assert!(op.threshold > 49.5 && op.threshold < 49.6);
        assert!(choose(&Scores::default(), &Rule { sigmas: None, target_escape: None, max_overkill: 0.01 }).is_none());
    }
}
