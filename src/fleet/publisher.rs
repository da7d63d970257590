//! The fleet thread's work: connect, then publish the outbox, send the status and watch the
//! recipes until told to stop.

use super::connect::{self, Credentials};
// The stream is the hub's to make (its replicas are the plant's choice): until it exists,
// publishes fail and the records wait in the outbox.
use super::outbox::Outbox;
use super::wire::{self, CameraStatus, Status};
use super::{FleetMetrics, StationLink, now_ms, sleep_or_stop};
use async_nats::HeaderMap;
use async_nats::jetstream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::Mutex;

/// How long to wait for the stream's acknowledgements of one batch.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle wait when the outbox is empty: new rows appear in the store's batches.
const POLL: Duration = Duration::from_millis(100);
/// How long a status may take to send and be acknowledged.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stopping station keeps publishing what its outbox holds.
const DRAIN: Duration = Duration::from_secs(5);
/// Longest wait between retries while the link is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) async fn run(
    link: StationLink,
    outbox: Outbox,
    nkey: Option<String>,
    metrics: FleetMetrics,
    stop: Arc<AtomicBool>,
) {
    let link = Arc::new(link);
    let metrics = Arc::new(metrics);
    let creds = Credentials { user: link.config.user.clone(), password: link.config.password.clone(), nkey_seed: nkey };
    let name = format!("linesight-station {}.{}", link.site, link.station);
    let client = loop {
        match connect::connect(&link.config.servers, &name, &creds).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "fleet: cannot connect to NATS; retrying");
                if sleep_or_stop(&stop, MAX_BACKOFF).await {
                    return;
                }
            }
        }
    };
    let js = jetstream::new(client.clone());
    let outbox = Arc::new(Mutex::new(outbox));
    let fetched = Arc::new(std::sync::Mutex::new(super::recipes::already_fetched(&link.store)));
    let publish = publish_outbox(&link, &js, &client, &outbox, &metrics, &stop);
    let status = send_status(&link, &js, &outbox, &metrics, &fetched, &stop);
    let recipes = super::recipes::watch(&link, &js, &metrics, &fetched, &stop);
    tokio::join!(publish, status, recipes);
    let _ = client.flush().await;
}

async fn publish_outbox(
    link: &StationLink,
    js: &jetstream::Context,
    client: &async_nats::Client,
    outbox: &Mutex<Outbox>,
    metrics: &FleetMetrics,
    stop: &AtomicBool,
) {
    let subject = wire::inspections_subject(&link.site, &link.station);
    let mut backoff = Duration::from_millis(200);
    // Told to stop, it still sends what the outbox holds, for up to DRAIN (the link permitting).
    let mut draining: Option<std::time::Instant> = None;
    loop {
        if stop.load(Relaxed) {
            let since = *draining.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= DRAIN {
                return;
            }
        }
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        metrics.link_up.set(i64::from(connected));
        if !connected {
            // Nothing is handed to the client while it is disconnected: its buffer would fill
            // with copies of one batch (and then block), while the rows wait safely in the store.
            if sleep_or_stop(stop, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        let batch = {
            let mut ob = outbox.lock().await;
            match ob.next_batch(link.config.batch, now_ms()) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "fleet: cannot read the outbox; retrying");
                    drop(ob);
                    if sleep_or_stop(stop, MAX_BACKOFF).await {
                        return;
                    }
                    continue;
                }
            }
        };
        let Some(last) = batch.last().map(|r| r.row) else {
            if stop.load(Relaxed) {
                return; // drained
            }
            // Woken early by a stop, the loop reads the outbox once more before it ends.
            sleep_or_stop(stop, POLL).await;
            continue;
        };
        match publish_batch(js, &subject, &batch).await {
            Ok(()) => {
                backoff = Duration::from_millis(200);
                metrics.published.inc_by(batch.len() as u64);
                if let Err(e) = outbox.lock().await.ack(last, now_ms()) {
                    // Published but the cursor did not move: the rows go again (same ids, dropped).
                    tracing::warn!(error = %e, "fleet: cannot move the outbox cursor");
                }
            }
            Err(e) => {
                metrics.publish_errors.inc();
                tracing::warn!(error = %e, rows = batch.len(), "fleet: publish failed; the rows stay in the outbox and go again");
                if sleep_or_stop(stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Publish every record of `batch` (pipelined), then wait for every acknowledgement.
async fn publish_batch(js: &jetstream::Context, subject: &str, batch: &[wire::Inspection]) -> Result<(), String> {
    let mut acks = Vec::with_capacity(batch.len());
    for rec in batch {
        let payload = serde_json::to_vec(rec).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, rec.msg_id().as_str());
        let ack = js
            .publish_with_headers(subject.to_string(), headers, payload.into())
            .await
            .map_err(|e| format!("publish: {e}"))?;
        acks.push(ack);
    }
    let all = futures_util::future::join_all(acks.into_iter().map(|a| a.into_future()));
    let results = tokio::time::timeout(ACK_TIMEOUT, all)
        .await
        .map_err(|_| format!("no acknowledgement within {ACK_TIMEOUT:?}"))?;
    for r in results {
        r.map_err(|e| format!("acknowledgement: {e}"))?;
    }
    Ok(())
}

async fn send_status(
    link: &StationLink,
    js: &jetstream::Context,
    outbox: &Mutex<Outbox>,
    metrics: &FleetMetrics,
    fetched: &std::sync::Mutex<Vec<wire::FetchedRecipe>>,
    stop: &AtomicBool,
) {
    let subject = wire::status_subject(&link.site, &link.station);
    let started_ms = now_ms();
    let interval = Duration::from_millis(link.config.status_interval_ms);
    let mut last: Option<(i64, Vec<u64>)> = None;
    loop {
        let now = now_ms();
        let lag = outbox.lock().await.lag(now);
        let lag = match lag {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "fleet: cannot read the outbox's lag");
                wire::OutboxStatus::default()
            }
        };
        metrics.unsent.set(lag.unsent);
        metrics.oldest_unsent_age_s.set(lag.oldest_unsent_ms.map_or(0, |t| (now - t).max(0) / 1000));
        if lag.near_retention && metrics.near_retention.get() == 0 {
            tracing::error!(
                unsent = lag.unsent,
                "fleet: the unsent records near the store's retention and will be deleted unsent: restore the link to the hub or raise [store] retention"
            );
        }
        metrics.near_retention.set(i64::from(lag.near_retention));
        let cameras = camera_status(link, now, &mut last);
        let status = Status {
            v: wire::VERSION,
            site: link.site.clone(),
            station: link.station.clone(),
            started_ms,
            sent_ms: now,
            api_url: link.config.api_url.clone(),
            cameras,
            outbox: lag,
            recipes_fetched: fetched.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        };
        // Best effort, and only while connected: the next status replaces a lost one, and the
        // metrics above must go on being updated however long the link is down.
        if let (Ok(payload), true) = (serde_json::to_vec(&status), link_up(js)) {
            let sent = tokio::time::timeout(STATUS_TIMEOUT, async {
                if let Ok(ack) = js.publish(subject.clone(), payload.into()).await {
                    let _ = ack.into_future().await;
                }
            });
            let _ = sent.await;
        }
        if sleep_or_stop(stop, interval).await {
            return;
        }
    }
}

fn link_up(js: &jetstream::Context) -> bool {
    js.client().connection_state() == async_nats::connection::State::Connected
}

/// Per camera: the recipe and model it runs, its counts, and its rate since the last status.
fn camera_status(link: &StationLink, now: i64, last: &mut Option<(i64, Vec<u64>)>) -> Vec<CameraStatus> {
    let snaps = link.accounting.snapshot();
    let recipes = &link.recipes;
    let names = recipes.switch.recipe_names();
    let decided: Vec<u64> = snaps.iter().map(|s| s.ok + s.ng + s.failsafe()).collect();
    let rates: Vec<f64> = match last {
        Some((t, prev)) if now > *t => decided
            .iter()
            .zip(prev.iter())
            .map(|(d, p)| d.saturating_sub(*p) as f64 * 1000.0 / (now - *t) as f64)
            .collect(),
        _ => vec![0.0; decided.len()],
    };
    *last = Some((now, decided));
    snaps
        .iter()
        .enumerate()
        .map(|(c, s)| {
            let slot = recipes.switch.wanted(c);
            let model = recipes.models.get(usize::from(slot));
            let recipe = recipes.switch.recipe_of(slot).and_then(|r| names.get(usize::from(r)).cloned());
            CameraStatus {
                camera: s.id.clone(),
                recipe,
                model_name: model.map(|m| m.model_name.clone()),
                model_sha256: model.map(|m| m.model_sha256.clone()),
                captured: s.captured,
                ok: s.ok,
                ng: s.ng,
                failsafe: s.failsafe(),
                parts_per_s: rates.get(c).copied().unwrap_or(0.0),
            }
        })
        .collect()
}
