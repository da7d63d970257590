//! Greedy k-center coreset selection (PatchCore's "approximate greedy coreset").
//!
//! Given N patches × C features (row-major `f32`), [`greedy_coreset`] picks k rows that cover the
//! rest: each new row is the one farthest from all rows picked so far (the greedy 2-approximation
//! of the k-center problem). Distances are taken on a seeded Gaussian random projection to
//! `proj_dim` dimensions, which keeps the ordering of distances approximately (Johnson–
//! Lindenstrauss) at a fraction of the cost; the bank is then built from the *unprojected* rows.
//!
//! # Exact procedure (reproducible bit for bit on one platform)
//!
//! 1. `rng = ChaCha8Rng::seed_from_u64(seed)`.
//! 2. If `0 < proj_dim < C`, the projection matrix P [C × proj_dim] (row-major) is filled in order
//!    with standard normals from Box–Muller pairs: `u1`, `u2` = `(rng.next_u64() >> 11) · 2⁻⁵³`
//!    (in [0, 1), f64), `r = sqrt(−2 ln(1 − u1))`, the pair is `r·cos(2π·u2)` then `r·sin(2π·u2)`
//!    (the last `sin` is dropped when C·proj_dim is odd); each value is divided by `sqrt(proj_dim)`
//!    in f64 and rounded to f32. Z = X·P (f32 GEMM, in fixed 4,096-row chunks). Otherwise (0, or
//!    `proj_dim ≥ C`, as in the reference) Z = X and no values are drawn.
//! 3. The first row is `(rng.next_u64() as u128 · N) >> 64` (drawn after the matrix).
//! 4. Each further row: for every row r, `min_d[r] = min(min_d[r], |z_r − z_new|²)` and the next
//!    row is the argmax of `min_d` over the rows not yet selected, ties to the lowest index. The
//!    update and the argmax are one fused pass over the rows, split across threads; the result
//!    does not depend on the thread count. Squared distances use one fixed summation order
//!    (`teach::sq_dist`).
//!
//! Same algorithm as `greedy_coreset` in `scripts/teach-research/common.py`, with two documented
//! differences: the random numbers come from ChaCha8 instead of NumPy's PCG64 (so the indices
//! differ from the reference for the same seed), and a row is never selected twice (when the
//! farthest remaining row is at distance 0 the reference may repeat an index; here the lowest
//! unselected index is taken). For `k ≥ N` all rows are returned as `0..N`, as in the reference.
//!
//! Cost: O(N·C·proj_dim) for the projection, O(N·k·proj_dim) for the selection, O(N·proj_dim)
//! memory for Z plus O(N) for `min_d`. Each selection step streams Z once (memory-bound).

use super::{KernelError, rows_of, sq_dist, thread_count};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use std::borrow::Cow;
use std::sync::{Barrier, Mutex, PoisonError};

/// The projection dimension PatchCore and the research reference use by default.
pub const DEFAULT_PROJ_DIM: usize = 64;

/// Rows per projection chunk: the unit of work (and of rounding) of the projection GEMM.
const PROJ_CHUNK: usize = 4096;

/// With automatic threading, at least this many rows per selection thread.
const MIN_ROWS_PER_THREAD: usize = 16_384;

/// How many rows to select.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CoresetSize {
    /// Exactly this many rows (all rows when ≥ N).
    Count(usize),
    /// This fraction of N, rounded to nearest (0.01 of 780,288 → 7,803), at least 1 when N > 0.
    Ratio(f64),
}

impl CoresetSize {
    /// The row count for N input rows.
    pub fn resolve(self, n: usize) -> Result<usize, KernelError> {
        match self {
            CoresetSize::Count(k) => Ok(k),
            CoresetSize::Ratio(r) if !r.is_finite() || r <= 0.0 => Err(KernelError::BadRatio(r)),
            CoresetSize::Ratio(_) if n == 0 => Ok(0),
            CoresetSize::Ratio(r) => Ok(((r * n as f64).round() as usize).max(1)),
        }
    }
}

/// Parameters of [`greedy_coreset`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoresetParams {
    pub size: CoresetSize,
    /// Random projection dimension; 0 (or ≥ C) = distances on the raw features.
    pub proj_dim: usize,
    /// Seeds the projection matrix and the first row.
    pub seed: u64,
    /// Worker threads; 0 = `available_parallelism`, fewer when N is small. Does not change the result.
    pub threads: usize,
}

impl CoresetParams {
    /// `k` rows, projection 64, seed 0, automatic threads.
    pub fn count(k: usize) -> Self {
        CoresetParams { size: CoresetSize::Count(k), proj_dim: DEFAULT_PROJ_DIM, seed: 0, threads: 0 }
    }

    /// A fraction of the rows, projection 64, seed 0, automatic threads.
    pub fn ratio(ratio: f64) -> Self {
        CoresetParams { size: CoresetSize::Ratio(ratio), ..Self::count(0) }
    }
}

/// Greedy k-center coreset of `x` (N rows × `c` features, row-major): the selected row indices in
/// selection order. See the module documentation for the exact procedure.
///
/// Errors: `c == 0` or a ragged buffer, a bad ratio, and NaN/∞ in `x` (or a projection that
/// overflows). N = 0 or k = 0 gives an empty vector; k ≥ N gives `0..N`.
pub fn greedy_coreset(x: &[f32], c: usize, params: &CoresetParams) -> Result<Vec<usize>, KernelError> {
    let n = rows_of("coreset input", x.len(), c)?;
    let k = params.size.resolve(n)?;
    if k == 0 || n == 0 {
        return Ok(Vec::new());
    }
    if k >= n {
        return Ok((0..n).collect());
    }
    let threads = thread_count(params.threads, if params.threads == 0 { n / MIN_ROWS_PER_THREAD } else { n });
    let (z, d, start) = prepare(x, c, params.proj_dim, params.seed, threads)?;
    Ok(select(&z, d, k, start, threads))
}

/// Steps 1–3 of the procedure: (Z, its dimension, the first row). `x` has ≥ 1 row.
pub(crate) fn prepare(
    x: &[f32],
    c: usize,
    proj_dim: usize,
    seed: u64,
    threads: usize,
) -> Result<(Cow<'_, [f32]>, usize, usize), KernelError> {
    let n = x.len() / c;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (z, d) = if proj_dim > 0 && proj_dim < c {
        let p = gaussian_matrix(&mut rng, c, proj_dim);
        (Cow::Owned(project(x, c, &p, proj_dim, threads)), proj_dim)
    } else {
        (Cow::Borrowed(x), c)
    };
    if let Some(row) = z.chunks_exact(d).position(|r| r.iter().any(|v| !v.is_finite())) {
        return Err(KernelError::NonFinite { what: "coreset input", row });
    }
    let start = ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize;
    Ok((z, d, start))
}

/// Uniform f64 in [0, 1) from the top 53 bits of one `u64`.
fn unit_f64(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The projection matrix P [c × d], row-major, N(0, 1)/√d (step 2 of the procedure).
pub(crate) fn gaussian_matrix(rng: &mut ChaCha8Rng, c: usize, d: usize) -> Vec<f32> {
    let len = c * d;
    let scale = 1.0 / (d as f64).sqrt();
    let mut p = Vec::with_capacity(len);
    while p.len() < len {
        let (u1, u2) = (unit_f64(rng), unit_f64(rng));
        let r = (-2.0 * (1.0 - u1).ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        p.push((r * theta.cos() * scale) as f32);
        if p.len() < len {
            p.push((r * theta.sin() * scale) as f32);
        }
    }
    p
}

/// Z = X·P in fixed chunks of [`PROJ_CHUNK`] rows, the chunks dealt round-robin to `threads`
/// threads (each chunk is computed the same way whichever thread runs it).
pub(crate) fn project(x: &[f32], c: usize, p: &[f32], d: usize, threads: usize) -> Vec<f32> {
    let n = x.len() / c;
    let mut z = vec![0.0f32; n * d];
    let pv = ArrayView2::from_shape((c, d), p).expect("projection matrix shape");
    let chunk = |xs: &[f32], zs: &mut [f32]| {
        let rows = xs.len() / c;
        let xv = ArrayView2::from_shape((rows, c), xs).expect("chunk shape");
        let mut zv = ArrayViewMut2::from_shape((rows, d), zs).expect("chunk shape");
        general_mat_mul(1.0, &xv, &pv, 0.0, &mut zv);
    };
    let jobs = x.chunks(PROJ_CHUNK * c).zip(z.chunks_mut(PROJ_CHUNK * d));
    let threads = threads.min(n.div_ceil(PROJ_CHUNK)).max(1);
    if threads == 1 {
        jobs.for_each(|(xs, zs)| chunk(xs, zs));
    } else {
        let mut queues: Vec<Vec<(&[f32], &mut [f32])>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, job) in jobs.enumerate() {
            queues[i % threads].push(job);
        }
        std::thread::scope(|s| {
            for queue in queues {
                let chunk = &chunk;
                s.spawn(move || queue.into_iter().for_each(|(xs, zs)| chunk(xs, zs)));
            }
        });
    }
    z
}

/// One fused pass over rows `lo .. lo + min_d.len()` of Z for the newest centre `newest`: marks
/// it selected (−∞), folds the distance to it into `min_d`, and returns the (max, lowest index)
/// of the updated `min_d` over the range (`(−∞, usize::MAX)` when every row there is selected).
fn fused_pass(z: &[f32], d: usize, lo: usize, min_d: &mut [f32], newest: usize) -> (f32, usize) {
    let hi = lo + min_d.len();
    if (lo..hi).contains(&newest) {
        min_d[newest - lo] = f32::NEG_INFINITY;
    }
    let centre = &z[newest * d..(newest + 1) * d];
    let (mut best, mut arg) = (f32::NEG_INFINITY, usize::MAX);
    for (i, (m, row)) in min_d.iter_mut().zip(z[lo * d..hi * d].chunks_exact(d)).enumerate() {
        let v = m.min(sq_dist(row, centre));
        *m = v;
        if v > best {
            best = v;
            arg = lo + i;
        }
    }
    (best, arg)
}

/// Step 4: `k` rows (1 < … < N) of Z [N × d] starting from `start`, on `threads` threads that
/// each own a contiguous range of rows and meet at a barrier once per selected row.
pub(crate) fn select(z: &[f32], d: usize, k: usize, start: usize, threads: usize) -> Vec<usize> {
    let n = z.len() / d;
    let mut selected = Vec::with_capacity(k);
    selected.push(start);
    let mut min_d = vec![f32::INFINITY; n];
    let threads = threads.min(n).max(1);
    if threads == 1 {
        let mut newest = start;
        for _ in 1..k {
            newest = fused_pass(z, d, 0, &mut min_d, newest).1;
            selected.push(newest);
        }
        return selected;
    }
    let bounds: Vec<usize> = (0..=threads).map(|t| t * n / threads).collect();
    // Per-thread (max, index) of each step, double-buffered by step parity: a slot is rewritten
    // two steps later, after every thread has passed the barrier of the step in between (so has
    // finished reading it).
    let slots: Vec<Mutex<(f32, usize)>> =
        (0..2 * threads).map(|_| Mutex::new((f32::NEG_INFINITY, usize::MAX))).collect();
    let barrier = Barrier::new(threads);
    let worker = |t: usize, min_d: &mut [f32]| -> Vec<usize> {
        let mut picks = Vec::new();
        let mut newest = start;
        for step in 1..k {
            let local = fused_pass(z, d, bounds[t], min_d, newest);
            let parity = (step & 1) * threads;
            *slots[parity + t].lock().unwrap_or_else(PoisonError::into_inner) = local;
            barrier.wait();
            // Every thread reduces the same slots in the same order (ranges ascend, so the first
            // strict maximum is the lowest index) and so agrees on the next centre.
            let mut best = (f32::NEG_INFINITY, usize::MAX);
            for slot in &slots[parity..parity + threads] {
                let v = *slot.lock().unwrap_or_else(PoisonError::into_inner);
                if v.0 > best.0 {
                    best = v;
                }
            }
            newest = best.1;
            if t == 0 {
                picks.push(newest);
            }
        }
        picks
    };
    std::thread::scope(|s| {
        let mut parts = Vec::with_capacity(threads);
        let mut rest: &mut [f32] = &mut min_d;
        for t in 0..threads {
            let (part, tail) = rest.split_at_mut(bounds[t + 1] - bounds[t]);
            parts.push(part);
            rest = tail;
        }
        let mut parts = parts.into_iter();
        let first = parts.next().expect("at least one thread");
        for (t, part) in parts.enumerate() {
            let worker = &worker;
            s.spawn(move || worker(t + 1, part));
        }
        selected.extend(worker(0, first));
    });
    selected
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward greedy k-center on Z: a full update pass, then a separate argmax over the
    /// rows not yet taken (ties to the lowest index), one step at a time.
    #[allow(clippy::needless_range_loop)] // deliberately index by index, like the reference
    fn naive(z: &[f32], d: usize, k: usize, start: usize) -> Vec<usize> {
        let n = z.len() / d;
        let row = |i: usize| &z[i * d..(i + 1) * d];
        let mut taken = vec![false; n];
        let mut min_d = vec![f32::INFINITY; n];
        let mut sel = vec![start];
        taken[start] = true;
        while sel.len() < k {
            let newest = *sel.last().unwrap();
            for r in 0..n {
                min_d[r] = min_d[r].min(sq_dist(row(r), row(newest)));
            }
            let mut best: Option<usize> = None;
            for r in 0..n {
                if !taken[r] && best.is_none_or(|b| min_d[r] > min_d[b]) {
                    best = Some(r);
                }
            }
            let b = best.unwrap();
            taken[b] = true;
            sel.push(b);
        }
        sel
    }

    /// The covering radius² of a selection: the largest distance² of any row to its nearest
    /// selected row.
    fn radius_sq(z: &[f32], d: usize, sel: &[usize]) -> f32 {
        z.chunks_exact(d)
            .map(|r| sel.iter().map(|&s| sq_dist(r, &z[s * d..(s + 1) * d])).fold(f32::INFINITY, f32::min))
            .fold(0.0, f32::max)
    }

    /// Random data: N rows × C features, N in 1..=120, C in 1..=24, values in [−4, 4], with some
    /// duplicated rows (ties) mixed in.
    fn data() -> impl Strategy<Value = (Vec<f32>, usize)> {
        (1usize..=120, 1usize..=24).prop_flat_map(|(n, c)| {
            (prop::collection::vec(-4.0f32..4.0, n * c), prop::collection::vec(0..n, 0..4)).prop_map(
                move |(mut x, dups)| {
                    for (i, &src) in dups.iter().enumerate() {
                        let dst = (src + 7 * i + 1) % n;
                        let row = x[src * c..(src + 1) * c].to_vec();
                        x[dst * c..(dst + 1) * c].copy_from_slice(&row);
                    }
                    (x, c)
                },
            )
        })
    }

    fn params(k: usize, proj_dim: usize, seed: u64, threads: usize) -> CoresetParams {
        CoresetParams { size: CoresetSize::Count(k), proj_dim, seed, threads }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn matches_naive_reference((x, c) in data(), k in 0usize..40, proj_dim in 0usize..12, seed in any::<u64>(), threads in 1usize..5) {
            let n = x.len() / c;
            let got = greedy_coreset(&x, c, &params(k, proj_dim, seed, threads)).unwrap();
            if k >= n {
                prop_assert_eq!(got, (0..n).collect::<Vec<_>>());
            } else if k == 0 {
                prop_assert!(got.is_empty());
            } else {
                let (z, d, start) = prepare(&x, c, proj_dim, seed, 1).unwrap();
                let want = naive(&z, d, k, start);
                prop_assert_eq!(&got, &want);
                // The k-center objective: equal (identical selections), spelled out.
                prop_assert!(radius_sq(&z, d, &got) <= radius_sq(&z, d, &want));
                let mut uniq = got.clone();
                uniq.sort_unstable();
                uniq.dedup();
                prop_assert_eq!(uniq.len(), k, "indices are distinct");
            }
        }

        #[test]
        fn independent_of_thread_count((x, c) in data(), k in 1usize..30, seed in any::<u64>()) {
            let one = greedy_coreset(&x, c, &params(k, 4, seed, 1)).unwrap();
            for threads in [0, 2, 3, 8] {
                prop_assert_eq!(&greedy_coreset(&x, c, &params(k, 4, seed, threads)).unwrap(), &one);
            }
            prop_assert_eq!(&greedy_coreset(&x, c, &params(k, 4, seed, 1)).unwrap(), &one, "deterministic");
        }

        /// Greedy k-center is a 2-approximation: its covering radius is at most twice the best
        /// possible (found by trying every k-subset of a tiny set; no projection).
        #[test]
        fn within_twice_the_optimal_radius(x in prop::collection::vec(-4.0f32..4.0, 2 * 10), k in 1usize..4, seed in any::<u64>()) {
            let (c, n) = (2, 10);
            let got = greedy_coreset(&x, c, &params(k, 0, seed, 2)).unwrap();
            let mut best = f32::INFINITY;
            let mut subset: Vec<usize> = (0..k).collect();
            loop {
                best = best.min(radius_sq(&x, c, &subset));
                // next k-combination of 0..n in lexicographic order
                let Some(i) = (0..k).rev().find(|&i| subset[i] < n - k + i) else { break };
                subset[i] += 1;
                for j in i + 1..k {
                    subset[j] = subset[j - 1] + 1;
                }
            }
            let r = radius_sq(&x, c, &got).sqrt();
            prop_assert!(r <= 2.0 * best.sqrt() * (1.0 + 1e-5) + 1e-6, "greedy {r} vs optimum {}", best.sqrt());
        }
    }

    #[test]
    fn projection_matches_f64_product() {
        let (n, c, d) = (5000, 37, 9); // two chunks, one partial
        let x: Vec<f32> = (0..n * c).map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let p = gaussian_matrix(&mut rng, c, d);
        let z = project(&x, c, &p, d, 2);
        assert_eq!(z, project(&x, c, &p, d, 1), "thread count does not change the projection");
        for r in (0..n).step_by(97) {
            for j in 0..d {
                let exact: f64 = (0..c).map(|i| x[r * c + i] as f64 * p[i * d + j] as f64).sum();
                let scale: f64 = (0..c).map(|i| (x[r * c + i] as f64 * p[i * d + j] as f64).abs()).sum();
                assert!((z[r * d + j] as f64 - exact).abs() <= 1e-5 * scale + 1e-6);
            }
        }
    }

    #[test]
    fn gaussian_matrix_is_seeded_standard_normal_over_sqrt_d() {
        let (c, d) = (168, 64);
        let p = gaussian_matrix(&mut ChaCha8Rng::seed_from_u64(0), c, d);
        assert_eq!(p, gaussian_matrix(&mut ChaCha8Rng::seed_from_u64(0), c, d));
        assert_ne!(p, gaussian_matrix(&mut ChaCha8Rng::seed_from_u64(1), c, d));
        let len = p.len() as f64;
        let mean = p.iter().map(|&v| v as f64).sum::<f64>() / len;
        let var = p.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var * d as f64 - 1.0).abs() < 0.05, "variance × d = {}", var * d as f64);
    }

    #[test]
    fn sizes_and_edge_cases() {
        let x: Vec<f32> = (0..40).map(|i| i as f32).collect(); // 10 rows × 4
        assert_eq!(greedy_coreset(&x, 4, &CoresetParams::count(10)).unwrap(), (0..10).collect::<Vec<_>>());
        assert_eq!(greedy_coreset(&x, 4, &CoresetParams::count(99)).unwrap(), (0..10).collect::<Vec<_>>());
        assert!(greedy_coreset(&x, 4, &CoresetParams::count(0)).unwrap().is_empty());
        assert!(greedy_coreset(&[], 4, &CoresetParams::count(5)).unwrap().is_empty());
        assert_eq!(greedy_coreset(&x, 4, &CoresetParams::ratio(0.25)).unwrap().len(), 3); // 2.5 → 3
        assert_eq!(greedy_coreset(&x, 4, &CoresetParams::ratio(0.01)).unwrap().len(), 1);
        assert_eq!(greedy_coreset(&x, 4, &CoresetParams::ratio(0.0)), Err(KernelError::BadRatio(0.0)));
        assert!(matches!(greedy_coreset(&x, 4, &CoresetParams::ratio(f64::NAN)), Err(KernelError::BadRatio(_))));
        assert_eq!(greedy_coreset(&x, 0, &CoresetParams::count(2)), Err(KernelError::ZeroDim));
        assert!(matches!(greedy_coreset(&x, 3, &CoresetParams::count(2)), Err(KernelError::Ragged { .. })));
        let mut bad = x.clone();
        bad[4 * 6 + 1] = f32::NAN;
        assert_eq!(
            greedy_coreset(&bad, 4, &CoresetParams::count(2)),
            Err(KernelError::NonFinite { what: "coreset input", row: 6 })
        );
        assert_eq!(CoresetSize::Ratio(0.01).resolve(780_288), Ok(7_803));
        assert_eq!(CoresetSize::Ratio(0.005).resolve(780_288), Ok(3_901));
    }

    #[test]
    fn identical_rows_give_distinct_indices() {
        let x = vec![1.5f32; 8 * 3];
        let got = greedy_coreset(&x, 3, &params(5, 0, 11, 3)).unwrap();
        let start = got[0];
        let rest: Vec<usize> = (0..8).filter(|&i| i != start).take(4).collect();
        assert_eq!(got[1..], rest[..]);
    }

    #[test]
    fn picks_the_far_points_first() {
        // Four tight clusters on a line: 4 centres must take one row from each cluster.
        let mut x = Vec::new();
        for cluster in 0..4 {
            for i in 0..25 {
                x.extend([cluster as f32 * 100.0 + i as f32 * 0.01, 0.0]);
            }
        }
        let mut got: Vec<usize> = greedy_coreset(&x, 2, &params(4, 0, 5, 2)).unwrap().iter().map(|i| i / 25).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3]);
    }
}
