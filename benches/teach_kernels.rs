//! Teach-mode numeric kernels (`linesight::teach`) on this machine, against the Python reference.
//!
//! What it measures (random features; the kernels' cost does not depend on the values):
//! - `coreset_1pct_100k_x168_proj64`: greedy k-center coreset of 1% (1,000 rows) of 100,000
//!   patches × 168 features (Lite2 s8+s16), projection to 64 dims, automatic threads — the whole
//!   call: Gaussian projection + 999 fused update/argmax passes;
//! - `knn_1024x168_vs_{2000,8000}_{1t,auto}`: nearest-bank-row distance of one 256² image's 1,024
//!   patches × 168 features against banks of 2,000 and 8,000 rows, on one thread and on
//!   `available_parallelism` threads (bank norms precomputed, as at run time).
//!
//! After criterion's report it prints each median next to the comparable Python figure from
//! `docs/TEACH_RESEARCH.md` (one thread, NumPy/onnxruntime), scaled to the same work:
//! - coreset: 1% of 780,288 × 168 (proj 64) took 104 s in NumPy → 104 s / (780,288 · 7,803)
//!   per row-visit × (100,000 · 1,000) row-visits ≈ 1.71 s;
//! - k-NN: the ONNX scoring graph (1 thread, 1,024 patches × 152-d, which also includes the
//!   resize and blur, so it flatters the reference slightly) at 1,950 rows: 15.4 ms and 7,800
//!   rows: 79.5 ms, scaled by rows and by 168/152.
//!
//! Run with `cargo bench --bench teach_kernels`.

use criterion::Criterion;
use linesight::teach::coreset::{CoresetParams, greedy_coreset};
use linesight::teach::knn::Bank;
use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant};

const C: usize = 168;
/// Criterion samples per benchmark (each sample is one `iter_custom` batch).
const SAMPLES: usize = 10;

/// Deterministic pseudo-random features in [0, 1) (xorshift64).
fn features(rows: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..rows * C)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// Times `f` with criterion under `name` and returns the median time per call over criterion's
/// measured samples (the last `SAMPLES` batches it ran; the warm-up batches come before them).
fn bench(c: &mut Criterion, name: &str, mut f: impl FnMut()) -> Duration {
    let per_call = RefCell::new(Vec::new());
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                f();
            }
            let total = t0.elapsed();
            per_call.borrow_mut().push(total / iters as u32);
            total
        })
    });
    let mut v = per_call.into_inner();
    let mut v = v.split_off(v.len().saturating_sub(SAMPLES));
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    let mut report = Vec::new();

    let x = features(100_000, 1);
    let params = CoresetParams::ratio(0.01);
    assert_eq!(greedy_coreset(&x, C, &params).unwrap().len(), 1000);
    let t = bench(&mut c, "coreset_1pct_100k_x168_proj64", || {
        black_box(greedy_coreset(black_box(&x), C, &params).unwrap());
    });
    let reference = 104.0 / (780_288.0 * 7_803.0) * (100_000.0 * 1_000.0);
    report.push(("coreset 1% of 100k×168, proj 64".to_string(), t, reference));
    drop(x);

    let queries = features(1024, 2);
    for (rows, graph_rows, graph_ms) in [(2000usize, 1950.0, 15.4), (8000, 7800.0, 79.5)] {
        let bank = Bank::new(features(rows, 3 + rows as u64), C).unwrap();
        let reference = graph_ms / 1e3 * (rows as f64 / graph_rows) * (C as f64 / 152.0);
        for (threads, label) in [(1usize, "1t"), (0, "auto")] {
            let t = bench(&mut c, &format!("knn_1024x168_vs_{rows}_{label}"), || {
                black_box(bank.nearest_distances_with_threads(black_box(&queries), threads).unwrap());
            });
            report.push((format!("knn 1024×168 vs {rows} rows, {label}"), t, reference));
        }
    }
    c.final_summary();

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "\nteach kernels vs the Python reference (docs/TEACH_RESEARCH.md, scaled to the same work; {threads} CPUs):"
    );
    println!("{:<36} {:>11} {:>12} {:>8}", "kernel", "median", "reference", "speed-up");
    for (name, t, reference) in &report {
        let secs = t.as_secs_f64();
        println!("{name:<36} {:>8.2} ms {:>9.1} ms {:>7.1}x", secs * 1e3, reference * 1e3, reference / secs);
    }
}
