//! Frame accounting: every captured frame ends in exactly one terminal state — inspected (OK/NG),
//! fail-safe (with its cause) or dropped (with its cause) — and these counters prove it.
//!
//! Plain atomics, updated where the state is reached; read by the status line, the final report
//! and (later) the metrics endpoint.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Why a captured frame was dropped without a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropCause {
    /// `drop_oldest`: the camera queue was full and this (older) frame made room.
    QueueFull,
    /// The frame cannot be inspected (no pixels, smaller than the model's minimum, not the
    /// calibrated size, a triggered part whose image could not be grabbed).
    InvalidFrame,
    /// The frame was older than the camera's `max_frame_age_ms` when it arrived (a stalled
    /// stream's backlog): not a fresh part.
    Stale,
}

impl DropCause {
    pub const ALL: [DropCause; 3] = [DropCause::QueueFull, DropCause::InvalidFrame, DropCause::Stale];
    pub fn as_str(self) -> &'static str {
        match self {
            DropCause::QueueFull => "queue_full",
            DropCause::InvalidFrame => "invalid_frame",
            DropCause::Stale => "stale",
        }
    }
}

/// Counters for one camera.
#[derive(Debug)]
pub struct CameraCounters {
    pub id: String,
    pub captured: AtomicU64,
    pub ok: AtomicU64,
    pub ng: AtomicU64,
    pub failsafe_inference_error: AtomicU64,
    pub failsafe_timeout: AtomicU64,
    pub failsafe_invalid_output: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_invalid_frame: AtomicU64,
    pub dropped_stale: AtomicU64,
    /// Grabs that produced no frame (unreadable file, decode error): not captured, so not part of
    /// the invariant, but counted.
    pub capture_errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub up: AtomicBool,
    /// Nanoseconds since the station's epoch at the last captured frame (0 = none yet).
    pub last_frame_ns: AtomicU64,
    /// Why the camera is down (empty while up). Written on state changes only, never per frame.
    down_reason: std::sync::Mutex<String>,
}

impl CameraCounters {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            captured: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            ng: AtomicU64::new(0),
            failsafe_inference_error: AtomicU64::new(0),
            failsafe_timeout: AtomicU64::new(0),
            failsafe_invalid_output: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            dropped_invalid_frame: AtomicU64::new(0),
            dropped_stale: AtomicU64::new(0),
            capture_errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            up: AtomicBool::new(false),
            last_frame_ns: AtomicU64::new(0),
            down_reason: std::sync::Mutex::new("not opened yet".into()),
        }
    }

    /// The camera delivers frames.
    pub fn set_up(&self) {
        if !self.up.swap(true, Relaxed) {
            self.down_reason.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// The camera is down, and why.
    pub fn set_down(&self, reason: &str) {
        self.up.store(false, Relaxed);
        let mut r = self.down_reason.lock().unwrap_or_else(|e| e.into_inner());
        r.clear();
        r.push_str(reason);
    }

    /// Why the camera is down (empty while it is up).
    pub fn down_reason(&self) -> String {
        if self.up.load(Relaxed) {
            return String::new();
        }
        self.down_reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn dropped(&self, cause: DropCause) {
        match cause {
            DropCause::QueueFull => &self.dropped_queue_full,
            DropCause::InvalidFrame => &self.dropped_invalid_frame,
            DropCause::Stale => &self.dropped_stale,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> CameraSnapshot {
        CameraSnapshot {
            id: self.id.clone(),
            captured: self.captured.load(Relaxed),
            ok: self.ok.load(Relaxed),
            ng: self.ng.load(Relaxed),
            failsafe_inference_error: self.failsafe_inference_error.load(Relaxed),
            failsafe_timeout: self.failsafe_timeout.load(Relaxed),
            failsafe_invalid_output: self.failsafe_invalid_output.load(Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Relaxed),
            dropped_invalid_frame: self.dropped_invalid_frame.load(Relaxed),
            dropped_stale: self.dropped_stale.load(Relaxed),
            capture_errors: self.capture_errors.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            up: self.up.load(Relaxed),
        }
    }
}

/// A copy of one camera's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CameraSnapshot {
    pub id: String,
    pub captured: u64,
    pub ok: u64,
    pub ng: u64,
    pub failsafe_inference_error: u64,
    pub failsafe_timeout: u64,
    pub failsafe_invalid_output: u64,
    pub dropped_queue_full: u64,
    pub dropped_invalid_frame: u64,
    pub dropped_stale: u64,
    pub capture_errors: u64,
    pub reconnects: u64,
    pub up: bool,
}

impl CameraSnapshot {
    pub fn inspected(&self) -> u64 {
        self.ok + self.ng
    }
    pub fn failsafe(&self) -> u64 {
        self.failsafe_inference_error + self.failsafe_timeout + self.failsafe_invalid_output
    }
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_invalid_frame + self.dropped_stale
    }
    /// Frames that reached a terminal state.
    pub fn terminal(&self) -> u64 {
        self.inspected() + self.failsafe() + self.dropped()
    }
    /// Captured frames not yet in a terminal state (0 once the pipeline is drained).
    pub fn in_flight(&self) -> i64 {
        self.captured as i64 - self.terminal() as i64
    }
}

/// The whole station's counters.
#[derive(Debug)]
pub struct Accounting {
    pub epoch: Instant,
    pub cameras: Vec<CameraCounters>,
    /// Inspection records the results output could not take in time (the verdict still counts).
    pub results_dropped: AtomicU64,
    /// Verdicts the line output's queue had no room for (their parts fail safe at the line).
    pub line_dropped: AtomicU64,
    /// Captured parts the line output's registration queue had no room for (never acted on).
    pub line_untracked: AtomicU64,
    /// Inspection records the result store's queue could not take in time (the store fell behind).
    pub store_dropped: AtomicU64,
    /// Inspection records the result store committed, and batches it failed to write.
    pub store_written: AtomicU64,
    pub store_errors: AtomicU64,
    /// Frames the archive queue could not take in time (the archive fell behind), frames the
    /// archive wrote, and writes that failed; `archive_degraded` is set while writes fail.
    pub archive_dropped_queue_full: AtomicU64,
    pub archive_written: AtomicU64,
    pub archive_errors: AtomicU64,
    pub archive_degraded: AtomicBool,
    pub inference_errors: AtomicU64,
    /// Batches whose outputs held a NaN or an infinity for at least one item, and how many such
    /// batches came in a row (reset by a clean batch): readiness drops while it is high.
    pub invalid_output_batches: AtomicU64,
    pub invalid_output_streak: AtomicU64,
    /// Batches run, tiles in them (padding excluded), and time spent inside `Session::run`
    /// summed over workers: worker utilisation = busy / (wall time × workers).
    pub batches: AtomicU64,
    pub batch_tiles: AtomicU64,
    pub infer_busy_ns: AtomicU64,
}

impl Accounting {
    pub fn new(camera_ids: &[String]) -> Self {
        Self {
            epoch: Instant::now(),
            cameras: camera_ids.iter().map(|id| CameraCounters::new(id)).collect(),
            results_dropped: AtomicU64::new(0),
            line_dropped: AtomicU64::new(0),
            line_untracked: AtomicU64::new(0),
            store_dropped: AtomicU64::new(0),
            store_written: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            archive_dropped_queue_full: AtomicU64::new(0),
            archive_written: AtomicU64::new(0),
            archive_errors: AtomicU64::new(0),
            archive_degraded: AtomicBool::new(false),
            inference_errors: AtomicU64::new(0),
            invalid_output_batches: AtomicU64::new(0),
            invalid_output_streak: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_tiles: AtomicU64::new(0),
            infer_busy_ns: AtomicU64::new(0),
        }
    }

    pub fn camera(&self, index: u16) -> &CameraCounters {
        &self.cameras[index as usize]
    }

    pub fn snapshot(&self) -> Vec<CameraSnapshot> {
        self.cameras.iter().map(CameraCounters::snapshot).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_add_up() {
        let c = CameraCounters::new("a");
        c.captured.fetch_add(5, Relaxed);
        c.ok.fetch_add(1, Relaxed);
        c.ng.fetch_add(1, Relaxed);
        c.failsafe_timeout.fetch_add(1, Relaxed);
        c.dropped(DropCause::QueueFull);
        let s = c.snapshot();
        assert_eq!(s.terminal(), 4);
        assert_eq!(s.in_flight(), 1);
    }
}
