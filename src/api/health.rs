//! `GET /api/v1/health`: what the health page shows in one answer — readiness with its reasons,
//! the line links (PLC, broker, webhook), records lost on the way to the outputs, capture →
//! verdict latency of the latest parts, free disk where the store and archive live, and the
//! Grafana dashboard's address when one is configured.

use super::error::ApiError;
use super::router::{Shared, query};
use crate::telemetry::names;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

/// Latest parts the latency figures are measured on.
const LATENCY_PARTS: i64 = 500;

pub(super) async fn health(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let not_ready = s.readiness.as_ref().map_or_else(|| vec!["no station".to_string()], |r| r.not_ready());
    let mut disks = vec![disk("store", s.db.parent().unwrap_or(Path::new(".")))];
    if let Some(dir) = &s.archive_dir {
        disks.push(disk("archive", dir));
    }
    let dropped = s.accounting.get().map(|a| {
        json!({
            "results": a.results_dropped.load(Relaxed), "store": a.store_dropped.load(Relaxed),
            "archive": a.archive_dropped_queue_full.load(Relaxed), "line": a.line_dropped.load(Relaxed),
        })
    });
    let latency = query(&s, latency_ms).await?;
    Ok(Json(json!({
        "ready": not_ready.is_empty(), "not_ready": not_ready, "line_links": line_links(&s),
        "dropped": dropped, "latency_ms": latency, "disks": disks, "grafana_url": s.grafana_url,
    })))
}

/// Each line adapter's link (`linesight_line_link_up`): up or not.
fn line_links(s: &Shared) -> Vec<Value> {
    let Some(registry) = &s.registry else { return Vec::new() };
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == names::LINE_LINK_UP)
        .flat_map(|f| f.get_metric())
        .map(|m| {
            let adapter = m.get_label().iter().find(|l| l.name() == names::ADAPTER).map(|l| l.value().to_string());
            json!({ "adapter": adapter, "up": m.get_gauge().get_value() > 0.0 })
        })
        .collect()
}

/// Capture → verdict of the latest parts stored: median and 99th percentile, in ms.
fn latency_ms(conn: &rusqlite::Connection) -> Result<Value, ApiError> {
    let mut stmt = conn.prepare("SELECT latency_ms FROM inspections ORDER BY id DESC LIMIT ?1")?;
    let mut values: Vec<f64> = stmt.query_map([LATENCY_PARTS], |r| r.get(0))?.collect::<Result<_, _>>()?;
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return Ok(Value::Null);
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    Ok(json!({ "parts": values.len(), "p50": at(0.5), "p99": at(0.99) }))
}

/// Free and total bytes of the file system holding `dir`.
fn disk(what: &str, dir: &Path) -> Value {
    match rustix::fs::statvfs(dir) {
        Ok(v) => json!({
            "what": what, "path": dir, "free_bytes": v.f_bavail.saturating_mul(v.f_frsize),
            "total_bytes": v.f_blocks.saturating_mul(v.f_frsize),
        }),
        Err(e) => json!({ "what": what, "path": dir, "error": e.to_string() }),
    }
}
