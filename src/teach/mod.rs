//! Teach mode (issue 3): PatchCore-style anomaly models learned from good parts only.
//!
//! This module holds the two numeric kernels the rest of teach mode is built on, both plain CPU
//! code on row-major `f32` matrices (N rows × C features), multi-threaded with
//! `std::thread::scope` and deterministic regardless of the thread count:
//!
//! - [`coreset`]: greedy k-center coreset selection on a seeded Gaussian random projection
//!   (PatchCore's "approximate greedy coreset") — reduces all teach patches to the memory bank;
//! - [`knn`]: Euclidean distance of every query patch to its nearest memory-bank row, with the
//!   |q|² − 2q·b + |b|² expansion in cache-sized blocks — the anomaly score of each patch.
//!
//! The Python reference they follow is `scripts/teach-research/common.py` (`greedy_coreset`,
//! `knn_dist`); the recipe and the reference timings are in `docs/TEACH_RESEARCH.md`.

pub mod backbone;
pub mod coreset;
pub mod defects;
mod feeder;
pub mod head;
pub mod int8;
pub mod knn;
pub mod learn;
pub mod on_start;
pub mod onnx;
pub mod operating_point;
pub mod options;
mod package;
pub mod pca;
pub mod place_scale;
pub mod placed;
pub mod post;
pub mod precision;
pub mod recipe;
pub mod selection;
pub mod summary;
pub mod synthetic;

pub use learn::{TeachOptions, TeachReport, teach};
pub use on_start::ensure_taught;

use std::num::NonZeroUsize;

/// Invalid input to a teach kernel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// The feature dimension C was 0.
    #[error("the feature dimension must be at least 1")]
    ZeroDim,
    /// A row-major buffer whose length is not a multiple of the row length.
    #[error("{what}: {len} values are not a whole number of rows of {dim}")]
    Ragged { what: &'static str, len: usize, dim: usize },
    /// NaN or ±∞ in the input (after projection, for the coreset).
    #[error("{what}: non-finite value in row {row}")]
    NonFinite { what: &'static str, row: usize },
    /// A coreset ratio that is NaN, infinite or ≤ 0.
    #[error("coreset ratio must be finite and > 0, got {0}")]
    BadRatio(f64),
    /// Nearest-neighbour distances asked of an empty memory bank.
    #[error("the memory bank is empty: no nearest-neighbour distance for {queries} queries")]
    EmptyBank { queries: usize },
}

/// Number of rows in a row-major buffer of `len` values with `dim` values per row.
pub(crate) fn rows_of(what: &'static str, len: usize, dim: usize) -> Result<usize, KernelError> {
    if dim == 0 {
        return Err(KernelError::ZeroDim);
    }
    if !len.is_multiple_of(dim) {
        return Err(KernelError::Ragged { what, len, dim });
    }
    Ok(len / dim)
}

/// Worker threads to use: `requested` if non-zero, else `available_parallelism`, but never more
/// than `units` (the number of independent work units; at least 1).
pub(crate) fn thread_count(requested: usize, units: usize) -> usize {
    let want =
        if requested == 0 { std::thread::available_parallelism().map_or(1, NonZeroUsize::get) } else { requested };
    want.min(units).max(1)
}

/// Squared Euclidean distance of two equally long rows, with a fixed summation order: eight
/// running lane sums over the full 8-value chunks (vectorisable), the tail summed in order into a
/// ninth, then ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)) + tail. Every caller (fast kernels and the
/// reference implementations in the tests) uses this one function, so their results are bit-equal.
#[inline]
pub(crate) fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = x[l] - y[l];
            lanes[l] += d * d;
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ta.iter().zip(tb) {
        let d = x - y;
        tail += d * d;
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail
}

/// Squared Euclidean norm of a row (same summation order as [`sq_dist`] against zeros).
#[inline]
pub(crate) fn sq_norm(a: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let ta = ca.remainder();
    for x in ca {
        for l in 0..8 {
            lanes[l] += x[l] * x[l];
        }
    }
    let mut tail = 0.0f32;
    for x in ta {
        tail += x * x;
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sq_dist_matches_f64(pairs in prop::collection::vec((-10.0f32..10.0, -10.0f32..10.0), 0..80)) {
            let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
            let got = sq_dist(&a, &b) as f64;
            prop_assert!((got - exact).abs() <= 1e-5 * exact + 1e-30, "{got} vs {exact}");
            let norm: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum();
            prop_assert!((sq_norm(&a) as f64 - norm).abs() <= 1e-5 * norm + 1e-30);
            prop_assert_eq!(sq_norm(&a), sq_dist(&a, &vec![0.0; a.len()]));
        }
    }

    #[test]
    fn rows_of_checks_shape() {
        assert_eq!(rows_of("x", 12, 4), Ok(3));
        assert_eq!(rows_of("x", 0, 4), Ok(0));
        assert_eq!(rows_of("x", 12, 0), Err(KernelError::ZeroDim));
        assert_eq!(rows_of("x", 13, 4), Err(KernelError::Ragged { what: "x", len: 13, dim: 4 }));
    }
}
