//! The database schema and its migrations, versioned with `PRAGMA user_version`.
//!
//! Migration `n` takes a database at version `n` to `n + 1`, inside one transaction. Opening runs
//! whatever is missing, so an empty file gets the whole schema and a current one gets nothing.
//! Never edit a migration that has shipped: add the next one.

use rusqlite::Connection;

/// Each entry takes the database from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: inspections, their defects, and the model + rules in force for each.
    "CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        rules_json TEXT NOT NULL,
        UNIQUE (name, sha256, rules_json)
    );
    CREATE TABLE inspections (
        id INTEGER PRIMARY KEY,
        station TEXT NOT NULL,
        camera TEXT NOT NULL,
        seq INTEGER NOT NULL,
        part_id TEXT,
        captured_ms INTEGER NOT NULL,
        decided_ms INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('OK', 'NG', 'FAILSAFE')),
        failsafe_cause TEXT,
        image_score REAL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        mm_per_px REAL,
        defects_truncated INTEGER NOT NULL,
        model_id INTEGER NOT NULL REFERENCES models (id)
    );
    CREATE INDEX inspections_captured ON inspections (captured_ms);
    CREATE INDEX inspections_camera_captured ON inspections (camera, captured_ms);
    CREATE INDEX inspections_part ON inspections (part_id) WHERE part_id IS NOT NULL;
    CREATE TABLE defects (
        inspection_id INTEGER NOT NULL REFERENCES inspections (id),
        idx INTEGER NOT NULL,
        class TEXT NOT NULL,
        x REAL NOT NULL, y REAL NOT NULL, w REAL NOT NULL, h REAL NOT NULL,
        area_px REAL NOT NULL, length_px REAL NOT NULL, width_px REAL NOT NULL,
        area_mm2 REAL, length_mm REAL, width_mm REAL,
        max_score REAL NOT NULL, mean_score REAL NOT NULL,
        counted INTEGER NOT NULL,
        PRIMARY KEY (inspection_id, idx)
    ) WITHOUT ROWID;
    CREATE INDEX defects_class ON defects (class, inspection_id);",
    // 1 → 2: where the image archive keeps the inspection's frame (relative to `[archive] dir`);
    // NULL when it was not archived.
    "ALTER TABLE inspections ADD COLUMN image_path TEXT;",
];

/// The schema version this build writes and reads.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the database has schema version {found}, newer than this build's {VERSION}: upgrade linesight, or point [store] path at another file"
    )]
    TooNew { found: i64 },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Bring the schema up to [`VERSION`]; returns the version found before.
pub fn migrate(conn: &mut Connection) -> Result<i64, MigrateError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > VERSION {
        return Err(MigrateError::TooNew { found });
    }
    for (v, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", v as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = v + 1, "result store schema migrated");
    }
    Ok(found)
}
