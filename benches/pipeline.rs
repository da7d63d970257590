//! Pipeline benchmarks on the demo model with the synthetic source, on this machine.
//!
//! What it measures, and the limit each figure is compared with:
//! - `bare_onnxruntime`: one `Session::run` of a full frame's tiles (the batch the pipeline runs),
//!   same model, same intra-op threads — the physical limit of the station's throughput;
//! - `end_to_end`: frames/s through the whole station (capture → preprocess → batcher → infer →
//!   stitch/decode → decide → record), reported as a ratio to the bare figure (target ≥ 0.95);
//! - per-stage cost p50/p99 in µs (capture = synthetic render, preprocess = cutting a frame's
//!   tiles, decode = stitching + connected components, decide = rules);
//! - capture → verdict latency p50/p99 with the cameras paced at ~70% of the measured maximum.
//!
//! Criterion times the stage kernels; the throughput and latency report is printed after them.
//! Run with `make bench`.

use criterion::Criterion;
use linesight::config::{self, RuleConfig};
use linesight::frame::{Frame, FrameMeta, PixelFormat};
use linesight::model::ModelPackage;
use linesight::pipeline::RecordPort;
use linesight::pipeline::messages::OUTPUT_QUEUE_DEPTH;
use linesight::pool::BufferPool;
use linesight::stages::decide::{Rules, decide};
use linesight::stages::decode::{ComponentScratch, decode_segmentation};
use linesight::stages::infer::session::{InferSession, SessionOptions};
use linesight::stages::preprocess::{Normalizer, tile_to_tensor};
use linesight::stages::tiling::TileGrid;
use linesight::synth::{Generator, Surface, SynthParams};
use linesight::topology::stitch::{Region, paste_max};
use linesight::topology::{RunOptions, Station};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

const SIDE: u32 = 480;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn station_config(fps: f64, cameras: usize) -> String {
    let mut text = String::new();
    for i in 0..cameras {
        text += &format!(
            "[[camera]]\nid = \"cam{i}\"\nfps = {fps}\nbackpressure = \"{bp}\"\n[camera.source]\nkind = \"synthetic\"\nsurface = \"{s}\"\nseed = {i}\n\n",
            bp = if fps == 0.0 { "block" } else { "drop_oldest" },
            s = if i % 2 == 0 { "brushed_metal" } else { "ceramic_tile" },
        );
    }
    text + "[model]\npackage = \"models/demo\"\n\n[pipeline]\nmax_batch = 4\nmax_wait_us = 2000\n\n[[rule]]\nclass = \"defect\"\nmin_score = 0.5\nmin_area_px = 12\n"
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn time_us(samples: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut t: Vec<f64> = (0..samples)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (percentile(&t, 0.5), percentile(&t, 0.99))
}

fn make_frame(pool: &BufferPool<u8>, generator: &mut Generator, index: u64) -> Frame {
    let mut pixels = pool.take((SIDE * SIDE) as usize);
    let mut mask = vec![0u8; (SIDE * SIDE) as usize];
    generator.render(index, &mut pixels, &mut mask);
    let meta = FrameMeta {
        camera: 0,
        seq: index,
        part_id: None,
        captured_at: Instant::now(),
        captured_wall: SystemTime::now(),
        recipe: 0,
    };
    Frame { meta, format: PixelFormat::Gray8, width: SIDE, height: SIDE, pixels }
}

struct Fixture {
    package: ModelPackage,
    generator: Generator,
    pool: BufferPool<u8>,
    grid: TileGrid,
    norm: Normalizer,
}

fn fixture() -> Fixture {
    let package = ModelPackage::load(&repo().join("models/demo")).expect("demo model");
    let params =
        SynthParams { width: SIDE, height: SIDE, surface: Surface::BrushedMetal, defect_probability: 0.5, seed: 1 };
    let mut grid = TileGrid::default();
    let i = &package.manifest.input;
    grid.plan(SIDE, SIDE, i.width, i.height, 32);
    Fixture {
        norm: Normalizer::new(i),
        package,
        generator: Generator::new(params).unwrap(),
        pool: BufferPool::new(4),
        grid,
    }
}

/// Criterion-timed stage kernels.
fn stage_kernels(c: &mut Criterion) {
    let mut fx = fixture();
    let (tw, th) = (fx.package.manifest.input.width, fx.package.manifest.input.height);
    let item = (tw * th) as usize;
    let mut pixels = vec![0u8; (SIDE * SIDE) as usize];
    let mut mask = vec![0u8; (SIDE * SIDE) as usize];
    let mut index = 0;
    c.bench_function("capture/synthetic_render_480", |b| {
        b.iter(|| {
            index += 1;
            black_box(fx.generator.render(index, &mut pixels, &mut mask));
        })
    });
    let frame = make_frame(&fx.pool, &mut fx.generator, 3);
    let mut tensors = vec![0.0f32; item * fx.grid.len()];
    c.bench_function("preprocess/cut_frame_into_tiles", |b| {
        b.iter(|| {
            for (t, out) in tensors.chunks_mut(item).enumerate() {
                let (x, y) = fx.grid.origin(t);
                tile_to_tensor(&frame, x, y, tw, th, &fx.norm, out);
            }
        })
    });
    let tile_out = vec![0.01f32; item];
    let mut map = vec![0.0f32; (SIDE * SIDE) as usize];
    let mut scratch = ComponentScratch::new();
    let mut defects = Vec::new();
    c.bench_function("decode/stitch_and_components", |b| {
        b.iter(|| {
            map.fill(0.0);
            for t in 0..fx.grid.len() {
                let (x0, y0) = fx.grid.origin(t);
                let r = Region { x0, y0, w: tw, h: th, window: fx.grid.window(t, tw, th, SIDE, SIDE) };
                paste_max(&tile_out, 1, th as usize, tw as usize, &mut map, SIDE as usize, SIDE as usize, r).unwrap();
            }
            decode_segmentation(&map, 1, SIDE as usize, SIDE as usize, 0.5, None, &mut scratch, &mut defects);
        })
    });
    // The archive's heat map, made on the assembler thread for each archived anomaly frame.
    for (w, h) in [(256u32, 256u32), (1280, 1024)] {
        let scores: Vec<f32> = (0..w * h).map(|i| (i % 97) as f32 / 97.0).collect();
        let mut columns = Vec::new();
        c.bench_function(&format!("archive/heat_map_{w}x{h}"), |b| {
            b.iter(|| {
                let src =
                    linesight::pipeline::messages::HeatSource { width: w, height: h, scores: &scores, threshold: 0.5 };
                black_box(linesight::sinks::archive::HeatMap::of(src, &mut columns))
            })
        });
    }
}

fn report() {
    let mut fx = fixture();
    let m = fx.package.manifest.clone();
    let (tw, th) = (m.input.width, m.input.height);
    let item = (tw * th) as usize;
    let tiles = fx.grid.len();
    println!("\n== linesight pipeline report (demo model, {SIDE}×{SIDE} frames = {tiles} tiles of {tw}×{th}) ==");

    // Bare ONNX Runtime: the same batch the pipeline runs for one frame, same threads.
    let opts =
        SessionOptions { provider: config::Provider::Cpu, device_id: 0, intra_threads: 1, intra_spinning: false };
    let mut session = InferSession::new(&fx.package, &opts, &[tiles]).unwrap();
    let batch = tiles.next_power_of_two().min(4).max(tiles);
    let input = vec![0.5f32; batch * item];
    let run_once = |s: &mut InferSession| {
        let t = ort::value::TensorRef::from_array_view(([batch, 1, th as usize, tw as usize], &input[..])).unwrap();
        let out = s.session.run(ort::inputs![m.input.name.as_str() => t]).unwrap();
        black_box(out.len());
    };
    for _ in 0..20 {
        run_once(&mut session);
    }
    let n = 300;
    let t0 = Instant::now();
    for _ in 0..n {
        run_once(&mut session);
    }
    let bare_fps = n as f64 / t0.elapsed().as_secs_f64();
    drop(session);

    // End to end, flat out, no frame lost (block backpressure).
    let frames = 2000u64;
    let loaded = config::load_str(&station_config(0.0, 1), "bench", repo()).unwrap();
    let station = Station::build(&loaded, RunOptions { max_frames: Some(frames), ..Default::default() }).unwrap();
    let t0 = Instant::now();
    let acc = station.run();
    let wall = t0.elapsed().as_secs_f64();
    let e2e_fps = frames as f64 / wall;
    assert_eq!(acc.snapshot()[0].inspected(), frames);
    let busy = acc.infer_busy_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9;
    let batches = acc.batches.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "inference worker busy {:.1}% of the run; {:.3} ms per batch inside the pipeline vs {:.3} ms bare ({batches} batches)",
        100.0 * busy / wall,
        1e3 * busy / batches as f64,
        1e3 / bare_fps
    );
    println!(
        "throughput: bare ONNX Runtime {bare_fps:.1} frames/s; end to end {e2e_fps:.1} frames/s; ratio {:.3} (target ≥ 0.95)",
        e2e_fps / bare_fps
    );

    // Per-stage percentiles.
    let mut pixels = vec![0u8; (SIDE * SIDE) as usize];
    let mut mask = vec![0u8; (SIDE * SIDE) as usize];
    let mut k = 0;
    let capture = time_us(2000, || {
        k += 1;
        black_box(fx.generator.render(k, &mut pixels, &mut mask));
    });
    let frame = make_frame(&fx.pool, &mut fx.generator, 5);
    let mut tensors = vec![0.0f32; item * tiles];
    let pre = time_us(2000, || {
        for (t, out) in tensors.chunks_mut(item).enumerate() {
            let (x, y) = fx.grid.origin(t);
            tile_to_tensor(&frame, x, y, tw, th, &fx.norm, out);
        }
    });
    let mut map = vec![0.0f32; (SIDE * SIDE) as usize];
    let tile_out = vec![0.01f32; item];
    let mut scratch = ComponentScratch::new();
    let mut defects = Vec::new();
    let decode = time_us(2000, || {
        map.fill(0.0);
        for t in 0..tiles {
            let (x0, y0) = fx.grid.origin(t);
            let window = fx.grid.window(t, tw, th, SIDE, SIDE);
            paste_max(
                &tile_out,
                1,
                th as usize,
                tw as usize,
                &mut map,
                SIDE as usize,
                SIDE as usize,
                Region { x0, y0, w: tw, h: th, window },
            )
            .unwrap();
        }
        decode_segmentation(&map, 1, SIDE as usize, SIDE as usize, 0.5, None, &mut scratch, &mut defects);
    });
    let rules = Rules::resolve(
        &[RuleConfig { class: "defect".into(), min_score: 0.5, min_area_px: 12.0, ..RuleConfig::default() }],
        &["defect".into()],
    )
    .unwrap();
    let sample = vec![
        linesight::pipeline::Defect {
            class: 0,
            x: 10.0,
            y: 10.0,
            w: 5.0,
            h: 5.0,
            area_px: 20.0,
            length_px: 5.0,
            width_px: 5.0,
            max_score: 0.9,
            mean_score: 0.8
        };
        3
    ];
    let (mut d, mut counted, mut cc) = (Vec::with_capacity(8), Vec::with_capacity(8), Vec::with_capacity(8));
    let decide_t = time_us(20000, || {
        d.clear();
        d.extend_from_slice(&sample);
        black_box(decide(&mut d, &[], None, &rules, &mut counted, &mut cc));
    });
    // Undistortion of a 640×512 frame with the example calibration (remap tables built once).
    let cal = linesight::calibration::Calibration::load(&repo().join("calibration/example-left.yaml")).unwrap();
    let undistorter = linesight::calibration::Undistorter::new(&cal).unwrap();
    let (src, mut dst) = (vec![128u8; 640 * 512], vec![0u8; 640 * 512]);
    let undistort = time_us(1000, || undistorter.apply(&src, &mut dst, 1));
    println!(
        "stage cost p50/p99 µs: capture {:.0}/{:.0}, undistort (640×512) {:.0}/{:.0}, preprocess {:.0}/{:.0}, decode {:.0}/{:.0}, decide {:.2}/{:.2}",
        capture.0, capture.1, undistort.0, undistort.1, pre.0, pre.1, decode.0, decode.1, decide_t.0, decide_t.1
    );

    // Latency at ~70% of the maximum rate, two cameras sharing it.
    let fps_per_camera = 0.7 * e2e_fps / 2.0;
    let loaded = config::load_str(&station_config(fps_per_camera, 2), "bench", repo()).unwrap();
    let (tx, rx) = crossbeam_channel::bounded(OUTPUT_QUEUE_DEPTH * 4);
    let frames = (fps_per_camera * 20.0) as u64; // about 20 s
    let station = Station::build(
        &loaded,
        RunOptions { max_frames: Some(frames), outputs: vec![RecordPort::results(tx)], ..Default::default() },
    )
    .unwrap();
    let runner = std::thread::spawn(move || station.run());
    let mut lat: Vec<f64> = Vec::new();
    while !runner.is_finished() || !rx.is_empty() {
        if let Ok(i) = rx.recv_timeout(Duration::from_millis(100)) {
            lat.push(i.decided_at.duration_since(i.meta.captured_at).as_secs_f64() * 1e3);
        }
    }
    let acc = runner.join().unwrap();
    lat.sort_by(f64::total_cmp);
    let dropped: u64 = acc.snapshot().iter().map(|s| s.dropped()).sum();
    println!(
        "capture→verdict latency at {:.1} frames/s (2 cameras × {fps_per_camera:.1}, ~70% of max): p50 {:.2} ms, p99 {:.2} ms over {} frames ({} dropped)",
        2.0 * fps_per_camera,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len(),
        dropped
    );
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    stage_kernels(&mut c);
    c.final_summary();
    report();
}
