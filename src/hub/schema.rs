//! The hub's PostgreSQL schema and its migrations, versioned in `schema_migrations`.
//!
//! Migration `n` takes the database from version `n` to `n + 1` in one transaction, under an
//! advisory lock so hubs starting together migrate once. Never edit a migration that has
//! shipped: add the next one.

use tokio_postgres::Client;

/// Each entry takes the database from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: inspections from every station (unique by message id: a redelivered or republished
    // record is written once), counted defect classes per inspection, hourly and per-minute
    // roll-ups kept by the ingest in the same transaction as the rows, the stations' latest status, and messages that
    // could not be read (parked, not retried).
    "CREATE TABLE inspections (
        id BIGSERIAL PRIMARY KEY,
        msg_id TEXT NOT NULL UNIQUE,
        site TEXT NOT NULL,
        station TEXT NOT NULL,
        store_uid TEXT NOT NULL,
        station_row BIGINT NOT NULL,
        camera TEXT NOT NULL,
        seq BIGINT NOT NULL,
        part_id TEXT,
        captured_ms BIGINT NOT NULL,
        decided_ms BIGINT NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('OK', 'NG', 'FAILSAFE')),
        failsafe_cause TEXT,
        image_score DOUBLE PRECISION,
        threshold DOUBLE PRECISION,
        width BIGINT NOT NULL,
        height BIGINT NOT NULL,
        mm_per_px DOUBLE PRECISION,
        defects_truncated BIGINT NOT NULL,
        recipe TEXT,
        product TEXT,
        model_name TEXT NOT NULL,
        model_sha256 TEXT NOT NULL,
        image_path TEXT,
        defects JSONB NOT NULL,
        published_ms BIGINT NOT NULL,
        ingested_ms BIGINT NOT NULL,
        ingested_by TEXT NOT NULL
    );
    CREATE INDEX inspections_captured ON inspections (captured_ms, site, station, camera, verdict);
    CREATE INDEX inspections_station ON inspections (site, station, captured_ms);
    CREATE INDEX inspections_part ON inspections (part_id) WHERE part_id IS NOT NULL;
    CREATE INDEX inspections_product ON inspections (product, captured_ms) WHERE product IS NOT NULL;
    CREATE TABLE inspection_classes (
        inspection_id BIGINT NOT NULL REFERENCES inspections (id) ON DELETE CASCADE,
        class TEXT NOT NULL,
        defects BIGINT NOT NULL,
        PRIMARY KEY (inspection_id, class)
    );
    CREATE INDEX inspection_classes_class ON inspection_classes (class, inspection_id);
    CREATE TABLE stats_hourly (
        hour BIGINT NOT NULL,
        site TEXT NOT NULL,
        station TEXT NOT NULL,
        camera TEXT NOT NULL,
        ok BIGINT NOT NULL,
        ng BIGINT NOT NULL,
        failsafe BIGINT NOT NULL,
        PRIMARY KEY (hour, site, station, camera)
    );
    CREATE TABLE stats_hourly_classes (
        hour BIGINT NOT NULL,
        site TEXT NOT NULL,
        station TEXT NOT NULL,
        camera TEXT NOT NULL,
        class TEXT NOT NULL,
        defects BIGINT NOT NULL,
        inspections BIGINT NOT NULL,
        PRIMARY KEY (hour, site, station, camera, class)
    );
    CREATE TABLE stats_minute (
        minute BIGINT NOT NULL,
        site TEXT NOT NULL,
        station TEXT NOT NULL,
        camera TEXT NOT NULL,
        ok BIGINT NOT NULL,
        ng BIGINT NOT NULL,
        failsafe BIGINT NOT NULL,
        PRIMARY KEY (minute, site, station, camera)
    );
    CREATE TABLE stats_minute_classes (
        minute BIGINT NOT NULL,
        site TEXT NOT NULL,
        station TEXT NOT NULL,
        camera TEXT NOT NULL,
        class TEXT NOT NULL,
        defects BIGINT NOT NULL,
        inspections BIGINT NOT NULL,
        PRIMARY KEY (minute, site, station, camera, class)
    );
    CREATE TABLE stations (
        site TEXT NOT NULL,
        station TEXT NOT NULL,
        last_record_ms BIGINT,
        status JSONB,
        status_ms BIGINT,
        PRIMARY KEY (site, station)
    );
    CREATE TABLE parked (
        id BIGSERIAL PRIMARY KEY,
        subject TEXT NOT NULL,
        reason TEXT NOT NULL,
        payload BYTEA NOT NULL,
        parked_ms BIGINT NOT NULL,
        parked_by TEXT NOT NULL
    );",
];

/// The schema version this build writes and reads.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// An arbitrary constant: the advisory lock key the hubs migrate under.
const MIGRATION_LOCK: i64 = 0x6c69_6e65_7369_6768;

/// Bring the schema up to [`VERSION`]; returns the version found before. A database newer than
/// this build is refused (an older hub must not write to a newer schema).
pub async fn migrate(client: &mut Client) -> anyhow::Result<i64> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let found: i64 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?.get(0);
    if found > VERSION {
        anyhow::bail!(
            "the hub database has schema version {found}, newer than this build's {VERSION}: upgrade linesight, or point [postgres] url at another database"
        );
    }
    for (v, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&(v as i64 + 1)]).await?;
        tracing::info!(version = v + 1, "hub database schema migrated");
    }
    tx.commit().await?;
    Ok(found)
}
