//! The audit log: every change made to a running station — through the API, the PLC or MQTT —
//! with who made it, when, what, and old → new. One table in the result store (`audit`, schema
//! version 6); `GET /api/v1/audit` reads it.

use rusqlite::{Connection, params};
use std::path::Path;

/// One change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// A token's name, or the line adapter (`plc`, `mqtt`).
    pub who: String,
    /// What changed, e.g. `recipe.activate`, `recipe.threshold`.
    pub action: String,
    /// What it changed: a camera, a recipe.
    pub target: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// Record `changes`, made at `at_ms` (unix ms), in one transaction.
pub fn record(conn: &mut Connection, at_ms: i64, changes: &[Change]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for c in changes {
        tx.execute(
            "INSERT INTO audit (at_ms, who, action, target, old, new) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![at_ms, c.who, c.action, c.target, c.old, c.new],
        )?;
    }
    tx.commit()
}

/// Record `changes` from a thread without a connection of its own (the line's adapters): opens
/// the store at `db`, writes, closes. A failure is logged, never raised: the change itself has
/// been made, and the station goes on.
pub fn record_detached(db: &Path, changes: &[Change]) {
    let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let written = super::open_for_review(db).and_then(|mut conn| record(&mut conn, at_ms, changes));
    if let Err(e) = written {
        tracing::error!(path = %db.display(), error = %e, changes = changes.len(), "result store: cannot record changes in the audit log");
    }
}
