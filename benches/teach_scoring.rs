//! Run-time cost of a taught model, split backbone / scoring (issue 3: with the default coreset
//! the scoring may cost no more than the backbone on CPU).
//!
//! `cargo bench --bench teach_scoring` (or `make bench-teach`). One image per run, ONNX
//! Runtime on one thread, for each backbone:
//! - `backbone`: the committed backbone graph alone;
//! - `taught/sG/M`: the whole taught graph (backbone + local aggregation + PCA 64 + 1-NN against M
//!   bank rows on the patch grid of stride G, divided by the nearest row's local scale + map blur
//!   and upsampling + score). The scoring cost
//!   depends only on the bank's shape, not its values, so the bank is seeded noise. The default
//!   recipe is the stride-16 grid with the scoring budget's 8,192 rows (what MTD's 762 teach
//!   images get); the stride-8 grid's budget is 2,048 rows; 16,384 rows on stride 16 is twice the
//!   budget.
//!
//! The report after the criterion output prints scoring = taught − backbone and its ratio to the
//! backbone (≤ 1 meets the budget).

use criterion::{Criterion, criterion_group};
use linesight::config::InputContrast;
use linesight::teach::backbone::Backbone;
use linesight::teach::learn::{budget_bank_rows, nearest_search, session_from_bytes};
use linesight::teach::onnx::{self, InputShape, Scoring};
use ort::session::Session;
use ort::value::TensorRef;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PCA_DIMS: usize = 64;
/// (input side, patch grid stride, multiple of the default bank): at 256², each grid at the
/// backbone's default scoring budget (`scoring_budget_macs_per_pixel` in backbone.toml, through
/// `linesight::teach::learn::budget_bank_rows`) and the stride-16 grid at twice it; at 160²
/// (`make bench-mtd`'s recipe), the default bank.
const CASES: [(usize, usize, usize); 4] = [(256, 8, 1), (256, 16, 1), (256, 16, 2), (160, 16, 1)];

/// Bank rows of a case for this backbone.
fn bank_rows(backbone: &Backbone, grid: usize, multiple: usize) -> usize {
    multiple * budget_bank_rows(backbone.scoring_budget_macs_per_pixel, grid, PCA_DIMS)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn backbones() -> Vec<Backbone> {
    // The INT8 copy when `make backbone-int8` has made it (its models search the bank in int8 too).
    ["models/backbone-lite0", "models/backbone-lite2", "models/backbone-lite2-int8"]
        .iter()
        .filter_map(|d| Backbone::load(&repo().join(d)).ok())
        .collect()
}

fn taught_graph(backbone: &Backbone, size: usize, grid: usize, rows: usize) -> Vec<u8> {
    let c = backbone.feature_dim();
    let mut rng = ChaCha8Rng::seed_from_u64(rows as u64);
    let mut noise = |n: usize| (0..n).map(|_| rng.random::<f32>() - 0.5).collect::<Vec<f32>>();
    let (mean, projection, bank) = (noise(c), noise(c * PCA_DIMS), noise(rows * PCA_DIMS));
    // The default local-density normalisation (its cost: the nearest row's index, a Gather and a Div).
    let scales: Vec<f32> = noise(rows).iter().map(|v| 1.0 + v.abs()).collect();
    let scoring = Scoring {
        mean: &mean,
        projection: &projection,
        bank: &bank,
        grid_stride: grid,
        blur_sigma_px: 16.0,
        top_fraction: 0.05,
        local_scale: Some(&scales),
        correction: None,
        search: nearest_search(backbone),
        grid_scores: false,
        placed: None,
        place_scale: None,
    };
    onnx::scoring_model(
        backbone,
        InputShape { channels: 3, height: size, width: size, contrast: InputContrast::Standardised },
        &scoring,
    )
    .unwrap()
}

/// One run on the square image `x` (its side follows from its length).
fn run_once(session: &mut Session, input: &str, x: &[f32]) {
    let side = ((x.len() / 3) as f64).sqrt() as usize;
    let t = TensorRef::from_array_view(([1usize, 3, side, side], x)).unwrap();
    let out = session.run(ort::inputs![input => t]).unwrap();
    std::hint::black_box(out);
}

fn image(size: usize) -> Vec<f32> {
    (0..3 * size * size).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect()
}

fn bench(c: &mut Criterion) {
    for backbone in backbones() {
        let mut group = c.benchmark_group(format!("teach_scoring/{}", backbone.name));
        group.sample_size(20).measurement_time(Duration::from_secs(4));
        for size in [256, 160] {
            let x = image(size);
            let mut bare = session_from_bytes(&backbone.onnx_bytes, 1).unwrap();
            group.bench_function(format!("backbone/{size}"), |b| b.iter(|| run_once(&mut bare, &backbone.input, &x)));
            for (_, grid, multiple) in CASES.into_iter().filter(|c| c.0 == size) {
                let rows = bank_rows(&backbone, grid, multiple);
                let mut taught = session_from_bytes(&taught_graph(&backbone, size, grid, rows), 1).unwrap();
                group.bench_function(format!("taught/{size}/s{grid}/{rows}"), |b| {
                    b.iter(|| run_once(&mut taught, onnx::INPUT, &x))
                });
            }
        }
        group.finish();
    }
}

/// Median of `n` timed runs after warm-up, in milliseconds.
fn median_ms(session: &mut Session, input: &str, x: &[f32], n: usize) -> f64 {
    for _ in 0..3 {
        run_once(session, input, x);
    }
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            run_once(session, input, x);
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[n / 2]
}

fn report() {
    println!("\nteach scoring vs backbone (1 thread, median of 40 runs):");
    println!(
        "| backbone | input | patch grid | bank rows × dims | backbone ms | taught model ms | scoring ms | scoring / backbone |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for backbone in backbones() {
        for size in [256, 160] {
            let x = image(size);
            let mut bare = session_from_bytes(&backbone.onnx_bytes, 1).unwrap();
            let b = median_ms(&mut bare, &backbone.input, &x, 40);
            for (_, grid, multiple) in CASES.into_iter().filter(|c| c.0 == size) {
                let rows = bank_rows(&backbone, grid, multiple);
                let mut taught = session_from_bytes(&taught_graph(&backbone, size, grid, rows), 1).unwrap();
                let t = median_ms(&mut taught, onnx::INPUT, &x, 40);
                println!(
                    "| {} | {size}² | stride {grid} | {rows} × {PCA_DIMS} | {b:.2} | {t:.2} | {:.2} | {:.2} |",
                    backbone.name,
                    t - b,
                    (t - b) / b
                );
            }
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
