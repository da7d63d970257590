//! The hub's ingest: a durable JetStream pull consumer, shared by every hub process, writing to
//! PostgreSQL in batches. A batch is acknowledged only after its transaction commits, and rows are
//! unique by message id, so a hub that dies mid-batch, a redelivery or a second hub never writes a
//! row twice. A message that cannot be read is parked (kept in `parked` with the reason) and
//! acknowledged: it is never retried for ever, and the hub goes on.

use super::HubMetrics;
use super::pg::{IngestDb, Pg};
use crate::fleet::wire::{self, Subject};
use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio_postgres::Transaction;

/// How long an unacknowledged message waits before it goes to another hub.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// A class roll-up row's key: (time unit, site, station, camera, class).
type ClassUnit<'a> = (i64, &'a str, &'a str, &'a str, &'a str);

/// One message, read.
enum Parsed {
    Inspection(Box<wire::Inspection>),
    Status(Box<wire::Status>),
    Unreadable(String),
}

/// What a message says, or why it cannot be used.
fn parse(subject: &str, payload: &[u8]) -> Parsed {
    let check = |site: &str, station: &str, s: &str, t: &str| {
        if site != s || station != t {
            Err(format!("the message names {site}.{station} but came on the subject of {s}.{t}"))
        } else {
            Ok(())
        }
    };
    match Subject::parse(subject) {
        None => Parsed::Unreadable(format!("not a linesight subject: {subject}")),
        Some(Subject::Inspections { site, station }) => match serde_json::from_slice::<wire::Inspection>(payload) {
            Err(e) => Parsed::Unreadable(format!("not a linesight inspection: {e}")),
            Ok(rec) => match check(&rec.site, &rec.station, site, station).and_then(|()| valid(&rec)) {
                Ok(()) => Parsed::Inspection(Box::new(rec)),
                Err(why) => Parsed::Unreadable(why),
            },
        },
        Some(Subject::Status { site, station }) => match serde_json::from_slice::<wire::Status>(payload) {
            Err(e) => Parsed::Unreadable(format!("not a linesight station status: {e}")),
            Ok(st) => match check(&st.site, &st.station, site, station) {
                Ok(()) => Parsed::Status(Box::new(st)),
                Err(why) => Parsed::Unreadable(why),
            },
        },
    }
}

/// What the schema would refuse, refused here with a reason instead.
fn valid(rec: &wire::Inspection) -> Result<(), String> {
    if rec.v == 0 {
        return Err("message version 0".into());
    }
    if !crate::config::fleet::is_fleet_id(&rec.store_uid) {
        return Err(format!("store_uid {:?} is not an id", rec.store_uid));
    }
    if rec.camera.is_empty() || rec.row <= 0 {
        return Err("a record needs a camera and a row id > 0".into());
    }
    Ok(())
}

/// Who this hub is and how it takes its work.
pub struct Settings {
    /// The durable consumer the hubs share.
    pub consumer: String,
    /// Messages per fetch and transaction.
    pub batch: usize,
    /// Recorded with every row this hub writes.
    pub hub_id: String,
    /// Copies of the stream (on a cluster).
    pub replicas: usize,
}

/// Run until `stop`: fetch a batch, write it, acknowledge it.
pub async fn run(
    js: jetstream::Context,
    client: async_nats::Client,
    pg: Arc<Pg>,
    settings: Settings,
    metrics: Arc<HubMetrics>,
    stop: Arc<AtomicBool>,
) {
    let Settings { consumer: consumer_name, batch, hub_id, replicas } = settings;
    let consumer = loop {
        match consumer(&js, &consumer_name, replicas).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "hub: cannot reach the stream's consumer yet; retrying");
                if wait(&stop, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    };
    tracing::info!(consumer = %consumer_name, "hub: ingesting");
    let mut db = IngestDb::new(pg);
    let mut last_info = Instant::now() - Duration::from_secs(60);
    while !stop.load(Relaxed) {
        metrics.nats_up.set(i64::from(client.connection_state() == async_nats::connection::State::Connected));
        if last_info.elapsed() >= Duration::from_secs(2) {
            last_info = Instant::now();
            if let Ok(info) = consumer.get_info().await {
                metrics.pending.set(info.num_pending as i64);
            }
        }
        // No PostgreSQL, no fetch: the messages wait in the stream, not in this process.
        let conn = match db.client().await {
            Ok(c) => c,
            Err(e) => {
                metrics.postgres_up.set(0);
                tracing::warn!(error = %e, "hub: PostgreSQL unreachable; not taking messages");
                if wait(&stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        metrics.postgres_up.set(1);
        let messages = match fetch(&consumer, batch).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "hub: fetch failed; retrying");
                if wait(&stop, Duration::from_millis(500)).await {
                    return;
                }
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let parsed: Vec<Parsed> = messages.iter().map(|m| parse(m.subject.as_str(), &m.payload)).collect();
        let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
        let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_ref()).collect();
        let started = Instant::now();
        let written = write_batch(conn, &parsed, &subjects, &payloads, &hub_id, &metrics).await;
        match written {
            Ok(()) => {
                metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
                for m in &messages {
                    if let Err(e) = m.ack().await {
                        // Redelivered later; the unique message id keeps it from being written twice.
                        tracing::debug!(error = %e, "hub: acknowledgement lost");
                    }
                }
            }
            Err(e) => {
                metrics.write_errors.inc();
                tracing::warn!(error = %e, messages = messages.len(), "hub: batch not written; its messages come again");
                for m in &messages {
                    let _ = m.ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1)))).await;
                }
                if wait(&stop, Duration::from_millis(500)).await {
                    return;
                }
            }
        }
    }
}

async fn wait(stop: &AtomicBool, d: Duration) -> bool {
    crate::fleet::sleep_or_stop(stop, d).await
}

/// The shared durable consumer over the whole stream, made by the first hub.
async fn consumer(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<jetstream::consumer::Consumer<pull::Config>, async_nats::Error> {
    let stream: stream::Stream = crate::fleet::connect::stream(js, replicas).await?;
    let config = pull::Config {
        durable_name: Some(name.to_string()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        // Never given up on: a message that cannot be read is parked by the hub, and one that
        // cannot be written waits until PostgreSQL is back.
        max_deliver: -1,
        max_ack_pending: 50_000,
        ..Default::default()
    };
    Ok(stream.get_or_create_consumer(name, config).await?)
}

async fn fetch(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    batch: usize,
) -> Result<Vec<jetstream::Message>, async_nats::Error> {
    let mut msgs = consumer.fetch().max_messages(batch).expires(Duration::from_millis(500)).messages().await?;
    let mut out = Vec::with_capacity(batch);
    while let Some(m) = msgs.next().await {
        out.push(m?);
    }
    Ok(out)
}

/// Write one batch in one transaction; on a data error (one bad row), each message alone, so the
/// bad one is parked and the rest written.
async fn write_batch(
    db: &mut tokio_postgres::Client,
    parsed: &[Parsed],
    subjects: &[&str],
    payloads: &[&[u8]],
    hub_id: &str,
    metrics: &HubMetrics,
) -> Result<(), tokio_postgres::Error> {
    let all: Vec<usize> = (0..parsed.len()).collect();
    match write(db, parsed, subjects, payloads, &all, hub_id, metrics).await {
        Ok(()) => Ok(()),
        Err(e) if is_data_error(&e) => {
            tracing::warn!(error = %e, "hub: a batch with a row PostgreSQL refuses; writing its messages one by one");
            for i in 0..parsed.len() {
                if let Err(e) = write(db, parsed, subjects, payloads, &[i], hub_id, metrics).await {
                    if !is_data_error(&e) {
                        return Err(e);
                    }
                    let reason = [Parsed::Unreadable(format!("refused by PostgreSQL: {e}"))];
                    write(db, &reason, &subjects[i..=i], &payloads[i..=i], &[0], hub_id, metrics).await?;
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

/// The messages `which` of `parsed` in one transaction: new inspections (with their classes and
/// roll-ups), station statuses, parked messages.
async fn write(
    db: &mut tokio_postgres::Client,
    parsed: &[Parsed],
    subjects: &[&str],
    payloads: &[&[u8]],
    which: &[usize],
    hub_id: &str,
    metrics: &HubMetrics,
) -> Result<(), tokio_postgres::Error> {
    let now = crate::fleet::now_ms();
    let tx = db.transaction().await?;
    let records: Vec<&wire::Inspection> = which
        .iter()
        .filter_map(|&i| match &parsed[i] {
            Parsed::Inspection(r) => Some(r.as_ref()),
            _ => None,
        })
        .collect();
    let inserted = insert_inspections(&tx, &records, now, hub_id).await?;
    let mut statuses = 0;
    let mut parked = 0;
    let mut latest: BTreeMap<(&str, &str), &wire::Status> = BTreeMap::new();
    for &i in which {
        match &parsed[i] {
            Parsed::Status(s) => {
                statuses += 1;
                let e = latest.entry((s.site.as_str(), s.station.as_str())).or_insert(s);
                if s.sent_ms > e.sent_ms {
                    *e = s;
                }
            }
            Parsed::Unreadable(reason) => {
                parked += 1;
                tracing::warn!(subject = subjects[i], reason = %reason, "hub: message parked");
                tx.execute(
                    "INSERT INTO parked (subject, reason, payload, parked_ms, parked_by) VALUES ($1, $2, $3, $4, $5)",
                    &[&subjects[i], reason, &payloads[i], &now, &hub_id],
                )
                .await?;
            }
            Parsed::Inspection(_) => {}
        }
    }
    for ((site, station), st) in &latest {
        let status = serde_json::to_value(st).unwrap_or_default();
        tx.execute(
            "INSERT INTO stations (site, station, status, status_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (site, station) DO UPDATE SET status = excluded.status, status_ms = excluded.status_ms \
             WHERE stations.status_ms IS NULL OR stations.status_ms < excluded.status_ms",
            &[site, station, &status, &st.sent_ms],
        )
        .await?;
    }
    tx.commit().await?;
    metrics.ingested.inc_by(inserted.len() as u64);
    metrics.duplicates.inc_by((records.len() - inserted.len()) as u64);
    metrics.statuses.inc_by(statuses);
    metrics.parked.inc_by(parked);
    for r in &inserted {
        metrics.lag_seconds.observe(((now - r.decided_ms).max(0)) as f64 / 1000.0);
    }
    Ok(())
}

/// Insert the records not seen before; returns them. Then their classes, the roll-ups and the
/// stations' last record, in key order (two hubs lock the same roll-up rows in the same order).
async fn insert_inspections<'a>(
    tx: &Transaction<'_>,
    records: &[&'a wire::Inspection],
    now: i64,
    hub_id: &str,
) -> Result<Vec<&'a wire::Inspection>, tokio_postgres::Error> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let col = |f: &dyn Fn(&wire::Inspection) -> String| records.iter().map(|r| f(r)).collect::<Vec<String>>();
    let int = |f: &dyn Fn(&wire::Inspection) -> i64| records.iter().map(|r| f(r)).collect::<Vec<i64>>();
    let opt = |f: &dyn Fn(&wire::Inspection) -> Option<String>| records.iter().map(|r| f(r)).collect::<Vec<_>>();
    let real = |f: &dyn Fn(&wire::Inspection) -> Option<f64>| records.iter().map(|r| f(r)).collect::<Vec<_>>();
    let msg_id = col(&|r| r.msg_id());
    let site = col(&|r| r.site.clone());
    let station = col(&|r| r.station.clone());
    let store_uid = col(&|r| r.store_uid.clone());
    let row = int(&|r| r.row);
    let camera = col(&|r| r.camera.clone());
    let seq = int(&|r| r.seq);
    let part_id = opt(&|r| r.part_id.clone());
    let captured = int(&|r| r.captured_ms);
    let decided = int(&|r| r.decided_ms);
    let latency: Vec<f64> = records.iter().map(|r| r.latency_ms).collect();
    let verdict = col(&|r| r.verdict.as_str().to_string());
    let cause = opt(&|r| r.failsafe_cause.clone());
    let score = real(&|r| r.image_score);
    let threshold = real(&|r| r.threshold);
    let width = int(&|r| r.width);
    let height = int(&|r| r.height);
    let mm = real(&|r| r.mm_per_px);
    let truncated = int(&|r| r.defects_truncated);
    let recipe = opt(&|r| r.recipe.clone());
    let product = opt(&|r| r.product.clone());
    let model_name = col(&|r| r.model_name.clone());
    let model_sha = col(&|r| r.model_sha256.clone());
    let image = opt(&|r| r.image_path.clone());
    let defects: Vec<serde_json::Value> =
        records.iter().map(|r| serde_json::to_value(&r.defects).unwrap_or_default()).collect();
    let published = int(&|r| r.published_ms);
    let rows = tx
        .query(
            "INSERT INTO inspections (msg_id, site, station, store_uid, station_row, camera, seq, part_id, captured_ms, \
             decided_ms, latency_ms, verdict, failsafe_cause, image_score, threshold, width, height, mm_per_px, \
             defects_truncated, recipe, model_name, model_sha256, image_path, defects, published_ms, product, ingested_ms, \
             ingested_by) SELECT u.*, $27::int8, $28::text FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], \
             $6::text[], $7::int8[], $8::text[], $9::int8[], $10::int8[], $11::float8[], $12::text[], $13::text[], \
             $14::float8[], $15::float8[], $16::int8[], $17::int8[], $18::float8[], $19::int8[], $20::text[], \
             $21::text[], $22::text[], $23::text[], $24::jsonb[], $25::int8[], $26::text[]) AS u \
             ON CONFLICT (msg_id) DO NOTHING RETURNING id, msg_id",
            &[
                &msg_id, &site, &station, &store_uid, &row, &camera, &seq, &part_id, &captured, &decided, &latency,
                &verdict, &cause, &score, &threshold, &width, &height, &mm, &truncated, &recipe, &model_name,
                &model_sha, &image, &defects, &published, &product, &now, &hub_id,
            ],
        )
        .await?;
    // The first of a message id's records in the batch is the one written.
    let by_id: HashMap<&str, &wire::Inspection> =
        msg_id.iter().zip(records).rev().map(|(id, r)| (id.as_str(), *r)).collect();
    let mut inserted = Vec::with_capacity(rows.len());
    let mut class_rows: (Vec<i64>, Vec<String>, Vec<i64>) = Default::default();
    let mut last_record: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for row in &rows {
        let (id, key): (i64, &str) = (row.get(0), row.get(1));
        let Some(r) = by_id.get(key).copied() else { continue };
        inserted.push(r);
        for (class, n) in counted_classes(r) {
            class_rows.0.push(id);
            class_rows.1.push(class.to_string());
            class_rows.2.push(n);
        }
        let last = last_record.entry((&r.site, &r.station)).or_default();
        *last = (*last).max(r.decided_ms);
    }
    if !class_rows.0.is_empty() {
        tx.execute(
            "INSERT INTO inspection_classes (inspection_id, class, defects) SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[])",
            &[&class_rows.0, &class_rows.1, &class_rows.2],
        )
        .await?;
    }
    for rollup in &ROLLUPS {
        add_to_rollup(tx, rollup, &inserted).await?;
    }
    for ((site, station), last) in &last_record {
        tx.execute(
            "INSERT INTO stations (site, station, last_record_ms) VALUES ($1, $2, $3) ON CONFLICT (site, station) \
             DO UPDATE SET last_record_ms = GREATEST(COALESCE(stations.last_record_ms, 0), excluded.last_record_ms)",
            &[site, station, last],
        )
        .await?;
    }
    Ok(inserted)
}

/// A record's counted defects, per class.
fn counted_classes(r: &wire::Inspection) -> BTreeMap<&str, i64> {
    let mut per_class: BTreeMap<&str, i64> = BTreeMap::new();
    for d in r.defects.iter().filter(|d| d.counted) {
        *per_class.entry(&d.class).or_default() += 1;
    }
    per_class
}

/// A roll-up of verdict and class counts per station and camera over time units: hours (stats
/// over days read these) and minutes (the partial hours at a window's ends read these, so a busy
/// plant's current hour is never counted row by row).
#[derive(Debug)]
pub struct Rollup {
    /// The unit in ms.
    pub unit_ms: i64,
    /// The verdicts table and its unit column; the classes table is `<table>_classes`.
    pub table: &'static str,
    pub column: &'static str,
}

pub const ROLLUPS: [Rollup; 2] = [
    Rollup { unit_ms: 3_600_000, table: "stats_hourly", column: "hour" },
    Rollup { unit_ms: 60_000, table: "stats_minute", column: "minute" },
];

/// Add `records` to one roll-up, in key order (two hubs lock the same rows in the same order).
async fn add_to_rollup(
    tx: &Transaction<'_>,
    rollup: &Rollup,
    records: &[&wire::Inspection],
) -> Result<(), tokio_postgres::Error> {
    let mut verdicts: BTreeMap<(i64, &str, &str, &str), [i64; 3]> = BTreeMap::new();
    let mut classes: BTreeMap<ClassUnit, (i64, i64)> = BTreeMap::new();
    for r in records {
        let unit = r.captured_ms.div_euclid(rollup.unit_ms);
        verdicts.entry((unit, &r.site, &r.station, &r.camera)).or_default()[r.verdict as usize] += 1;
        for (class, n) in counted_classes(r) {
            let c = classes.entry((unit, &r.site, &r.station, &r.camera, class)).or_default();
            (c.0, c.1) = (c.0 + n, c.1 + 1);
        }
    }
    let (table, column) = (rollup.table, rollup.column);
    if !verdicts.is_empty() {
        let (mut u, mut si, mut st, mut ca, mut ok, mut ng, mut fs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((unit, site, station, camera), n) in &verdicts {
            u.push(*unit);
            si.push(*site);
            st.push(*station);
            ca.push(*camera);
            ok.push(n[0]);
            ng.push(n[1]);
            fs.push(n[2]);
        }
        tx.execute(
            &format!(
                "INSERT INTO {table} ({column}, site, station, camera, ok, ng, failsafe) \
                 SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::int8[]) \
                 ON CONFLICT ({column}, site, station, camera) DO UPDATE SET ok = {table}.ok + excluded.ok, \
                 ng = {table}.ng + excluded.ng, failsafe = {table}.failsafe + excluded.failsafe"
            ),
            &[&u, &si, &st, &ca, &ok, &ng, &fs],
        )
        .await?;
    }
    if !classes.is_empty() {
        let (mut u, mut si, mut st, mut ca, mut cl, mut d, mut n) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((unit, site, station, camera, class), (defects, inspections)) in &classes {
            u.push(*unit);
            si.push(*site);
            st.push(*station);
            ca.push(*camera);
            cl.push(*class);
            d.push(*defects);
            n.push(*inspections);
        }
        tx.execute(
            &format!(
                "INSERT INTO {table}_classes ({column}, site, station, camera, class, defects, inspections) \
                 SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[]) \
                 ON CONFLICT ({column}, site, station, camera, class) DO UPDATE SET \
                 defects = {table}_classes.defects + excluded.defects, \
                 inspections = {table}_classes.inspections + excluded.inspections"
            ),
            &[&u, &si, &st, &ca, &cl, &d, &n],
        )
        .await?;
    }
    Ok(())
}
