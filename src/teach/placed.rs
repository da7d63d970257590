//! A Gaussian of the good parts' patch features at each place on the patch grid (PaDiM-style),
//! the scorer teach tries beside the memory bank for parts that sit in the same place in every
//! frame (fixtured parts, solar cells): the bank asks "has any good part looked like this patch
//! anywhere?", this one "does a good part look like this *here*?", which sees a feature that is
//! normal elsewhere but wrong in this place (docs/TEACH_RESEARCH.md, round 13).
//!
//! Each place's Gaussian is fitted on the whitened features of the teach images at that place
//! and at its neighbours within [`RADIUS`] cells (a part shifted by a cell is still itself), its
//! covariance shrunk toward its mean variance by [`SHRINK`] (few images per place must still give
//! an invertible matrix). A patch's score is its Mahalanobis distance to its place's Gaussian,
//! computed in the scoring graph as `‖(z − μ) W‖` with `W = (L⁻¹)ᵀ`, `L` the covariance's Cholesky
//! factor: `D²` multiply-adds a patch, a few hundred times cheaper than the bank search.

use nalgebra::DMatrix;

/// Neighbouring cells pooled into each place's Gaussian.
pub const RADIUS: usize = 1;
/// Share of each covariance replaced by its mean variance (on the diagonal).
pub const SHRINK: f64 = 0.1;

/// The fitted Gaussians of a `gh × gw` grid of `dims`-d patches.
#[derive(Clone, Debug, PartialEq)]
pub struct PlacedGaussians {
    pub gh: usize,
    pub gw: usize,
    pub dims: usize,
    /// `[gh·gw, dims]`: each place's mean.
    pub means: Vec<f32>,
    /// `[gh·gw, dims, dims]`: each place's whitening matrix `W` (row vector `d` → `d W`).
    pub whiteners: Vec<f32>,
}

impl PlacedGaussians {
    /// Fit on `z`: `images` images' patches in grid order (`[images, gh·gw, dims]`, row-major).
    pub fn fit(z: &[f32], images: usize, gh: usize, gw: usize, dims: usize) -> Result<Self, String> {
        let places = gh * gw;
        if images == 0 || dims == 0 || places == 0 || z.len() != images * places * dims {
            return Err(format!(
                "placed Gaussians: {} values for {images} images of {gh}×{gw} patches of {dims} dims",
                z.len()
            ));
        }
        if z.iter().any(|v| !v.is_finite()) {
            return Err("placed Gaussians: the teach features hold non-finite values".into());
        }
        // Per place: the sum of its patches and of their outer products, over the images; each
        // place's Gaussian then adds its neighbours' sums.
        let mut sums = vec![0.0f64; places * dims];
        let mut outer = vec![0.0f64; places * dims * dims];
        for image in z.chunks_exact(places * dims) {
            for (p, row) in image.chunks_exact(dims).enumerate() {
                let s = &mut sums[p * dims..(p + 1) * dims];
                let o = &mut outer[p * dims * dims..(p + 1) * dims * dims];
                for i in 0..dims {
                    let a = row[i] as f64;
                    s[i] += a;
                    for j in i..dims {
                        o[i * dims + j] += a * row[j] as f64;
                    }
                }
            }
        }
        let mut means = Vec::with_capacity(places * dims);
        let mut whiteners = Vec::with_capacity(places * dims * dims);
        for r in 0..gh {
            for c in 0..gw {
                let mut s = vec![0.0f64; dims];
                let mut o = vec![0.0f64; dims * dims];
                let mut n = 0usize;
                for rr in r.saturating_sub(RADIUS)..(r + RADIUS + 1).min(gh) {
                    for cc in c.saturating_sub(RADIUS)..(c + RADIUS + 1).min(gw) {
                        let p = rr * gw + cc;
                        s.iter_mut().zip(&sums[p * dims..(p + 1) * dims]).for_each(|(a, b)| *a += b);
                        o.iter_mut().zip(&outer[p * dims * dims..(p + 1) * dims * dims]).for_each(|(a, b)| *a += b);
                        n += images;
                    }
                }
                let nf = n as f64;
                let mu: Vec<f64> = s.iter().map(|v| v / nf).collect();
                let mut cov = DMatrix::<f64>::from_fn(dims, dims, |i, j| {
                    let (i, j) = (i.min(j), i.max(j));
                    // Unbiased where there are two samples or more; one sample has no spread,
                    // which the shrinkage below turns into the identity's scale.
                    (o[i * dims + j] - nf * mu[i] * mu[j]) / (nf - 1.0).max(1.0)
                });
                let mean_var = cov.trace() / dims as f64;
                let floor = if mean_var > 0.0 { mean_var } else { 1.0 };
                cov *= 1.0 - SHRINK;
                for i in 0..dims {
                    cov[(i, i)] += SHRINK * floor;
                }
                let l = cov
                    .cholesky()
                    .ok_or_else(|| format!("placed Gaussians: the covariance at grid cell ({r}, {c}) is not positive"))?
                    .l();
                let inv = l
                    .solve_lower_triangular(&DMatrix::identity(dims, dims))
                    .ok_or_else(|| format!("placed Gaussians: the covariance at grid cell ({r}, {c}) is singular"))?;
                means.extend(mu.iter().map(|&v| v as f32));
                // W[i][j] = L⁻¹[j][i]: row-major (L⁻¹)ᵀ.
                for i in 0..dims {
                    for j in 0..dims {
                        whiteners.push(inv[(j, i)] as f32);
                    }
                }
            }
        }
        Ok(Self { gh, gw, dims, means, whiteners })
    }

    /// Each patch's distance to its place's Gaussian, for one image's patches in grid order
    /// (`[gh·gw, dims]`): the reference the scoring graph is tested against.
    pub fn distances(&self, image: &[f32]) -> Vec<f32> {
        let d = self.dims;
        image
            .chunks_exact(d)
            .enumerate()
            .map(|(p, row)| {
                let mu = &self.means[p * d..(p + 1) * d];
                let w = &self.whiteners[p * d * d..(p + 1) * d * d];
                let mut sq = 0.0f64;
                for j in 0..d {
                    let y: f64 = (0..d).map(|i| (row[i] - mu[i]) as f64 * w[i * d + j] as f64).sum();
                    sq += y * y;
                }
                sq.sqrt() as f32
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Goods whose feature 0 depends on the place (left half 0, right half 4) and whose other
    /// features are noise.
    fn goods(images: usize, gh: usize, gw: usize, dims: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut z = Vec::new();
        for _ in 0..images {
            for _r in 0..gh {
                for c in 0..gw {
                    for k in 0..dims {
                        let base = if k == 0 && c >= gw / 2 { 4.0 } else { 0.0 };
                        z.push(base + rng.random_range(-1.0f32..1.0));
                    }
                }
            }
        }
        z
    }

    #[test]
    fn a_feature_normal_elsewhere_is_anomalous_in_the_wrong_place() {
        let (gh, gw, dims) = (4, 8, 3);
        let fit = PlacedGaussians::fit(&goods(40, gh, gw, dims, 1), 40, gh, gw, dims).unwrap();
        let mut probe = goods(1, gh, gw, dims, 2);
        let typical = fit.distances(&probe);
        // The right half's value, placed at the far left: unremarkable anywhere else.
        probe[0] = 4.0;
        let moved = fit.distances(&probe);
        assert!(moved[0] > 2.0 * typical.iter().copied().fold(0.0, f32::max), "{moved:?} vs {typical:?}");
        assert_eq!(moved[1..], typical[1..], "only the changed place's score moves");
    }

    #[test]
    fn one_image_still_fits_and_bad_shapes_are_refused() {
        let z = goods(1, 2, 2, 2, 3);
        assert!(PlacedGaussians::fit(&z, 1, 2, 2, 2).unwrap().distances(&z).iter().all(|d| d.is_finite()));
        let constant = vec![0.5f32; 2 * 2 * 2];
        assert!(PlacedGaussians::fit(&constant, 1, 2, 2, 2).unwrap().distances(&constant).iter().all(|d| *d == 0.0));
        assert!(PlacedGaussians::fit(&z, 2, 2, 2, 2).unwrap_err().contains("2 images"));
        let mut nan = z.clone();
        nan[3] = f32::NAN;
        assert!(PlacedGaussians::fit(&nan, 1, 2, 2, 2).unwrap_err().contains("non-finite"));
    }
}
