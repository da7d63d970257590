//! The reject audit trail (`[line] events`): one JSON line per part when its deadline passes —
//! what was decided, why, and when it fired (or, for a missed reject, when the line got to it) —
//! and one per late or untracked verdict. Written by a thread of its own so that file I/O never
//! delays a deadline; that thread polls its queue rather than blocking on it, so the line
//! thread's `try_send` never takes a lock it shares with it (see [`crate::pipeline::handoff`]).
//!
//! Times are `CLOCK_MONOTONIC` nanoseconds (comparable with a peer's `time.monotonic_ns()` on the
//! same machine) plus the wall clock of the decision.

use super::clock::MonoClock;
use super::event::{FailsafeReason, LineAction, LineVerdict, PartOutcome};
use crate::frame::PartId;
use crossbeam_channel::{Sender, TryRecvError, bounded};
use serde::Serialize;
use std::io::{BufWriter, Write};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the writer looks for records: a trail a few milliseconds behind costs nothing.
const POLL: Duration = Duration::from_millis(10);

/// What became of a part (or a verdict) at the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Its reject fired at the deadline.
    Fired,
    /// It passed (OK, or fail-safe `pass`).
    Passed,
    /// Its reject was due but the fire window had passed: not fired.
    Missed,
    /// A verdict after the part's decision time: recorded, not acted on.
    LateVerdict,
    /// A verdict for a part the line never registered: not acted on.
    Untracked,
}

/// One audit line, built on the line thread without allocating.
#[derive(Clone, Copy, Debug)]
pub struct AuditRecord {
    pub fate: Fate,
    pub result_id: Option<u64>,
    pub camera: u16,
    pub seq: u64,
    pub part_id: Option<PartId>,
    pub verdict: LineVerdict,
    pub failsafe: Option<FailsafeReason>,
    pub class_code: u16,
    pub action: Option<LineAction>,
    pub deadline: Option<Instant>,
    pub decided_at: Instant,
    pub fired_at: Option<Instant>,
    /// For a missed reject: when the line thread got to it (past its fire window).
    pub missed_at: Option<Instant>,
}

impl AuditRecord {
    pub fn of(o: &PartOutcome, fired_at: Option<Instant>, fate: Fate) -> Self {
        Self {
            fate,
            result_id: Some(o.result_id),
            camera: o.camera,
            seq: o.seq,
            part_id: o.part_id,
            verdict: o.verdict,
            failsafe: o.failsafe,
            class_code: o.class_code,
            action: Some(o.action),
            deadline: Some(o.deadline),
            decided_at: o.decided_at,
            fired_at,
            missed_at: None,
        }
    }

    /// A reject that was due but whose fire window had passed when the line got to it at `at`.
    pub fn missed(o: &PartOutcome, at: Instant) -> Self {
        Self { missed_at: Some(at), ..Self::of(o, None, Fate::Missed) }
    }

    /// A verdict that was not acted on (late or untracked), seen at `at`.
    pub fn late(camera: u16, seq: u64, part_id: Option<PartId>, verdict: LineVerdict, at: Instant, fate: Fate) -> Self {
        Self {
            fate,
            result_id: None,
            camera,
            seq,
            part_id,
            verdict,
            failsafe: None,
            class_code: 0,
            action: None,
            deadline: None,
            decided_at: at,
            fired_at: None,
            missed_at: None,
        }
    }
}

/// Start the writer thread; records sent to the returned queue are appended to `file`. The
/// thread ends once every sender is gone and the queue is written out: join it before exiting.
pub fn spawn(
    file: std::fs::File,
    cameras: Vec<String>,
    clock: MonoClock,
) -> std::io::Result<(Sender<AuditRecord>, JoinHandle<()>)> {
    let (tx, rx) = bounded::<AuditRecord>(8192);
    let writer = std::thread::Builder::new().name("line-events".into()).spawn(move || {
        let mut out = BufWriter::new(file);
        let mut failed = false;
        loop {
            let r = match rx.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Empty) => {
                    let _ = out.flush();
                    std::thread::sleep(POLL);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            };
            let line = serde_json::json!({
                "fate": r.fate,
                "result_id": r.result_id,
                "camera": cameras.get(usize::from(r.camera)),
                "seq": r.seq,
                "part_id": r.part_id.as_ref().map(|p| p.as_str()),
                "verdict": r.verdict,
                "failsafe": r.failsafe,
                "class_code": r.class_code,
                "action": r.action,
                "deadline_ns": r.deadline.map(|d| clock.ns(d)),
                "decided_ns": clock.ns(r.decided_at),
                "fired_ns": r.fired_at.map(|f| clock.ns(f)),
                "missed_ns": r.missed_at.map(|m| clock.ns(m)),
            });
            if let Err(e) = writeln!(out, "{line}")
                && !failed
            {
                failed = true;
                tracing::error!(error = %e, "writing the line events file failed; audit records are being lost");
            }
        }
        let _ = out.flush();
    })?;
    Ok((tx, writer))
}
