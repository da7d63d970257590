//! Evaluation metrics: AUROC as a rank statistic, the confusion matrix at a score threshold, and
//! the threshold that meets a target escape rate.
//!
//! Convention: "positive" means defective. A part is rejected (NG) when its score is at or above
//! the threshold. An escape is a defective part passed as OK; an overkill is a good part rejected.

use serde::Serialize;

/// Area under the ROC curve: the probability that a random defective score is above a random good
/// score, ties counting one half (the Mann–Whitney U statistic over `n_pos · n_neg`), computed
/// from ranks with ties given their average rank. `None` when either side is empty (undefined).
/// NaN scores are not allowed (callers leave unscored images out).
pub fn auroc(good: &[f32], defective: &[f32]) -> Option<f64> {
    if good.is_empty() || defective.is_empty() {
        return None;
    }
    let mut all: Vec<(f32, bool)> =
        good.iter().map(|&s| (s, false)).chain(defective.iter().map(|&s| (s, true))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the (1-based, tie-averaged) ranks of the defective scores.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their average.
        let avg = (i + 1 + j) as f64 / 2.0;
        let positives = all[i..j].iter().filter(|(_, p)| *p).count();
        rank_sum += avg * positives as f64;
        i = j;
    }
    let (np, nn) = (defective.len() as f64, good.len() as f64);
    Some((rank_sum - np * (np + 1.0) / 2.0) / (np * nn))
}

/// AUROC over weighted, binned scores: pixel AUROC, where sorting every pixel of a data set would
/// cost too much memory. `good[b]` and `defective[b]` count the pixels in score bin `b` (bins in
/// increasing score order); pixels in one bin tie. Exact when each bin holds one distinct score.
pub fn auroc_binned(good: &[u64], defective: &[u64]) -> Option<f64> {
    let (nn, np): (u64, u64) = (good.iter().sum(), defective.iter().sum());
    if nn == 0 || np == 0 {
        return None;
    }
    // Σ over bins: positives in bin × (negatives below + half the negatives in the bin).
    let mut below = 0u64;
    let mut u = 0.0f64;
    for (&g, &d) in good.iter().zip(defective) {
        u += d as f64 * (below as f64 + g as f64 / 2.0);
        below += g;
    }
    Some(u / (np as f64 * nn as f64))
}

/// Counts at one operating point. Positive = defective, predicted positive = rejected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// Defective parts rejected.
    pub defective_rejected: u64,
    /// Defective parts passed as OK: escapes.
    pub defective_passed: u64,
    /// Good parts rejected: overkill.
    pub good_rejected: u64,
    /// Good parts passed.
    pub good_passed: u64,
}

impl Confusion {
    /// Count one part.
    pub fn add(&mut self, defective: bool, rejected: bool) {
        match (defective, rejected) {
            (true, true) => self.defective_rejected += 1,
            (true, false) => self.defective_passed += 1,
            (false, true) => self.good_rejected += 1,
            (false, false) => self.good_passed += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.defective_rejected + self.defective_passed + self.good_rejected + self.good_passed
    }

    pub fn defective(&self) -> u64 {
        self.defective_rejected + self.defective_passed
    }

    pub fn good(&self) -> u64 {
        self.good_rejected + self.good_passed
    }

    /// Share of defective parts passed as OK (`None` without defective parts).
    pub fn escape_rate(&self) -> Option<f64> {
        ratio(self.defective_passed, self.defective())
    }

    /// Share of good parts rejected (`None` without good parts).
    pub fn overkill_rate(&self) -> Option<f64> {
        ratio(self.good_rejected, self.good())
    }
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

/// The highest score threshold whose escape rate (defective scores below it) is at most `target`
/// (a fraction, 0..=1): the one that costs the least overkill. Parts with a score at or above the
/// threshold are rejected. `None` without defective scores.
pub fn threshold_for_escape(defective: &[f32], target: f64) -> Option<f32> {
    if defective.is_empty() {
        return None;
    }
    let mut sorted = defective.to_vec();
    sorted.sort_by(f32::total_cmp);
    // At most `allowed` defective scores may lie below the threshold; the small epsilon keeps a
    // target such as 0.1 of 10 parts from rounding down to 0 misses.
    let allowed = ((target.clamp(0.0, 1.0) * sorted.len() as f64) + 1e-9).floor() as usize;
    if allowed >= sorted.len() {
        // Every defective part may escape: pass everything that is not above every score.
        let max = sorted[sorted.len() - 1];
        return Some(next_up(max));
    }
    // Scores below sorted[allowed] are at most `allowed` (ties with it are rejected too).
    Some(sorted[allowed])
}

/// The smallest f32 above `x` (for finite `x`): a threshold just above a score, so that a part
/// scoring exactly that is not rejected ("score ≥ threshold").
pub fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let bits = x.to_bits();
    f32::from_bits(if x > 0.0 { bits + 1 } else { bits - 1 })
}

/// The confusion matrix when parts scoring at or above `threshold` are rejected.
pub fn confusion_at(good: &[f32], defective: &[f32], threshold: f32) -> Confusion {
    let mut c = Confusion::default();
    for &s in good {
        c.add(false, s >= threshold);
    }
    for &s in defective {
        c.add(true, s >= threshold);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: over every (defective, good) pair, 1 when the defective scores higher,
    /// 1/2 on a tie.
    fn brute_force(good: &[f32], defective: &[f32]) -> Option<f64> {
        if good.is_empty() || defective.is_empty() {
            return None;
        }
        let mut wins = 0.0;
        for &d in defective {
            for &g in good {
                wins += if d > g {
                    1.0
                } else if d == g {
                    0.5
                } else {
                    0.0
                };
            }
        }
        Some(wins / (good.len() * defective.len()) as f64)
    }

    #[test]
    fn known_values() {
        assert_eq!(auroc(&[0.1, 0.2], &[0.3, 0.4]), Some(1.0));
        assert_eq!(auroc(&[0.3, 0.4], &[0.1, 0.2]), Some(0.0));
        assert_eq!(auroc(&[0.5, 0.5], &[0.5]), Some(0.5));
        // Ties across the classes count one half: 0 vs 0 (½), 0 vs 1 (0)… (1 + ½ + 1 + 1) / 4.
        assert_eq!(auroc(&[0.0, 0.0], &[0.0, 1.0]), Some(0.75));
        assert_eq!(auroc(&[], &[1.0]), None);
        assert_eq!(auroc(&[1.0], &[]), None);
    }

    #[test]
    fn binned_matches_exact_when_bins_are_distinct_scores() {
        // Scores 0, 1, 2 as bins.
        let good = [0.0, 0.0, 1.0];
        let bad = [1.0, 2.0];
        assert_eq!(auroc_binned(&[2, 1, 0], &[0, 1, 1]), auroc(&good, &bad));
        assert_eq!(auroc_binned(&[0, 0], &[1, 1]), None);
    }

    #[test]
    fn threshold_for_escape_examples() {
        let bad = [0.2, 0.5, 0.5, 0.9];
        assert_eq!(threshold_for_escape(&bad, 0.0), Some(0.2));
        assert_eq!(threshold_for_escape(&bad, 0.25), Some(0.5));
        // Two of four may escape, but the tie at 0.5 means the threshold can only rise above it
        // by letting three escape; 0.5 keeps the escape rate at 1/4.
        assert_eq!(threshold_for_escape(&bad, 0.5), Some(0.5));
        assert_eq!(threshold_for_escape(&bad, 0.75), Some(0.9));
        assert!(threshold_for_escape(&bad, 1.0).unwrap() > 0.9);
        assert_eq!(threshold_for_escape(&[], 0.0), None);
        let c = confusion_at(&[0.1, 0.6], &bad, 0.5);
        assert_eq!(c, Confusion { defective_rejected: 3, defective_passed: 1, good_rejected: 1, good_passed: 1 });
        assert_eq!(c.escape_rate(), Some(0.25));
        assert_eq!(c.overkill_rate(), Some(0.5));
    }

    /// Scores drawn from a few values, so ties across and within classes are common.
    fn scores() -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(prop_oneof![(0u8..6).prop_map(|v| v as f32 / 5.0), -1.0f32..2.0], 0..40)
    }

    proptest! {
        #[test]
        fn auroc_equals_the_pairwise_count(good in scores(), bad in scores()) {
            let (fast, slow) = (auroc(&good, &bad), brute_force(&good, &bad));
            match (fast, slow) {
                (Some(a), Some(b)) => prop_assert!((a - b).abs() < 1e-9, "{a} vs {b}"),
                (a, b) => prop_assert_eq!(a, b),
            }
            if let Some(a) = fast {
                prop_assert!((0.0..=1.0).contains(&a));
            }
        }

        #[test]
        fn binned_auroc_equals_the_pairwise_count(good in prop::collection::vec(0usize..8, 0..40),
                                                 bad in prop::collection::vec(0usize..8, 0..40)) {
            let (mut gh, mut bh) = ([0u64; 8], [0u64; 8]);
            good.iter().for_each(|&b| gh[b] += 1);
            bad.iter().for_each(|&b| bh[b] += 1);
            let gs: Vec<f32> = good.iter().map(|&b| b as f32).collect();
            let bs: Vec<f32> = bad.iter().map(|&b| b as f32).collect();
            match (auroc_binned(&gh, &bh), brute_force(&gs, &bs)) {
                (Some(a), Some(b)) => prop_assert!((a - b).abs() < 1e-9, "{a} vs {b}"),
                (a, b) => prop_assert_eq!(a, b),
            }
        }

        #[test]
        fn the_escape_threshold_meets_its_target_at_least_overkill(good in scores(), bad in scores(), target in 0.0f64..=1.0) {
            let Some(t) = threshold_for_escape(&bad, target) else {
                prop_assert!(bad.is_empty());
                return Ok(());
            };
            let c = confusion_at(&good, &bad, t);
            prop_assert!(c.escape_rate().unwrap() <= target + 1e-9);
            // No higher threshold (taken from the scores) also meets the target.
            for &higher in bad.iter().chain(&good).filter(|&&s| s > t) {
                let e = confusion_at(&good, &bad, higher).escape_rate().unwrap();
                prop_assert!(e > target + 1e-9, "threshold {higher} > {t} also meets {target}: {e}");
            }
        }
    }
}
