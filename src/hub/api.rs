//! The plant API: the station's `/api/v1/stats`, `/inspections`, `/inspections/{id}` and
//! `/parts/{id}` across every station (with `site` and `station` filters and a per-station
//! breakdown), `/api/v1/stations`, `/api/v1/parked`, and `/metrics`, `/healthz`, `/readyz`.

use super::HubMetrics;
use super::ingest::{ROLLUPS, Rollup};
use super::pg::Pg;
use crate::api::ApiError;
use crate::api::params::{self, Bucket, check_known, local_offset_minutes};
use crate::api::tally::{Tally, counts, rfc3339};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio_postgres::types::ToSql;

const HOUR_MS: i64 = 3_600_000;
const DEFAULT_WINDOW_MS: i64 = 86_400_000;

pub struct HubState {
    pub pg: Arc<Pg>,
    pub metrics: Arc<HubMetrics>,
    /// SHA-256 of the API token, when one is required.
    pub token_sha256: Option<[u8; 32]>,
    pub utc_offset_minutes: Option<i32>,
}

type Shared = Arc<HubState>;
type Q = Query<HashMap<String, String>>;

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() || e.code().is_none() {
            ApiError::Unavailable(format!("the plant database is unreachable: {e}"))
        } else {
            ApiError::Internal(format!("database: {e}"))
        }
    }
}

pub fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/inspections", get(list))
        .route("/api/v1/inspections/{id}", get(inspection))
        .route("/api/v1/parts/{part_id}", get(part))
        .route("/api/v1/stations", get(stations))
        .route("/api/v1/parked", get(parked))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api)
        .with_state(state)
}

async fn auth(
    State(s): State<Shared>,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    if let Some(want) = &s.token_sha256 {
        use sha2::{Digest, Sha256};
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| Sha256::digest(t.as_bytes()));
        if given.is_none_or(|g| g.as_slice() != want) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(req).await)
}

async fn readyz(State(s): State<Shared>) -> Response {
    let (pg, nats) = (s.metrics.postgres_up.get() == 1, s.metrics.nats_up.get() == 1);
    let body = json!({ "ready": pg && nats, "postgres": pg, "nats": nats });
    let code = if pg && nats { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

async fn metrics(State(s): State<Shared>) -> Response {
    let mut out = String::new();
    let encoded = prometheus::TextEncoder::new().encode_utf8(&s.metrics.registry.gather(), &mut out);
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response(),
        Err(e) => ApiError::Internal(format!("metrics: {e}")).into_response(),
    }
}

/// The filters of the plant's queries, as a `WHERE` clause over `inspections i` with `$n`
/// parameters.
#[derive(Default, Clone)]
struct Filter {
    from: Option<i64>,
    to: Option<i64>,
    site: Option<String>,
    station: Option<String>,
    camera: Option<String>,
    product: Option<String>,
    verdict: Option<&'static str>,
    class: Option<String>,
    before_id: Option<i64>,
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

impl Filter {
    fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let from = q.get("from").map(|v| params::time("from", v)).transpose()?;
        let to = q.get("to").map(|v| params::time("to", v)).transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            params::range(f, t)?;
        }
        Ok(Self {
            from,
            to,
            site: q.get("site").cloned(),
            station: q.get("station").cloned(),
            camera: q.get("camera").cloned(),
            product: q.get("product").cloned(),
            verdict: q.get("verdict").map(|v| params::verdict(v)).transpose()?,
            class: q.get("class").cloned(),
            before_id: q.get("cursor").map(|v| params::decode_cursor(v)).transpose()?,
        })
    }

    fn sql(&self, params: &mut Params) -> String {
        let mut clauses = vec!["TRUE".to_string()];
        let mut add = |clause: &str, v: Box<dyn ToSql + Sync + Send>| {
            params.push(v);
            clauses.push(clause.replace('?', &format!("${}", params.len())));
        };
        if let Some(v) = self.from {
            add("i.captured_ms >= ?", Box::new(v));
        }
        if let Some(v) = self.to {
            add("i.captured_ms < ?", Box::new(v));
        }
        if let Some(v) = &self.site {
            add("i.site = ?", Box::new(v.clone()));
        }
        if let Some(v) = &self.station {
            add("i.station = ?", Box::new(v.clone()));
        }
        if let Some(v) = &self.camera {
            add("i.camera = ?", Box::new(v.clone()));
        }
        if let Some(v) = &self.product {
            add("i.product = ?", Box::new(v.clone()));
        }
        if let Some(v) = self.verdict {
            add("i.verdict = ?", Box::new(v.to_string()));
        }
        if let Some(v) = &self.class {
            add(
                "EXISTS (SELECT 1 FROM inspection_classes c WHERE c.inspection_id = i.id AND c.class = ?)",
                Box::new(v.clone()),
            );
        }
        if let Some(v) = self.before_id {
            add("i.id < ?", Box::new(v));
        }
        clauses.join(" AND ")
    }
}

fn refs(p: &Params) -> Vec<&(dyn ToSql + Sync)> {
    p.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect()
}

fn now_ms() -> i64 {
    crate::fleet::now_ms()
}

/// Per station: verdict counts.
type PerStation = BTreeMap<(String, String), [i64; 4]>;

/// `GET /api/v1/stats?from&to&bucket&site&station&camera`: as a station answers it, across the
/// plant, plus `stations`: each station's totals.
async fn stats(State(s): State<Shared>, Query(q): Q) -> Result<Json<Value>, ApiError> {
    check_known(&q, &["from", "to", "bucket", "site", "station", "camera"])?;
    let f = Filter::parse(&q)?;
    let bucket = Bucket::parse(q.get("bucket").map_or("hour", String::as_str))?;
    let (from, to) = params::stats_window(f.from, f.to, now_ms(), DEFAULT_WINDOW_MS, bucket)?;
    let offset_ms = i64::from(s.utc_offset_minutes.unwrap_or_else(|| local_offset_minutes(to))) * 60_000;
    let f = Filter { from: Some(from), to: Some(to), ..f };
    let shift = offset_ms - bucket.origin_ms();
    let width = bucket.width_ms();
    let db = s.pg.shared().await?;
    let mut tally = Tally::default();
    let mut per_station = PerStation::new();
    for (a, b, source) in split_window(from, to, shift, width) {
        match source {
            None => {
                let part = Filter { from: Some(a), to: Some(b), ..f.clone() };
                tally_rows(&db, &part, shift, width, &mut tally, &mut per_station).await?
            }
            Some(rollup) => tally_rollup(&db, &f, rollup, (a, b), shift, width, &mut tally, &mut per_station).await?,
        }
    }
    let (totals, classes, buckets) = tally.into_stats(shift, width);
    let stations: Vec<Value> = per_station
        .into_iter()
        .map(|((site, station), n)| json!({ "site": site, "station": station, "totals": counts(n[0], n[1], n[2], n[3]) }))
        .collect();
    Ok(Json(json!({
        "from_unix_ms": from, "to_unix_ms": to, "site": f.site, "station": f.station, "camera": f.camera,
        "bucket": bucket.as_str(), "utc_offset_minutes": offset_ms / 60_000,
        "totals": totals, "classes": classes, "buckets": buckets, "stations": stations,
    })))
}

async fn tally_rows(
    db: &tokio_postgres::Client,
    f: &Filter,
    shift: i64,
    width: i64,
    tally: &mut Tally,
    per_station: &mut PerStation,
) -> Result<(), ApiError> {
    let mut p = Params::new();
    let wher = f.sql(&mut p);
    let key = format!("((i.captured_ms + ({shift})) / {width})");
    let verdicts = format!(
        "SELECT {key}, i.site, i.station, COUNT(*), COUNT(*) FILTER (WHERE i.verdict = 'OK'), \
         COUNT(*) FILTER (WHERE i.verdict = 'NG'), COUNT(*) FILTER (WHERE i.verdict = 'FAILSAFE') \
         FROM inspections i WHERE {wher} GROUP BY 1, 2, 3"
    );
    let classes = format!(
        "SELECT {key}, c.class, SUM(c.defects)::int8, COUNT(*) FROM inspection_classes c \
         JOIN inspections i ON i.id = c.inspection_id WHERE {wher} GROUP BY 1, 2"
    );
    count(db, (&verdicts, &classes), &p, tally, per_station).await
}

/// `[from, to)` cut into pieces each counted from the coarsest source that covers it whole: the
/// hourly roll-ups for whole hours (when buckets are whole hours), the per-minute ones for whole
/// minutes, rows for the seconds at either end. Each piece is `(from, to, roll-up or rows)`.
fn split_window(from: i64, to: i64, shift: i64, width: i64) -> Vec<(i64, i64, Option<&'static Rollup>)> {
    let [hours, minutes] = &ROLLUPS;
    let fits = |r: &Rollup| shift % r.unit_ms == 0 && width % r.unit_ms == 0;
    let up = |t: i64, unit: i64| t.div_euclid(unit) * unit + if t.rem_euclid(unit) == 0 { 0 } else { unit };
    let down = |t: i64, unit: i64| t.div_euclid(unit) * unit;
    let mut pieces = Vec::new();
    let (m1, m2) = (up(from, minutes.unit_ms), down(to, minutes.unit_ms));
    if !fits(minutes) || m1 >= m2 {
        pieces.push((from, to, None));
        return pieces;
    }
    pieces.push((from, m1, None));
    let (h1, h2) = (up(m1, hours.unit_ms), down(m2, hours.unit_ms));
    if fits(hours) && h1 < h2 {
        pieces.push((m1, h1, Some(minutes)));
        pieces.push((h1, h2, Some(hours)));
        pieces.push((h2, m2, Some(minutes)));
    } else {
        pieces.push((m1, m2, Some(minutes)));
    }
    pieces.push((m2, to, None));
    pieces.retain(|(a, b, _)| a < b);
    pieces
}

/// Count `[a, b)` (whole units of `rollup`) from the roll-up into buckets and per station.
#[allow(clippy::too_many_arguments)]
async fn tally_rollup(
    db: &tokio_postgres::Client,
    f: &Filter,
    rollup: &Rollup,
    (a, b): (i64, i64),
    shift: i64,
    width: i64,
    tally: &mut Tally,
    per_station: &mut PerStation,
) -> Result<(), ApiError> {
    let (table, column, unit_ms) = (rollup.table, rollup.column, rollup.unit_ms);
    let mut p: Params = vec![Box::new(a / unit_ms), Box::new(b / unit_ms)];
    let mut wher = format!("{column} >= $1 AND {column} < $2");
    for (column, value) in [("site", &f.site), ("station", &f.station), ("camera", &f.camera)] {
        if let Some(v) = value {
            p.push(Box::new(v.clone()));
            wher.push_str(&format!(" AND {column} = ${}", p.len()));
        }
    }
    let key = format!("(({column} * {unit_ms} + ({shift})) / {width})");
    let verdicts = format!(
        "SELECT {key}, site, station, SUM(ok + ng + failsafe)::int8, SUM(ok)::int8, SUM(ng)::int8, \
         SUM(failsafe)::int8 FROM {table} WHERE {wher} GROUP BY 1, 2, 3"
    );
    let classes = format!(
        "SELECT {key}, class, SUM(defects)::int8, SUM(inspections)::int8 FROM {table}_classes WHERE {wher} GROUP BY 1, 2"
    );
    count(db, (&verdicts, &classes), &p, tally, per_station).await
}

/// Add the answers of a verdicts query (key, site, station, total, ok, ng, fail-safe) and a
/// classes query (key, class, defects, inspections) to the buckets and the per-station totals.
async fn count(
    db: &tokio_postgres::Client,
    (verdicts_sql, classes_sql): (&str, &str),
    p: &Params,
    tally: &mut Tally,
    per_station: &mut PerStation,
) -> Result<(), ApiError> {
    for r in db.query(verdicts_sql, &refs(p)).await? {
        let n = [r.get(3), r.get(4), r.get(5), r.get(6)];
        tally.add(r.get(0), n);
        let t = per_station.entry((r.get(1), r.get(2))).or_default();
        for (t, v) in t.iter_mut().zip(n) {
            *t += v;
        }
    }
    for r in db.query(classes_sql, &refs(p)).await? {
        tally.add_class(r.get(0), r.get(1), r.get(2), r.get(3));
    }
    Ok(())
}

const COLUMNS: &str = "i.id, i.site, i.station, i.station_row, i.camera, i.seq, i.part_id, i.captured_ms, \
    i.decided_ms, i.latency_ms, i.verdict, i.failsafe_cause, i.image_score, i.threshold, i.width, i.height, \
    i.mm_per_px, i.defects_truncated, i.recipe, i.model_name, i.model_sha256, i.image_path, i.defects, \
    i.ingested_ms, i.ingested_by, s.status ->> 'api_url', i.product";

fn inspection_json(r: &tokio_postgres::Row) -> Value {
    let captured: i64 = r.get(7);
    let image_path: Option<String> = r.get(21);
    let api_url: Option<String> = r.get(25);
    let station_row: i64 = r.get(3);
    // The image stays on the station: its API serves it by the station's row id.
    let image_url = match (&image_path, api_url) {
        (Some(_), Some(url)) => Some(format!("{}/api/v1/inspections/{station_row}/image", url.trim_end_matches('/'))),
        _ => None,
    };
    json!({
        "id": r.get::<_, i64>(0), "site": r.get::<_, String>(1), "station": r.get::<_, String>(2),
        "station_row": station_row, "camera": r.get::<_, String>(4), "seq": r.get::<_, i64>(5),
        "part_id": r.get::<_, Option<String>>(6), "captured_unix_ms": captured, "captured_at": rfc3339(captured),
        "decided_unix_ms": r.get::<_, i64>(8), "latency_ms": r.get::<_, f64>(9), "verdict": r.get::<_, String>(10),
        "failsafe_cause": r.get::<_, Option<String>>(11), "image_score": r.get::<_, Option<f64>>(12),
        "threshold": r.get::<_, Option<f64>>(13), "width": r.get::<_, i64>(14), "height": r.get::<_, i64>(15),
        "mm_per_px": r.get::<_, Option<f64>>(16), "defects_truncated": r.get::<_, i64>(17),
        "recipe": r.get::<_, Option<String>>(18), "product": r.get::<_, Option<String>>(26),
        "model": { "name": r.get::<_, String>(19), "sha256": r.get::<_, String>(20) },
        "image_path": image_path, "image_url": image_url, "defects": r.get::<_, Value>(22),
        "ingested_unix_ms": r.get::<_, i64>(23), "ingested_by": r.get::<_, String>(24),
    })
}

const FROM: &str = "inspections i LEFT JOIN stations s ON s.site = i.site AND s.station = i.station";

/// `GET /api/v1/inspections`: newest first, keyset pages (`cursor`).
async fn list(State(s): State<Shared>, Query(q): Q) -> Result<Json<Value>, ApiError> {
    check_known(&q, &["site", "station", "camera", "product", "verdict", "class", "from", "to", "limit", "cursor"])?;
    let f = Filter::parse(&q)?;
    let limit = params::limit(q.get("limit").map(String::as_str))?;
    let mut p = Params::new();
    let wher = f.sql(&mut p);
    let db = s.pg.shared().await?;
    let rows = db
        .query(&format!("SELECT {COLUMNS} FROM {FROM} WHERE {wher} ORDER BY i.id DESC LIMIT {}", limit + 1), &refs(&p))
        .await?;
    let mut items: Vec<Value> = rows.iter().map(inspection_json).collect();
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next = match items.last() {
        Some(last) if more => json!(params::encode_cursor(last["id"].as_i64().unwrap_or(0))),
        _ => Value::Null,
    };
    Ok(Json(json!({ "items": items, "next_cursor": next })))
}

async fn inspection(State(s): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = params::id(&id)?;
    let db = s.pg.shared().await?;
    let row = db.query_opt(&format!("SELECT {COLUMNS} FROM {FROM} WHERE i.id = $1"), &[&id]).await?;
    row.map(|r| Json(inspection_json(&r))).ok_or_else(|| ApiError::NotFound(format!("no inspection with id {id}")))
}

/// `GET /api/v1/parts/{part_id}`: every inspection of the part, at any station, oldest first.
async fn part(State(s): State<Shared>, Path(part_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let db = s.pg.shared().await?;
    let rows = db
        .query(&format!("SELECT {COLUMNS} FROM {FROM} WHERE i.part_id = $1 ORDER BY i.captured_ms, i.id"), &[&part_id])
        .await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound(format!("no inspection of part {part_id:?}")));
    }
    Ok(Json(json!({ "part_id": part_id, "inspections": rows.iter().map(inspection_json).collect::<Vec<_>>() })))
}

/// `GET /api/v1/stations`: every station the hub has heard of: last seen, its latest status
/// (recipe and model per camera, rates, outbox lag, recipes fetched) and its rows in the last hour.
async fn stations(State(s): State<Shared>, Query(q): Q) -> Result<Json<Value>, ApiError> {
    check_known(&q, &["site"])?;
    let db = s.pg.shared().await?;
    let now = now_ms();
    let hour = now.div_euclid(HOUR_MS);
    let rows = db
        .query(
            "SELECT s.site, s.station, s.last_record_ms, s.status, s.status_ms, \
             (SELECT COALESCE(SUM(h.ok + h.ng + h.failsafe), 0)::int8 FROM stats_hourly h \
              WHERE h.site = s.site AND h.station = s.station AND h.hour >= $1) \
             FROM stations s WHERE $2::text IS NULL OR s.site = $2 ORDER BY s.site, s.station",
            &[&(hour - 1), &q.get("site")],
        )
        .await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            let last_record: Option<i64> = r.get(2);
            let status: Option<Value> = r.get(3);
            let status_ms: Option<i64> = r.get(4);
            let last_seen = last_record.into_iter().chain(status_ms).max();
            json!({
                "site": r.get::<_, String>(0), "station": r.get::<_, String>(1),
                "last_seen_unix_ms": last_seen, "last_seen_s_ago": last_seen.map(|t| (now - t) as f64 / 1000.0),
                "last_record_unix_ms": last_record,
                "cameras": status.as_ref().map(|s| s["cameras"].clone()),
                "outbox": status.as_ref().map(|s| s["outbox"].clone()),
                "recipes_fetched": status.as_ref().map(|s| s["recipes_fetched"].clone()),
                "api_url": status.as_ref().map(|s| s["api_url"].clone()),
                "inspections_this_and_last_hour": r.get::<_, i64>(5),
            })
        })
        .collect();
    Ok(Json(json!({ "stations": items })))
}

/// `GET /api/v1/parked?limit`: messages the hub could not use, newest first, with the reason.
async fn parked(State(s): State<Shared>, Query(q): Q) -> Result<Json<Value>, ApiError> {
    check_known(&q, &["limit"])?;
    let limit = params::limit(q.get("limit").map(String::as_str))?;
    let db = s.pg.shared().await?;
    let total: i64 = db.query_one("SELECT COUNT(*) FROM parked", &[]).await?.get(0);
    let rows = db
        .query(
            "SELECT id, subject, reason, payload, parked_ms, parked_by FROM parked ORDER BY id DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            let payload: Vec<u8> = r.get(3);
            json!({
                "id": r.get::<_, i64>(0), "subject": r.get::<_, String>(1), "reason": r.get::<_, String>(2),
                "payload": String::from_utf8_lossy(&payload[..payload.len().min(4096)]),
                "parked_unix_ms": r.get::<_, i64>(4), "parked_by": r.get::<_, String>(5),
            })
        })
        .collect();
    Ok(Json(json!({ "total": total, "items": items })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces tile the window, and each roll-up piece is whole units of its roll-up.
    #[test]
    fn a_window_is_cut_into_rows_minutes_and_hours_that_tile_it() {
        let h = 3_600_000;
        let cases = [
            (5 * h + 1_234, 9 * h + 61_001, 0, h), // hour buckets: rows, minutes, hours, minutes, rows
            (5 * h + 1_234, 5 * h + 200_000, 0, h), // within an hour: rows, minutes, rows
            (5 * h, 7 * h, 0, h),                  // whole hours only
            (5 * h + 1, 5 * h + 59_000, 0, h),     // within a minute: rows only
            (5 * h + 1_234, 9 * h + 61_001, 30_000, h), // a shift that is not whole minutes: rows only
            (5 * h + 1_234, 9 * h + 61_001, 0, 60_000), // minute buckets: no hours
        ];
        for (from, to, shift, width) in cases {
            let pieces = split_window(from, to, shift, width);
            assert_eq!(pieces.first().unwrap().0, from);
            assert_eq!(pieces.last().unwrap().1, to);
            for w in pieces.windows(2) {
                assert_eq!(w[0].1, w[1].0, "contiguous: {pieces:?}");
            }
            for (a, b, r) in &pieces {
                assert!(a < b);
                if let Some(r) = r {
                    assert!(a % r.unit_ms == 0 && b % r.unit_ms == 0, "{} piece {a}..{b}", r.table);
                    assert!(shift % r.unit_ms == 0 && width % r.unit_ms == 0);
                }
            }
        }
        let kinds = |p: Vec<(i64, i64, Option<&Rollup>)>| {
            p.iter().map(|(_, _, r)| r.map_or("rows", |r| r.column)).collect::<Vec<_>>()
        };
        assert_eq!(kinds(split_window(cases[0].0, cases[0].1, 0, h)), ["rows", "minute", "hour", "minute", "rows"]);
        assert_eq!(kinds(split_window(5 * h, 7 * h, 0, h)), ["hour"]);
        assert_eq!(kinds(split_window(5 * h + 1_234, 9 * h + 61_001, 30_000, h)), ["rows"]);
    }
}
