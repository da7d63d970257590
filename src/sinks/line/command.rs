//! The command adapter, for benches and bring-up: every line event as one JSON line on the
//! station's stdout, or on the standard input of a program it starts (`program = [...]`).
//! A program that exits or stops reading makes its events undelivered, counted; the line goes on.

use super::event::{ErrorCode, LineEvent, StationStatus};
use super::{AdapterContext, PartOutcome};
use crate::config::CommandConfig;
use serde_json::{Value, json};
use std::time::Instant;
use tokio::io::AsyncWriteExt;

/// Serve line events until the queue closes (the station stopped).
pub async fn run(cfg: CommandConfig, mut events: tokio::sync::mpsc::Receiver<LineEvent>, ctx: AdapterContext) {
    let mut child = None;
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &cfg.program {
        Some(program) => {
            let spawned = tokio::process::Command::new(&program[0])
                .args(&program[1..])
                .stdin(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn();
            match spawned {
                Ok(mut c) => {
                    let stdin = c.stdin.take().expect("stdin was piped");
                    child = Some(c);
                    Box::new(stdin)
                }
                Err(e) => {
                    tracing::error!(program = %program[0], error = %e, "line command adapter: cannot start the program; its events are counted undelivered");
                    Box::new(tokio::io::sink())
                }
            }
        }
        None => Box::new(tokio::io::stdout()),
    };
    let up = child.is_some() || cfg.program.is_none();
    ctx.metrics.link_up.set(i64::from(up));
    let mut late = crate::telemetry::burst::Burst::new(
        "command adapter: rejects not delivered (past their fire window); counted in linesight_line_undelivered_total",
    );
    let mut last_ready = false;
    while let Some(event) = events.recv().await {
        let now = Instant::now();
        if let LineEvent::Status(status) = &event {
            last_ready = status.ready;
        }
        if let LineEvent::Reject { outcome, .. } = &event {
            if !ctx.may_fire(outcome, now) {
                ctx.metrics.undelivered.inc();
                late.failed(&format!("reject for camera {} seq {} not delivered", outcome.camera, outcome.seq));
                continue;
            }
            late.ok();
        }
        let mut line = event_json(&event, &ctx).to_string();
        line.push('\n');
        let t0 = Instant::now();
        let written = if up { out.write_all(line.as_bytes()).await.and(out.flush().await) } else { Ok(()) };
        match written {
            Ok(()) if up => ctx.metrics.write_seconds.observe(t0.elapsed().as_secs_f64()),
            _ => {
                if ctx.metrics.link_up.get() == 1 {
                    tracing::error!(
                        adapter = ctx.name,
                        "line command adapter: the program stopped reading; events are counted undelivered"
                    );
                }
                ctx.metrics.link_up.set(0);
                ctx.metrics.write_errors.inc();
                if matches!(event, LineEvent::Reject { .. } | LineEvent::Result(_) | LineEvent::StopLine { .. }) {
                    ctx.metrics.undelivered.inc();
                }
            }
        }
    }
    // The events ended while the line last said "ready" (its thread died): never leave the
    // program believing it.
    if last_ready && up {
        let stopping = LineEvent::Status(StationStatus { ready: false, error: ErrorCode::Stopping });
        let mut line = event_json(&stopping, &ctx).to_string();
        line.push('\n');
        let _ = out.write_all(line.as_bytes()).await.and(out.flush().await);
    }
    drop(out);
    if let Some(mut c) = child {
        let _ = c.wait().await;
    }
}

/// An outcome as the JSON every text adapter (command, MQTT, webhook) sends.
pub fn outcome_json(o: &PartOutcome, ctx: &AdapterContext) -> Value {
    json!({
        "station": ctx.station,
        "result_id": o.result_id,
        "camera": o.camera,
        "seq": o.seq,
        "part_id": o.part_id.as_ref().map(|p| p.as_str()),
        "verdict": o.verdict,
        "failsafe": o.failsafe,
        "class_code": o.class_code,
        "action": o.action,
        "deadline_ns": ctx.clock.ns(o.deadline),
        "decided_ns": ctx.clock.ns(o.decided_at),
    })
}

/// Any line event as JSON: `{"event": "result" | "reject" | "stop_line" | "status" | "heartbeat", ...}`.
pub fn event_json(event: &LineEvent, ctx: &AdapterContext) -> Value {
    let now_ns = ctx.clock.ns(Instant::now());
    match event {
        LineEvent::Result(o) => json!({"event": "result", "sent_ns": now_ns, "part": outcome_json(o, ctx)}),
        LineEvent::Reject { outcome, pulse } => json!({
            "event": "reject",
            "sent_ns": now_ns,
            "pulse_ms": pulse.as_secs_f64() * 1e3,
            "part": outcome_json(outcome, ctx),
        }),
        LineEvent::StopLine { outcome } => {
            json!({"event": "stop_line", "sent_ns": now_ns, "part": outcome_json(outcome, ctx)})
        }
        LineEvent::Status(s) => {
            json!({"event": "status", "sent_ns": now_ns, "ready": s.ready, "error": s.error, "error_code": s.error.code()})
        }
        LineEvent::Heartbeat(v) => json!({"event": "heartbeat", "sent_ns": now_ns, "value": v}),
    }
}
