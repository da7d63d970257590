//! What the web UI costs the line: frames/s of a station whose two cameras run flat out, in
//! alternating phases without and with three clients following the live view
//! (`GET /api/v1/live`, as three browsers on the live page), reported as the throughput lost
//! against the 3% limit — the median over rounds of each "with" phase against the "without"
//! phase before it, since a shared machine's speed drifts more between minutes than the UI
//! costs; the noise is printed beside it (the same median between consecutive "without" phases); the pictures each client got per second per camera and their latency
//! (capture → received); and each page's weight. Run with `make bench-ui`.

use linesight::api::{self, ApiState};
use linesight::config;
use linesight::pipeline::RecordPort;
use linesight::pipeline::messages::OUTPUT_QUEUE_DEPTH;
use linesight::sinks::store::{Retention, Store};
use linesight::topology::{RunOptions, Station};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PHASE: Duration = Duration::from_secs(6);
const ROUNDS: usize = 10;
const CLIENTS: usize = 3;
const LIMIT: f64 = 0.03;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn station_config() -> String {
    let mut text = String::new();
    for (i, surface) in ["brushed_metal", "ceramic_tile"].iter().enumerate() {
        text += &format!(
            "[[camera]]\nid = \"cam{i}\"\nfps = 0\nbackpressure = \"block\"\n[camera.source]\nkind = \"synthetic\"\nsurface = \"{surface}\"\nseed = {i}\n\n"
        );
    }
    text + "[model]\npackage = \"models/demo\"\n\n[pipeline]\nmax_batch = 4\nmax_wait_us = 2000\n\n[[rule]]\nclass = \"defect\"\nmin_score = 0.5\nmin_area_px = 12\n"
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// One client following the live stream until `stop`: (pictures, latencies in ms).
fn follow(addr: SocketAddr, stop: Arc<AtomicBool>, got: Arc<Mutex<(u64, Vec<f64>)>>) {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    write!(conn, "GET /api/v1/live HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while !stop.load(Relaxed) {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => continue,
        }
        if let Some(data) = line.strip_prefix("data: ")
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(data)
        {
            let latency = now_ms() - v["captured_unix_ms"].as_f64().unwrap_or(0.0);
            let mut g = got.lock().unwrap();
            g.0 += 1;
            g.1.push(latency);
        }
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let loaded = config::load_str(&station_config(), "ui bench", repo()).expect("bench config");
    let (tx, rx) = crossbeam_channel::bounded(OUTPUT_QUEUE_DEPTH);
    let switch = Arc::new(
        linesight::pipeline::RecipeSwitch::new(&loaded.starting_recipes(), 1)
            .named(vec!["default".into()], vec!["cam0".into(), "cam1".into()]),
    );
    let (port, tap) = linesight::pipeline::shadow_tap::shadow_port(Arc::clone(&switch));
    let options =
        RunOptions { outputs: vec![port, RecordPort::results(tx)], recipe_switch: Some(switch), ..Default::default() };
    let station = Station::build(&loaded, options).expect("bench station");
    let db = dir.path().join("ui.db");
    drop(Store::open(&db, Retention { days: 0, max_inspections: 0 }).expect("store"));
    let state = ApiState::new(db, None);
    let view = linesight::ui::live::LiveView::start(&tap, vec!["cam0".into(), "cam1".into()]).expect("live view");
    let _ = state.live.set(view);
    let _ = state.accounting.set(station.accounting());
    let server = api::start("127.0.0.1:0".parse().unwrap(), state).expect("API");
    let addr = server.local_addr();
    let accounting = station.accounting();
    let stop = station.stop_handle();
    std::thread::spawn(move || for _ in rx {});
    let runner = std::thread::spawn(move || station.run());
    let inspected = || accounting.snapshot().iter().map(|s| s.inspected()).sum::<u64>();
    let rate = || {
        let (n0, t0) = (inspected(), Instant::now());
        std::thread::sleep(PHASE);
        (inspected() - n0) as f64 / t0.elapsed().as_secs_f64()
    };
    std::thread::sleep(Duration::from_secs(3));
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let got = Arc::new(Mutex::new((0u64, Vec::new())));
    let mut watched = Duration::ZERO;
    for _ in 0..ROUNDS {
        without.push(rate());
        let done = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (done, got) = (Arc::clone(&done), Arc::clone(&got));
                std::thread::spawn(move || follow(addr, done, got))
            })
            .collect();
        let t0 = Instant::now();
        with.push(rate());
        done.store(true, Relaxed);
        for c in clients {
            let _ = c.join();
        }
        watched += t0.elapsed();
    }
    stop.store(true, Relaxed);
    let _ = runner.join();
    server.shutdown();

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
    };
    let (a, b) = (mean(&without), mean(&with));
    let cost = median(without.iter().zip(&with).map(|(a, b)| 1.0 - b / a).collect()).max(0.0);
    let noise = median(without.windows(2).map(|w| (1.0 - w[1] / w[0]).abs()).collect());
    let (pictures, mut latencies) = std::mem::take(&mut *got.lock().unwrap());
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies.get(((latencies.len().max(1) - 1) as f64 * p) as usize).copied().unwrap_or(f64::NAN);
    println!(
        "web UI cost, two cameras flat out (demo model), {CLIENTS} clients on the live view, {ROUNDS} × {} s phases:",
        PHASE.as_secs()
    );
    println!("  without clients: {a:.1} frames/s ({without:.1?})");
    println!("  with clients:    {b:.1} frames/s ({with:.1?})");
    println!(
        "  throughput lost (median per round): {:.2}% (limit {:.0}%: ratio to limit {:.2}); noise between two phases without clients: {:.2}%",
        cost * 100.0,
        LIMIT * 100.0,
        cost / LIMIT,
        noise * 100.0
    );
    println!(
        "  live view: {:.1} pictures/s per camera per client (limit set: {} per s), capture → received p50 {:.1} ms, p99 {:.1} ms",
        pictures as f64 / watched.as_secs_f64() / (CLIENTS * 2) as f64,
        linesight::ui::live::MAX_RATE,
        pct(0.5),
        pct(0.99)
    );
    println!("page weight (HTML + scripts + styles + strings, uncompressed):");
    let asset = |name: &str| linesight::ui::ASSETS.iter().find(|a| a.0 == name).map_or(0, |a| a.2.len());
    for page in linesight::ui::PAGES {
        let bytes = linesight::ui::render(page).len()
            + asset("app.css")
            + asset("app.js")
            + asset("i18n.json")
            + asset(page.script);
        println!("  {:<8} {:>5.1} KB", page.path, bytes as f64 / 1024.0);
    }
}
