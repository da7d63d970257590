//! "No per-frame heap allocation in steady state", proved with a counting global allocator.
//!
//! Every allocation is attributed to the pipeline thread that made it (by thread name). After a
//! warm-up, the camera, preprocess and assembler threads must not allocate while hundreds of
//! frames pass (bar a one-time allowance for crossbeam-channel's waiter lists, see below). The camera is calibrated, so its thread also undistorts every frame, and the
//! decision applies a rule in mm, and NG frames (and 1 % of OK ones) go to the image archive,
//! which takes the frame itself, not a copy. The inference threads are reported, not asserted: the `ort` crate builds small
//! vectors of input/output names on every `Session::run`, which is outside our control (ONNX
//! Runtime's own C++ allocations do not go through this allocator at all).

mod common;

use linesight::calibration::{Calibration, PlaneScale, ScaleSource};
use linesight::config;
use linesight::pipeline::RecordPort;
use linesight::pipeline::messages::OUTPUT_QUEUE_DEPTH;
use linesight::sinks::archive::Archive;
use linesight::telemetry::Telemetry;
use linesight::topology::{RunOptions, Station};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const ROLES: [&str; 5] = ["camera", "preprocess", "infer", "assemble", "other"];
static ALLOCATIONS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

thread_local! {
    static ROLE: Cell<u8> = const { Cell::new(u8::MAX) };
    static RESOLVING: Cell<bool> = const { Cell::new(false) };
}

fn role() -> usize {
    let cached = ROLE.with(Cell::get);
    if cached != u8::MAX {
        return cached as usize;
    }
    // Looking up the thread name may itself allocate; count that as "other" and don't recurse.
    if RESOLVING.with(|r| r.replace(true)) {
        return 4;
    }
    let name = std::thread::current().name().map(str::to_owned).unwrap_or_default();
    let role = ROLES.iter().position(|r| name.starts_with(r)).unwrap_or(4) as u8;
    ROLE.with(|r| r.set(role));
    RESOLVING.with(|r| r.set(false));
    role as usize
}

struct Counting;

// SAFETY: defers to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS[role()].fetch_add(1, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS[role()].fetch_add(1, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counts() -> [u64; 5] {
    std::array::from_fn(|i| ALLOCATIONS[i].load(Relaxed))
}

#[test]
fn the_frame_path_does_not_allocate_in_steady_state() {
    let dir = tempfile::tempdir().unwrap();
    let calibration = dir.path().join("camera.yaml");
    Calibration {
        image_width: 480,
        image_height: 480,
        camera_matrix: [450.0, 0.0, 241.0, 0.0, 452.0, 238.0, 0.0, 0.0, 1.0],
        dist_coeffs: vec![-0.2, 0.05, 0.001, -0.001, 0.0],
        rms_px: None,
        per_view_px: Vec::new(),
        target: None,
        views: Vec::new(),
        skipped: Vec::new(),
        calibration_time: String::new(),
        scale: Some(PlaneScale { mm_per_px: 0.1, source: ScaleSource::Manual, note: String::new(), homography: None }),
    }
    .save(&calibration)
    .unwrap();
    let camera = format!("backpressure = \"block\"\ncalibration = \"{}\"", calibration.display());
    let text = common::synthetic_station(0.0, &camera, "").replace("min_area_px = 12", "min_area_mm2 = 0.12");
    let loaded = config::load_str(&text, "test", common::repo()).unwrap();
    assert!(loaded.geometry[0].undistort && loaded.geometry[0].mm_per_px == Some(0.1));
    let (tx, rx) = crossbeam_channel::bounded(OUTPUT_QUEUE_DEPTH);
    // Metrics registered and scraped while frames pass, as in a real station.
    let telemetry = std::sync::Arc::new(Telemetry::new());
    let archive_dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(archive_dir.path(), vec!["cam".into()], 0, 0).unwrap();
    let (archive_tx, archive_rx) = crossbeam_channel::bounded(linesight::sinks::archive::QUEUE_DEPTH);
    let options = RunOptions {
        max_frames: Some(700),
        outputs: vec![linesight::sinks::archive::port(archive_tx, 0.01), RecordPort::results(tx)],
        telemetry: Some(telemetry.clone()),
        ..Default::default()
    };
    let station = Station::build(&loaded, options).unwrap();
    let accounting = station.accounting();
    let archiver = {
        let accounting = station.accounting();
        std::thread::Builder::new().name("archive".into()).spawn(move || archive.run(archive_rx, accounting)).unwrap()
    };
    let runner = std::thread::Builder::new().name("station".into()).spawn(move || station.run()).unwrap();

    let decided = || accounting.snapshot()[0].inspected() + accounting.snapshot()[0].failsafe();
    let mut received = 0u64;
    let mut wait_for = |n: u64| {
        while decided() < n {
            received += rx.try_iter().count() as u64;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    wait_for(200);
    let before = counts();
    let frames_before = decided();
    let scrape = telemetry.render();
    wait_for(600);
    let after = counts();
    assert!(scrape.contains("linesight_stage_seconds_count{stage=\"preprocess\"}"), "{scrape}");
    let frames = decided() - frames_before;
    runner.join().unwrap();
    archiver.join().unwrap();
    assert!(accounting.archive_written.load(Relaxed) > 0, "NG frames were archived");
    received += rx.try_iter().count() as u64;
    assert_eq!(received, 700, "every inspection reached the output");

    let per_role: Vec<(&str, u64)> =
        ROLES.iter().zip(after.iter().zip(before)).map(|(r, (a, b))| (*r, a - b)).collect();
    eprintln!("allocations over {frames} steady-state frames, by thread: {per_role:?}");
    // A per-frame allocation would show up hundreds of times. What can show up once is
    // crossbeam-channel's waiter list (a 96-byte Vec): it is allocated the first time a thread
    // ever blocks on a channel side, which on a loaded machine can first happen after the warm-up
    // (measured: 0 in most runs, 1 in about one run of six with two other jobs on 2 cores).
    const ONE_TIME_ALLOWANCE: u64 = 2;
    for (role, n) in &per_role[..4] {
        if *role != "infer" {
            assert!(
                *n <= ONE_TIME_ALLOWANCE,
                "{role} thread allocated {n} times over {frames} frames (at most {ONE_TIME_ALLOWANCE} one-time \
                 allocations allowed)"
            );
        }
    }
    eprintln!(
        "infer thread: {:.1} allocations per frame (ort's per-run name vectors)",
        per_role[2].1 as f64 / frames as f64
    );
}
