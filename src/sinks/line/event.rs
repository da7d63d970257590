//! What the line thread tells the adapters, and what adapters tell it back. Adapters translate
//! these into their protocol (Modbus registers and coils, MQTT messages, webhook posts, JSON
//! lines); they never decide anything themselves.

use crate::frame::PartId;
use serde::Serialize;
use std::time::Instant;

/// A part's verdict as the line sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LineVerdict {
    Ok,
    Ng,
    /// No usable verdict: see [`FailsafeReason`].
    Failsafe,
}

impl LineVerdict {
    /// The Modbus verdict register's code: 1 OK, 2 NG, 3 fail-safe (0 = no result).
    pub fn code(self) -> u16 {
        match self {
            LineVerdict::Ok => 1,
            LineVerdict::Ng => 2,
            LineVerdict::Failsafe => 3,
        }
    }
}

/// Why a part got the fail-safe action (the `reason` label of the fail-safe metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailsafeReason {
    /// No verdict by `deadline - margin` (inference stalled or slow, frame dropped, queue full).
    NoVerdict,
    /// The pipeline decided FAILSAFE because inference failed.
    InferenceError,
    /// The pipeline decided FAILSAFE because a tile's output never came.
    PipelineTimeout,
    /// The pipeline decided FAILSAFE because the model's outputs were not finite.
    InvalidOutput,
}

impl FailsafeReason {
    pub const ALL: [FailsafeReason; 4] = [
        FailsafeReason::NoVerdict,
        FailsafeReason::InferenceError,
        FailsafeReason::PipelineTimeout,
        FailsafeReason::InvalidOutput,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            FailsafeReason::NoVerdict => "no_verdict",
            FailsafeReason::InferenceError => "inference_error",
            FailsafeReason::PipelineTimeout => "pipeline_timeout",
            FailsafeReason::InvalidOutput => "invalid_output",
        }
    }
}

/// What the line does with a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineAction {
    Pass,
    /// Pulse the reject output at the deadline.
    Reject,
    /// Stop the line now (fail-safe `stop_line`); the part is rejected at its deadline too.
    StopLine,
}

/// A part's final outcome, decided at most once: when its verdict arrives in time, or by the
/// fail-safe at `deadline - margin`.
#[derive(Clone, Copy, Debug)]
pub struct PartOutcome {
    /// 1, 2, 3, … in decision order; the Modbus result id is its low 16 bits (never 0).
    pub result_id: u64,
    pub camera: u16,
    pub seq: u64,
    pub part_id: Option<PartId>,
    pub verdict: LineVerdict,
    pub failsafe: Option<FailsafeReason>,
    /// The most severe counted defect's class index + 1; 0 = none.
    pub class_code: u16,
    pub action: LineAction,
    /// When the part reaches the reject actuator.
    pub deadline: Instant,
    pub decided_at: Instant,
}

impl PartOutcome {
    /// The Modbus result id: the low 16 bits of `result_id`, skipping 0 (which means "none").
    pub fn short_id(&self) -> u16 {
        ((self.result_id - 1) % 65_535 + 1) as u16
    }
}

/// The station's health as the line sees it: `ready` drops when the pipeline cannot decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StationStatus {
    pub ready: bool,
    /// 0 when ready; else the first problem (see [`ErrorCode`]).
    pub error: ErrorCode,
}

/// The error register's codes (documented in the README's register map).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    None = 0,
    /// Model loading or warming up; pipeline not yet running.
    Starting = 1,
    /// A camera delivers no frames.
    CameraDown = 2,
    /// Inference failed in the last heartbeat period.
    InferenceFailing = 3,
    /// The station is stopping.
    Stopping = 4,
    /// A pipeline, line or output stage died: the station cannot judge parts and is exiting.
    StageFailed = 5,
    /// The model's outputs are not finite (NaN or infinity) batch after batch.
    InvalidOutput = 6,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        self as u16
    }
}

/// Line thread → adapters.
#[derive(Clone, Copy, Debug)]
pub enum LineEvent {
    /// A part was decided (sent at once, ahead of its deadline): handshake results, result
    /// messages, webhook posts.
    Result(PartOutcome),
    /// The part's deadline is now and its action is a reject: pulse the reject output for
    /// `pulse`. Sent at the deadline, never after it by more than the thread's wake-up delay.
    Reject { outcome: PartOutcome, pulse: std::time::Duration },
    /// Fail-safe `stop_line`: set the stop-line output now.
    StopLine { outcome: PartOutcome },
    /// Ready or not, sent when it changes and with every heartbeat.
    Status(StationStatus),
    /// The heartbeat toggled to this value (every `heartbeat_ms`).
    Heartbeat(bool),
}
