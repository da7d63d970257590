//! What a shadow model's runs leave in the result store: one `shadow_runs` row per candidate
//! started, one `shadow_results` row per part both models judged (the live verdict and score
//! beside the candidate's), and the agreement report read back from them.

use super::source::Waiting;
use crate::pipeline::{Inspection, Verdict};
use crossbeam_channel::Receiver;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value as Json, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most parts written in one transaction.
const BATCH: usize = 64;
/// Most disagreeing parts a report lists.
pub const MAX_DISAGREEMENTS: usize = 200;

const VERDICTS: [&str; 3] = ["OK", "NG", "FAILSAFE"];

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What the recorder needs to name each row.
pub struct RecordTarget {
    pub run_id: i64,
    pub cameras: Vec<String>,
    /// The live model's sha256 by model slot.
    pub live_sha: Box<dyn Fn(u16) -> String + Send>,
}

/// A new run of candidate `model` for `recipe`; returns its id.
pub fn start_run(db: &Path, recipe: &str, package: &Path, model_name: &str, sha256: &str) -> rusqlite::Result<i64> {
    let conn = crate::sinks::store::open_for_review(db)?;
    conn.execute(
        "INSERT INTO shadow_runs (recipe, package, model_name, model_sha256, started_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![recipe, package.display().to_string(), model_name, sha256, unix_ms(SystemTime::now())],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Mark run `run_id` stopped with `outcome` (`stopped`, `promoted`, `replaced`, `station stopped`).
pub fn stop_run(db: &Path, run_id: i64, outcome: &str) -> rusqlite::Result<()> {
    let conn = crate::sinks::store::open_for_review(db)?;
    conn.execute(
        "UPDATE shadow_runs SET stopped_ms = ?2, outcome = ?3 WHERE id = ?1 AND stopped_ms IS NULL",
        params![run_id, unix_ms(SystemTime::now()), outcome],
    )?;
    Ok(())
}

/// Write the shadow station's verdicts, each beside its frame's live judgement, until the shadow
/// station has drained (its record queue closes). Counts the parts written in `compared`.
pub fn record(
    db: &Path,
    target: RecordTarget,
    verdicts: Receiver<Inspection>,
    waiting: Arc<Waiting>,
    compared: Arc<AtomicU64>,
) {
    let mut conn = match crate::sinks::store::open_for_review(db) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "shadow model: cannot open the result store; its comparisons are not kept");
            for _ in verdicts {}
            return;
        }
    };
    let mut batch: Vec<Inspection> = Vec::with_capacity(BATCH);
    loop {
        batch.clear();
        match verdicts.recv() {
            Ok(first) => batch.push(first),
            Err(_) => return,
        }
        while batch.len() < BATCH
            && let Ok(more) = verdicts.recv_timeout(Duration::from_millis(20))
        {
            batch.push(more);
        }
        match write(&mut conn, &target, &batch, &waiting) {
            Ok(n) => {
                compared.fetch_add(n, Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, parts = batch.len(), "shadow model: comparisons not written"),
        }
    }
}

fn score(s: f32) -> Option<f64> {
    s.is_finite().then_some(f64::from(s))
}

fn write(conn: &mut Connection, t: &RecordTarget, batch: &[Inspection], waiting: &Waiting) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut written = 0;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO shadow_results (run_id, camera, seq, part_id, captured_ms, live_sha256, live_verdict,
                live_score, shadow_verdict, shadow_score, shadow_failsafe_cause)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for shadow in batch {
            let Some(live) = shadow.meta.part_id.and_then(|tag| waiting.take(&tag)) else { continue };
            let cause = match shadow.verdict {
                Verdict::Failsafe(c) => Some(c.as_str()),
                _ => None,
            };
            insert.execute(params![
                t.run_id,
                t.cameras.get(usize::from(live.camera)).map_or("?", String::as_str),
                live.seq as i64,
                live.part_id.as_ref().map(|p| p.as_str()),
                unix_ms(live.captured_wall),
                (t.live_sha)(live.slot),
                live.verdict.as_str(),
                score(live.image_score),
                shadow.verdict.as_str(),
                score(shadow.image_score),
                cause,
            ])?;
            written += 1;
        }
    }
    tx.commit()?;
    Ok(written)
}

/// The agreement of the newest `window` parts of run `run_id`: the live × candidate verdict
/// matrix, the agreement rate, and the parts where they differ (newest first, with the live
/// inspection's id where the store has it, for review).
pub fn report(conn: &Connection, run_id: i64, window: usize) -> rusqlite::Result<Json> {
    let mut stmt = conn.prepare(
        "SELECT s.camera, s.seq, s.part_id, s.captured_ms, s.live_verdict, s.live_score, s.shadow_verdict,
                s.shadow_score, s.shadow_failsafe_cause,
                (SELECT i.id FROM inspections i WHERE i.camera = s.camera AND i.captured_ms = s.captured_ms
                    AND i.seq = s.seq ORDER BY i.id DESC LIMIT 1)
         FROM shadow_results s WHERE s.run_id = ?1 ORDER BY s.rowid DESC LIMIT ?2",
    )?;
    let mut matrix = [[0u64; 3]; 3];
    let mut disagreements = Vec::new();
    let mut parts = 0u64;
    let index = |v: &str| VERDICTS.iter().position(|k| *k == v);
    let mut rows = stmt.query(params![run_id, window as i64])?;
    while let Some(row) = rows.next()? {
        let (live, shadow): (String, String) = (row.get(4)?, row.get(6)?);
        let (Some(l), Some(s)) = (index(&live), index(&shadow)) else { continue };
        parts += 1;
        matrix[l][s] += 1;
        if l != s && disagreements.len() < MAX_DISAGREEMENTS {
            disagreements.push(json!({
                "inspection_id": row.get::<_, Option<i64>>(9)?,
                "camera": row.get::<_, String>(0)?,
                "seq": row.get::<_, i64>(1)?,
                "part_id": row.get::<_, Option<String>>(2)?,
                "captured_ms": row.get::<_, i64>(3)?,
                "live": { "verdict": live, "score": row.get::<_, Option<f64>>(5)? },
                "candidate": {
                    "verdict": shadow,
                    "score": row.get::<_, Option<f64>>(7)?,
                    "failsafe_cause": row.get::<_, Option<String>>(8)?,
                },
            }));
        }
    }
    let agree: u64 = (0..3).map(|k| matrix[k][k]).sum();
    let confusion: serde_json::Map<String, Json> = VERDICTS
        .iter()
        .enumerate()
        .map(|(l, live)| {
            let row: serde_json::Map<String, Json> =
                VERDICTS.iter().enumerate().map(|(s, shadow)| (shadow.to_string(), json!(matrix[l][s]))).collect();
            (live.to_string(), Json::Object(row))
        })
        .collect();
    Ok(json!({
        "parts": parts,
        "agreement": (parts > 0).then(|| agree as f64 / parts as f64),
        "confusion": confusion,
        "disagreements": disagreements,
    }))
}

/// Run `run_id`'s row, as JSON (none: no such run).
pub fn run_info(conn: &Connection, run_id: i64) -> rusqlite::Result<Option<Json>> {
    conn.query_row(
        "SELECT recipe, package, model_name, model_sha256, started_ms, stopped_ms, outcome FROM shadow_runs WHERE id = ?1",
        [run_id],
        |r| {
            Ok(json!({
                "run": run_id,
                "recipe": r.get::<_, String>(0)?,
                "package": r.get::<_, String>(1)?,
                "model": { "name": r.get::<_, String>(2)?, "sha256": r.get::<_, String>(3)? },
                "started_ms": r.get::<_, i64>(4)?,
                "stopped_ms": r.get::<_, Option<i64>>(5)?,
                "outcome": r.get::<_, Option<String>>(6)?,
            }))
        },
    )
    .optional()
}

/// The newest run of `recipe`, if any.
pub fn latest_run(conn: &Connection, recipe: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT max(id) FROM shadow_runs WHERE recipe = ?1", [recipe], |r| r.get(0))
}
