//! The store's writer thread: batches records into transactions and applies retention.

use super::{Retention, Store, StoreContext};
use crate::pipeline::Verdict;
use crate::pipeline::accounting::Accounting;
use crate::pipeline::messages::Inspection;
use crate::sinks::archive;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use rusqlite::{Connection, params};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most records committed in one transaction.
pub const BATCH_MAX: usize = 500;
/// Longest a record waits for its batch to fill before the batch is committed anyway.
pub const BATCH_WINDOW: Duration = Duration::from_millis(200);
/// How often retention runs (also once at start).
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// At most one write-error log line per this interval; the rest are counted in it.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

const DAY_MS: i64 = 86_400_000;

impl Store {
    /// Write every record from `rx` until the queue closes, then return. Write errors are counted
    /// in `accounting.store_errors` and logged (rate-limited); the records of a failed batch are
    /// lost, and writing goes on with the next one.
    pub fn run(mut self, rx: Receiver<Inspection>, ctx: StoreContext, accounting: Arc<Accounting>) {
        let mut model_ids = match ctx
            .recipes
            .iter()
            .map(|r| model_id(&self.conn, r))
            .collect::<rusqlite::Result<Vec<i64>>>()
        {
            Ok(ids) => ids,
            Err(e) => {
                accounting.store_errors.fetch_add(1, Relaxed);
                tracing::error!(path = %self.path.display(), error = %e, "result store: cannot record the model; nothing will be stored");
                // Keep draining so the queue never fills for a reason the metrics would misread.
                for _ in rx {}
                return;
            }
        };
        let mut errors = ErrorLog { last: None, suppressed: 0 };
        let mut batch: Vec<Inspection> = Vec::with_capacity(BATCH_MAX);
        let mut next_retention = Instant::now();
        let mut received = 0u64;
        loop {
            if Instant::now() >= next_retention {
                if let Err(e) = self.apply_retention(unix_ms(SystemTime::now())) {
                    accounting.store_errors.fetch_add(1, Relaxed);
                    errors.log(&self, "retention failed", &e);
                }
                next_retention = Instant::now() + RETENTION_INTERVAL;
            }
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(i) => batch.push(i),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }

            let deadline = Instant::now() + BATCH_WINDOW;
            while batch.len() < BATCH_MAX {
                match rx.recv_deadline(deadline) {
                    Ok(i) => batch.push(i),
                    Err(_) => break,
                }
            }
            received += batch.len() as u64;
            crate::supervise::fault_point("store", received);
            match write_batch(&mut self.conn, &ctx, &mut model_ids, &batch) {
                Ok(()) => {
                    accounting.store_written.fetch_add(batch.len() as u64, Relaxed);
                }
                Err(e) => {
                    accounting.store_errors.fetch_add(1, Relaxed);
                    errors.log(&self, "write failed; this batch's records are lost, inspection goes on", &e);
                }
            }
            batch.clear();
        }
        // A clean stop checkpoints the WAL into the main file.
        if let Err(e) = self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
            tracing::warn!(path = %self.path.display(), error = %e, "result store: final checkpoint failed");
        }
    }
}

/// Rate-limited error logging: one line per [`ERROR_LOG_INTERVAL`], saying how many were held back.
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn log(&mut self, store: &Store, what: &str, e: &rusqlite::Error) {
        if self.last.is_some_and(|t| t.elapsed() < ERROR_LOG_INTERVAL) {
            self.suppressed += 1;
            return;
        }
        tracing::error!(path = %store.path.display(), error = %e, suppressed = self.suppressed, "result store: {what}");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// The id of a recipe's model + rules row, inserted when new.
fn model_id(conn: &Connection, r: &crate::sinks::RecipeContext) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT OR IGNORE INTO models (name, sha256, rules_json) VALUES (?1, ?2, ?3)",
        params![r.model_name, r.model_sha256, r.rules_json],
    )?;
    conn.query_row(
        "SELECT id FROM models WHERE name = ?1 AND sha256 = ?2 AND rules_json = ?3",
        params![r.model_name, r.model_sha256, r.rules_json],
        |row| row.get(0),
    )
}

pub(super) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Finite floats only: SQLite has no NaN (it would store NULL anyway).
fn finite(v: f32) -> Option<f64> {
    v.is_finite().then_some(f64::from(v))
}

fn write_batch(
    conn: &mut Connection,
    ctx: &StoreContext,
    model_ids: &mut Vec<i64>,
    batch: &[Inspection],
) -> rusqlite::Result<()> {
    // Models installed while the station runs get their row with their first record.
    let newest = batch.iter().map(|i| usize::from(i.meta.recipe)).max().unwrap_or(0);
    while model_ids.len() <= newest {
        let Some(recipe) = ctx.recipes.get(model_ids.len()) else { break };
        model_ids.push(model_id(conn, recipe)?);
    }
    let tx = conn.transaction()?;
    {
        let mut insp = tx.prepare_cached(
            "INSERT INTO inspections (station, camera, seq, part_id, captured_ms, decided_ms, latency_ms, verdict,
                 failsafe_cause, image_score, width, height, mm_per_px, defects_truncated, model_id, image_path, threshold,
                 recipe)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?;
        let mut def = tx.prepare_cached(
            "INSERT INTO defects (inspection_id, idx, class, x, y, w, h, area_px, length_px, width_px,
                 area_mm2, length_mm, width_mm, max_score, mean_score, counted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?;
        for i in batch {
            let captured = unix_ms(i.meta.captured_wall);
            let latency = i.decided_at.saturating_duration_since(i.meta.captured_at);
            let cause = match i.verdict {
                Verdict::Failsafe(c) => Some(c.as_str()),
                _ => None,
            };
            let camera = ctx.cameras.get(i.meta.camera as usize).map(String::as_str).unwrap_or("?");
            let r = usize::from(i.meta.recipe);
            let (recipe, model_id) = match (ctx.recipes.get(r), model_ids.get(r)) {
                (Some(recipe), Some(id)) => (recipe, *id),
                // Every frame is stamped with one of the station's recipes; a record that is
                // not cannot be attributed to a model: refused loudly rather than misfiled.
                _ => return Err(rusqlite::Error::InvalidParameterName(format!("recipe index {r} unknown"))),
            };
            insp.execute(params![
                ctx.station,
                camera,
                i.meta.seq as i64,
                i.meta.part_id.as_ref().map(|p| p.as_str()),
                captured,
                captured + latency.as_millis() as i64,
                latency.as_secs_f64() * 1000.0,
                i.verdict.as_str(),
                cause,
                finite(i.image_score),
                i.width,
                i.height,
                i.mm_per_px.map(f64::from),
                i.defects_truncated,
                model_id,
                i.archived.then(|| archive::relative_path(camera, &i.meta)),
                finite(i.threshold),
                recipe.name,
            ])?;
            let id = tx.last_insert_rowid();
            for (idx, r) in i.defects.iter().enumerate() {
                let d = &r.defect;
                let mm = i.mm_per_px.map(|s| d.in_mm(s));
                let class = recipe.classes.get(d.class as usize).map(String::as_str).unwrap_or("?");
                def.execute(params![
                    id,
                    idx as i64,
                    class,
                    d.x,
                    d.y,
                    d.w,
                    d.h,
                    d.area_px,
                    d.length_px,
                    d.width_px,
                    mm.map(|m| m.area_mm2),
                    mm.map(|m| m.length_mm),
                    mm.map(|m| m.width_mm),
                    finite(d.max_score),
                    finite(d.mean_score),
                    r.counted,
                ])?;
            }
        }
    }
    tx.commit()
}

pub(super) fn apply_retention(conn: &mut Connection, r: Retention, now_unix_ms: i64) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut deleted = 0;
    if r.days > 0 {
        let cutoff = now_unix_ms - i64::from(r.days) * DAY_MS;
        tx.execute(
            "DELETE FROM defects WHERE inspection_id IN (SELECT id FROM inspections WHERE captured_ms < ?1)",
            [cutoff],
        )?;
        deleted += tx.execute("DELETE FROM inspections WHERE captured_ms < ?1", [cutoff])?;
    }
    if r.max_inspections > 0 {
        // The newest one past the limit: it and everything older go.
        let over: Option<i64> = tx
            .query_row(
                "SELECT id FROM inspections ORDER BY id DESC LIMIT 1 OFFSET ?1",
                [r.max_inspections as i64],
                |row| row.get(0),
            )
            .map(Some)
            .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
        if let Some(id) = over {
            tx.execute("DELETE FROM defects WHERE inspection_id <= ?1", [id])?;
            deleted += tx.execute("DELETE FROM inspections WHERE id <= ?1", [id])?;
        }
    }
    if deleted > 0 {
        // Shadow comparisons go with the live inspections they were made on.
        tx.execute(
            "DELETE FROM shadow_results WHERE captured_ms < coalesce((SELECT min(captured_ms) FROM inspections), 9223372036854775807)",
            [],
        )?;
    }
    tx.commit()?;
    if deleted > 0 {
        tracing::info!(deleted, "result store: retention deleted old inspections");
    }
    Ok(deleted)
}
