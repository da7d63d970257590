//! The API's SQL: statistics, inspection lists and lookups, on a read-only connection. Every
//! function here blocks; the handlers run them in `spawn_blocking`.

use super::error::ApiError;
use super::params::{self, Bucket};
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

fn rate(n: i64, total: i64) -> Json {
    if total == 0 { Json::Null } else { json!(n as f64 / total as f64) }
}

fn counts(total: i64, ok: i64, ng: i64, failsafe: i64) -> Json {
    json!({
        "inspections": total, "ok": ok, "ng": ng, "failsafe": failsafe,
        "yield": rate(ok, total), "ng_rate": rate(ng, total), "failsafe_rate": rate(failsafe, total),
    })
}

fn rfc3339(ms: i64) -> Json {
    chrono::DateTime::from_timestamp_millis(ms).map_or(Json::Null, |t| json!(t.to_rfc3339()))
}

/// Totals, the defect Pareto, and both per bucket, for inspections captured in `[from, to)`.
pub fn stats(conn: &Connection, f: &Filter, bucket: Bucket, utc_offset_ms: i64) -> Result<Json, ApiError> {
    let (wher, vals) = f.sql();
    let verdicts = "COUNT(*), COALESCE(SUM(i.verdict = 'OK'), 0), COALESCE(SUM(i.verdict = 'NG'), 0), \
                    COALESCE(SUM(i.verdict = 'FAILSAFE'), 0)";
    let totals =
        conn.query_row(&format!("SELECT {verdicts} FROM inspections i WHERE {wher}"), params_from_iter(&vals), |r| {
            Ok(counts(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    // Bucket index of a capture time: local time, shifted so buckets start at the origin.
    let shift = utc_offset_ms - bucket.origin_ms();
    let width = bucket.width_ms();
    let key = format!("((i.captured_ms + ({shift})) / {width})");
    let pareto = |group: &str| {
        format!(
            "SELECT {group} d.class, COUNT(*), COUNT(DISTINCT d.inspection_id) FROM defects d \
             JOIN inspections i ON i.id = d.inspection_id WHERE d.counted = 1 AND {wher} \
             GROUP BY {group} d.class ORDER BY {group} 2 DESC, 3 DESC, d.class"
        )
    };
    let class_row = |r: &Row, at: usize| -> rusqlite::Result<Json> {
        Ok(
            json!({ "class": r.get::<_, String>(at)?, "defects": r.get::<_, i64>(at + 1)?, "inspections": r.get::<_, i64>(at + 2)? }),
        )
    };
    let classes: Vec<Json> = conn
        .prepare(&pareto(""))?
        .query_map(params_from_iter(&vals), |r| class_row(r, 0))?
        .collect::<Result<_, _>>()?;
    let mut bucket_classes: std::collections::HashMap<i64, Vec<Json>> = Default::default();
    let mut stmt = conn.prepare(&pareto(&format!("{key},")))?;
    let mut rows = stmt.query(params_from_iter(&vals))?;
    while let Some(r) = rows.next()? {
        bucket_classes.entry(r.get(0)?).or_default().push(class_row(r, 1)?);
    }
    let mut stmt =
        conn.prepare(&format!("SELECT {key}, {verdicts} FROM inspections i WHERE {wher} GROUP BY 1 ORDER BY 1"))?;
    let buckets = stmt
        .query_map(params_from_iter(&vals), |r| {
            let k: i64 = r.get(0)?;
            let start = k * width - shift;
            let mut b = counts(r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            b["start_unix_ms"] = json!(start);
            b["start"] = rfc3339(start);
            b["classes"] = json!(bucket_classes.get(&k).cloned().unwrap_or_default());
            Ok(b)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "from_unix_ms": f.from, "to_unix_ms": f.to, "camera": f.camera, "bucket": bucket.as_str(),
        "utc_offset_minutes": utc_offset_ms / 60_000,
        "totals": totals, "classes": classes, "buckets": buckets,
    }))
}

const COLUMNS: &str = "i.id, i.station, i.camera, i.seq, i.part_id, i.captured_ms, i.decided_ms, i.latency_ms, \
    i.verdict, i.failsafe_cause, i.image_score, i.width, i.height, i.mm_per_px, i.defects_truncated, m.name, m.sha256, \
    m.rules_json";

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
        "defects_truncated": r.get::<_, i64>(14)?, "model": model, "defects": defects(conn, id)?,
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
    conn.query_row(&sql, [id], |r| inspection(conn, r, true))
        .optional()?
        .ok_or_else(|| ApiError::NotFound(format!("no inspection with id {id}")))
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
