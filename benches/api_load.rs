//! Load benchmark of the HTTP API against a running station (issue 4), on this machine.
//!
//! 1. Seeds a result store with 1,000,000 inspections (2 cameras, ~30% NG with 1–3 defects of a
//!    few classes, ~1% fail-safe, captured over 7 days), through the store's own schema. The
//!    seeded file is cached in `target/bench-data/` and copied for each run, so reruns skip
//!    seeding; each run first moves its history forward by whole hours to end within the hour
//!    before now, as a live station's would.
//! 2. A: the pipeline flat out (2 synthetic cameras, block backpressure, demo model) writing to
//!    that store, the API listening but idle.
//! 3. B: the same while 50 clients query `GET /api/v1/stats` (last 24 h or 7 days, hourly or
//!    daily buckets, sometimes one camera), every latency recorded.
//!
//! What the clients ask (`LOAD_QUERIES`):
//! - `live` (default): what dashboards ask: "the last 24 hours, hourly" (no `from`, no `to`),
//!   "the last 7 days by day" (`from` = local midnight 6 days ago, like Grafana's `now-6d/d`)
//!   and "the last 7 days hourly" (`from` = the start of the hour 168 h ago), all up to now;
//! - `distinct`: explicit windows ending up to 10 minutes before the newest seeded inspection,
//!   to the millisecond, so no two queries are the same and the stats cache never hits (the
//!   worst case for the API).
//!
//! Targets: throughput B within 5% of A; `stats` p99 under 50 ms. Criterion times one `stats`
//! query on the idle store first. Run with `make bench-api`. Knobs (environment):
//! `LOAD_CLIENTS` (50), `LOAD_SECONDS` (30), `LOAD_THINK_MS` (pause after each answer, 1000),
//! `BASELINE_SECONDS` (20), `LOAD_QUERIES` (live), `LOAD_CACHE_MS` (the API's
//! `stats_cache_ms`, default as configured by default, 1000; 0 = no cache), `LOAD_CLIENT_NICE`
//! (0: the client threads compete for the CPU like the line's own threads, although real
//! clients run on other machines; 10 puts them with the API's threads).
//!
//! The report also gives the CPU the station, the API's threads and the client threads used
//! during B: with no think time, the clients ask as fast as they are answered, so their own CPU
//! grows with the API's speed.

use criterion::Criterion;
use linesight::api::{ApiMetrics, ApiServer, ApiState};
use linesight::config;
use linesight::sinks::store::{self, Retention, Store, StoreContext};
use linesight::topology::{RunOptions, Station};
use rusqlite::params;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ROWS: i64 = 1_000_000;
const SPAN_MS: i64 = 7 * 86_400_000;
const HOUR: i64 = 3_600_000;
const CAMERAS: [&str; 2] = ["cam0", "cam1"];
const CLASSES: [&str; 4] = ["scratch", "dent", "stain", "crack"];
const KEEP: Retention = Retention { days: 0, max_inspections: 0 };

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small deterministic generator (xorshift64*), enough for seeding.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn row_count(path: &Path) -> Option<i64> {
    let conn = store::open_read_only(path).ok()?;
    conn.query_row("SELECT COUNT(*) FROM inspections", [], |r| r.get(0)).ok()
}

/// The seeded store (cached): its path and the capture time of its newest inspection.
fn seeded() -> (PathBuf, i64) {
    let dir = repo().join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("api-load-seed.db");
    if row_count(&path) != Some(ROWS) {
        let t0 = Instant::now();
        remove_db(&path);
        seed(&path).unwrap();
        println!("seeded {ROWS} inspections into {} in {:.1} s", path.display(), t0.elapsed().as_secs_f64());
    } else {
        println!("reusing {} ({ROWS} inspections)", path.display());
    }
    // Bring a cached file up to this build's schema (new migrations), up to now, then fold the
    // WAL in.
    drop(Store::open(&path, KEEP).unwrap_or_else(|e| panic!("{e}")));
    shift_to_now(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE").unwrap();
    let newest: i64 = conn.query_row("SELECT MAX(captured_ms) FROM inspections", [], |r| r.get(0)).unwrap();
    (path, newest)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Move the seeded history forward by whole hours, so that it ends within the hour before now:
/// "the last 24 hours" then covers seeded rows on every run, however old the cached file. Whole
/// hours keep the hourly roll-ups exact: their hours move with the rows.
fn shift_to_now(path: &Path) -> rusqlite::Result<()> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let newest: i64 = conn.query_row("SELECT MAX(captured_ms) FROM inspections", [], |r| r.get(0))?;
    let hours = (now_ms() - newest).div_euclid(HOUR);
    if hours <= 0 {
        return Ok(());
    }
    let t0 = Instant::now();
    let tx = conn.transaction()?;
    tx.execute("UPDATE inspections SET captured_ms = captured_ms + ?1, decided_ms = decided_ms + ?1", [hours * HOUR])?;
    for table in ["stats_hourly", "stats_hourly_classes"] {
        // Through negative keys: moving each hour up in place would collide with the next one.
        tx.execute(&format!("UPDATE {table} SET hour = -(hour + ?1)"), [hours])?;
        tx.execute(&format!("UPDATE {table} SET hour = -hour"), [])?;
    }
    tx.commit()?;
    println!(
        "moved the seeded history {hours} h forward, to end within the hour before now, in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn seed(path: &Path) -> rusqlite::Result<()> {
    // The real schema: the store opens and migrates the file.
    drop(Store::open(path, KEEP).unwrap_or_else(|e| panic!("{e}")));
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let end = now_ms();
    let start = end - SPAN_MS;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO models (name, sha256, rules_json) VALUES ('demo', 'seed', '[{\"class\":\"defect\",\"min_score\":0.5}]')",
        [],
    )?;
    let model_id = tx.last_insert_rowid();
    {
        let mut insp = tx.prepare(
            "INSERT INTO inspections (station, camera, seq, part_id, captured_ms, decided_ms, latency_ms, verdict,
                 failsafe_cause, image_score, width, height, mm_per_px, defects_truncated, model_id, image_path)
             VALUES ('line-1', ?1, ?2, NULL, ?3, ?4, ?5, ?6, ?7, ?8, 480, 480, NULL, 0, ?9, NULL)",
        )?;
        let mut def = tx.prepare(
            "INSERT INTO defects (inspection_id, idx, class, x, y, w, h, area_px, length_px, width_px,
                 area_mm2, length_mm, width_mm, max_score, mean_score, counted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL, NULL, ?11, ?12, ?13)",
        )?;
        let step = SPAN_MS as f64 / ROWS as f64;
        for n in 0..ROWS {
            let camera = (n % 2) as usize;
            let captured = start + (n as f64 * step) as i64;
            let latency = 4.0 + 6.0 * rng.unit();
            let u = rng.unit();
            let (verdict, cause) = if u < 0.01 {
                ("FAILSAFE", Some("infer_error"))
            } else if u < 0.31 {
                ("NG", None)
            } else {
                ("OK", None)
            };
            insp.execute(params![
                CAMERAS[camera],
                n / 2,
                captured,
                captured + latency as i64,
                latency,
                verdict,
                cause,
                rng.unit(),
                model_id
            ])?;
            if verdict == "NG" {
                let id = tx.last_insert_rowid();
                let k = 1 + (rng.next() % 3) as i64;
                for idx in 0..k {
                    // Scratches most often, cracks rarely: a Pareto worth showing.
                    let c = rng.unit();
                    let class = CLASSES[if c < 0.5 {
                        0
                    } else if c < 0.8 {
                        1
                    } else if c < 0.95 {
                        2
                    } else {
                        3
                    }];
                    let (w, h) = (4.0 + 60.0 * rng.unit(), 2.0 + 10.0 * rng.unit());
                    let score = 0.5 + 0.5 * rng.unit();
                    def.execute(params![
                        id,
                        idx,
                        class,
                        400.0 * rng.unit(),
                        400.0 * rng.unit(),
                        w,
                        h,
                        w * h * 0.6,
                        w,
                        h,
                        score,
                        score * 0.8,
                        idx == 0 || rng.unit() < 0.7
                    ])?;
                }
            }
        }
    }
    tx.commit()
}

fn station_config(db: &Path) -> String {
    let mut text = String::new();
    for (i, id) in CAMERAS.iter().enumerate() {
        text += &format!(
            "[[camera]]\nid = \"{id}\"\nfps = 0\nbackpressure = \"block\"\n[camera.source]\nkind = \"synthetic\"\nsurface = \"{s}\"\nseed = {i}\n\n",
            s = if i % 2 == 0 { "brushed_metal" } else { "ceramic_tile" },
        );
    }
    text + &format!(
        "[model]\npackage = \"models/demo\"\n\n[pipeline]\nmax_batch = 4\nmax_wait_us = 2000\n\n[store]\npath = {:?}\n\n\
         [[rule]]\nclass = \"defect\"\nmin_score = 0.5\nmin_area_px = 12\n",
        db.display().to_string()
    )
}

/// A running station writing to the store at `db`, with the API listening on a free port.
struct Running {
    stop: Arc<AtomicBool>,
    station: std::thread::JoinHandle<Arc<linesight::pipeline::accounting::Accounting>>,
    store: std::thread::JoinHandle<()>,
    api: ApiServer,
    accounting: Arc<linesight::pipeline::accounting::Accounting>,
}

fn start(db: &Path, cache_ms: u64, registry: Option<&prometheus::Registry>) -> Running {
    let loaded = config::load_str(&station_config(db), "bench", repo()).unwrap();
    let store = Store::open(db, KEEP).unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = crossbeam_channel::bounded(linesight::pipeline::messages::OUTPUT_QUEUE_DEPTH);
    let station =
        Station::build(&loaded, RunOptions { outputs: vec![linesight::sinks::store::port(tx)], ..Default::default() })
            .unwrap();
    let accounting = station.accounting();
    let mut state = ApiState::new(db.to_path_buf(), Some(station.accounting()));
    state.stats_cache_ttl = Duration::from_millis(cache_ms);
    state.metrics = Arc::new(ApiMetrics::new(registry).unwrap());
    let api = linesight::api::start("127.0.0.1:0".parse().unwrap(), state).unwrap();
    let ctx = StoreContext {
        station: "bench".into(),
        cameras: CAMERAS.iter().map(|c| c.to_string()).collect(),
        recipes: station.recipe_contexts(),
    };
    let store_acc = station.accounting();
    let store = std::thread::spawn(move || store.run(rx, ctx, store_acc));
    let stop = station.stop_handle();
    let station = std::thread::spawn(move || station.run());
    Running { stop, station, store, api, accounting }
}

impl Running {
    fn frames(&self) -> u64 {
        self.accounting.snapshot().iter().map(|s| s.inspected() + s.failsafe()).sum()
    }

    /// Frames/s (inspected or fail-safe) over `window`, after `warmup`.
    fn measure(&self, warmup: Duration, window: Duration) -> f64 {
        std::thread::sleep(warmup);
        let (n0, t0) = (self.frames(), Instant::now());
        std::thread::sleep(window);
        (self.frames() - n0) as f64 / t0.elapsed().as_secs_f64()
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Relaxed);
        let acc = self.station.join().unwrap();
        self.store.join().unwrap();
        self.api.shutdown();
        (acc.store_written.load(Relaxed), acc.store_dropped.load(Relaxed))
    }
}

/// `GET path` over a fresh connection; returns the status and the body length.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, usize)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::with_capacity(64 * 1024);
    s.read_to_end(&mut buf)?;
    let head = std::str::from_utf8(&buf[..buf.len().min(16)]).unwrap_or("");
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, buf.len()))
}

/// A dashboard's query (see the module's description of `LOAD_QUERIES`).
fn stats_path(rng: &mut Rng, distinct: bool, newest: i64) -> String {
    let camera =
        if rng.unit() < 0.3 { format!("&camera={}", CAMERAS[(rng.next() % 2) as usize]) } else { String::new() };
    let u = rng.unit();
    if !distinct {
        let now = now_ms();
        return if u < 0.6 {
            format!("/api/v1/stats?bucket=hour{camera}")
        } else if u < 0.8 {
            // Local midnight 6 days ago: 7 daily buckets, today's included.
            let offset = i64::from(chrono::Local::now().offset().local_minus_utc()) * 1000;
            let midnight = (now + offset).div_euclid(24 * HOUR) * 24 * HOUR - offset;
            format!("/api/v1/stats?from={}&bucket=day{camera}", midnight - 6 * 24 * HOUR)
        } else {
            format!("/api/v1/stats?from={}&bucket=hour{camera}", now.div_euclid(HOUR) * HOUR - 7 * 24 * HOUR)
        };
    }
    // Each client's "now" drifts a few minutes, so no two queries are the same.
    let to = newest - (rng.unit() * 10.0 * 60_000.0) as i64;
    let (span, bucket) = if u < 0.6 {
        (24 * HOUR, "hour")
    } else if u < 0.8 {
        (7 * 24 * HOUR, "day")
    } else {
        (7 * 24 * HOUR, "hour")
    };
    format!("/api/v1/stats?from={}&to={to}&bucket={bucket}{camera}", to - span)
}

/// CPU seconds used so far by this process's threads: [station (pipeline, store and the rest),
/// the API's threads (`api`, `api-blocking`), the load clients (`client-N`)].
fn cpu_by_thread_group() -> [f64; 3] {
    let tick = 100.0; // USER_HZ on Linux
    let mut sums = [0.0; 3];
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // The name is in parentheses and may hold spaces: the fields after it are fixed.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
        let group = if name.starts_with("api") {
            1
        } else if name.starts_with("client-") {
            2
        } else {
            0
        };
        sums[group] += ticks / tick;
    }
    sums
}

/// The stats cache counter of `result` (hit, shared, miss).
fn cache_count(registry: &prometheus::Registry, result: &str) -> u64 {
    use prometheus::Encoder;
    let mut text = Vec::new();
    prometheus::TextEncoder::new().encode(&registry.gather(), &mut text).unwrap();
    let prefix = format!("linesight_api_stats_cache_total{{result=\"{result}\"}} ");
    let text = String::from_utf8(text).unwrap();
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn work_copy(seed: &Path) -> PathBuf {
    let path = seed.with_file_name("api-load-run.db");
    remove_db(&path);
    std::fs::copy(seed, &path).unwrap();
    path
}

fn main() {
    let clients: usize = env_or("LOAD_CLIENTS", 50);
    let load_s: u64 = env_or("LOAD_SECONDS", 30);
    let think_ms: u64 = env_or("LOAD_THINK_MS", 1000);
    let base_s: u64 = env_or("BASELINE_SECONDS", 20);
    let distinct = match std::env::var("LOAD_QUERIES").as_deref() {
        Ok("distinct") => true,
        Ok("live") | Err(_) => false,
        Ok(other) => panic!("LOAD_QUERIES = {other:?}: expected live or distinct"),
    };
    let cache_ms: u64 = env_or("LOAD_CACHE_MS", linesight::config::ApiConfig::default().stats_cache_ms);
    let client_nice: i32 = env_or("LOAD_CLIENT_NICE", 0);
    let (seed_path, newest) = seeded();

    // Criterion: one stats query on the idle store (no pipeline), over HTTP; uncached (the
    // cache off), then from the cache.
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    {
        for ttl in [Duration::ZERO, Duration::from_secs(60)] {
            let mut state = ApiState::new(seed_path.clone(), None);
            state.stats_cache_ttl = ttl;
            let api = linesight::api::start("127.0.0.1:0".parse().unwrap(), state).unwrap();
            let addr = api.local_addr();
            let cached = if ttl.is_zero() { "" } else { "_cached" };
            for (name, span, bucket) in [("24h_hour", 24 * HOUR, "hour"), ("7d_day", 7 * 24 * HOUR, "day")] {
                let path = format!("/api/v1/stats?from={}&to={newest}&bucket={bucket}", newest - span);
                assert_eq!(http_get(addr, &path).unwrap().0, 200, "{path}");
                c.bench_function(&format!("stats/{name}{cached}"), |b| b.iter(|| http_get(addr, &path).unwrap()));
            }
            api.shutdown();
        }
    }
    c.final_summary();

    println!("\n== linesight API load report ({ROWS} inspections over 7 days, 2 synthetic cameras flat out, block) ==");
    println!(
        "queries: {}; stats_cache_ms = {cache_ms}; client threads at nice +{client_nice}",
        if distinct {
            "distinct (explicit windows, every one different)"
        } else {
            "live (dashboards: relative windows up to now)"
        }
    );
    let warmup = Duration::from_secs(3);

    // A: the API listening, idle.
    let db = work_copy(&seed_path);
    let run = start(&db, cache_ms, None);
    let fps_a = run.measure(warmup, Duration::from_secs(base_s));
    let (written, dropped) = run.finish();
    println!("A: {fps_a:.1} frames/s over {base_s} s, API idle (store: {written} written, {dropped} dropped)");

    // B: the same, with `clients` clients querying stats for `load_s` s.
    let db = work_copy(&seed_path);
    let registry = prometheus::Registry::new();
    let run = start(&db, cache_ms, Some(&registry));
    let addr = run.api.local_addr();
    std::thread::sleep(warmup);
    let go = Arc::new(AtomicBool::new(true));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let go = Arc::clone(&go);
            std::thread::Builder::new()
                .name(format!("client-{i}"))
                .spawn(move || {
                    if client_nice != 0 {
                        let base = linesight::http_server::priority::current().unwrap_or(0);
                        linesight::http_server::priority::set(base + client_nice).unwrap();
                    }
                    let mut rng = Rng(0x1234_5678 + i as u64 * 7919);
                    let (mut lat, mut errors) = (Vec::new(), 0u64);
                    // Spread the first requests over the think time, as independent dashboards would be.
                    std::thread::sleep(Duration::from_millis((rng.unit() * think_ms as f64) as u64));
                    while go.load(Relaxed) {
                        let path = stats_path(&mut rng, distinct, newest);
                        let t0 = Instant::now();
                        match http_get(addr, &path) {
                            Ok((200, _)) => lat.push(t0.elapsed().as_secs_f64() * 1e3),
                            _ => errors += 1,
                        }
                        if think_ms > 0 {
                            std::thread::sleep(Duration::from_millis(think_ms));
                        }
                    }
                    (lat, errors)
                })
                .unwrap()
        })
        .collect();
    let cpu0 = cpu_by_thread_group();
    let fps_b = run.measure(Duration::ZERO, Duration::from_secs(load_s));
    let cpu1 = cpu_by_thread_group();
    go.store(false, Relaxed);
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in threads {
        let (l, e) = t.join().unwrap();
        lat.extend(l);
        errors += e;
    }
    let (written, dropped) = run.finish();
    lat.sort_by(f64::total_cmp);
    println!(
        "B: {fps_b:.1} frames/s over {load_s} s, {clients} clients on stats (store: {written} written, {dropped} dropped)"
    );
    let reduction = 100.0 * (fps_a - fps_b) / fps_a;
    let p99 = percentile(&lat, 0.99);
    println!("\n| figure | value | target |");
    println!("|---|---|---|");
    println!("| throughput A (API idle) | {fps_a:.1} frames/s | |");
    println!("| throughput B ({clients} clients, think {think_ms} ms) | {fps_b:.1} frames/s | |");
    println!("| reduction | {reduction:.1}% | < 5% {} |", if reduction < 5.0 { "(met)" } else { "(NOT met)" });
    println!(
        "| stats latency p50 / p95 / p99 / max | {:.1} / {:.1} / {p99:.1} / {:.1} ms | p99 < 50 ms {} |",
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        lat.last().copied().unwrap_or(f64::NAN),
        if p99 < 50.0 { "(met)" } else { "(NOT met)" }
    );
    println!(
        "| stats requests served | {} ({:.1}/s), {errors} failed | |",
        lat.len(),
        lat.len() as f64 / load_s as f64
    );
    let cpu = |i: usize| (cpu1[i] - cpu0[i]) / load_s as f64;
    println!(
        "| CPU in B, cores: station / API threads / client threads | {:.2} / {:.2} / {:.2} | |",
        cpu(0),
        cpu(1),
        cpu(2)
    );
    println!(
        "| stats answers: cache hit / shared / miss (background refreshes) | {} / {} / {} ({}) | |",
        cache_count(&registry, "hit"),
        cache_count(&registry, "shared"),
        cache_count(&registry, "miss"),
        cache_count(&registry, "refresh")
    );
    remove_db(&db);
}
