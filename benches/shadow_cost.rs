//! What a shadow model costs the line: frames/s of a station whose cameras run flat out, in
//! alternating phases without and with a shadow candidate (the same demo model) on its recipe,
//! reported as the throughput lost against the 5% limit; then, with the cameras paced below the
//! station's maximum, the share of parts the shadow compared (it only gets idle CPU, so it
//! samples instead of slowing the line). Run with `make bench-shadow`.

use linesight::config;
use linesight::pipeline::RecordPort;
use linesight::pipeline::messages::OUTPUT_QUEUE_DEPTH;
use linesight::shadow::Shadows;
use linesight::sinks::store::{Retention, Store};
use linesight::topology::{RunOptions, Station};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Length of each measured phase.
const PHASE: Duration = Duration::from_secs(15);
/// Phases without and with the shadow, alternating (noise on a shared machine averages out).
const ROUNDS: usize = 3;
/// The cost limit the issue sets.
const LIMIT: f64 = 0.05;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn station_config(fps: f64) -> String {
    let mut text = String::new();
    for (i, surface) in ["brushed_metal", "ceramic_tile"].iter().enumerate() {
        text += &format!(
            "[[camera]]\nid = \"cam{i}\"\nfps = {fps}\nbackpressure = \"{bp}\"\n[camera.source]\nkind = \"synthetic\"\nsurface = \"{surface}\"\nseed = {i}\n\n",
            bp = if fps == 0.0 { "block" } else { "drop_oldest" },
        );
    }
    text + "[model]\n\n[[recipe]]\nname = \"part\"\npackage = \"models/demo\"\n\n[pipeline]\nmax_batch = 4\nmax_wait_us = 2000\n\n[[rule]]\nclass = \"defect\"\nmin_score = 0.5\nmin_area_px = 12\n"
}

struct Bench {
    shadows: Arc<Shadows>,
    accounting: Arc<linesight::pipeline::Accounting>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    runner: std::thread::JoinHandle<Arc<linesight::pipeline::Accounting>>,
    drain: std::thread::JoinHandle<()>,
}

fn start(fps: f64, db: &Path) -> Bench {
    let loaded = config::load_str(&station_config(fps), "shadow bench", repo()).expect("bench config");
    let (tx, rx) = crossbeam_channel::bounded(OUTPUT_QUEUE_DEPTH);
    let switch = Arc::new(
        linesight::pipeline::RecipeSwitch::new(&loaded.starting_recipes(), 1)
            .named(vec!["part".into()], vec!["cam0".into(), "cam1".into()]),
    );
    let (port, tap) = linesight::pipeline::shadow_tap::shadow_port(Arc::clone(&switch));
    let options =
        RunOptions { outputs: vec![port, RecordPort::results(tx)], recipe_switch: Some(switch), ..Default::default() };
    let station = Station::build(&loaded, options).expect("bench station");
    drop(Store::open(db, Retention { days: 0, max_inspections: 0 }).expect("bench store"));
    let shadows =
        Arc::new(Shadows::new(tap, &loaded, db.to_path_buf(), Arc::clone(&station.switch), station.recipe_contexts()));
    let accounting = station.accounting();
    let stop = station.stop_handle();
    let drain = std::thread::spawn(move || for _ in rx {});
    let runner = std::thread::spawn(move || station.run());
    Bench { shadows, accounting, stop, runner, drain }
}

impl Bench {
    fn inspected(&self) -> u64 {
        self.accounting.snapshot().iter().map(|s| s.inspected()).sum()
    }

    /// Frames/s over one phase.
    fn rate(&self) -> f64 {
        let (n0, t0) = (self.inspected(), Instant::now());
        std::thread::sleep(PHASE);
        (self.inspected() - n0) as f64 / t0.elapsed().as_secs_f64()
    }

    fn finish(self) {
        self.stop.store(true, Relaxed);
        let _ = self.runner.join();
        let _ = self.drain.join();
    }
}

fn shadow_counts(shadows: &Shadows) -> (u64, u64, u64) {
    let s = shadows.status(0, 1).expect("shadow status");
    let c = &s["counts"];
    (c["offered"].as_u64().unwrap_or(0), c["skipped"].as_u64().unwrap_or(0), c["compared"].as_u64().unwrap_or(0))
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let candidate = repo().join("models/demo");

    let bench = start(0.0, &dir.path().join("flat.db"));
    std::thread::sleep(Duration::from_secs(3)); // warm-up
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let mut counts = (0, 0, 0);
    for _ in 0..ROUNDS {
        without.push(bench.rate());
        bench.shadows.start(0, &candidate, linesight::shadow::DEFAULT_SHARE).expect("shadow starts");
        with.push(bench.rate());
        let (o, s, c) = shadow_counts(&bench.shadows);
        counts = (counts.0 + o, counts.1 + s, counts.2 + c);
        bench.shadows.stop(0, "stopped");
        std::thread::sleep(Duration::from_secs(1)); // the shadow drains
    }
    bench.finish();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (a, b) = (mean(&without), mean(&with));
    let cost = (1.0 - b / a).max(0.0);
    println!(
        "shadow model cost, two cameras flat out, demo model, share {}, {ROUNDS} × {} s phases:",
        linesight::shadow::DEFAULT_SHARE,
        PHASE.as_secs()
    );
    println!("  without shadow: {a:.1} frames/s ({without:.1?})");
    println!("  with shadow:    {b:.1} frames/s ({with:.1?})");
    println!(
        "  throughput lost: {:.2}% (limit {:.0}%: ratio to limit {:.2})",
        cost * 100.0,
        LIMIT * 100.0,
        cost / LIMIT
    );
    println!("  shadow: {} parts offered, {} skipped, {} compared", counts.0, counts.1, counts.2);

    // Paced at about half the flat-out rate: the shadow gets the idle CPU.
    let fps = (a / 2.0 / 2.0).max(1.0);
    let bench = start(fps, &dir.path().join("paced.db"));
    std::thread::sleep(Duration::from_secs(3));
    let live_without = bench.rate();
    bench.shadows.start(0, &candidate, linesight::shadow::DEFAULT_SHARE).expect("shadow starts");
    let live_with = bench.rate();
    let (o, s, c) = shadow_counts(&bench.shadows);
    bench.finish();
    println!("paced at {fps:.1} frames/s per camera (about half the maximum):");
    println!("  line: {live_without:.1} frames/s without shadow, {live_with:.1} with");
    println!(
        "  shadow: {o} parts offered, {s} skipped, {c} compared ({:.0}% of the parts)",
        if o > 0 { 100.0 * c as f64 / o as f64 } else { 0.0 }
    );
}
