//! Config values as the durations the station runs on, and the limits that keep them usable.
//!
//! The validator accepts a rate, delay or timeout only if the checked conversion here succeeds
//! (`checked_*`), and the run time converts with the total functions below, which clamp instead of
//! panicking. So a value `check` accepts converts exactly, and no value, accepted or not, can make
//! a conversion panic (`Duration::from_secs_f64` panics on NaN, negatives and overflow).

use super::{CameraConfig, LineConfig, ModbusConfig, PipelineConfig, WebhookConfig};
use std::time::Duration;

/// The longest delay, timeout or period any setting may ask for: one hour. Anything longer is a
/// typo (or a unit mix-up) on a production line, and keeps `Instant + delay` far from overflow.
pub const MAX_DURATION_MS: u64 = 3_600_000;
/// [`MAX_DURATION_MS`] as a duration.
pub const MAX_DURATION: Duration = Duration::from_millis(MAX_DURATION_MS);
/// Fastest capture rate a camera may ask for, frames per second.
pub const MAX_FPS: f64 = 10_000.0;
/// Slowest capture rate other than 0 (as fast as the source): one frame per [`MAX_DURATION`].
pub const MIN_FPS: f64 = 1.0 / 3600.0;

/// `s` seconds, if it is a finite number in `[0, MAX_DURATION]`.
pub fn checked_secs_f64(s: f64) -> Option<Duration> {
    if !(0.0..=MAX_DURATION.as_secs_f64()).contains(&s) {
        return None;
    }
    Duration::try_from_secs_f64(s).ok()
}

/// `ms` milliseconds, if it is a finite number in `[0, MAX_DURATION_MS]` (converted as
/// `ms / 1000` seconds, as the run time does).
pub fn checked_millis_f64(ms: f64) -> Option<Duration> {
    checked_secs_f64(ms / 1000.0)
}

/// `ms` milliseconds clamped into `[0, MAX_DURATION]` (NaN: zero). Never panics.
pub fn millis_f64(ms: f64) -> Duration {
    checked_millis_f64(ms).unwrap_or(if ms > 0.0 { MAX_DURATION } else { Duration::ZERO })
}

/// `ms` milliseconds, if at most [`MAX_DURATION_MS`].
pub fn checked_millis(ms: u64) -> Option<Duration> {
    (ms <= MAX_DURATION_MS).then(|| Duration::from_millis(ms))
}

/// `ms` milliseconds, at most [`MAX_DURATION`].
pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms.min(MAX_DURATION_MS))
}

/// The capture period at `fps`, if `fps` is in `[MIN_FPS, MAX_FPS]`.
pub fn checked_frame_period(fps: f64) -> Option<Duration> {
    if !(MIN_FPS..=MAX_FPS).contains(&fps) {
        return None;
    }
    Duration::try_from_secs_f64(1.0 / fps).ok()
}

/// The capture period at `fps`: `None` for 0 (or less, or NaN): as fast as the source gives
/// frames. A rate outside `[MIN_FPS, MAX_FPS]` is clamped into it. Never panics.
pub fn frame_period(fps: f64) -> Option<Duration> {
    if fps.is_nan() || fps <= 0.0 {
        return None;
    }
    checked_frame_period(fps.clamp(MIN_FPS, MAX_FPS)).or(Some(MAX_DURATION))
}

/// The line's delay from capture to the reject actuator in seconds (`delay_ms`, or
/// `delay_counts / encoder_counts_per_s`), if it is a usable duration: finite, more than zero
/// and at most [`MAX_DURATION`].
pub fn checked_line_delay(line: &LineConfig) -> Option<Duration> {
    let usable = match (line.delay_ms, line.delay_counts, line.encoder_counts_per_s) {
        (Some(_), None, _) => true,
        (None, Some(_), Some(rate)) => rate.is_finite() && rate > 0.0,
        _ => false,
    };
    checked_secs_f64(line.delay_s()).filter(|d| usable && !d.is_zero())
}

impl CameraConfig {
    /// Time between captures; `None`: as fast as the source gives frames (`fps = 0`).
    pub fn frame_period(&self) -> Option<Duration> {
        frame_period(self.fps)
    }
    /// No frame for this long marks the camera down.
    pub fn stall_timeout(&self) -> Duration {
        millis(self.stall_timeout_ms)
    }
    /// First reconnect wait.
    pub fn reconnect_initial(&self) -> Duration {
        millis(self.reconnect_initial_ms)
    }
    /// Longest wait for the camera to open.
    pub fn open_timeout(&self) -> Duration {
        millis(self.open_timeout_ms)
    }
    /// Frames older than this on arrival are stale (default: twice the stall timeout).
    pub fn max_frame_age(&self) -> Duration {
        millis(self.max_frame_age_ms.unwrap_or(self.stall_timeout_ms.saturating_mul(2)))
    }
    /// Longest reconnect wait.
    pub fn reconnect_max(&self) -> Duration {
        millis(self.reconnect_max_ms)
    }
}

impl PipelineConfig {
    /// How long a worker waits for more tiles before running a partial batch.
    pub fn max_wait(&self) -> Duration {
        Duration::from_micros(self.max_wait_us).min(MAX_DURATION)
    }
    /// A verdict later than this after capture is replaced by FAILSAFE (timeout).
    pub fn verdict_deadline(&self) -> Duration {
        millis(self.verdict_deadline_ms)
    }
}

impl LineConfig {
    /// Time from capture (or trigger) to the reject actuator.
    pub fn delay(&self) -> Duration {
        checked_line_delay(self).unwrap_or_else(|| millis_f64(self.delay_s() * 1000.0))
    }
    /// How long before the deadline a verdict must be ready.
    pub fn margin(&self) -> Duration {
        millis_f64(self.margin_ms)
    }
    /// How long the reject output stays on.
    pub fn pulse(&self) -> Duration {
        millis_f64(self.pulse_ms)
    }
    /// How late after its deadline a reject may still fire (default half the pulse).
    pub fn fire_window(&self) -> Duration {
        millis_f64(self.fire_window_ms.unwrap_or(self.pulse_ms / 2.0))
    }
    /// Period of the heartbeat the PLC watches.
    pub fn heartbeat(&self) -> Duration {
        millis(self.heartbeat_ms)
    }
}

impl ModbusConfig {
    /// One request's time limit.
    pub fn timeout(&self) -> Duration {
        millis(self.timeout_ms.max(1))
    }
    /// How often the PLC's input block is read.
    pub fn poll(&self) -> Duration {
        millis(self.poll_ms.max(1))
    }
    /// First reconnect wait.
    pub fn reconnect_initial(&self) -> Duration {
        millis(self.reconnect_initial_ms.max(1))
    }
    /// Longest reconnect wait (never below the first).
    pub fn reconnect_max(&self) -> Duration {
        millis(self.reconnect_max_ms).max(self.reconnect_initial())
    }
}

impl WebhookConfig {
    /// One attempt's time limit.
    pub fn timeout(&self) -> Duration {
        millis(self.timeout_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_clamp_instead_of_panicking() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 1e22, f64::MAX] {
            assert_eq!(checked_millis_f64(bad), None, "{bad}");
            assert!(millis_f64(bad) <= MAX_DURATION);
        }
        assert_eq!(millis_f64(1e22), MAX_DURATION);
        assert_eq!(millis_f64(-5.0), Duration::ZERO);
        assert_eq!(checked_millis_f64(250.0), Some(Duration::from_millis(250)));
        assert_eq!(frame_period(0.0), None);
        assert_eq!(frame_period(f64::NAN), None);
        assert_eq!(checked_frame_period(1e-20), None);
        assert_eq!(frame_period(1e-20), Some(MAX_DURATION));
        assert_eq!(frame_period(1e9), Some(Duration::from_micros(100)));
        assert_eq!(checked_frame_period(4.0), Some(Duration::from_millis(250)));
        assert_eq!(millis(u64::MAX), MAX_DURATION);
        assert_eq!(checked_millis(MAX_DURATION_MS + 1), None);
    }
}
