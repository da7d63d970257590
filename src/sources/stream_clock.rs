//! A stream's own timestamps mapped onto this process's monotonic clock, so a frame is stamped
//! with when it was taken, not when it arrived: a stream that stalls and then delivers its
//! backlog would otherwise hand over seconds-old parts as if just captured.
//!
//! Stream timestamps (GStreamer buffer times, V4L2 timestamps, through OpenCV's
//! `CAP_PROP_POS_MSEC`) have their own origin. The smallest `arrival − timestamp` seen is the
//! transport's latency floor; a frame taken at stream time `t` arrived no earlier than `t + floor`,
//! so it was captured at `t + floor`, and anything later than that it waited somewhere. The floor
//! may creep up by [`MAX_DRIFT`] of elapsed time, so a stream clock slower than ours does not make
//! fresh frames look old over a long run.

use std::time::{Duration, Instant};

/// How fast the latency floor may rise, as a fraction of elapsed time (1,000 ppm: crystal clocks
/// drift by tens of ppm).
pub const MAX_DRIFT: f64 = 1e-3;

#[derive(Debug)]
pub struct StreamClock {
    base: Instant,
    /// The latency floor (seconds, arrival − stream time) and when it was last lowered or crept.
    floor: Option<(f64, f64)>,
}

impl Default for StreamClock {
    fn default() -> Self {
        Self { base: Instant::now(), floor: None }
    }
}

impl StreamClock {
    /// Forget the floor (a reopened stream restarts its timestamps).
    pub fn reset(&mut self) {
        self.floor = None;
    }

    /// When a frame with stream time `stream_ms` that arrived at `arrived` was taken; `None`
    /// for a timestamp that is not one (zero, negative, not finite).
    pub fn captured_at(&mut self, stream_ms: f64, arrived: Instant) -> Option<Instant> {
        if !stream_ms.is_finite() || stream_ms <= 0.0 {
            return None;
        }
        let now = arrived.saturating_duration_since(self.base).as_secs_f64();
        let offset = now - stream_ms / 1000.0;
        let floor = match self.floor {
            None => offset,
            Some((floor, at)) => offset.min(floor + (now - at).max(0.0) * MAX_DRIFT),
        };
        self.floor = Some((floor, now));
        let captured = (stream_ms / 1000.0 + floor).min(now);
        Some(self.base + Duration::from_secs_f64(captured.max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_after_a_stall_is_stamped_with_when_it_was_taken() {
        let mut clock = StreamClock::default();
        let t0 = clock.base + Duration::from_secs(10);
        // 25 fps, each frame arriving 5 ms after it was taken.
        for i in 0..50u64 {
            let arrived = t0 + Duration::from_millis(40 * i + 5);
            let at = clock.captured_at(1000.0 + 40.0 * i as f64, arrived).unwrap();
            assert!(arrived - at <= Duration::from_millis(1), "fresh frame {i} aged {:?}", arrived - at);
        }
        // The stream stalls 3 s, then delivers the frames taken meanwhile all at once.
        let burst = t0 + Duration::from_millis(40 * 50 + 3000);
        let oldest = clock.captured_at(1000.0 + 40.0 * 50.0, burst).unwrap();
        let age = burst - oldest;
        assert!(age >= Duration::from_millis(2990), "backlog frame looks {age:?} old, should be ~3 s");
    }

    #[test]
    fn a_slow_stream_clock_does_not_age_fresh_frames_over_a_long_run() {
        let mut clock = StreamClock::default();
        let t0 = clock.base + Duration::from_secs(1);
        // The stream's clock runs 100 ppm slow: over an hour it falls 0.36 s behind ours.
        let mut worst = Duration::ZERO;
        for s in 0..3600u64 {
            let arrived = t0 + Duration::from_secs(s);
            let at = clock.captured_at(1.0 + s as f64 * 1000.0 * (1.0 - 1e-4), arrived).unwrap();
            worst = worst.max(arrived - at);
        }
        assert!(worst < Duration::from_millis(5), "fresh frames aged up to {worst:?}");
    }

    #[test]
    fn no_timestamp_is_no_capture_time() {
        let mut clock = StreamClock::default();
        assert!(clock.captured_at(0.0, Instant::now()).is_none());
        assert!(clock.captured_at(f64::NAN, Instant::now()).is_none());
    }
}
