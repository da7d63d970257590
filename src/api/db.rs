//! The API's SQL: statistics, inspection lists and lookups, on a read-only connection. Every
//! function here blocks; the handlers run them in `spawn_blocking`.

use super::error::ApiError;
use super::params::{self, Bucket};
use super::tally::Tally;
pub(super) use super::tally::rfc3339;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params_from_iter};
use serde_json::{Value as Json, json};

/// Filters shared by the stats and list queries, as a `WHERE` clause over `inspections i`.
#[derive(Default)]
pub struct Filter {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub camera: Option<String>,
    pub verdict: Option<&'static str>,
    pub class: Option<String>,
    /// Keyset pagination: only ids below this one.
    pub before_id: Option<i64>,
}

impl Filter {
    fn sql(&self) -> (String, Vec<Value>) {
        let mut clauses = vec!["1 = 1".to_string()];
        let mut values = Vec::new();
        let mut add = |clause: &str, v: Value| {
            values.push(v);
            clauses.push(clause.replace('?', &format!("?{}", values.len())));
        };
        if let Some(v) = self.from {
            add("i.captured_ms >= ?", Value::Integer(v));
        }
        if let Some(v) = self.to {
            add("i.captured_ms < ?", Value::Integer(v));
        }
        if let Some(v) = &self.camera {
            add("i.camera = ?", Value::Text(v.clone()));
        }
        if let Some(v) = self.verdict {
            add("i.verdict = ?", Value::Text(v.into()));
        }
        if let Some(v) = &self.class {
            add(
                "EXISTS (SELECT 1 FROM defects d WHERE d.inspection_id = i.id AND d.counted = 1 AND d.class = ?)",
                Value::Text(v.clone()),
            );
        }
        if let Some(v) = self.before_id {
            add("i.id < ?", Value::Integer(v));
        }
        (clauses.join(" AND "), values)
    }
}

const HOUR_MS: i64 = 3_600_000;

/// Count the rows of `f` straight from the tables into buckets of `key` (an SQL expression).
fn tally_rows(conn: &Connection, f: &Filter, key: &str, tally: &mut Tally) -> rusqlite::Result<()> {
    let (wher, vals) = f.sql();
    let verdicts = "COUNT(*), COALESCE(SUM(i.verdict = 'OK'), 0), COALESCE(SUM(i.verdict = 'NG'), 0), \
                    COALESCE(SUM(i.verdict = 'FAILSAFE'), 0)";
    let mut stmt = conn.prepare(&format!("SELECT {key}, {verdicts} FROM inspections i WHERE {wher} GROUP BY 1"))?;
    let mut rows = stmt.query(params_from_iter(&vals))?;
    while let Some(r) = rows.next()? {
        tally.add(r.get(0)?, [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?]);
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT {key}, d.class, COUNT(*), COUNT(DISTINCT d.inspection_id) FROM defects d \
         JOIN inspections i ON i.id = d.inspection_id WHERE d.counted = 1 AND {wher} GROUP BY 1, 2"
    ))?;
    let mut rows = stmt.query(params_from_iter(&vals))?;
    while let Some(r) = rows.next()? {
        tally.add_class(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    }
    Ok(())
}

/// Count the whole UTC hours `[from_h, to_h)` from the hourly roll-ups into buckets of `width` ms
/// shifted by `shift` ms (both whole hours).
fn tally_hours(
    conn: &Connection,
    (from_h, to_h): (i64, i64),
    camera: Option<&str>,
    (shift, width): (i64, i64),
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    let cam = if camera.is_some() { " AND camera = ?3" } else { "" };
    let key = format!("((hour * {HOUR_MS} + ({shift})) / {width})");
    let vals: Vec<Value> = [Value::Integer(from_h), Value::Integer(to_h)]
        .into_iter()
        .chain(camera.map(|c| Value::Text(c.into())))
        .collect();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {key}, SUM(ok + ng + failsafe), SUM(ok), SUM(ng), SUM(failsafe) FROM stats_hourly \
         WHERE hour >= ?1 AND hour < ?2{cam} GROUP BY 1"
    ))?;
    let mut rows = stmt.query(params_from_iter(&vals))?;
    while let Some(r) = rows.next()? {
        tally.add(r.get(0)?, [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?]);
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {key}, class, SUM(defects), SUM(inspections) FROM stats_hourly_classes \
         WHERE hour >= ?1 AND hour < ?2{cam} GROUP BY 1, 2"
    ))?;
    let mut rows = stmt.query(params_from_iter(&vals))?;
    while let Some(r) = rows.next()? {
        tally.add_class(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    }
    Ok(())
}

/// Totals, the defect Pareto, and both per bucket, for inspections captured in `[from, to)`.
///
/// Whole hours come from the hourly roll-ups (when the buckets are made of whole UTC hours: hour,
/// day and shift buckets with a whole-hour UTC offset); the partial hours at either end, and
/// minute buckets, are counted from the rows. Totals are the sums of the buckets (an inspection
/// is in exactly one).
pub fn stats(conn: &Connection, f: &Filter, bucket: Bucket, utc_offset_ms: i64) -> Result<Json, ApiError> {
    // Bucket index of a capture time: local time, shifted so buckets start at the origin.
    let shift = utc_offset_ms - bucket.origin_ms();
    let width = bucket.width_ms();
    let key = format!("((i.captured_ms + ({shift})) / {width})");
    let mut tally = Tally::default();
    let only_time_and_camera = f.verdict.is_none() && f.class.is_none() && f.before_id.is_none();
    let hours = match (f.from, f.to) {
        (Some(from), Some(to)) if only_time_and_camera && shift % HOUR_MS == 0 && width % HOUR_MS == 0 => {
            let (first, last) =
                (from.div_euclid(HOUR_MS) + i64::from(from.rem_euclid(HOUR_MS) != 0), to.div_euclid(HOUR_MS));
            (first < last).then_some((from, first, last, to))
        }
        _ => None,
    };
    match hours {
        Some((from, first, last, to)) => {
            let part =
                |a: i64, b: i64| Filter { from: Some(a), to: Some(b), camera: f.camera.clone(), ..Filter::default() };
            tally_rows(conn, &part(from, first * HOUR_MS), &key, &mut tally)?;
            tally_hours(conn, (first, last), f.camera.as_deref(), (shift, width), &mut tally)?;
            tally_rows(conn, &part(last * HOUR_MS, to), &key, &mut tally)?;
        }
        None => tally_rows(conn, f, &key, &mut tally)?,
    }
    let (totals, classes, buckets) = tally.into_stats(shift, width);
    Ok(json!({
        "from_unix_ms": f.from, "to_unix_ms": f.to, "camera": f.camera, "bucket": bucket.as_str(),
        "utc_offset_minutes": utc_offset_ms / 60_000,
        "totals": totals, "classes": classes, "buckets": buckets,
    }))
}

const COLUMNS: &str = "i.id, i.station, i.camera, i.seq, i.part_id, i.captured_ms, i.decided_ms, i.latency_ms, \
    i.verdict, i.failsafe_cause, i.image_score, i.width, i.height, i.mm_per_px, i.defects_truncated, m.name, m.sha256, \
    m.rules_json, i.threshold, i.recipe";

fn inspection(conn: &Connection, r: &Row, with_rules: bool) -> rusqlite::Result<Json> {
    let id: i64 = r.get(0)?;
    let captured: i64 = r.get(5)?;
    let mut model = json!({ "name": r.get::<_, String>(15)?, "sha256": r.get::<_, String>(16)? });
    if with_rules {
        let rules: String = r.get(17)?;
        model["rules"] = serde_json::from_str(&rules).unwrap_or(Json::Null);
    }
    Ok(json!({
        "id": id, "station": r.get::<_, String>(1)?, "camera": r.get::<_, String>(2)?, "seq": r.get::<_, i64>(3)?,
        "part_id": r.get::<_, Option<String>>(4)?, "captured_unix_ms": captured, "captured_at": rfc3339(captured),
        "decided_unix_ms": r.get::<_, i64>(6)?, "latency_ms": r.get::<_, f64>(7)?, "verdict": r.get::<_, String>(8)?,
        "failsafe_cause": r.get::<_, Option<String>>(9)?, "image_score": r.get::<_, Option<f64>>(10)?,
        "width": r.get::<_, i64>(11)?, "height": r.get::<_, i64>(12)?, "mm_per_px": r.get::<_, Option<f64>>(13)?,
        "defects_truncated": r.get::<_, i64>(14)?, "threshold": r.get::<_, Option<f64>>(18)?,
        "recipe": r.get::<_, Option<String>>(19)?, "model": model, "defects": defects(conn, id)?,
    }))
}

fn defects(conn: &Connection, id: i64) -> rusqlite::Result<Vec<Json>> {
    let mut stmt = conn.prepare_cached(
        "SELECT class, x, y, w, h, area_px, length_px, width_px, area_mm2, length_mm, width_mm, max_score, mean_score, \
         counted FROM defects WHERE inspection_id = ?1 ORDER BY idx",
    )?;
    stmt.query_map([id], |r| {
        Ok(json!({
            "class": r.get::<_, String>(0)?, "x": r.get::<_, f64>(1)?, "y": r.get::<_, f64>(2)?,
            "w": r.get::<_, f64>(3)?, "h": r.get::<_, f64>(4)?, "area_px": r.get::<_, f64>(5)?,
            "length_px": r.get::<_, f64>(6)?, "width_px": r.get::<_, f64>(7)?,
            "area_mm2": r.get::<_, Option<f64>>(8)?, "length_mm": r.get::<_, Option<f64>>(9)?,
            "width_mm": r.get::<_, Option<f64>>(10)?, "max_score": r.get::<_, Option<f64>>(11)?,
            "mean_score": r.get::<_, Option<f64>>(12)?, "counted": r.get::<_, bool>(13)?,
        }))
    })?
    .collect()
}

/// One page, newest first, and the cursor of the next (null on the last page).
pub fn list(conn: &Connection, f: &Filter, limit: i64) -> Result<Json, ApiError> {
    let (wher, vals) = f.sql();
    let sql = format!(
        "SELECT {COLUMNS} FROM inspections i JOIN models m ON m.id = i.model_id WHERE {wher} ORDER BY i.id DESC LIMIT {}",
        limit + 1
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut items: Vec<Json> =
        stmt.query_map(params_from_iter(&vals), |r| inspection(conn, r, false))?.collect::<Result<_, _>>()?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next = match items.last() {
        Some(last) if more => json!(params::encode_cursor(last["id"].as_i64().unwrap_or(0))),
        _ => Json::Null,
    };
    Ok(json!({ "items": items, "next_cursor": next }))
}

pub fn get(conn: &Connection, id: i64) -> Result<Json, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM inspections i JOIN models m ON m.id = i.model_id WHERE i.id = ?1");
    let mut found = conn
        .query_row(&sql, [id], |r| inspection(conn, r, true))
        .optional()?
        .ok_or_else(|| ApiError::NotFound(format!("no inspection with id {id}")))?;
    found["reviews"] = Json::from(super::review::of_inspection(conn, id)?);
    Ok(found)
}

/// Every inspection of one part, oldest first.
pub fn part(conn: &Connection, part_id: &str) -> Result<Json, ApiError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM inspections i JOIN models m ON m.id = i.model_id WHERE i.part_id = ?1 ORDER BY i.id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let items: Vec<Json> = stmt.query_map([part_id], |r| inspection(conn, r, false))?.collect::<Result<_, _>>()?;
    if items.is_empty() {
        return Err(ApiError::NotFound(format!("no inspection of part {part_id:?}")));
    }
    Ok(json!({ "part_id": part_id, "inspections": items }))
}

/// Where the archive keeps inspection `id`'s image (relative to the archive folder), if it was
/// archived; an unknown id is a 404.
pub fn image_path(conn: &Connection, id: i64) -> Result<Option<String>, ApiError> {
    conn.query_row("SELECT image_path FROM inspections WHERE id = ?1", [id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| ApiError::NotFound(format!("no inspection with id {id}")))
}
