//! Four cameras at 1280×1024 on one box (issue 18 item 4): the demo model cuts each frame into
//! 30 overlapping 256² tiles, so one frame is 30 model inputs. For each setup (batch 1 against the
//! dynamic batcher, one worker with two intra-op threads against two workers with one), the
//! station runs flat out (block backpressure: no frame dropped) and reports
//! - frames/s, and frames per second per core of the whole box and per CPU-second the pipeline
//!   itself used (without the synthetic cameras' rendering, which a real camera's driver does not
//!   cost);
//! - the CPU time of each stage's threads per frame, from the kernel's per-thread accounting
//!   (`/proc/self/task/*/schedstat`, sampled while the threads live), and the cores left idle.
//!
//! Figures go to stdout and `target/bench-cameras/table.md`; `make bench-cameras` runs it. Not a
//! test: these machines are shared and noisy, so nothing here asserts a speed.

use linesight::config;
use linesight::topology::{RunOptions, Station};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CAMERAS: usize = 4;
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 1024;
/// Frames per camera in each setup's timed run (after a short warm-up run).
const FRAMES_PER_CAMERA: u64 = 150;

struct Setup {
    name: &'static str,
    /// `None` leaves it to the station's default.
    max_batch: Option<usize>,
    /// `(workers, intra_threads)`; `None` leaves both to the station's defaults.
    threads: Option<(usize, usize)>,
}

const SETUPS: [Setup; 6] = [
    Setup { name: "batch 1, 1 worker × 2 threads", max_batch: Some(1), threads: Some((1, 2)) },
    Setup { name: "dynamic ≤ 16, 1 worker × 2 threads", max_batch: Some(16), threads: Some((1, 2)) },
    Setup { name: "batch 1, 2 workers × 1 thread", max_batch: Some(1), threads: Some((2, 1)) },
    Setup { name: "dynamic ≤ 4, 2 workers × 1 thread", max_batch: Some(4), threads: Some((2, 1)) },
    Setup { name: "dynamic ≤ 16, 2 workers × 1 thread", max_batch: Some(16), threads: Some((2, 1)) },
    Setup { name: "defaults: batches, workers and threads unset", max_batch: None, threads: None },
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn station_config(s: &Setup) -> String {
    let mut text = String::new();
    for i in 0..CAMERAS {
        text += &format!(
            "[[camera]]\nid = \"cam{i}\"\nfps = 0\nbackpressure = \"block\"\n[camera.source]\nkind = \"synthetic\"\n\
             width = {WIDTH}\nheight = {HEIGHT}\nsurface = \"{surface}\"\nseed = {i}\n\n",
            surface = if i % 2 == 0 { "brushed_metal" } else { "ceramic_tile" },
        );
    }
    // A deadline far beyond any queueing here: the bench measures throughput, not timeouts.
    text + &format!(
        "[model]\npackage = \"models/demo\"\n{threads}\n[pipeline]\n{batch}\
         max_wait_us = 2000\nverdict_deadline_ms = 60000\n\n[[rule]]\nclass = \"defect\"\nmin_score = 0.5\nmin_area_px = 12\n",
        batch = s.max_batch.map_or(String::new(), |b| format!("max_batch = {b}\n")),
        threads = s.threads.map_or(String::new(), |(w, t)| format!("workers = {w}\nintra_threads = {t}\n")),
    )
}

/// Name and CPU time (ns, from schedstat) of every live thread of this process, by thread id.
fn thread_cpu() -> BTreeMap<u32, (String, u64)> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_string();
        let ns = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()));
        if let Some(ns) = ns {
            out.insert(tid, (comm, ns));
        }
    }
    out
}

// The stages CPU time is reported for (the sampler's own is shown but left out of the totals).
const CAPTURE: &str = "capture (synthetic render)";
const PREPROCESS: &str = "preprocess (tile cutting)";
const INFERENCE: &str = "inference";
const ASSEMBLE: &str = "assemble (stitch, regions, verdict)";
const OTHER: &str = "other (watchdog, ONNX Runtime pool threads)";
const SAMPLER: &str = "(this bench's sampler)";

/// The stage a pipeline thread belongs to, by the name the station gives it (Linux keeps the
/// first 15 bytes).
fn stage_of(thread: &str) -> &'static str {
    if thread.starts_with("camera-") {
        CAPTURE
    } else if thread.starts_with("preprocess-") {
        PREPROCESS
    } else if thread.starts_with("infer-") {
        INFERENCE
    } else if thread == "assemble" {
        ASSEMBLE
    } else if thread == "cpu-sampler" {
        SAMPLER
    } else {
        OTHER
    }
}

struct Measured {
    frames: u64,
    wall_s: f64,
    /// CPU seconds by stage.
    cpu_s: BTreeMap<&'static str, f64>,
    tiles_per_batch: f64,
    tiles_per_frame: f64,
    failsafe: u64,
    /// The station's `(workers, intra_threads)` after the config's defaults were filled.
    threads: (usize, usize),
}

fn run(setup: &Setup, frames_per_camera: u64) -> Measured {
    let loaded = config::load_str(&station_config(setup), "bench-cameras", repo()).expect("bench config");
    let threads = (loaded.config.model.workers, loaded.config.model.intra_threads);
    let station = Station::build(&loaded, RunOptions { max_frames: Some(frames_per_camera), ..Default::default() })
        .expect("building the station");
    // Threads that exist before the run (main, ONNX Runtime pools made with the sessions) count
    // from here; threads born during the run count from zero.
    let baseline = thread_cpu();
    let latest = Arc::new(Mutex::new(baseline.clone()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (latest, done) = (Arc::clone(&latest), Arc::clone(&done));
        std::thread::Builder::new()
            .name("cpu-sampler".into())
            .spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let now = thread_cpu();
                    latest.lock().unwrap().extend(now);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .expect("sampler thread")
    };
    let t0 = Instant::now();
    let acc = station.run();
    let wall_s = t0.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    latest.lock().unwrap().extend(thread_cpu());

    let mut cpu_s: BTreeMap<&'static str, f64> = BTreeMap::new();
    for (tid, (name, ns)) in latest.lock().unwrap().iter() {
        let before = baseline.get(tid).map_or(0, |b| b.1);
        *cpu_s.entry(stage_of(name)).or_default() += ns.saturating_sub(before) as f64 / 1e9;
    }
    let snapshot = acc.snapshot();
    let frames: u64 = snapshot.iter().map(|s| s.inspected()).sum();
    let failsafe = snapshot.iter().map(|s| s.failsafe()).sum();
    let batches = acc.batches.load(Ordering::Relaxed).max(1);
    let tiles = acc.batch_tiles.load(Ordering::Relaxed) as f64;
    let (tiles_per_batch, tiles_per_frame) = (tiles / batches as f64, tiles / frames.max(1) as f64);
    Measured { frames, wall_s, cpu_s, tiles_per_batch, tiles_per_frame, failsafe, threads }
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut table = String::new();
    let _ = writeln!(
        table,
        "Four synthetic cameras at {WIDTH}×{HEIGHT}, demo model (256² tiles, 32 px overlap: 30 tiles per frame), flat \
         out, {FRAMES_PER_CAMERA} frames per camera, {cores} cores.\n"
    );
    let _ = writeln!(
        table,
        "| setup | frames/s | tiles/batch | frames/s per core | frames per pipeline CPU-s | CPU ms per frame: capture / preprocess / inference / assemble / other | idle cores |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|");
    for setup in &SETUPS {
        run(setup, 10); // warm-up: thread pools, allocator, page cache
        let m = run(setup, FRAMES_PER_CAMERA);
        let fps = m.frames as f64 / m.wall_s;
        let per_frame = |stage: &str| 1e3 * m.cpu_s.get(stage).copied().unwrap_or(0.0) / m.frames.max(1) as f64;
        let total: f64 = m.cpu_s.iter().filter(|(s, _)| **s != SAMPLER).map(|(_, v)| v).sum();
        let capture = m.cpu_s.get(CAPTURE).copied().unwrap_or(0.0);
        let pipeline_cpu = total - capture;
        let idle = cores as f64 - total / m.wall_s;
        let name = match setup.threads {
            Some(_) => setup.name.to_string(),
            None => format!("{} ({} × {})", setup.name, m.threads.0, m.threads.1),
        };
        println!("== {name} ==");
        println!(
            "{} frames in {:.2} s: {fps:.2} frames/s ({:.1} tiles/s), {:.2} tiles per batch, {} FAILSAFE",
            m.frames,
            m.wall_s,
            fps * m.tiles_per_frame,
            m.tiles_per_batch,
            m.failsafe
        );
        for (stage, s) in &m.cpu_s {
            println!(
                "  {stage:<45} {:>8.2} CPU-s  {:>7.2} ms/frame  {:>5.1}% of the threads' CPU",
                s,
                1e3 * s / m.frames.max(1) as f64,
                100.0 * s / total.max(1e-9)
            );
        }
        println!("  idle: {idle:.2} of {cores} cores");
        let _ = writeln!(
            table,
            "| {name} | {fps:.2} | {:.1} | {:.2} | {:.2} | {:.1} / {:.1} / {:.1} / {:.1} / {:.1} | {idle:.2} |",
            m.tiles_per_batch,
            fps / cores as f64,
            m.frames as f64 / pipeline_cpu.max(1e-9),
            per_frame(CAPTURE),
            per_frame(PREPROCESS),
            per_frame(INFERENCE),
            per_frame(ASSEMBLE),
            per_frame(OTHER),
        );
    }
    println!("\n{table}");
    let dir = repo().join("target/bench-cameras");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("table.md"), &table);
    }
}
