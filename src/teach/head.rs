//! Mixed supervision (`teach --defects`): a linear correction of each patch's distance, learned
//! from a few labelled defects and held-out goods on top of the frozen features.
//!
//! Every patch has its whitened PCA features z (what the scoring graph already computes) and its
//! nearest-neighbour distance d. A class-weighted, L2-regularised logistic regression on
//! (z, d) separates the labelled defects' most anomalous patches (the [`TOP_PATCHES`] highest d of
//! each defective image: no masks needed) from the held-out goods' patches — a sample of them
//! and, as hard negatives, each good image's own [`TOP_PATCHES`] highest: an image's score is its
//! worst patch, so what matters is telling a defect's worst patches from a good part's. Its decision function
//! divided by d's weight is d + c·z + const: the distance plus a learned linear correction, in
//! the distance's own units, so the map, the image score rule and the threshold calibration stay
//! as they are. In the graph it is one more MatMul and Add.
//!
//! With a handful of defects such a head can as easily learn the handful as the defect, so it is
//! only used when it earns its place: leave-one-defect-out, each defect scored by a head fitted
//! without it against held-out goods that no head was fitted on, the head must beat the plain
//! distance by [`MIN_GAIN`] in AUROC; the regularisation is chosen the same way among
//! [`LAMBDAS`].

use crate::eval::metrics::auroc;
use nalgebra::{DMatrix, DVector};

/// Patches per defective image taken as positives: its most anomalous ones.
pub const TOP_PATCHES: usize = 3;
/// L2 penalty on the correction, per negative patch.
pub const LAMBDAS: [f64; 4] = [0.001, 0.01, 0.1, 1.0];
/// Leave-one-out AUROC the head must add over the plain distance to be used.
pub const MIN_GAIN: f64 = 0.03;
/// Newton steps of the fit.
const NEWTON_STEPS: usize = 25;

/// Whether teach uses the correction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadMode {
    /// When it beats the plain distance leave-one-defect-out by [`MIN_GAIN`].
    Auto,
    /// Never tried.
    Off,
    /// Used whatever the leave-one-out says (for measuring what it buys).
    Always,
}

/// The patches of one image: whitened features (rows of `dims`) and distances.
#[derive(Clone, Debug, Default)]
pub struct ImagePatches {
    pub z: Vec<f32>,
    pub d: Vec<f32>,
}

impl ImagePatches {
    /// Image score under correction `c` (empty: none): the highest patch score.
    fn score(&self, c: &[f64], dims: usize) -> f64 {
        self.d
            .iter()
            .zip(self.z.chunks_exact(dims))
            .map(|(&d, z)| f64::from(d) + c.iter().zip(z).map(|(a, &b)| a * f64::from(b)).sum::<f64>())
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// The `k` rows with the highest distance.
    pub(crate) fn top(&self, k: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.d.len()).collect();
        order.sort_by(|&a, &b| self.d[b].total_cmp(&self.d[a]));
        order.truncate(k);
        order
    }
}

/// What the head search found.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadChoice {
    /// The correction c (one weight per whitened dimension), when the head is used.
    pub correction: Option<Vec<f32>>,
    pub lambda: f64,
    pub loo_auroc: f64,
    pub baseline_loo_auroc: f64,
}

/// Fit and judge the head. `goods_train` are the negatives; `goods_eval` (other held-out goods)
/// only score the leave-one-out folds; `defects` the labelled defects (at least 2).
pub fn choose(
    goods_train: &[ImagePatches],
    goods_eval: &[ImagePatches],
    defects: &[ImagePatches],
    dims: usize,
    always: bool,
) -> HeadChoice {
    let baseline = loo_auroc(goods_eval, defects, dims, |_| Some(Vec::new()));
    let mut best = (f64::NEG_INFINITY, LAMBDAS[0]);
    for &lambda in &LAMBDAS {
        let a = loo_auroc(goods_eval, defects, dims, |train| fit(goods_train, train, dims, lambda));
        if a > best.0 {
            best = (a, lambda);
        }
    }
    let (loo, lambda) = best;
    let all: Vec<&ImagePatches> = defects.iter().collect();
    let correction = (always || loo >= baseline + MIN_GAIN)
        .then(|| fit(goods_train, &all, dims, lambda))
        .flatten()
        .map(|c| c.iter().map(|&v| v as f32).collect());
    HeadChoice { correction, lambda, loo_auroc: loo, baseline_loo_auroc: baseline }
}

/// AUROC of each defect, scored by the correction fitted without it, against `goods`.
fn loo_auroc(
    goods: &[ImagePatches],
    defects: &[ImagePatches],
    dims: usize,
    fit_on: impl Fn(&[&ImagePatches]) -> Option<Vec<f64>>,
) -> f64 {
    let mut sum = 0.0;
    for (i, left_out) in defects.iter().enumerate() {
        let train: Vec<&ImagePatches> = defects.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, d)| d).collect();
        let c = fit_on(&train).unwrap_or_default();
        let good: Vec<f32> = goods.iter().map(|g| g.score(&c, dims) as f32).collect();
        sum += auroc(&good, &[left_out.score(&c, dims) as f32]).unwrap_or(0.5);
    }
    sum / defects.len().max(1) as f64
}

/// The correction c = w_z / w_d of the logistic regression on (z, d, 1), or `None` when d gets
/// no positive weight (the distance would have to be ignored: not a correction any more).
fn fit(goods: &[ImagePatches], defects: &[&ImagePatches], dims: usize, lambda_per_negative: f64) -> Option<Vec<f64>> {
    let p = dims + 2;
    let mut rows: Vec<(Vec<f64>, f64, f64)> = Vec::new(); // (x, target, weight)
    let x_of = |z: &[f32], d: f32| -> Vec<f64> {
        let mut x: Vec<f64> = z.iter().map(|&v| f64::from(v)).collect();
        x.push(f64::from(d));
        x.push(1.0);
        x
    };
    for g in goods {
        for (z, &d) in g.z.chunks_exact(dims).zip(&g.d) {
            rows.push((x_of(z, d), 0.0, 1.0));
        }
        for r in g.top(TOP_PATCHES) {
            rows.push((x_of(&g.z[r * dims..(r + 1) * dims], g.d[r]), 0.0, 1.0));
        }
    }
    let negatives = rows.len();
    let positives: Vec<Vec<f64>> = defects
        .iter()
        .flat_map(|img| img.top(TOP_PATCHES).into_iter().map(|r| x_of(&img.z[r * dims..(r + 1) * dims], img.d[r])))
        .collect();
    if negatives == 0 || positives.is_empty() {
        return None;
    }
    let wp = negatives as f64 / positives.len() as f64;
    rows.extend(positives.into_iter().map(|x| (x, 1.0, wp)));
    let lambda = lambda_per_negative * negatives as f64;
    let mut w = DVector::<f64>::zeros(p);
    for _ in 0..NEWTON_STEPS {
        let mut grad = DVector::<f64>::zeros(p);
        let mut hess = DMatrix::<f64>::zeros(p, p);
        for (x, t, weight) in &rows {
            let xv = DVector::from_column_slice(x);
            let f = xv.dot(&w);
            let s = 1.0 / (1.0 + (-f).exp());
            grad.axpy(weight * (s - t), &xv, 1.0);
            hess.ger(weight * s * (1.0 - s), &xv, &xv, 1.0);
        }
        for k in 0..dims {
            grad[k] += lambda * w[k];
            hess[(k, k)] += lambda;
        }
        // A small ridge on d and the bias keeps separable data from diverging.
        for k in dims..p {
            grad[k] += 1e-6 * w[k];
            hess[(k, k)] += 1e-6;
        }
        let step = hess.cholesky()?.solve(&grad);
        w -= &step;
        if step.norm() < 1e-8 * (1.0 + w.norm()) {
            break;
        }
    }
    let wd = w[dims];
    (wd > 1e-9 && w.iter().all(|v| v.is_finite())).then(|| (0..dims).map(|k| w[k] / wd).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::SeedableRng;

    /// Goods: z ~ N(0, 1) in 4 dims, d ~ |N(1, 0.2)|. Defective images: like goods, but 3 of their
    /// patches lie along z₀ = +3 at a distance like a good part's worst patches — a defect the
    /// distance alone barely tells from a good part and the direction gives away.
    fn image(rng: &mut ChaCha8Rng, defective: bool) -> ImagePatches {
        let (dims, cells) = (4, 30);
        let mut img = ImagePatches::default();
        for i in 0..cells {
            let mut z: Vec<f32> = (0..dims).map(|_| normal(rng)).collect();
            let mut d = (1.0 + 0.2 * normal(rng)).abs();
            if defective && i < 3 {
                z[0] = 3.0 + 0.3 * normal(rng);
                d = 1.4 + 0.05 * normal(rng);
            }
            img.z.extend(z);
            img.d.push(d);
        }
        img
    }

    fn normal(rng: &mut ChaCha8Rng) -> f32 {
        let (u, v): (f32, f32) = (rng.random_range(1e-6..1.0), rng.random_range(0.0..1.0));
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }

    #[test]
    fn a_defect_direction_is_learned_and_used() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let goods_train: Vec<_> = (0..40).map(|_| image(&mut rng, false)).collect();
        let goods_eval: Vec<_> = (0..40).map(|_| image(&mut rng, false)).collect();
        let defects: Vec<_> = (0..10).map(|_| image(&mut rng, true)).collect();
        let choice = choose(&goods_train, &goods_eval, &defects, 4, false);
        let c = choice.correction.as_ref().expect("the head helps here");
        assert!(choice.loo_auroc >= choice.baseline_loo_auroc + MIN_GAIN, "{choice:?}");
        // It points along the defect direction: z₀ gets the largest weight, and a positive one.
        assert!(c[0] > 0.0 && c[0] > c[1..].iter().map(|v| v.abs()).fold(0.0, f32::max), "{c:?}");
    }

    #[test]
    fn defects_like_the_goods_get_no_head() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let goods_train: Vec<_> = (0..40).map(|_| image(&mut rng, false)).collect();
        let goods_eval: Vec<_> = (0..40).map(|_| image(&mut rng, false)).collect();
        let look_good: Vec<_> = (0..20).map(|_| image(&mut rng, false)).collect();
        let choice = choose(&goods_train, &goods_eval, &look_good, 4, false);
        assert!(choice.correction.is_none(), "{choice:?}");
    }
}
