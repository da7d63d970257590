//! The HTTP webhook adapter: each part's result (and each reject, stop-line and status change)
//! POSTed as JSON (the same JSON as the command adapter) as soon as the line thread hands it
//! over.
//!
//! Each attempt is limited to `timeout_ms`, and never runs past the part's window (a result's is
//! its deadline, a reject's or stop-line's the fire window after it): an attempt is cut off
//! there, and none starts after it — the part is then counted undelivered. A failed attempt
//! (connection error, timeout, a non-2xx answer) counts as a write error and is retried up to
//! `retries` times after a short backoff. Posts run concurrently (at most [`CONCURRENCY`]), so
//! one slow answer never holds back the next part's post. A receiver that got a request but
//! whose answer was lost may see it again on retry: every body carries `result_id` to dedupe.

use super::command::event_json;
use super::{AdapterContext, LineEvent};
use crate::config::WebhookConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Posts in flight at once.
pub const CONCURRENCY: usize = 8;
/// First wait before a retry; doubled per retry.
const RETRY_BACKOFF: Duration = Duration::from_millis(2);
/// A status change (no deadline of its own) is given this long.
const STATUS_WINDOW: Duration = Duration::from_secs(2);

/// What one post is for, and until when it may be attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub end: Instant,
    /// A part's result or action: counted undelivered if it cannot be posted in its window.
    pub part: bool,
}

/// `event`'s window, or `None` for events that are not posted (heartbeats).
pub fn window(event: &LineEvent, ctx: &AdapterContext, now: Instant) -> Option<Window> {
    match event {
        LineEvent::Result(o) => Some(Window { end: o.deadline, part: true }),
        LineEvent::Reject { outcome, .. } | LineEvent::StopLine { outcome } => {
            Some(Window { end: outcome.deadline + ctx.fire_window, part: true })
        }
        LineEvent::Status(_) => Some(Window { end: now + STATUS_WINDOW, part: false }),
        LineEvent::Heartbeat(_) => None,
    }
}

/// Serve line events until the queue closes (the station stopped).
pub async fn run(cfg: WebhookConfig, mut events: tokio::sync::mpsc::Receiver<LineEvent>, ctx: AdapterContext) {
    ctx.metrics.link_up.set(0);
    let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
    let client = reqwest::Client::builder()
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        // A proxy from the environment would add a hop (and its timing) the line did not ask for.
        .no_proxy()
        .build();
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(adapter = ctx.name, error = %e, "line webhook adapter: cannot build the HTTP client; its events are counted undelivered");
            while let Some(event) = events.recv().await {
                if window(&event, &ctx, Instant::now()).is_some_and(|w| w.part) {
                    ctx.metrics.undelivered.inc();
                }
            }
            return;
        }
    };
    let poster = Arc::new(Poster {
        client,
        url: cfg.url,
        token: cfg.token,
        timeout,
        retries: cfg.retries,
        ctx: ctx.clone(),
        failing: AtomicBool::new(false),
        failures: AtomicU64::new(0),
    });
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(event) = events.recv().await {
        let now = Instant::now();
        let Some(w) = window(&event, &ctx, now) else { continue };
        if now >= w.end {
            if w.part {
                ctx.metrics.undelivered.inc();
            }
            continue;
        }
        // All posts busy: wait for one, but not past this one's window.
        let permit = tokio::select! {
            biased;
            p = Arc::clone(&permits).acquire_owned() => p.expect("the semaphore is never closed"),
            () = tokio::time::sleep_until(w.end.into()) => {
                if w.part {
                    ctx.metrics.undelivered.inc();
                }
                continue;
            }
        };
        let body = event_json(&event, &ctx).to_string();
        let poster = Arc::clone(&poster);
        tokio::spawn(async move {
            poster.deliver(body, w).await;
            drop(permit);
        });
    }
    // Wait for the posts in flight (each ends by its window).
    let _ = permits.acquire_many(CONCURRENCY as u32).await;
    ctx.metrics.link_up.set(0);
}

struct Poster {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
    timeout: Duration,
    retries: u32,
    ctx: AdapterContext,
    /// In a burst of failures (logged once, at its start).
    failing: AtomicBool,
    failures: AtomicU64,
}

impl Poster {
    /// Post `body` until one attempt succeeds, the retries are spent, or the window closes.
    async fn deliver(&self, body: String, w: Window) {
        let mut backoff = RETRY_BACKOFF;
        for attempt in 0..=self.retries {
            let now = Instant::now();
            if attempt > 0 {
                // Back off, unless that would end past the window.
                if now + backoff >= w.end {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            let start = Instant::now();
            if start >= w.end {
                break;
            }
            match self.attempt(&body, self.timeout.min(w.end - start)).await {
                Ok(()) => {
                    self.ctx.metrics.write_seconds.observe(start.elapsed().as_secs_f64());
                    self.ctx.metrics.link_up.set(1);
                    if self.failing.swap(false, Ordering::Relaxed) {
                        let failures = self.failures.swap(0, Ordering::Relaxed);
                        tracing::info!(adapter = self.ctx.name, url = %self.url, failures, "line webhook adapter: posts succeed again");
                    }
                    return;
                }
                Err(e) => {
                    self.ctx.metrics.write_errors.inc();
                    self.ctx.metrics.link_up.set(0);
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::error!(adapter = self.ctx.name, url = %self.url, error = %e, "line webhook adapter: post failed (retried within the part's window; counted, logged once per burst)");
                    }
                }
            }
        }
        if w.part {
            self.ctx.metrics.undelivered.inc();
        }
    }

    /// One POST, answered 2xx within `limit`.
    async fn attempt(&self, body: &str, limit: Duration) -> Result<(), String> {
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_owned())
            .timeout(limit);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| describe(&e))?;
        let status = response.status();
        // Read the (small) answer so that the connection can be reused.
        let _ = response.bytes().await;
        if status.is_success() { Ok(()) } else { Err(format!("HTTP {status}")) }
    }
}

/// A reqwest error with its cause (its Display alone is often just "error sending request").
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() { "timed out".to_string() } else { e.to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::line::event::{ErrorCode, LineAction, LineVerdict, PartOutcome, StationStatus};

    fn ctx() -> AdapterContext {
        AdapterContext::detached("webhook", Duration::from_millis(10))
    }

    fn outcome(deadline: Instant) -> PartOutcome {
        PartOutcome {
            result_id: 1,
            camera: 0,
            seq: 0,
            part_id: None,
            verdict: LineVerdict::Ok,
            failsafe: None,
            class_code: 0,
            action: LineAction::Pass,
            deadline,
            decided_at: deadline,
        }
    }

    #[test]
    fn windows() {
        let ctx = ctx();
        let now = Instant::now();
        let d = now + Duration::from_millis(40);
        assert_eq!(window(&LineEvent::Result(outcome(d)), &ctx, now), Some(Window { end: d, part: true }));
        let reject = LineEvent::Reject { outcome: outcome(d), pulse: Duration::from_millis(20) };
        assert_eq!(window(&reject, &ctx, now).unwrap().end, d + Duration::from_millis(10));
        let status = LineEvent::Status(StationStatus { ready: false, error: ErrorCode::Starting });
        assert!(!window(&status, &ctx, now).unwrap().part);
        assert_eq!(window(&LineEvent::Heartbeat(true), &ctx, now), None);
    }

    /// Nobody listening: every attempt fails at once, is retried inside the window, and the part
    /// ends undelivered; a part already past its deadline is never attempted.
    #[tokio::test(flavor = "current_thread")]
    async fn unreachable_receiver_counts_undelivered() {
        let ctx = ctx();
        let m = ctx.metrics.clone();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg =
            WebhookConfig { url: format!("http://127.0.0.1:{port}/line"), timeout_ms: 20, retries: 2, token: None };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let task = tokio::spawn(run(cfg, rx, ctx));
        let now = Instant::now();
        tx.send(LineEvent::Result(outcome(now + Duration::from_millis(500)))).await.unwrap();
        tx.send(LineEvent::Result(outcome(now - Duration::from_millis(1)))).await.unwrap();
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        assert_eq!(m.undelivered.get(), 2);
        assert_eq!(m.write_errors.get(), 3, "one attempt and two retries for the first part only");
        assert_eq!(m.link_up.get(), 0);
    }
}
