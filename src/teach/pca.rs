//! Principal component analysis of teach patches: the mean and the top-D principal directions,
//! so patch features can be projected to D dimensions before the coreset and the nearest-
//! neighbour search (both cost ∝ dimension). Research round 2 (docs/TEACH_RESEARCH.md) measured
//! L2-normalised Lite2 features projected to 64 dims at least as accurate as the full 168 dims.
//!
//! Procedure: a seeded sample of at most `max_rows` rows (ChaCha8, without replacement, sorted),
//! their mean, the covariance of the centred sample in f64 (ndarray GEMM), its symmetric
//! eigendecomposition (nalgebra), the eigenvectors of the D largest eigenvalues as the columns of
//! the projection, each with its sign fixed so its largest-magnitude entry is positive (so the
//! result does not depend on the eigensolver's sign choice).
//!
//! [`Pca::whiten`] then divides each component by a power of its standard deviation, so distances
//! in the projected space become (partly) Mahalanobis distances: research round 5 measured this
//! at +0.014 image AUROC on MTD (0.969 → 0.983 with full whitening), at no run-time cost since
//! the scaling is folded into the projection matrix.

use super::{KernelError, rows_of};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

/// A fitted projection: z = (x − mean) · components.
#[derive(Clone, Debug, PartialEq)]
pub struct Pca {
    /// `[C]`
    pub mean: Vec<f32>,
    /// Row-major `[C, D]`: column j is the j-th principal direction.
    pub components: Vec<f32>,
    pub dims: usize,
    /// Fraction of the sample's variance the D components keep.
    pub explained: f64,
    /// `[D]`: the sample variance along each kept component (the eigenvalues, descending).
    pub variances: Vec<f64>,
    /// The whitening power applied by [`Pca::whiten`] (0 = plain projection).
    pub whiten_power: f64,
}

/// Components whose variance is below this fraction of the largest one are whitened as if they had
/// this much: a teach set with fewer distinct patches than dimensions (flat synthetic parts) has
/// near-zero eigenvalues, and dividing by their root would blow numerical noise up into scores.
/// On MTD's 64 Lite2 components the smallest ratio is about 0.014, so the floor does not bite.
pub const WHITEN_VARIANCE_FLOOR: f64 = 1e-3;

/// Fit a `dims`-component PCA to the rows of `x` (row-major, `c` columns), on at most `max_rows`
/// rows drawn with `seed`. `dims` is capped at `c`.
pub fn fit(x: &[f32], c: usize, dims: usize, max_rows: usize, seed: u64) -> Result<Pca, KernelError> {
    let n = rows_of("pca input", x.len(), c)?;
    if n < 2 {
        return Err(KernelError::Ragged { what: "pca input (needs at least 2 rows)", len: x.len(), dim: c });
    }
    let dims = dims.clamp(1, c);
    let take = n.min(max_rows.max(2));
    let mut rows: Vec<usize> = if take == n {
        (0..n).collect()
    } else {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rand::seq::index::sample(&mut rng, n, take).into_vec()
    };
    rows.sort_unstable();

    let mut mean = vec![0.0f64; c];
    for &r in &rows {
        let row = &x[r * c..(r + 1) * c];
        if row.iter().any(|v| !v.is_finite()) {
            return Err(KernelError::NonFinite { what: "pca input", row: r });
        }
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= take as f64);
    let mut centred = Array2::<f64>::zeros((take, c));
    for (i, &r) in rows.iter().enumerate() {
        for (j, &v) in x[r * c..(r + 1) * c].iter().enumerate() {
            centred[(i, j)] = v as f64 - mean[j];
        }
    }
    let mut cov = Array2::<f64>::zeros((c, c));
    general_mat_mul(1.0 / (take - 1) as f64, &centred.t(), &centred, 0.0, &mut cov);
    drop(centred);

    let sym = nalgebra::DMatrix::from_fn(c, c, |i, j| 0.5 * (cov[(i, j)] + cov[(j, i)]));
    let eig = nalgebra::SymmetricEigen::new(sym);
    let mut order: Vec<usize> = (0..c).collect();
    // Descending eigenvalue; ties by index so the order is total.
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]).then(a.cmp(&b)));
    let total: f64 = eig.eigenvalues.iter().map(|v| v.max(0.0)).sum();
    let kept: f64 = order[..dims].iter().map(|&k| eig.eigenvalues[k].max(0.0)).sum();
    let mut components = vec![0.0f32; c * dims];
    for (j, &k) in order[..dims].iter().enumerate() {
        let v = eig.eigenvectors.column(k);
        let pivot = (0..c).max_by(|&a, &b| v[a].abs().total_cmp(&v[b].abs()).then(b.cmp(&a))).unwrap_or(0);
        let sign = if v[pivot] < 0.0 { -1.0 } else { 1.0 };
        for i in 0..c {
            components[i * dims + j] = (sign * v[i]) as f32;
        }
    }
    Ok(Pca {
        mean: mean.iter().map(|&m| m as f32).collect(),
        components,
        dims,
        explained: if total > 0.0 { kept / total } else { 1.0 },
        variances: order[..dims].iter().map(|&k| eig.eigenvalues[k].max(0.0)).collect(),
        whiten_power: 0.0,
    })
}

impl Pca {
    /// Scale component j by (max(λ_j, floor·λ_0))^(−power/2): power 1 gives every component unit
    /// variance on the sample (full whitening), 0 leaves the projection as it is. Replaces any
    /// earlier whitening.
    pub fn whiten(&mut self, power: f64) {
        let top = self.variances.first().copied().unwrap_or(0.0);
        let floor = (top * WHITEN_VARIANCE_FLOOR).max(f64::MIN_POSITIVE);
        let c = self.mean.len();
        for (j, &var) in self.variances.iter().enumerate() {
            let factor = var.max(floor).powf(-(power - self.whiten_power) / 2.0) as f32;
            for i in 0..c {
                self.components[i * self.dims + j] *= factor;
            }
        }
        self.whiten_power = power;
    }

    /// Project the rows of `x` (row-major, C columns): `[N, D]` row-major.
    pub fn project(&self, x: &[f32]) -> Result<Vec<f32>, KernelError> {
        let c = self.mean.len();
        let n = rows_of("pca projection input", x.len(), c)?;
        let mut out = vec![0.0f32; n * self.dims];
        let p = ArrayView2::from_shape((c, self.dims), &self.components).expect("components are C×D");
        // In chunks, so the centred copy stays small.
        const CHUNK: usize = 8192;
        let mut centred = vec![0.0f32; CHUNK.min(n) * c];
        for start in (0..n).step_by(CHUNK) {
            let rows = CHUNK.min(n - start);
            let src = &x[start * c..(start + rows) * c];
            for (dst, row) in centred.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
                for ((d, &v), &m) in dst.iter_mut().zip(row).zip(&self.mean) {
                    *d = v - m;
                }
            }
            let a = ArrayView2::from_shape((rows, c), &centred[..rows * c]).expect("chunk is rows×C");
            let mut z =
                ArrayViewMut2::from_shape((rows, self.dims), &mut out[start * self.dims..(start + rows) * self.dims])
                    .expect("output chunk is rows×D");
            general_mat_mul(1.0, &a, &p, 0.0, &mut z);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points on a line in 3-D plus tiny noise: the first component is the line's direction.
    #[test]
    fn finds_the_dominant_direction_and_projects_onto_it() {
        let dir = [0.6f32, 0.0, 0.8];
        let mut x = Vec::new();
        for i in 0..200 {
            let t = i as f32 / 10.0 - 10.0;
            let wobble = if i % 2 == 0 { 1e-3 } else { -1e-3 };
            x.extend([1.0 + t * dir[0], 2.0 + wobble, 3.0 + t * dir[2]]);
        }
        let pca = fit(&x, 3, 1, 1000, 0).unwrap();
        assert!((pca.mean[0] - (1.0 - 0.05 * 0.6)).abs() < 1e-4, "{:?}", pca.mean);
        let comp = &pca.components;
        assert!((comp[0] - 0.6).abs() < 1e-4 && comp[1].abs() < 1e-3 && (comp[2] - 0.8).abs() < 1e-4, "{comp:?}");
        assert!(pca.explained > 0.999);
        let z = pca.project(&x).unwrap();
        assert_eq!(z.len(), 200);
        // The projection recovers t (up to the mean's offset).
        assert!(((z[199] - z[0]) - 19.9).abs() < 1e-3, "{} {}", z[0], z[199]);
    }

    /// Sample variance of each projected column.
    fn column_variances(z: &[f32], d: usize) -> Vec<f64> {
        let n = z.len() / d;
        (0..d)
            .map(|j| {
                let m = (0..n).map(|i| z[i * d + j] as f64).sum::<f64>() / n as f64;
                (0..n).map(|i| (z[i * d + j] as f64 - m).powi(2)).sum::<f64>() / (n - 1) as f64
            })
            .collect()
    }

    /// Anisotropic correlated data (variances ~100:1:1, above the floor): plain PCA keeps the
    /// eigenvalues as column variances; full whitening makes them 1; half whitening their roots.
    #[test]
    fn whitening_gives_components_unit_variance() {
        let mut x = Vec::new();
        for i in 0..3000u32 {
            let (a, b, c) = (
                ((i * 7919) % 1013) as f32 / 1013.0 - 0.5,
                ((i * 104_729) % 997) as f32 / 997.0 - 0.5,
                ((i * 15_485_863) % 991) as f32 / 991.0 - 0.5,
            );
            x.extend([10.0 * a + b, b - 0.5 * a, c + 0.2 * b]);
        }
        let plain = fit(&x, 3, 3, 10_000, 0).unwrap();
        let vars = column_variances(&plain.project(&x).unwrap(), 3);
        for (v, e) in vars.iter().zip(&plain.variances) {
            assert!((v / e - 1.0).abs() < 1e-3, "{vars:?} vs {:?}", plain.variances);
        }
        assert!(plain.variances[0] > 50.0 * plain.variances[2], "{:?}", plain.variances);
        let mut full = plain.clone();
        full.whiten(1.0);
        for v in column_variances(&full.project(&x).unwrap(), 3) {
            assert!((v - 1.0).abs() < 1e-3, "{v}");
        }
        let mut half = plain.clone();
        half.whiten(0.5);
        for (v, e) in column_variances(&half.project(&x).unwrap(), 3).iter().zip(&plain.variances) {
            assert!((v / e.sqrt() - 1.0).abs() < 1e-3, "{v} vs {e}");
        }
        // Whitening again replaces the earlier power instead of compounding it.
        half.whiten(1.0);
        assert!(half.components.iter().zip(&full.components).all(|(a, b)| (a - b).abs() < 1e-4 * b.abs().max(1.0)));
    }

    /// A direction with (almost) no variance is scaled as if it had the floor's, not by 1/√0.
    #[test]
    fn whitening_floors_vanishing_variances() {
        let mut x = Vec::new();
        for i in 0..500 {
            let t = (i % 50) as f32 / 50.0;
            x.extend([t, 1.0 - t, 0.25]);
        }
        let mut pca = fit(&x, 3, 3, 1000, 0).unwrap();
        assert!(pca.variances[2] < 1e-9 * pca.variances[0], "{:?}", pca.variances);
        let plain = pca.clone();
        pca.whiten(1.0);
        let top = plain.variances[0];
        for j in 0..3 {
            let norm = |p: &Pca| (0..3).map(|i| (p.components[i * 3 + j] as f64).powi(2)).sum::<f64>().sqrt();
            let gain = norm(&pca) / norm(&plain);
            let expected = plain.variances[j].max(top * WHITEN_VARIANCE_FLOOR).powf(-0.5);
            assert!((gain / expected - 1.0).abs() < 1e-3, "component {j}: gain {gain}, expected {expected}");
            assert!(gain.is_finite() && gain <= (top * WHITEN_VARIANCE_FLOOR).powf(-0.5) * 1.001);
        }
    }

    #[test]
    fn is_deterministic_for_a_seed_and_subsamples() {
        let x: Vec<f32> = (0..5000 * 4).map(|i| ((i * 7919) % 1013) as f32 / 1013.0).collect();
        let a = fit(&x, 4, 2, 1000, 7).unwrap();
        let b = fit(&x, 4, 2, 1000, 7).unwrap();
        assert_eq!(a, b);
        let c = fit(&x, 4, 2, 1000, 8).unwrap();
        assert_ne!(a.mean, c.mean, "another seed draws another sample");
    }

    #[test]
    fn rejects_non_finite_rows() {
        let x = [0.0, 1.0, f32::NAN, 2.0];
        assert!(matches!(fit(&x, 2, 1, 10, 0), Err(KernelError::NonFinite { row: 1, .. })));
    }
}
