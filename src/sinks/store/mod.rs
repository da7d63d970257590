//! The result store: every inspection and its defects in a SQLite database, for the HTTP API
//! (statistics, traceability).
//!
//! One writer thread owns the only read-write connection. It takes records from a bounded queue
//! (the assembler never waits on it: a full queue drops the record and counts it in
//! `linesight_store_dropped_total`) and commits them in batches of up to [`BATCH_MAX`] records or
//! [`BATCH_WINDOW`], whichever comes first. It also applies retention (age and row count) at start
//! and every [`RETENTION_INTERVAL`].
//!
//! Durability: WAL journal with `synchronous = NORMAL`. A crash of linesight loses nothing that
//! was committed (and at most the batch being collected, ≤ 200 ms of records); a power cut or OS
//! crash may also lose the last committed transactions (those not yet checkpointed), but never
//! corrupts the database. Readers (the API) use their own read-only connections, which WAL lets
//! run while the writer commits.

pub mod audit;
pub mod schema;
mod writer;

pub use writer::{BATCH_MAX, BATCH_WINDOW, RETENTION_INTERVAL};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a connection waits for a lock held by another connection before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the store could not be opened. Each message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("result store {path}: {source} ({hint})")]
    Open { path: PathBuf, source: rusqlite::Error, hint: &'static str },
    #[error("result store {path}: {source}")]
    Schema { path: PathBuf, source: schema::MigrateError },
}

/// How long records are kept.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Delete inspections captured more than this many days ago (0 = keep forever).
    pub days: u32,
    /// Keep at most this many inspections, the newest (0 = no limit).
    pub max_inspections: u64,
}

/// Everything a row needs besides the inspection itself: names for the indices it carries, and
/// per recipe the model and rules in force.
#[derive(Clone, Debug)]
pub struct StoreContext {
    pub station: String,
    pub cameras: Vec<String>,
    /// By model slot (models installed while the station runs included).
    pub recipes: std::sync::Arc<crate::pipeline::Slots<super::RecipeContext>>,
}

/// The store's port for the assembler, feeding its writer thread through `tx`. Its losses are
/// counted apart (`store_dropped`), so a slow database shows as itself.
pub fn port(tx: crossbeam_channel::Sender<crate::pipeline::Inspection>) -> Box<dyn crate::pipeline::OutputPort> {
    Box::new(crate::pipeline::RecordPort::new(tx, |a| &a.store_dropped))
}

/// An open, migrated database, ready for its writer thread.
pub struct Store {
    path: PathBuf,
    conn: Connection,
    retention: Retention,
}

fn hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            "the file is not a SQLite database or is damaged: move it aside (or restore a backup) and start again; a new database is created"
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "another process holds the database locked, perhaps another linesight station: stop it, or set [store] path to another file"
        }
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            "check that the folder exists and that linesight may write the file and the folder"
        }
        Some(ErrorCode::DiskFull) => "the disk is full: free space or lower [store] retention_days / max_inspections",
        _ => "check [store] path",
    }
}

impl Store {
    /// Open (creating when missing) the database at `path`, switch it to WAL, and migrate its
    /// schema. A damaged, foreign or locked file is an error here, before the station starts.
    pub fn open(path: &Path, retention: Retention) -> Result<Self, StoreError> {
        let err = |source: rusqlite::Error| StoreError::Open { path: path.to_path_buf(), hint: hint(&source), source };
        // A missing folder is created, as the archive's is (the demo keeps its data in demo-data/);
        // if that fails, opening the file below reports it with the path.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // The first statement reads the header: a foreign or damaged file fails here.
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode = %mode, "result store: WAL not available; readers may wait for writes");
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        schema::migrate(&mut conn).map_err(|source| match source {
            schema::MigrateError::Sqlite(e) => err(e),
            other => StoreError::Schema { path: path.to_path_buf(), source: other },
        })?;
        Ok(Self { path: path.to_path_buf(), conn, retention })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Delete what the retention settings no longer keep, as of `now_unix_ms`; returns the number
    /// of inspections deleted.
    pub fn apply_retention(&mut self, now_unix_ms: i64) -> rusqlite::Result<usize> {
        writer::apply_retention(&mut self.conn, self.retention, now_unix_ms)
    }
}

/// A read-only connection for queries (the API): it never blocks the writer, and WAL lets it
/// read while the writer commits.
pub fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// A connection for the API's few writes (review labels): short transactions beside the writer
/// thread's, which WAL serialises (each waits up to the busy timeout for the other).
pub fn open_for_review(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}
