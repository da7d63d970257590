//! Plant scale, measured on this machine against the real engines (issue 17): NATS JetStream and
//! PostgreSQL (fsync on) started here, hubs and stations as `linesight` processes.
//!
//! - `ingest`: 20 simulated stations × 200 parts/s published as a station's fleet link publishes
//!   (JetStream, message ids, batches awaited for their acknowledgements) into one hub: sustained
//!   ingest rate, and end-to-end lag p50/p99 (the record's verdict time → its row in PostgreSQL).
//! - `catchup`: the hub stopped for `FLEET_OUTAGE_S` (default 600 s) while the stations go on,
//!   then started: how fast it takes up the backlog (the live load still coming).
//! - `stats`: `/api/v1/stats` p50/p99 over 10,000,000 rows (30 days, 20 stations).
//! - `cost`: a real station flat out (two synthetic cameras, demo model), alternating runs with
//!   and without `[fleet]` publishing to the hub: the throughput it costs (limit 2%).
//!
//! `make bench-fleet` runs all; `FLEET_BENCH=ingest,stats` picks some.

#[path = "../tests/common/mod.rs"]
mod common;

use common::fleet::{Hub, Nats, Postgres, hub_config};
use linesight::fleet::wire;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

const STATIONS: usize = 20;
const RATE_PER_STATION: u64 = 200;
const COST_LIMIT: f64 = 0.02;

fn main() {
    let only = std::env::var("FLEET_BENCH").unwrap_or_else(|_| "ingest,catchup,stats,cost".into());
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let pg = Postgres::start_with(dir.path(), true);
    let cfg = hub_config(dir.path(), "hub-1", &nats, &pg, 1000);
    let mut hub = Hub::start(&cfg);
    if only.contains("ingest") {
        ingest(&nats, &pg);
    }
    if only.contains("catchup") {
        let outage = std::env::var("FLEET_OUTAGE_S").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
        hub = catchup(&nats, &pg, hub, &cfg, Duration::from_secs(outage));
    }
    if only.contains("cost") {
        cost(dir.path(), &nats);
    }
    if only.contains("stats") {
        stats(&pg, &hub);
    }
    hub.stop();
}

/// Simulated stations publishing `RATE_PER_STATION` records per second each until `stop`; counts
/// what the stream acknowledged.
fn simulate(
    nats: &Nats,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    tag: &'static str,
) -> std::thread::JoinHandle<()> {
    let url = nats.url();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let client = async_nats::connect(url).await.unwrap();
            let js = async_nats::jetstream::new(client.clone());
            let mut tasks = Vec::new();
            for s in 0..STATIONS {
                let (js, stop, acked) = (js.clone(), Arc::clone(&stop), Arc::clone(&acked));
                tasks.push(tokio::spawn(async move { station(js, s, tag, stop, acked).await }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            client.flush().await.unwrap();
        });
    })
}

/// One simulated station: every 50 ms a batch of 10 records, awaited for its acknowledgements
/// (as the fleet link does), on the station's own subject.
async fn station(
    js: async_nats::jetstream::Context,
    s: usize,
    tag: &str,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) {
    let name = format!("st{s:02}");
    let subject = wire::inspections_subject("bench", &name);
    let uid = format!("{tag}{s:014x}");
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut row = 0i64;
    while !stop.load(Relaxed) {
        tick.tick().await;
        let mut acks = Vec::new();
        for _ in 0..RATE_PER_STATION / 20 {
            row += 1;
            let now = linesight::fleet::now_ms();
            let ng = row % 10 == 0;
            let rec = wire::Inspection {
                v: 1,
                site: "bench".into(),
                station: name.clone(),
                store_uid: uid.clone(),
                row,
                camera: format!("cam{}", row % 2),
                seq: row,
                part_id: Some(format!("{name}-{row}")),
                captured_ms: now - 12,
                decided_ms: now,
                latency_ms: 12.0,
                verdict: if ng { wire::Verdict::Ng } else { wire::Verdict::Ok },
                failsafe_cause: None,
                image_score: Some(if ng { 0.9 } else { 0.1 }),
                threshold: Some(0.5),
                width: 1280,
                height: 1024,
                mm_per_px: Some(0.05),
                defects_truncated: 0,
                recipe: Some("default".into()),
                product: Some("tile".into()),
                model_name: "demo".into(),
                model_sha256: "fb4067864d4734c9cb686bfd4142ff484aeef41b25108b208c88e227bab846e5".into(),
                image_path: ng.then(|| format!("cam/{row}.png")),
                defects: if ng {
                    vec![wire::Defect {
                        class: ["scratch", "pit", "crack"][(row / 10 % 3) as usize].into(),
                        x: 100.0,
                        y: 200.0,
                        w: 30.0,
                        h: 8.0,
                        area_px: 180.0,
                        length_px: 31.0,
                        width_px: 6.0,
                        area_mm2: Some(0.45),
                        length_mm: Some(1.55),
                        width_mm: Some(0.3),
                        max_score: Some(0.93),
                        mean_score: Some(0.71),
                        counted: true,
                    }]
                } else {
                    vec![]
                },
                published_ms: now,
            };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, rec.msg_id().as_str());
            let payload = serde_json::to_vec(&rec).unwrap();
            if let Ok(ack) = js.publish_with_headers(subject.clone(), headers, payload.into()).await {
                acks.push(ack);
            }
        }
        for a in acks {
            if a.await.is_ok() {
                acked.fetch_add(1, Relaxed);
            }
        }
    }
}

fn rows(pg: &Postgres) -> i64 {
    pg.count("SELECT COUNT(*) FROM inspections")
}

fn ingest(nats: &Nats, pg: &Postgres) {
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let t = simulate(nats, Arc::clone(&stop), Arc::clone(&acked), "i");
    std::thread::sleep(Duration::from_secs(10)); // warm up
    let (r0, a0, t0) = (rows(pg), acked.load(Relaxed), Instant::now());
    let window_start = linesight::fleet::now_ms();
    std::thread::sleep(Duration::from_secs(60));
    let (r1, a1, dt) = (rows(pg), acked.load(Relaxed), t0.elapsed().as_secs_f64());
    let window_end = linesight::fleet::now_ms();
    stop.store(true, Relaxed);
    t.join().unwrap();
    let lag = pg.query(&format!(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ingested_ms - decided_ms), \
         percentile_cont(0.99) WITHIN GROUP (ORDER BY ingested_ms - decided_ms), COUNT(*) \
         FROM inspections WHERE decided_ms >= {window_start} AND decided_ms < {window_end}"
    ));
    println!(
        "ingest: {} stations × {} parts/s offered; acknowledged by the stream {:.0}/s; written by the hub {:.0}/s over {:.0} s; \
         lag verdict → PostgreSQL row p50 {} ms, p99 {} ms ({} rows)",
        STATIONS,
        RATE_PER_STATION,
        (a1 - a0) as f64 / dt,
        (r1 - r0) as f64 / dt,
        dt,
        lag[0][0],
        lag[0][1],
        lag[0][2]
    );
}

fn catchup(nats: &Nats, pg: &Postgres, mut hub: Hub, cfg: &Path, outage: Duration) -> Hub {
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let t = simulate(nats, Arc::clone(&stop), Arc::clone(&acked), "c");
    std::thread::sleep(Duration::from_secs(5));
    hub.stop();
    let before = rows(pg);
    let a0 = acked.load(Relaxed);
    std::thread::sleep(outage);
    let backlog = acked.load(Relaxed) - a0;
    let t0 = Instant::now();
    let hub = Hub::start(cfg);
    // Caught up: the rows include everything acknowledged before the restart, and the hub's
    // consumer has nothing pending beyond the live load.
    // The stream delivers in order: the backlog is written once the rows reach it.
    let target = before + backlog as i64;
    while rows(pg) < target {
        std::thread::sleep(Duration::from_millis(500));
    }
    let dt = t0.elapsed().as_secs_f64();
    let written = rows(pg) - before;
    // Then the records that came meanwhile: current once it has all the stream acknowledged.
    let gain = written as f64 / dt - (STATIONS as u64 * RATE_PER_STATION) as f64;
    stop.store(true, Relaxed);
    t.join().unwrap();
    let all = before + (acked.load(Relaxed) - a0) as i64;
    while rows(pg) < all {
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "catch-up: {:.0} s outage, backlog {} records, written in {:.1} s (hub start included) at {:.0} records/s while the live {} parts/s \
         kept coming: it gains {:.0} records/s on the live load, so it is current again {:.0} s after the restart",
        outage.as_secs_f64(),
        backlog,
        dt,
        written as f64 / dt,
        STATIONS as u64 * RATE_PER_STATION,
        gain,
        backlog as f64 / gain.max(1.0)
    );
    hub
}

/// 10,000,000 rows over 30 days and 20 stations, with the hourly roll-ups, straight into
/// PostgreSQL; then the API's stats timed.
fn stats(pg: &Postgres, hub: &Hub) {
    let t0 = Instant::now();
    let now = linesight::fleet::now_ms();
    let span = 30 * 86_400_000i64;
    pg.query(&format!(
        "INSERT INTO inspections (msg_id, site, station, store_uid, station_row, camera, seq, captured_ms, decided_ms, \
         latency_ms, verdict, width, height, defects_truncated, recipe, product, model_name, model_sha256, defects, \
         published_ms, ingested_ms, ingested_by) \
         SELECT 'gen.' || g, 'gen', 'st' || lpad((g % 20)::text, 2, '0'), 'gen', g, 'cam' || (g % 2), g, \
         {now} - {span} + g * ({span} / 10000000), {now} - {span} + g * ({span} / 10000000), 12.0, \
         CASE WHEN g % 10 = 0 THEN 'NG' WHEN g % 997 = 0 THEN 'FAILSAFE' ELSE 'OK' END, 1280, 1024, 0, 'default', 'tile', \
         'demo', 'x', '[]'::jsonb, {now}, {now}, 'gen' FROM generate_series(1, 10000000) g"
    ));
    pg.query(
        "INSERT INTO inspection_classes (inspection_id, class, defects) \
         SELECT id, (ARRAY['scratch', 'pit', 'crack'])[1 + (station_row / 10) % 3], 1 FROM inspections \
         WHERE site = 'gen' AND verdict = 'NG'",
    );
    pg.query(
        "INSERT INTO stats_hourly (hour, site, station, camera, ok, ng, failsafe) \
         SELECT captured_ms / 3600000, site, station, camera, COUNT(*) FILTER (WHERE verdict = 'OK'), \
         COUNT(*) FILTER (WHERE verdict = 'NG'), COUNT(*) FILTER (WHERE verdict = 'FAILSAFE') \
         FROM inspections WHERE site = 'gen' GROUP BY 1, 2, 3, 4 \
         ON CONFLICT (hour, site, station, camera) DO UPDATE SET ok = stats_hourly.ok + excluded.ok, \
         ng = stats_hourly.ng + excluded.ng, failsafe = stats_hourly.failsafe + excluded.failsafe",
    );
    pg.query(
        "INSERT INTO stats_hourly_classes (hour, site, station, camera, class, defects, inspections) \
         SELECT i.captured_ms / 3600000, i.site, i.station, i.camera, c.class, SUM(c.defects), COUNT(*) \
         FROM inspection_classes c JOIN inspections i ON i.id = c.inspection_id WHERE i.site = 'gen' GROUP BY 1, 2, 3, 4, 5 \
         ON CONFLICT (hour, site, station, camera, class) DO UPDATE SET defects = stats_hourly_classes.defects + excluded.defects, \
         inspections = stats_hourly_classes.inspections + excluded.inspections",
    );
    pg.query(
        "INSERT INTO stats_minute (minute, site, station, camera, ok, ng, failsafe) \
         SELECT captured_ms / 60000, site, station, camera, COUNT(*) FILTER (WHERE verdict = 'OK'), \
         COUNT(*) FILTER (WHERE verdict = 'NG'), COUNT(*) FILTER (WHERE verdict = 'FAILSAFE') \
         FROM inspections WHERE site = 'gen' GROUP BY 1, 2, 3, 4",
    );
    pg.query(
        "INSERT INTO stats_minute_classes (minute, site, station, camera, class, defects, inspections) \
         SELECT i.captured_ms / 60000, i.site, i.station, i.camera, c.class, SUM(c.defects), COUNT(*) \
         FROM inspection_classes c JOIN inspections i ON i.id = c.inspection_id WHERE i.site = 'gen' GROUP BY 1, 2, 3, 4, 5",
    );
    pg.query("ANALYZE");
    let total = rows(pg);
    println!("stats: {total} rows in PostgreSQL ({:.0} s to generate)", t0.elapsed().as_secs_f64());
    let queries = [
        "/api/v1/stats".to_string(),
        "/api/v1/stats?bucket=shift".into(),
        format!("/api/v1/stats?bucket=day&from={}", now - 7 * 86_400_000),
        format!("/api/v1/stats?bucket=day&from={}", now - span),
        format!("/api/v1/stats?bucket=day&from={}&station=st07", now - span),
        format!("/api/v1/stats?bucket=hour&from={}&site=gen", now - 3 * 86_400_000),
    ];
    let mut all = Vec::new();
    for q in &queries {
        let mut times = Vec::new();
        for _ in 0..30 {
            let t = Instant::now();
            let v = hub.get(q);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(v["totals"]["inspections"].as_i64().unwrap() > 0, "{q}");
        }
        times.sort_by(f64::total_cmp);
        println!("  {q}: p50 {:.1} ms, max {:.1} ms", times[times.len() / 2], times[times.len() - 1]);
        all.extend(times);
    }
    all.sort_by(f64::total_cmp);
    let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    println!("stats over {total} rows: p50 {:.1} ms, p99 {:.1} ms ({} requests)", p(0.5), p(0.99), all.len());
}

/// A real station flat out with and without `[fleet]`: frames per second over `--max-frames`.
fn cost(dir: &Path, nats: &Nats) {
    let config = |with_fleet: bool| {
        let folder = dir.join(if with_fleet { "cost-fleet" } else { "cost-alone" });
        std::fs::create_dir_all(&folder).unwrap();
        let mut text = String::from("[station]\nname = \"cost\"\n\n");
        for (i, surface) in ["brushed_metal", "ceramic_tile"].iter().enumerate() {
            text += &format!(
                "[[camera]]\nid = \"cam{i}\"\nfps = 0\nbackpressure = \"block\"\n[camera.source]\nkind = \"synthetic\"\nsurface = \"{surface}\"\nseed = {i}\n\n"
            );
        }
        text += &format!(
            "[model]\npackage = \"{}\"\n\n[pipeline]\nmax_batch = 4\nmax_wait_us = 2000\n\n[[rule]]\nclass = \"defect\"\nmin_score = 0.5\nmin_area_px = 12\n\n[store]\npath = \"station.db\"\n\n[api]\nenabled = false\n",
            common::repo().join("models/demo").display()
        );
        if with_fleet {
            text += &format!("\n[fleet]\nservers = [\"{}\"]\nsite = \"bench\"\n", nats.url());
        }
        let path = folder.join("station.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let run = |path: &Path| -> f64 {
        let summary = path.with_file_name("summary.json");
        let (ok, _, err) = common::output(
            common::linesight_run().arg("--config").arg(path).args(["--max-frames", "1500", "--summary"]).arg(&summary),
        );
        assert!(ok, "{err}");
        let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        let frames: u64 = s["cameras"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["ok"].as_u64().unwrap() + c["ng"].as_u64().unwrap())
            .sum();
        frames as f64 / s["elapsed_s"].as_f64().unwrap()
    };
    let (alone, fleet) = (config(false), config(true));
    let (mut a, mut f) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        a.push(run(&alone));
        f.push(run(&fleet));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let lost = 1.0 - mean(&f) / mean(&a);
    println!(
        "publish cost: without [fleet] {:.1} frames/s {:?}, with {:.1} frames/s {:?}: {:.1}% lost (limit {:.0}%: ratio {:.2})",
        mean(&a),
        a.iter().map(|x| (x * 10.0).round() / 10.0).collect::<Vec<_>>(),
        mean(&f),
        f.iter().map(|x| (x * 10.0).round() / 10.0).collect::<Vec<_>>(),
        lost * 100.0,
        COST_LIMIT * 100.0,
        lost.max(0.0) / COST_LIMIT
    );
}
