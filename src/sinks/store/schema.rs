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
    // 2 → 3: the time and camera indexes also carry the verdict, so `stats` counts verdicts from
    // the index alone, without reading a table row per inspection (1M rows: ~10× faster).
    "DROP INDEX inspections_captured;
    CREATE INDEX inspections_captured ON inspections (captured_ms, camera, verdict);
    DROP INDEX inspections_camera_captured;
    CREATE INDEX inspections_camera_captured ON inspections (camera, captured_ms, verdict);",
    // 3 → 4: hourly roll-ups (UTC hours) of verdict and counted-defect counts per camera, kept
    // exact by triggers on every insert and delete (retention included), so `stats` over days
    // reads a few hundred rows instead of every inspection. Filled from the rows already there.
    "CREATE TABLE stats_hourly (
        hour INTEGER NOT NULL,
        camera TEXT NOT NULL,
        ok INTEGER NOT NULL, ng INTEGER NOT NULL, failsafe INTEGER NOT NULL,
        PRIMARY KEY (hour, camera)
    ) WITHOUT ROWID;
    CREATE TABLE stats_hourly_classes (
        hour INTEGER NOT NULL,
        camera TEXT NOT NULL,
        class TEXT NOT NULL,
        defects INTEGER NOT NULL,
        inspections INTEGER NOT NULL,
        PRIMARY KEY (hour, camera, class)
    ) WITHOUT ROWID;
    INSERT INTO stats_hourly (hour, camera, ok, ng, failsafe)
        SELECT captured_ms / 3600000, camera, SUM(verdict = 'OK'), SUM(verdict = 'NG'), SUM(verdict = 'FAILSAFE')
        FROM inspections GROUP BY 1, 2;
    INSERT INTO stats_hourly_classes (hour, camera, class, defects, inspections)
        SELECT i.captured_ms / 3600000, i.camera, d.class, COUNT(*), COUNT(DISTINCT d.inspection_id)
        FROM defects d JOIN inspections i ON i.id = d.inspection_id WHERE d.counted = 1 GROUP BY 1, 2, 3;
    CREATE TRIGGER stats_inspection_insert AFTER INSERT ON inspections BEGIN
        INSERT INTO stats_hourly (hour, camera, ok, ng, failsafe)
            VALUES (NEW.captured_ms / 3600000, NEW.camera, NEW.verdict = 'OK', NEW.verdict = 'NG', NEW.verdict = 'FAILSAFE')
            ON CONFLICT (hour, camera) DO UPDATE
            SET ok = ok + excluded.ok, ng = ng + excluded.ng, failsafe = failsafe + excluded.failsafe;
    END;
    CREATE TRIGGER stats_inspection_delete AFTER DELETE ON inspections BEGIN
        UPDATE stats_hourly
            SET ok = ok - (OLD.verdict = 'OK'), ng = ng - (OLD.verdict = 'NG'), failsafe = failsafe - (OLD.verdict = 'FAILSAFE')
            WHERE hour = OLD.captured_ms / 3600000 AND camera = OLD.camera;
        DELETE FROM stats_hourly
            WHERE hour = OLD.captured_ms / 3600000 AND camera = OLD.camera AND ok + ng + failsafe <= 0;
    END;
    CREATE TRIGGER stats_defect_insert AFTER INSERT ON defects WHEN NEW.counted = 1 BEGIN
        INSERT INTO stats_hourly_classes (hour, camera, class, defects, inspections)
            SELECT i.captured_ms / 3600000, i.camera, NEW.class, 1,
                NOT EXISTS (SELECT 1 FROM defects d WHERE d.inspection_id = NEW.inspection_id AND d.class = NEW.class
                    AND d.counted = 1 AND d.idx <> NEW.idx)
            FROM inspections i WHERE i.id = NEW.inspection_id
            ON CONFLICT (hour, camera, class) DO UPDATE
            SET defects = defects + 1, inspections = inspections + excluded.inspections;
    END;
    CREATE TRIGGER stats_defect_delete AFTER DELETE ON defects WHEN OLD.counted = 1 BEGIN
        UPDATE stats_hourly_classes
            SET defects = defects - 1,
                inspections = inspections - NOT EXISTS (SELECT 1 FROM defects d
                    WHERE d.inspection_id = OLD.inspection_id AND d.class = OLD.class AND d.counted = 1)
            WHERE class = OLD.class
                AND (hour, camera) = (SELECT i.captured_ms / 3600000, i.camera FROM inspections i WHERE i.id = OLD.inspection_id);
        DELETE FROM stats_hourly_classes
            WHERE class = OLD.class AND defects <= 0
                AND (hour, camera) = (SELECT i.captured_ms / 3600000, i.camera FROM inspections i WHERE i.id = OLD.inspection_id);
    END;",
    // 4 → 5: the review loop. Each inspection records the image-score threshold it was judged
    // against (anomaly models; NULL otherwise), so the operating point can be measured from the
    // stored scores whatever the threshold was then. `reviews` holds operators' labels, every
    // one kept (the latest per inspection counts); they go with their inspection on retention.
    "ALTER TABLE inspections ADD COLUMN threshold REAL;
    CREATE TABLE reviews (
        id INTEGER PRIMARY KEY,
        inspection_id INTEGER NOT NULL,
        label TEXT NOT NULL CHECK (label IN ('defect', 'good', 'unsure')),
        class TEXT,
        note TEXT,
        reviewer TEXT NOT NULL,
        reviewed_ms INTEGER NOT NULL
    );
    CREATE INDEX reviews_inspection ON reviews (inspection_id, id);
    CREATE TRIGGER reviews_follow_inspection AFTER DELETE ON inspections BEGIN
        DELETE FROM reviews WHERE inspection_id = OLD.id;
    END;",
    // 5 → 6: the recipe that judged each inspection (`default` for a station without recipes;
    // NULL for rows written before recipes existed).
    // The audit log: every change made through the API (who, when, what, old → new).
    "ALTER TABLE inspections ADD COLUMN recipe TEXT;
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        who TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        old TEXT,
        new TEXT
    );",
    "CREATE TABLE shadow_runs (
        id INTEGER PRIMARY KEY,
        recipe TEXT NOT NULL,
        package TEXT NOT NULL,
        model_name TEXT NOT NULL,
        model_sha256 TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        stopped_ms INTEGER,
        outcome TEXT
    );
    CREATE TABLE shadow_results (
        run_id INTEGER NOT NULL REFERENCES shadow_runs (id),
        camera TEXT NOT NULL,
        seq INTEGER NOT NULL,
        part_id TEXT,
        captured_ms INTEGER NOT NULL,
        live_sha256 TEXT NOT NULL,
        live_verdict TEXT NOT NULL,
        live_score REAL,
        shadow_verdict TEXT NOT NULL,
        shadow_score REAL,
        shadow_failsafe_cause TEXT
    );
    CREATE INDEX shadow_results_run ON shadow_results (run_id, captured_ms);",
    // 7 → 8: the fleet publisher's outbox cursor (the store is its outbox: rows up to `acked_id`
    // are in the plant's stream) under this store's own id, which message ids carry; and the
    // recipes fetched from the hub, so a restart does not install one twice.
    "CREATE TABLE fleet_outbox (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        store_uid TEXT NOT NULL,
        acked_id INTEGER NOT NULL,
        acked_ms INTEGER
    );
    CREATE TABLE fleet_recipes (
        product TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        recipe TEXT NOT NULL,
        package TEXT NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (product, sha256)
    );",
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
