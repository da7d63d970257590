//! Times the line's peers can compare: `CLOCK_MONOTONIC` nanoseconds, the clock Rust's
//! [`Instant`] reads on Linux and Python's `time.monotonic_ns()` reads too, so a PLC simulator
//! or a test on the same machine can measure when an action arrived against its deadline.

use std::time::{Duration, Instant};

/// Converts [`Instant`]s to `CLOCK_MONOTONIC` nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct MonoClock {
    base: Instant,
    base_ns: u64,
}

impl MonoClock {
    pub fn new() -> Self {
        // Read the clock between two Instants and pair it with their midpoint; keep the
        // tightest of a few tries, so a preemption between the reads cannot skew the pair.
        let mut best: Option<(Duration, Self)> = None;
        for _ in 0..5 {
            let before = Instant::now();
            let ns = monotonic_ns();
            let after = Instant::now();
            let spread = after - before;
            if best.as_ref().is_none_or(|(s, _)| spread < *s) {
                best = Some((spread, Self { base: before + spread / 2, base_ns: ns }));
            }
        }
        best.map(|(_, clock)| clock).expect("five tries")
    }

    /// `at` as `CLOCK_MONOTONIC` nanoseconds.
    pub fn ns(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.base) {
            Some(d) => self.base_ns + d.as_nanos() as u64,
            None => self.base_ns.saturating_sub((self.base - at).as_nanos() as u64),
        }
    }

    /// `CLOCK_MONOTONIC` nanoseconds as an [`Instant`].
    pub fn instant(&self, ns: u64) -> Instant {
        if ns >= self.base_ns {
            self.base + Duration::from_nanos(ns - self.base_ns)
        } else {
            self.base - Duration::from_nanos(self.base_ns - ns)
        }
    }
}

fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Default for MonoClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_monotonic_nanoseconds_agree() {
        let clock = MonoClock::new();
        let now = Instant::now();
        let ns = monotonic_ns();
        // Both read the same clock: only the time between the reads (and a preemption) differs.
        let diff = ns as i64 - clock.ns(now) as i64;
        assert!(diff.abs() < 1_000_000, "clock pair off by {diff} ns");
        let back = clock.instant(clock.ns(now));
        assert!(back.max(now) - back.min(now) < Duration::from_micros(1));
    }
}
