//! The result store and the HTTP API over real SQLite files: a running station's records, schema
//! migrations, retention, a damaged file, statistics against hand-counted numbers, pagination,
//! bad queries, the token, the OpenAPI document against real responses, the stats cache, and the
//! API's per-route metrics on a running station's admin listener.

mod common;

use arrayvec::ArrayVec;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use linesight::api::{ApiState, router};
use linesight::config;
use linesight::frame::{FrameMeta, part_id};
use linesight::pipeline::Defect;
use linesight::pipeline::accounting::Accounting;
use linesight::pipeline::messages::{Inspection, RecordedDefect};
use linesight::pipeline::{FailsafeCause, Verdict};
use linesight::sinks::store::{Retention, Store, StoreContext};
use linesight::topology::{RunOptions, Station};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tower::ServiceExt;

const KEEP: Retention = Retention { days: 0, max_inspections: 0 };
/// 2024-05-01T00:00:00Z.
const T0: i64 = 1_714_521_600_000;
const HOUR: i64 = 3_600_000;

fn ctx(cameras: &[&str]) -> StoreContext {
    StoreContext {
        station: "test".into(),
        cameras: cameras.iter().map(|c| c.to_string()).collect(),
        recipes: Arc::new(linesight::pipeline::Slots::from_vec(vec![linesight::sinks::RecipeContext {
            name: "default".into(),
            classes: vec!["scratch".into(), "dent".into()],
            model_name: "m".into(),
            model_sha256: "ab".into(),
            rules_json: r#"[{"class":"scratch","min_score":0.5}]"#.into(),
        }])),
    }
}

/// An inspection of `camera` captured at `at_ms`, with defects `(class, counted)`.
fn inspection(camera: u16, at_ms: i64, verdict: Verdict, part: Option<&str>, defects: &[(u16, bool)]) -> Inspection {
    let now = Instant::now();
    let mut list = ArrayVec::new();
    for &(class, counted) in defects {
        list.push(RecordedDefect { defect: Defect::from_box(class, 1.0, 2.0, 3.0, 4.0, 0.9), counted });
    }
    Inspection {
        meta: FrameMeta {
            camera,
            seq: at_ms as u64,
            part_id: part.map(part_id),
            captured_at: now,
            captured_wall: UNIX_EPOCH + Duration::from_millis(at_ms as u64),
            recipe: 0,
        },
        width: 64,
        height: 48,
        verdict,
        defects: list,
        defects_truncated: 0,
        image_score: f32::NAN,
        threshold: f32::NAN,
        mm_per_px: None,
        infer_started: now,
        infer_ended: now,
        decided_at: now,
        decided_wall: std::time::SystemTime::now(),
        archived: false,
    }
}

/// Write `records` through the real writer thread; returns its counters.
fn write(path: &Path, records: Vec<Inspection>) -> Arc<Accounting> {
    let store = Store::open(path, KEEP).unwrap_or_else(|e| panic!("{e}"));
    let accounting = Arc::new(Accounting::new(&["a".into(), "b".into()]));
    let (tx, rx) = crossbeam_channel::bounded(records.len().max(1));
    for r in records {
        tx.send(r).unwrap();
    }
    drop(tx);
    store.run(rx, ctx(&["a", "b"]), Arc::clone(&accounting));
    accounting
}

/// Six hand-counted inspections: OK 2, NG 3, fail-safe 1; scratch 3 counted defects on 2
/// inspections, dent 1 (an uncounted dent does not count).
fn seed(path: &Path) {
    use Verdict::*;
    write(
        path,
        vec![
            inspection(0, T0 + HOUR, Ok, None, &[]),
            inspection(0, T0 + HOUR + 60_000, Ng, None, &[(0, true), (0, true), (1, false)]),
            inspection(0, T0 + 7 * HOUR, Ng, None, &[(1, true)]),
            inspection(0, T0 + 15 * HOUR, Failsafe(FailsafeCause::Timeout), None, &[]),
            inspection(1, T0 + HOUR, Ok, Some("P1"), &[]),
            inspection(1, T0 + 2 * HOUR, Ng, Some("P1"), &[(0, true)]),
        ],
    );
}

fn app(path: &Path, token: Option<&str>) -> axum::Router {
    let mut state = ApiState::new(path.to_path_buf(), Some(Arc::new(Accounting::new(&["a".into()]))));
    state.tokens = linesight::api::auth::Tokens::from_config(
        &linesight::config::ApiConfig { token: token.map(String::from), ..Default::default() },
        None,
    );
    state.utc_offset_minutes = Some(0);
    router(state)
}

fn get(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
    get_with(app, Request::get(uri).body(Body::empty()).unwrap())
}

fn get_with(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}")))
    })
}

fn count(path: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(path).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn a_running_station_stores_every_decided_part() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("linesight.db");
    let mut totals = (0, 0, 0);
    // A normal run (OK and NG), then one whose deadline no verdict can meet (fail-safe), into the
    // same file: the second open finds the schema in place.
    for pipeline in ["", "verdict_deadline_ms = 1"] {
        let text = common::synthetic_station(0.0, "backpressure = \"block\"", pipeline);
        let loaded = config::load_str(&text, "test", common::repo()).unwrap();
        let store = Store::open(&db, KEEP).unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = crossbeam_channel::bounded(4096);
        let options =
            RunOptions { max_frames: Some(30), outputs: vec![linesight::sinks::store::port(tx)], ..Default::default() };
        let station = Station::build(&loaded, options).unwrap_or_else(|e| panic!("{e}"));
        let accounting = station.accounting();
        let writer = {
            let accounting = Arc::clone(&accounting);
            std::thread::spawn(move || store.run(rx, ctx(&["cam"]), accounting))
        };
        station.run();
        writer.join().unwrap();
        let s = &accounting.snapshot()[0];
        assert_eq!(accounting.store_written.load(std::sync::atomic::Ordering::Relaxed), s.inspected() + s.failsafe());
        totals = (totals.0 + s.ok, totals.1 + s.ng, totals.2 + s.failsafe());
    }
    let n = |v: &str| count(&db, &format!("SELECT COUNT(*) FROM inspections WHERE verdict = '{v}'")) as u64;
    assert_eq!((n("OK"), n("NG"), n("FAILSAFE")), totals);
    assert!(totals.0 > 0 && totals.1 > 0 && totals.2 > 0, "{totals:?}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM models"), 1, "same model and rules: one row");
}

#[test]
fn migrations_run_once_and_a_damaged_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new.db");
    drop(Store::open(&db, KEEP).unwrap());
    drop(Store::open(&db, KEEP).unwrap());
    assert_eq!(count(&db, "PRAGMA user_version"), linesight::sinks::store::schema::VERSION);
    let mode: String =
        rusqlite::Connection::open(&db).unwrap().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");

    let bad = dir.path().join("bad.db");
    std::fs::write(&bad, vec![b'x'; 8192]).unwrap();
    let msg = Store::open(&bad, KEEP).err().expect("not a database").to_string();
    assert!(msg.contains("bad.db") && msg.contains("move it aside"), "{msg}");
}

#[test]
fn retention_deletes_by_age_and_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    seed(&db);
    let mut store = Store::open(&db, Retention { days: 1, max_inspections: 0 }).unwrap();
    // A day after T0 + 2 h: the three captured before T0 + 2 h go.
    assert_eq!(store.apply_retention(T0 + 26 * HOUR).unwrap(), 3);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inspections"), 3);
    let mut store2 = Store::open(&db, Retention { days: 0, max_inspections: 1 }).unwrap();
    assert_eq!(store2.apply_retention(T0).unwrap(), 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inspections"), 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM defects WHERE inspection_id NOT IN (SELECT id FROM inspections)"), 0);
}

#[test]
fn stats_match_hand_counts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    seed(&db);
    let app = app(&db, None);
    let (status, s) = get(&app, &format!("/api/v1/stats?from={T0}&to=2024-05-02T00:00:00Z&bucket=shift"));
    assert_eq!(status, StatusCode::OK, "{s}");
    let t = &s["totals"];
    assert_eq!(
        (t["inspections"].as_i64(), t["ok"].as_i64(), t["ng"].as_i64(), t["failsafe"].as_i64()),
        (Some(6), Some(2), Some(3), Some(1))
    );
    assert!((t["yield"].as_f64().unwrap() - 2.0 / 6.0).abs() < 1e-9);
    assert_eq!(s["classes"][0], serde_json::json!({"class": "scratch", "defects": 3, "inspections": 2}));
    assert_eq!(s["classes"][1], serde_json::json!({"class": "dent", "defects": 1, "inspections": 1}));
    let b = s["buckets"].as_array().unwrap();
    let starts: Vec<i64> = b.iter().map(|b| b["start_unix_ms"].as_i64().unwrap()).collect();
    assert_eq!(starts, [T0 - 2 * HOUR, T0 + 6 * HOUR, T0 + 14 * HOUR], "shifts start 22:00, 06:00, 14:00");
    let n: Vec<i64> = b.iter().map(|b| b["inspections"].as_i64().unwrap()).collect();
    assert_eq!(n, [4, 1, 1]);
    let (_, a) = get(&app, &format!("/api/v1/stats?from={T0}&to={}&camera=a&bucket=hour", T0 + 24 * HOUR));
    assert_eq!(a["totals"]["inspections"], 4);
    assert_eq!(a["buckets"].as_array().unwrap().len(), 3, "01:00 (two), 07:00, 15:00");
}

/// `stats` over whole hours reads the hourly roll-ups, over minutes the rows: both must agree,
/// also after retention has deleted rows in the middle of an hour.
#[test]
fn hourly_rollups_match_the_rows_after_retention() {
    use Verdict::*;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let records = (0..400i64)
        .map(|n| {
            let defects: &[(u16, bool)] = match n % 5 {
                0 => &[(0, true), (0, true), (1, true)],
                1 => &[(1, false)],
                2 => &[(0, true), (1, false)],
                _ => &[],
            };
            let verdict = match n % 7 {
                0 => Failsafe(FailsafeCause::Timeout),
                1..=3 => Ng,
                _ => Ok,
            };
            inspection((n % 2) as u16, T0 + n * 61_000, verdict, None, defects)
        })
        .collect();
    write(&db, records);
    // Keep the newest 333: the cut falls inside an hour.
    let mut store = Store::open(&db, Retention { days: 0, max_inspections: 333 }).unwrap();
    assert_eq!(store.apply_retention(T0).unwrap(), 67);
    drop(store);
    let app = app(&db, None);
    for camera in ["", "&camera=a", "&camera=b"] {
        let range = format!("from={}&to={}{camera}", T0 + 13 * 60_000, T0 + 6 * HOUR - 17 * 60_000);
        let (status, hourly) = get(&app, &format!("/api/v1/stats?{range}&bucket=hour"));
        assert_eq!(status, StatusCode::OK, "{hourly}");
        let (status, minutes) = get(&app, &format!("/api/v1/stats?{range}&bucket=minute"));
        assert_eq!(status, StatusCode::OK, "{minutes}");
        assert!(hourly["totals"]["inspections"].as_i64().unwrap() > 100, "{hourly}");
        assert_eq!(hourly["totals"], minutes["totals"], "{camera}");
        assert_eq!(hourly["classes"], minutes["classes"], "{camera}");
        let sum: i64 = hourly["buckets"].as_array().unwrap().iter().map(|b| b["inspections"].as_i64().unwrap()).sum();
        assert_eq!(Some(sum), hourly["totals"]["inspections"].as_i64());
    }
}

#[test]
fn pagination_walks_every_row_once_and_lookups_find_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    write(&db, (0..1234).map(|i| inspection(0, T0 + i, Verdict::Ok, None, &[])).collect());
    let app = app(&db, None);
    let mut seen = Vec::new();
    let mut uri = "/api/v1/inspections?limit=100".to_string();
    loop {
        let (status, page) = get(&app, &uri);
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page["items"].as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/inspections?limit=100&cursor={c}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((seen.len(), sorted.len()), (1234, 1234));
    assert_eq!(get(&app, "/api/v1/inspections/1").0, StatusCode::OK);
    assert_eq!(get(&app, "/api/v1/inspections/999999").0, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/api/v1/parts/nope").0, StatusCode::NOT_FOUND);
}

#[test]
fn bad_queries_say_what_is_wrong_and_the_token_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    seed(&db);
    let app = app(&db, None);
    for (uri, says) in [
        ("/api/v1/inspections?verdict=maybe", "verdict"),
        ("/api/v1/inspections?from=2000&to=1000", "after"),
        ("/api/v1/stats?bucket=week", "bucket"),
        ("/api/v1/inspections?cursor=zzz", "cursor"),
        ("/api/v1/inspections?limit=0", "limit"),
        ("/api/v1/inspections?limit=5000", "limit"),
        ("/api/v1/stats?from=yesterday", "RFC 3339"),
        ("/api/v1/stats?colour=red", "unknown parameter"),
        ("/api/v1/inspections/abc", "id"),
    ] {
        let (status, body) = get(&app, uri);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{uri}: {body}");
    }
    let token = "0123456789abcdef0123";
    let secured = self::app(&db, Some(token));
    assert_eq!(get(&secured, "/api/v1/stats").0, StatusCode::UNAUTHORIZED);
    let wrong = Request::get("/api/v1/stats").header("authorization", "Bearer nope").body(Body::empty()).unwrap();
    assert_eq!(get_with(&secured, wrong).0, StatusCode::UNAUTHORIZED);
    let right =
        Request::get("/api/v1/stats").header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap();
    assert_eq!(get_with(&secured, right).0, StatusCode::OK);
}

/// Every property a schema marks required is present, recursively through `$ref`s, `allOf`
/// and arrays.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        return check(doc, &doc["components"]["schemas"][name], value, at);
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        check(doc, part, value, at);
    }
    for key in schema["required"].as_array().into_iter().flatten() {
        let key = key.as_str().unwrap();
        assert!(value.get(key).is_some(), "{at}: missing required {key:?} in {value}");
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object()) {
        for (k, s) in props {
            if let Some(v) = obj.get(k) {
                check(doc, s, v, &format!("{at}.{k}"));
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            check(doc, items, v, &format!("{at}[{i}]"));
        }
    }
}

#[test]
fn the_openapi_document_describes_the_real_responses() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o.db");
    seed(&db);
    let app = app(&db, None);
    let (status, doc) = get(&app, "/api/v1/openapi.json");
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 23);
    for (path, item) in paths {
        if item.get("get").is_none() {
            // The writes (review labels here, recipe switches and changes in tests/recipes.rs).
            assert!(item.get("post").is_some() || item.get("patch").is_some(), "{path}");
            continue;
        }
        let uri = path.replace("{id}", "2").replace("{part_id}", "P1");
        if path.ends_with("/image") {
            // PNG, not JSON (tests/archive.rs serves real ones); without an archive: 404.
            assert!(item["get"]["responses"]["200"]["content"]["image/png"].is_object());
            assert_eq!(get(&app, &uri).0, StatusCode::NOT_FOUND);
            continue;
        }
        if path.ends_with("/shadow") || path.ends_with("/live") {
            // No running station here (tests/shadow.rs reads real shadows): 503.
            assert_eq!(get(&app, &uri).0, StatusCode::SERVICE_UNAVAILABLE);
            continue;
        }
        if path.starts_with("/api/v1/teach/") {
            // No teach job here (tests/recipes.rs runs one): 404.
            assert_eq!(get(&app, &uri).0, StatusCode::NOT_FOUND);
            continue;
        }
        let uri =
            if uri.ends_with("stats") { format!("{uri}?from={T0}&to={}&bucket=hour", T0 + 24 * HOUR) } else { uri };
        let (status, body) = get(&app, &uri);
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        let schema = &item["get"]["responses"]["200"]["content"]["application/json"]["schema"];
        check(&doc, schema, &body, &uri);
    }
}

/// The stats cache counter of `result` (hit, shared, miss) in `registry`'s text exposition.
fn cache_count(registry: &prometheus::Registry, result: &str) -> f64 {
    use prometheus::Encoder;
    let mut text = Vec::new();
    prometheus::TextEncoder::new().encode(&registry.gather(), &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    let prefix = format!("linesight_api_stats_cache_total{{result=\"{result}\"}} ");
    let line = text.lines().find_map(|l| l.strip_prefix(&prefix));
    line.unwrap_or_else(|| panic!("no {prefix} in:\n{text}")).parse().unwrap()
}

/// `stats` answers are reused for `stats_cache_ms` (the same query in another spelling too), so
/// a new inspection shows only once that has passed; with 0, at once. Both with explicit times
/// and for "up to now" (no `to`).
#[test]
fn stats_answers_are_reused_for_the_ttl_and_never_at_zero() {
    use Verdict::*;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    seed(&db);
    let now_ms = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    write(&db, vec![inspection(0, now_ms() - 600_000, Ok, None, &[])]);
    let ttl = Duration::from_secs(3);
    let registry = prometheus::Registry::new();
    let app = {
        let mut state = ApiState::new(db.clone(), None);
        state.utc_offset_minutes = Some(0);
        state.stats_cache_ttl = ttl;
        state.metrics = Arc::new(linesight::api::ApiMetrics::new(Some(&registry)).unwrap());
        router(state)
    };
    let inspections = |s: &Value| s["totals"]["inspections"].as_i64().unwrap();
    let day = format!("/api/v1/stats?from={T0}&to={}", T0 + 24 * HOUR);
    let asked = Instant::now();
    let (status, day_first) = get(&app, &day);
    assert_eq!(status, StatusCode::OK, "{day_first}");
    let (_, live_first) = get(&app, "/api/v1/stats");
    assert_eq!((inspections(&day_first), inspections(&live_first)), (6, 1));
    write(
        &db,
        vec![inspection(0, T0 + 3 * HOUR, Ng, None, &[(0, true)]), inspection(1, now_ms() - 60_000, Ok, None, &[])],
    );
    // The same window spelt in RFC 3339 with the default bucket named: one cache entry.
    let (_, day_again) = get(&app, "/api/v1/stats?from=2024-05-01T00:00:00Z&to=2024-05-02T00:00:00Z&bucket=hour");
    let (_, live_again) = get(&app, "/api/v1/stats");
    assert!(asked.elapsed() < ttl, "the machine took {:?}, more than the TTL: nothing tested", asked.elapsed());
    assert_eq!(day_again, day_first, "served from the cache");
    assert_eq!(live_again, live_first, "served from the cache, to_unix_ms included");
    assert_eq!((cache_count(&registry, "hit"), cache_count(&registry, "miss")), (2.0, 2.0));
    // Once the TTL has passed: the new inspections, and a later "now".
    std::thread::sleep(ttl.saturating_sub(asked.elapsed()) + Duration::from_millis(50));
    let (_, day_later) = get(&app, &day);
    let (_, live_later) = get(&app, "/api/v1/stats");
    assert_eq!((inspections(&day_later), inspections(&live_later)), (7, 2));
    assert!(live_later["to_unix_ms"].as_i64() > live_first["to_unix_ms"].as_i64(), "{live_later}");

    // stats_cache_ms = 0: every answer is queried.
    let uncached = {
        let mut state = ApiState::new(db.clone(), None);
        state.utc_offset_minutes = Some(0);
        state.stats_cache_ttl = Duration::ZERO;
        router(state)
    };
    assert_eq!(inspections(&get(&uncached, &day).1), 7);
    write(&db, vec![inspection(1, T0 + 4 * HOUR, Ok, None, &[])]);
    assert_eq!(inspections(&get(&uncached, &day).1), 8);
}

/// A running station counts its API requests on the admin listener's `/metrics`, per route
/// template (never the raw path with its ids) and status, 400s and 404s included.
#[test]
fn api_requests_are_counted_per_route_template_on_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::synthetic_station(20.0, "", "")
        + "\n[store]\npath = \"api.db\"\n\n[api]\nlisten = \"127.0.0.1:0\"\nstats_cache_ms = 60000\n";
    let config = common::write_config(dir.path(), &text);
    let mut cmd = common::linesight_run();
    cmd.arg("--config").arg(&config);
    let (_station, admin, log) = common::spawn_with_admin(cmd);
    let api: std::net::SocketAddr = common::wait_for(
        Duration::from_secs(60),
        || format!("the API listener's address in the log:\n{}", log.lock().unwrap()),
        || {
            let log = log.lock().unwrap();
            let line = log.lines().find(|l| l.contains("API listener"))?;
            line.split("address=").nth(1)?.split_whitespace().next()?.parse().ok()
        },
    );
    for (path, status) in [
        ("/api/v1/stats", 200),
        ("/api/v1/stats", 200),
        ("/api/v1/inspections/987654321", 404),
        ("/api/v1/inspections/not-an-id", 400),
        ("/api/v1/no/such/endpoint", 404),
    ] {
        assert_eq!(common::http_get(api, path).unwrap().0, status, "{path}");
    }
    let (status, metrics) = common::http_get(admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    for line in [
        r#"linesight_api_requests_total{route="/api/v1/stats",status="200"} 2"#,
        r#"linesight_api_requests_total{route="/api/v1/inspections/{id}",status="404"} 1"#,
        r#"linesight_api_requests_total{route="/api/v1/inspections/{id}",status="400"} 1"#,
        r#"linesight_api_requests_total{route="unmatched",status="404"} 1"#,
        r#"linesight_api_request_seconds_count{route="/api/v1/stats"} 2"#,
        r#"linesight_api_request_seconds_count{route="/api/v1/inspections/{id}"} 2"#,
        r#"linesight_api_stats_cache_total{result="miss"} 1"#,
        r#"linesight_api_stats_cache_total{result="hit"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "no line {line} in:\n{metrics}");
    }
    for raw in ["987654321", "not-an-id", "no/such"] {
        assert!(!metrics.contains(raw), "raw path {raw:?} in a label:\n{metrics}");
    }
}

/// Windows at the ends of `i64` (the default window before `to = i64::MIN` used to overflow)
/// are a 400 that says what is wrong, never a panic or a 500.
#[test]
fn time_windows_at_the_ends_of_the_integers_are_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    seed(&db);
    let app = app(&db, None);
    for (uri, says) in [
        ("/api/v1/stats?to=-9223372036854775808", "out of range"),
        ("/api/v1/stats?from=-9223372036854775808&to=9223372036854775807", "out of range"),
        ("/api/v1/stats?from=-62167219200000&to=253402300799999&bucket=day", "buckets"),
        ("/api/v1/inspections?from=9223372036854775807", "out of range"),
        ("/api/v1/stats?from=%2B10000-01-01T00:00:00Z", "RFC 3339"),
    ] {
        let (status, body) = get(&app, uri);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{uri}: {body}");
    }
    // The earliest and latest times are usable, the default window before the earliest too.
    assert_eq!(get(&app, "/api/v1/stats?to=-62167219200000").0, StatusCode::OK);
    let (status, body) = get(&app, "/api/v1/inspections?from=-62167219200000&to=253402300799999");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 6);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Query values: extreme integers, times near the limits, cursors, words and any text.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                i64::MIN,
                i64::MIN + 1,
                i64::MAX,
                -1,
                0,
                1,
                86_400_000,
                -86_400_000,
                -62_167_219_200_000,
                -62_167_219_200_001,
                253_402_300_799_999,
                253_402_300_800_000,
                T0,
            ])
            .prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (T0 - 400 * 24 * HOUR..T0 + 400 * 24 * HOUR).prop_map(|n| n.to_string()),
            prop::sample::select(vec![
                "2024-05-01T06:00:00Z",
                "2024-05-01T08:00:00+02:00",
                "0000-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999Z",
                "9999-12-31T23:59:59-23:59",
                "0000-01-01T00:00:00+23:59",
                "minute",
                "hour",
                "day",
                "shift",
                "ok",
                "NG",
                "failsafe",
                "true",
                "false",
                "1000",
                "1001",
                "6331",
                "63313a2d39323233333732303336383534373735383038",
            ])
            .prop_map(String::from),
            ".{0,24}",
        ]
    }

    /// Letters, digits and `-_.~` as they are; every other byte `%XX`.
    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    const ROUTES: [&str; 5] = ["stats", "inspections", "inspections/{}", "inspections/{}/image", "parts/{}"];
    const NAMES: [&str; 10] = ["from", "to", "bucket", "limit", "cursor", "verdict", "camera", "class", "overlay", "x"];

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
            ..ProptestConfig::default()
        })]

        /// Any query string on any route: a 200 (or, for one inspection or part, a 404), or a
        /// 400 with a message; never a panic, never a 500.
        #[test]
        fn any_query_is_answered_or_refused_with_a_reason(
            route in prop::sample::select(&ROUTES[..]),
            id in value(),
            params in prop::collection::vec((prop::sample::select(&NAMES[..]), value()), 0..5),
        ) {
            thread_local! {
                static DB: (tempfile::TempDir, axum::Router, tokio::runtime::Runtime) = {
                    let dir = tempfile::tempdir().unwrap();
                    let db = dir.path().join("fuzz.db");
                    seed(&db);
                    let app = app(&db, None);
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    (dir, app, rt)
                };
            }
            let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
            let uri = format!("/api/v1/{}?{}", route.replace("{}", &encode(&id)), query.join("&"));
            let (status, body) = DB.with(|(_, app, rt)| {
                rt.block_on(async {
                    let response = app.clone().oneshot(Request::get(&uri).body(Body::empty()).unwrap()).await.unwrap();
                    let status = response.status();
                    (status, response.into_body().collect().await.unwrap().to_bytes())
                })
            });
            let json: Value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{uri}: not JSON: {body:?}"));
            let by_id = route.contains("{}");
            let allowed = status == StatusCode::OK
                || status == StatusCode::BAD_REQUEST
                || (by_id && status == StatusCode::NOT_FOUND);
            prop_assert!(allowed, "{uri}: {status} {json}");
            if status != StatusCode::OK {
                prop_assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{uri}: {json}");
            }
        }
    }
}

/// A seeded set for the review loop: `n` parts of camera `a` with image scores around the
/// threshold 1.0 (NG at or above it), every 10th OK part archived; returns each part's
/// (inspection id, score, truly defective). Ids follow insertion order from 1.
fn seed_scored(path: &Path, n: usize) -> Vec<(i64, f64, bool)> {
    let mut state = 2026u64;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut parts = Vec::new();
    let mut records = Vec::new();
    for k in 0..n {
        let defective = next() < 0.3;
        // Defects score higher on the whole, with overlap (some escape, some good parts rejected).
        let score = if defective { 0.7 + 0.8 * next() } else { 0.2 + 0.95 * next() };
        let verdict = if score >= 1.0 { Verdict::Ng } else { Verdict::Ok };
        let mut i = inspection(0, T0 + k as i64 * 1000, verdict, None, &[]);
        i.image_score = score as f32;
        i.threshold = 1.0;
        i.archived = verdict == Verdict::Ok && k % 10 == 0;
        parts.push((k as i64 + 1, f64::from(score as f32), defective));
        records.push(i);
    }
    write(path, records);
    parts
}

fn send(app: &axum::Router, method: &str, uri: &str, token: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    get_with(app, request.body(Body::from(body.to_string())).unwrap())
}

/// An app whose tokens are an operator's, a viewer's and the environment's admin token.
fn review_app(path: &Path) -> (axum::Router, Arc<linesight::api::ApiMetrics>) {
    use linesight::api::auth::sha256;
    use linesight::config::{ApiConfig, ApiRole, ApiToken};
    let tokens = vec![
        ApiToken { name: "line-1 operator".into(), role: ApiRole::Operator, sha256: hex::encode(sha256("op-token-1")) },
        ApiToken { name: "dashboard".into(), role: ApiRole::Viewer, sha256: hex::encode(sha256("viewer-token")) },
    ];
    let api = ApiConfig { tokens, ..Default::default() };
    let mut state = ApiState::new(path.to_path_buf(), None);
    state.tokens = linesight::api::auth::Tokens::from_config(&api, Some("admin-from-env"));
    // A running station's one recipe (the one `ctx` stores), at threshold 1.0.
    let live = linesight::api::LiveRecipes {
        switch: Arc::new(
            linesight::pipeline::RecipeSwitch::new(&[0, 0], 1)
                .named(vec!["default".into()], vec!["a".into(), "b".into()]),
        ),
        thresholds: Arc::new(linesight::pipeline::LiveThresholds::new(&[Some(1.0)])),
        models: ctx(&["a", "b"]).recipes,
        installer: None,
        shadows: None,
    };
    assert!(state.recipes.set(Arc::new(live)).is_ok());
    let metrics = Arc::clone(&state.metrics);
    (router(state), metrics)
}

#[test]
fn writes_need_the_right_role_and_every_refusal_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    seed(&db);
    let (app, metrics) = review_app(&db);
    let label = r#"{"label": "good"}"#;
    let uri = "/api/v1/inspections/2/review";
    assert_eq!(send(&app, "POST", uri, None, label).0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&app, "POST", uri, Some("not-a-token"), label).0, StatusCode::UNAUTHORIZED);
    let (status, body) = send(&app, "POST", uri, Some("viewer-token"), label);
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().unwrap().contains("operator"), "{body}");
    // Reads stay open without `[api] token`; a viewer token reads too.
    assert_eq!(get(&app, "/api/v1/inspections/2").0, StatusCode::OK);
    // A write to a route that has no operator meaning needs admin (and does not exist: 405 after auth).
    assert_eq!(send(&app, "POST", "/api/v1/stats", Some("op-token-1"), "{}").0, StatusCode::FORBIDDEN);
    assert_eq!(metrics.refused_count("unauthenticated"), 2);
    assert_eq!(metrics.refused_count("forbidden"), 2);
    // Nothing refused was stored.
    assert_eq!(count(&db, "SELECT COUNT(*) FROM reviews"), 0);
    let (status, body) = send(&app, "POST", uri, Some("op-token-1"), label);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["review"]["reviewer"], "line-1 operator");
    let (status, body) = send(&app, "POST", uri, Some("admin-from-env"), r#"{"label": "defect", "class": "dent"}"#);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["review"]["reviewer"], "LINESIGHT_API_TOKEN");
    // Both labels are kept, oldest first; the inspection shows them.
    let (_, shown) = get(&app, "/api/v1/inspections/2");
    let labels: Vec<&str> = shown["reviews"].as_array().unwrap().iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["good", "defect"]);
}

#[test]
fn bad_review_labels_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    seed(&db);
    let (app, _) = review_app(&db);
    let op = Some("op-token-1");
    for (uri, body, status, says) in [
        ("/api/v1/inspections/2/review", r#"{"label": "bad"}"#, StatusCode::BAD_REQUEST, "defect"),
        ("/api/v1/inspections/2/review", r#"{"label": "good", "colour": 1}"#, StatusCode::BAD_REQUEST, "colour"),
        ("/api/v1/inspections/2/review", "not json", StatusCode::BAD_REQUEST, "label"),
        ("/api/v1/inspections/999/review", r#"{"label": "good"}"#, StatusCode::NOT_FOUND, "999"),
        ("/api/v1/inspections/x/review", r#"{"label": "good"}"#, StatusCode::BAD_REQUEST, "id"),
    ] {
        let (got, answer) = send(&app, "POST", uri, op, body);
        assert_eq!(got, status, "{uri} {body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{uri} {body}: {answer}");
    }
    let long = format!(r#"{{"label": "good", "note": "{}"}}"#, "x".repeat(1001));
    assert_eq!(send(&app, "POST", "/api/v1/inspections/2/review", op, &long).0, StatusCode::BAD_REQUEST);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM reviews"), 0);
}

#[test]
fn review_labels_measure_the_operating_point_as_a_hand_count_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("op.db");
    let parts = seed_scored(&db, 300);
    let (app, _) = review_app(&db);
    let op = Some("op-token-1");
    // The queue: every NG and every archived OK, unreviewed, nearest the threshold first.
    let (status, queue) = get(&app, &format!("/api/v1/review/queue?from={T0}&to={}&limit=1000", T0 + 400_000));
    assert_eq!(status, StatusCode::OK, "{queue}");
    let items = queue["items"].as_array().unwrap();
    let expected = count(&db, "SELECT COUNT(*) FROM inspections WHERE verdict = 'NG' OR image_path IS NOT NULL");
    assert_eq!(items.len() as i64, expected);
    assert!(items.iter().all(|i| i["verdict"] == "NG" || i["has_image"] == true));
    let margins: Vec<f64> = items.iter().map(|i| i["margin"].as_f64().unwrap().abs()).collect();
    assert!(margins.windows(2).all(|w| w[0] <= w[1]), "nearest the threshold first: {margins:?}");

    // Operators label what the queue shows, from the truth; one is corrected later (the last
    // label counts) and one is unsure.
    let queued: Vec<i64> = items.iter().map(|i| i["id"].as_i64().unwrap()).collect();
    for (n, id) in queued.iter().enumerate() {
        let (_, score, defective) = parts[(*id - 1) as usize];
        let _ = score;
        let label = match n {
            0 => "unsure",
            1 => {
                if defective {
                    "good"
                } else {
                    "defect"
                }
            } // wrong first, corrected below
            _ => {
                if defective {
                    "defect"
                } else {
                    "good"
                }
            }
        };
        let (status, body) =
            send(&app, "POST", &format!("/api/v1/inspections/{id}/review"), op, &format!(r#"{{"label": "{label}"}}"#));
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let corrected = queued[1];
    let truth = if parts[(corrected - 1) as usize].2 { "defect" } else { "good" };
    send(&app, "POST", &format!("/api/v1/inspections/{corrected}/review"), op, &format!(r#"{{"label": "{truth}"}}"#));
    // Reviewed parts leave the queue.
    let (_, after) = get(&app, &format!("/api/v1/review/queue?from={T0}&to={}", T0 + 400_000));
    assert!(after["items"].as_array().unwrap().is_empty(), "{after}");

    // The hand count over the labelled parts (all queued but the unsure one).
    let labelled: Vec<(f64, bool)> =
        queued[1..].iter().map(|id| (parts[(*id - 1) as usize].1, parts[(*id - 1) as usize].2)).collect();
    let defects: Vec<f64> = labelled.iter().filter(|p| p.1).map(|p| p.0).collect();
    let goods: Vec<f64> = labelled.iter().filter(|p| !p.1).map(|p| p.0).collect();
    let escaped = defects.iter().filter(|s| **s < 1.0).count();
    let rejected = goods.iter().filter(|s| **s >= 1.0).count();
    assert!(escaped > 0 && rejected > 0 && goods.len() > rejected, "a set with both errors: {escaped} {rejected}");

    let (status, point) = get(&app, "/api/v1/operating-point");
    assert_eq!(status, StatusCode::OK, "{point}");
    assert_eq!(point["defects"], defects.len());
    assert_eq!(point["goods"], goods.len());
    assert_eq!(point["unsure"], 1);
    assert_eq!(point["current"]["threshold"], 1.0);
    let rate = |v: &Value| v.as_f64().unwrap();
    assert!((rate(&point["current"]["escape_rate"]) - escaped as f64 / defects.len() as f64).abs() < 1e-12);
    assert!((rate(&point["current"]["overkill_rate"]) - rejected as f64 / goods.len() as f64).abs() < 1e-12);
    let ci = point["current"]["escape_interval"].as_array().unwrap();
    assert!(
        rate(&ci[0]) <= rate(&point["current"]["escape_rate"])
            && rate(&point["current"]["escape_rate"]) <= rate(&ci[1])
    );
    // The curve: escape rises and overkill falls as the threshold rises.
    let points = point["points"].as_array().unwrap();
    assert!(points.len() > 10);
    assert!(points.windows(2).all(|w| rate(&w[0]["escape_rate"]) <= rate(&w[1]["escape_rate"])
        && rate(&w[0]["overkill_rate"]) >= rate(&w[1]["overkill_rate"])));
    assert_eq!(get(&app, "/api/v1/operating-point?model=nope").0, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/api/v1/operating-point?model=m").1["defects"], defects.len());
}

#[test]
fn an_operating_point_target_sets_the_threshold_that_meets_it_on_the_labels() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("target.db");
    let parts = seed_scored(&db, 300);
    let (app, _) = review_app(&db);
    // Every NG and archived OK part labelled from the truth.
    let (_, queue) = get(&app, &format!("/api/v1/review/queue?from={T0}&to={}&limit=1000", T0 + 400_000));
    for item in queue["items"].as_array().unwrap() {
        let id = item["id"].as_i64().unwrap();
        let label = if parts[(id - 1) as usize].2 { "defect" } else { "good" };
        let uri = format!("/api/v1/inspections/{id}/review");
        assert_eq!(
            send(&app, "POST", &uri, Some("op-token-1"), &format!(r#"{{"label": "{label}"}}"#)).0,
            StatusCode::CREATED
        );
    }
    let (_, before) = get(&app, "/api/v1/operating-point?recipe=default");
    let defects = before["defects"].as_u64().unwrap() as f64;
    let goods = before["goods"].as_u64().unwrap() as f64;
    let uri = "/api/v1/operating-point?recipe=default";
    assert_eq!(send(&app, "POST", uri, Some("op-token-1"), r#"{"target_escape": 0.05}"#).0, StatusCode::FORBIDDEN);
    for bad in
        [r#"{"target_escape": 1.5}"#, r#"{"target_escape": 0.1, "max_overkill": 0.1}"#, "{}", r#"{"escape": 0.1}"#]
    {
        assert_eq!(send(&app, "POST", uri, Some("admin-from-env"), bad).0, StatusCode::BAD_REQUEST, "{bad}");
    }

    // At most 5% of the labelled defects pass, at the highest threshold that does so.
    let (status, at) = send(&app, "POST", uri, Some("admin-from-env"), r#"{"target_escape": 0.05}"#);
    assert_eq!(status, StatusCode::OK, "{at}");
    let escape = at["current"]["escape_rate"].as_f64().unwrap();
    assert!(escape <= 0.05, "{at}");
    let t = at["current"]["threshold"].as_f64().unwrap();
    let higher = at["points"].as_array().unwrap().iter().find(|p| p["threshold"].as_f64().unwrap() > t);
    assert!(higher.is_none_or(|p| p["escape_rate"].as_f64().unwrap() > 0.05), "no higher threshold meets it: {at}");
    // A hand count at that threshold.
    let escaped = parts.iter().filter(|p| p.2 && p.1 < t && queue_has(&queue, p.0)).count() as f64;
    assert!((escape - escaped / defects).abs() < 1e-12);
    // At most 2% of the labelled goods rejected, at the lowest threshold that does so.
    let (status, at) = send(&app, "POST", uri, Some("admin-from-env"), r#"{"max_overkill": 0.02}"#);
    assert_eq!(status, StatusCode::OK, "{at}");
    let overkill = at["current"]["overkill_rate"].as_f64().unwrap();
    assert!(overkill <= 0.02 && goods > 0.0, "{at}");
    let t2 = at["current"]["threshold"].as_f64().unwrap();
    let rejected = parts.iter().filter(|p| !p.2 && p.1 >= t2 && queue_has(&queue, p.0)).count() as f64;
    assert!((overkill - rejected / goods).abs() < 1e-12);
    // The running station's threshold is the new one, and both changes are audited.
    assert_eq!(get(&app, uri).1["current"]["threshold"].as_f64().unwrap(), t2);
    let (_, audit) = get(&app, "/api/v1/audit");
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|i| i["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["recipe.threshold (max_overkill)", "recipe.threshold (target_escape)"]);
}

/// Whether inspection `id` was in the review queue (so it was labelled).
fn queue_has(queue: &Value, id: i64) -> bool {
    queue["items"].as_array().unwrap().iter().any(|i| i["id"] == id)
}
