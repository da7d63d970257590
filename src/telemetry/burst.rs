//! Rate-limited logging for a failing condition that can repeat per part or per write (a PLC
//! answering exceptions, parts decided by the fail-safe): one line when it starts, a summary at
//! most every [`LOG_SUMMARY_EVERY`], and one line when it ends.

use std::time::{Duration, Instant};

/// How often a continuing burst is summarised.
pub const LOG_SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// Logs a failing condition once when it starts, then a summary at most every
/// [`LOG_SUMMARY_EVERY`], and once more when it ends.
pub struct Burst {
    what: &'static str,
    failing: bool,
    total: u64,
    unreported: u64,
    last_report: Instant,
    last: String,
}

impl Burst {
    pub fn new(what: &'static str) -> Self {
        Self { what, failing: false, total: 0, unreported: 0, last_report: Instant::now(), last: String::new() }
    }

    pub fn failed(&mut self, detail: &str) {
        self.total += 1;
        if !self.failing {
            self.failing = true;
            self.last_report = Instant::now();
            tracing::error!(detail, "{}", self.what);
            return;
        }
        self.unreported += 1;
        detail.clone_into(&mut self.last);
        if self.last_report.elapsed() >= LOG_SUMMARY_EVERY {
            tracing::warn!(more = self.unreported, total = self.total, last = %self.last, "{} (still)", self.what);
            self.unreported = 0;
            self.last_report = Instant::now();
        }
    }

    pub fn ok(&mut self) {
        if self.failing {
            tracing::info!(failures = self.total, "{}: recovered", self.what);
            self.failing = false;
            self.total = 0;
            self.unreported = 0;
        }
    }
}
