//! How teach picks between candidate recipes whose validation figures differ by less than the
//! validation can tell apart.
//!
//! Teach's validation set is small: one hold-out of the goods (15%: 71–114 images on the shared
//! sets, fewer on smaller teach sets), two synthetic defects painted on each, and a few labelled
//! defects when given. Its image AUROC has a standard error of 0.01–0.03, larger than most
//! differences between candidates, and the synthetic defects are a weaker judge on some products
//! than on others (research rounds 8 and 9, `docs/TEACH_RESEARCH.md`). Taking the plain maximum
//! therefore often follows noise away from the recipe that is best on average. So the search
//! keeps the **default recipe**
//! ([`super::recipe::preferred`]) unless another one is better with confidence: in a paired
//! bootstrap of the validation set (the same resampled goods and defects scored by both
//! candidates), it must win in at least [`CONFIDENCE`] of the replicates.

use super::operating_point::{MIN_LABELLED, Scores};
use crate::eval::metrics::auroc;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

/// Share of bootstrap replicates a candidate must win to replace the incumbent it is not
/// preferred to.
pub const CONFIDENCE: f64 = 0.9;
/// Bootstrap replicates per comparison (a few milliseconds for a few hundred scores).
const REPLICATES: usize = 1000;

/// The validation figure of a candidate: image AUROC of the held-out goods against the synthetic
/// defects, averaged with the same against the labelled defects when at least [`MIN_LABELLED`]
/// are given. 0.5 (chance) when there is nothing to rank.
pub fn criterion(scores: &Scores) -> f64 {
    let synthetic = auroc(&scores.goods, &scores.synthetic).unwrap_or(0.5);
    match auroc(&scores.goods, &scores.labelled) {
        Some(l) if scores.labelled.len() >= MIN_LABELLED => 0.5 * (synthetic + l),
        _ => synthetic,
    }
}

/// Share of bootstrap replicates of the validation set in which `challenger` has the higher
/// [`criterion`] than `incumbent` (ties count one half). Both must have scored the same
/// validation images in the same order (defects are painted on the decoded images, before any
/// recipe's input handling); when they did not, the plain comparison decides (1 or 0).
pub fn probability_better(challenger: &Scores, incumbent: &Scores, seed: u64) -> f64 {
    let plain = || if criterion(challenger) > criterion(incumbent) { 1.0 } else { 0.0 };
    let same = |a: &[f32], b: &[f32]| a.len() == b.len();
    if !(same(&challenger.goods, &incumbent.goods)
        && same(&challenger.synthetic, &incumbent.synthetic)
        && same(&challenger.labelled, &incumbent.labelled))
    {
        return plain();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x626f_6f74);
    let (mut a, mut b) = (Scores::default(), Scores::default());
    let mut wins = 0.0;
    for _ in 0..REPLICATES {
        let goods = resample(&mut rng, challenger.goods.len());
        let synthetic = resample(&mut rng, challenger.synthetic.len());
        let labelled = resample(&mut rng, challenger.labelled.len());
        pick(&mut a, challenger, &goods, &synthetic, &labelled);
        pick(&mut b, incumbent, &goods, &synthetic, &labelled);
        let (ca, cb) = (criterion(&a), criterion(&b));
        wins += if ca > cb {
            1.0
        } else if ca == cb {
            0.5
        } else {
            0.0
        };
    }
    wins / REPLICATES as f64
}

fn resample(rng: &mut ChaCha8Rng, n: usize) -> Vec<usize> {
    (0..n).map(|_| rng.random_range(0..n)).collect()
}

fn pick(out: &mut Scores, from: &Scores, goods: &[usize], synthetic: &[usize], labelled: &[usize]) {
    let take = |dst: &mut Vec<f32>, src: &[f32], idx: &[usize]| {
        dst.clear();
        dst.extend(idx.iter().map(|&i| src[i]));
    };
    take(&mut out.goods, &from.goods, goods);
    take(&mut out.synthetic, &from.synthetic, synthetic);
    take(&mut out.labelled, &from.labelled, labelled);
}

/// Whether `challenger` should replace `incumbent` as the search's best: a challenger the
/// search prefers (the default recipe) wins unless the incumbent is better with confidence; any
/// other challenger must itself be better with confidence. Returns the decision and the
/// bootstrap share behind it (the challenger's probability of being better).
pub fn replaces(challenger: &Scores, incumbent: &Scores, challenger_preferred: bool, seed: u64) -> (bool, f64) {
    let p = probability_better(challenger, incumbent, seed);
    let replace = if challenger_preferred { 1.0 - p < CONFIDENCE } else { p >= CONFIDENCE };
    (replace, p)
}

/// [`replaces`] judged by the labelled defects alone (against the held-out goods): for the
/// choices the synthetic defects misjudge — how the map is read (research round 11) and whether
/// the places' Gaussians score (round 13) — which teach makes only when at least
/// [`MIN_LABELLED`] labelled defects can judge them.
pub fn replaces_on_labelled(challenger: &Scores, incumbent: &Scores, seed: u64) -> (bool, f64) {
    let labelled_only =
        |s: &Scores| Scores { goods: s.goods.clone(), synthetic: Vec::new(), labelled: s.labelled.clone() };
    replaces(&labelled_only(challenger), &labelled_only(incumbent), false, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` goods around 0 and `n` synthetic defects shifted by `shift` (with a seeded jitter).
    fn scores(n: usize, shift: f32, seed: u64) -> Scores {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut noise = || rng.random_range(-1.0f32..1.0);
        Scores {
            goods: (0..n).map(|_| noise()).collect(),
            synthetic: (0..n).map(|_| noise() + shift).collect(),
            labelled: Vec::new(),
        }
    }

    #[test]
    fn a_clearly_better_candidate_wins_and_noise_does_not() {
        let weak = scores(60, 0.3, 1);
        let strong = scores(60, 1.5, 1);
        assert!(criterion(&strong) > criterion(&weak) + 0.2);
        assert!(probability_better(&strong, &weak, 7) > 0.99);
        assert!(probability_better(&weak, &strong, 7) < 0.01);
        assert!(replaces(&strong, &weak, false, 7).0, "clearly better replaces");
        assert!(!replaces(&weak, &strong, true, 7).0, "the preferred loses to a clearly better one");

        // Two candidates that differ only by noise: neither is better with confidence, so the
        // preferred one is kept whichever order they come in.
        let a = scores(40, 0.8, 2);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut jitter = |v: &[f32]| v.iter().map(|s| s + rng.random_range(-0.3f32..0.3)).collect::<Vec<_>>();
        let b = Scores { goods: jitter(&a.goods), synthetic: jitter(&a.synthetic), labelled: Vec::new() };
        let p = probability_better(&a, &b, 7);
        assert!((0.1..0.9).contains(&p), "noise alone gave {p}");
        assert!(replaces(&a, &b, true, 7).0);
        assert!(!replaces(&b, &a, false, 7).0);
    }

    #[test]
    fn labelled_defects_count_once_there_are_enough() {
        let mut s = scores(30, 0.0, 4);
        let synthetic_only = criterion(&s);
        s.labelled = vec![10.0, 11.0];
        assert_eq!(criterion(&s), synthetic_only, "fewer than MIN_LABELLED only adjust the threshold");
        s.labelled.push(12.0);
        assert!((criterion(&s) - 0.5 * (synthetic_only + 1.0)).abs() < 1e-12);
    }

    #[test]
    fn unpaired_scores_fall_back_to_the_plain_comparison() {
        let a = scores(20, 2.0, 5);
        let mut b = scores(20, 0.0, 6);
        b.synthetic.pop();
        assert_eq!(probability_better(&a, &b, 1), 1.0);
        assert_eq!(probability_better(&b, &a, 1), 0.0);
        assert_eq!(probability_better(&Scores::default(), &Scores::default(), 1), 0.5, "nothing to rank: a tie");
    }
}
