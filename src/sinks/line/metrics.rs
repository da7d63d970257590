//! The line output's metric handles, registered once when the line starts; the line thread and
//! the adapters only `inc`/`observe` them.

use super::event::FailsafeReason;
use crate::telemetry::names as n;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

/// Every line metric. Per-adapter handles are fetched by name with [`LineMetrics::adapter`].
pub struct LineMetrics {
    pub rejects: IntCounter,
    failsafe: IntCounterVec,
    /// `failsafe`'s series in [`FailsafeReason::ALL`] order, resolved once: the line thread
    /// counts without taking the vector's lock, which the scraper shares.
    failsafe_by_reason: [IntCounter; 4],
    pub deadline_misses: IntCounter,
    pub late_verdicts: IntCounter,
    pub untracked_verdicts: IntCounter,
    pub fire_lateness: Histogram,
    pub triggers: IntCounter,
    pub missed_triggers: IntCounter,
    pub results_overrun: IntCounter,
    pub ready: IntGauge,
    write_errors: IntCounterVec,
    undelivered: IntCounterVec,
    link_up: IntGaugeVec,
    write_seconds: HistogramVec,
}

/// One adapter's handles.
#[derive(Clone)]
pub struct AdapterMetrics {
    pub write_errors: IntCounter,
    pub undelivered: IntCounter,
    pub link_up: IntGauge,
    pub write_seconds: Histogram,
}

impl LineMetrics {
    /// Handles registered in `registry` when given (else they count unexported: tests).
    pub fn new(registry: Option<&prometheus::Registry>) -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let per_adapter = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &[n::ADAPTER]).unwrap();
        let buckets = || n::LINE_BUCKETS.to_vec();
        let failsafe =
            IntCounterVec::new(Opts::new(n::LINE_FAILSAFE_ACTIONS, n::LINE_FAILSAFE_ACTIONS_HELP), &[n::REASON])
                .expect("valid metric");
        // Every cause shows from the start (at 0), so alerts and dashboards see the series.
        let failsafe_by_reason = FailsafeReason::ALL.map(|reason| failsafe.with_label_values(&[reason.as_str()]));
        let m = Self {
            rejects: counter(n::LINE_REJECTS, n::LINE_REJECTS_HELP),
            failsafe,
            failsafe_by_reason,
            deadline_misses: counter(n::LINE_DEADLINE_MISSES, n::LINE_DEADLINE_MISSES_HELP),
            late_verdicts: counter(n::LINE_LATE_VERDICTS, n::LINE_LATE_VERDICTS_HELP),
            untracked_verdicts: counter(n::LINE_UNTRACKED_VERDICTS, n::LINE_UNTRACKED_VERDICTS_HELP),
            fire_lateness: Histogram::with_opts(
                HistogramOpts::new(n::LINE_FIRE_LATENESS_SECONDS, n::LINE_FIRE_LATENESS_SECONDS_HELP)
                    .buckets(buckets()),
            )
            .expect("valid metric"),
            triggers: counter(n::LINE_TRIGGERS, n::LINE_TRIGGERS_HELP),
            missed_triggers: counter(n::LINE_MISSED_TRIGGERS, n::LINE_MISSED_TRIGGERS_HELP),
            results_overrun: counter(n::LINE_RESULTS_OVERRUN, n::LINE_RESULTS_OVERRUN_HELP),
            ready: IntGauge::new(n::LINE_READY, n::LINE_READY_HELP).expect("valid metric"),
            write_errors: per_adapter(n::LINE_WRITE_ERRORS, n::LINE_WRITE_ERRORS_HELP),
            undelivered: per_adapter(n::LINE_UNDELIVERED, n::LINE_UNDELIVERED_HELP),
            link_up: IntGaugeVec::new(Opts::new(n::LINE_LINK_UP, n::LINE_LINK_UP_HELP), &[n::ADAPTER])
                .expect("valid metric"),
            write_seconds: HistogramVec::new(
                HistogramOpts::new(n::LINE_WRITE_SECONDS, n::LINE_WRITE_SECONDS_HELP).buckets(buckets()),
                &[n::ADAPTER],
            )
            .expect("valid metric"),
        };
        if let Some(r) = registry {
            let collectors: [Box<dyn prometheus::core::Collector>; 14] = [
                Box::new(m.rejects.clone()),
                Box::new(m.failsafe.clone()),
                Box::new(m.deadline_misses.clone()),
                Box::new(m.late_verdicts.clone()),
                Box::new(m.untracked_verdicts.clone()),
                Box::new(m.fire_lateness.clone()),
                Box::new(m.triggers.clone()),
                Box::new(m.missed_triggers.clone()),
                Box::new(m.results_overrun.clone()),
                Box::new(m.ready.clone()),
                Box::new(m.write_errors.clone()),
                Box::new(m.undelivered.clone()),
                Box::new(m.link_up.clone()),
                Box::new(m.write_seconds.clone()),
            ];
            for c in collectors {
                if let Err(e) = r.register(c) {
                    tracing::warn!(error = %e, "line metric not registered");
                }
            }
        }
        m
    }

    /// The fail-safe counter for one cause.
    pub fn failsafe(&self, reason: FailsafeReason) -> &IntCounter {
        let index = FailsafeReason::ALL.iter().position(|r| *r == reason).expect("ALL lists every reason");
        &self.failsafe_by_reason[index]
    }

    /// One adapter's handles (its series appear at 0 from the start).
    pub fn adapter(&self, name: &str) -> AdapterMetrics {
        AdapterMetrics {
            write_errors: self.write_errors.with_label_values(&[name]),
            undelivered: self.undelivered.with_label_values(&[name]),
            link_up: self.link_up.with_label_values(&[name]),
            write_seconds: self.write_seconds.with_label_values(&[name]),
        }
    }
}
