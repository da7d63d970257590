//! Supervision: every long-running thread of a station (cameras, preprocess, inference,
//! assembler, line, its adapters and writers, store, archive, results) runs under one
//! [`Supervisor`]. A thread that panics, or ends with an error before the station was asked to
//! stop, is a *stage failure*:
//!
//! - readiness drops at once, for good (`/readyz` 503 naming the stage, `linesight_ready 0`, the
//!   PLC's station-ready bit 0 with error code "stage failed");
//! - it is counted (`linesight_stage_failures_total{stage}`) and logged at once;
//! - the station stops capturing, so the pipeline drains; the line still acts on every part it
//!   has registered, at its deadline (parts without a verdict get the fail-safe action);
//! - `linesight run` then exits non-zero, so the service manager restarts it.
//!
//! A station that keeps running with a dead stage would report ready while judging nothing.

use crate::telemetry::Readiness;
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Watches the station's threads; see the module docs.
pub struct Supervisor {
    readiness: Arc<Readiness>,
    /// The station's stop flag: set on a failure, so capture stops and the pipeline drains.
    stop: Arc<AtomicBool>,
    failures: prometheus::IntCounterVec,
    failed: OnceLock<String>,
    /// CPU time each stage's threads used, added as each thread ends.
    cpu: Mutex<BTreeMap<&'static str, Duration>>,
}

impl Supervisor {
    /// A supervisor reporting into `readiness`, with its counter registered in `registry`.
    pub fn new(readiness: Arc<Readiness>, registry: Option<&prometheus::Registry>) -> prometheus::Result<Arc<Self>> {
        use crate::telemetry::names::{STAGE, STAGE_FAILURES, STAGE_FAILURES_HELP};
        let failures =
            prometheus::IntCounterVec::new(prometheus::Opts::new(STAGE_FAILURES, STAGE_FAILURES_HELP), &[STAGE])?;
        if let Some(registry) = registry {
            registry.register(Box::new(failures.clone()))?;
        }
        Ok(Arc::new(Self {
            readiness,
            stop: Arc::new(AtomicBool::new(false)),
            failures,
            failed: OnceLock::new(),
            cpu: Mutex::default(),
        }))
    }

    /// A supervisor for a station without telemetry (tests, `eval`).
    pub fn standalone() -> Arc<Self> {
        Self::new(Arc::new(Readiness::default()), None).expect("an unregistered counter cannot clash")
    }

    /// The station's stop flag (SIGINT/SIGTERM set it too).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Record a stage failure (see the module docs). Only the first one is kept as the cause.
    pub fn fail(&self, stage: &str, cause: &str) {
        self.failures.with_label_values(&[stage]).inc();
        tracing::error!(
            stage,
            cause,
            "STAGE FAILED: the station cannot judge parts any more; it stops capturing, the line acts on the parts it holds, and the process exits non-zero to be restarted"
        );
        let first = self.failed.set(format!("stage {stage} failed: {cause}")).is_ok();
        if first {
            self.readiness.stage_failed(stage, cause);
        }
        self.stop.store(true, Relaxed);
    }

    /// The first stage failure, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    /// Run `f` on a new thread named `name`; a panic in it is a failure of `stage`.
    pub fn spawn(
        self: &Arc<Self>,
        name: String,
        stage: &'static str,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        let me = Arc::clone(self);
        std::thread::Builder::new().name(name).spawn(move || {
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                me.fail(stage, &format!("panicked: {}", panic_message(&*panic)));
            }
            if let Some(spent) = crate::telemetry::cpu_time::this_thread() {
                *me.cpu.lock().unwrap_or_else(|e| e.into_inner()).entry(stage).or_default() += spent;
            }
        })
    }

    /// CPU time used by the threads of each stage that have ended (all of them once the station
    /// has stopped), by stage name. ONNX Runtime's own intra-op threads are not among them.
    pub fn cpu_by_stage(&self) -> BTreeMap<&'static str, Duration> {
        self.cpu.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Like [`Self::spawn`], for a thread whose end with an error is a failure too.
    pub fn spawn_fallible<E: std::fmt::Display>(
        self: &Arc<Self>,
        name: String,
        stage: &'static str,
        f: impl FnOnce() -> Result<(), E> + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        let me = Arc::clone(self);
        self.spawn(name, stage, move || {
            if let Err(e) = f() {
                me.fail(stage, &format!("ended with an error: {e}"));
            }
        })
    }
}

/// The text a panic was raised with.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Fault injection for tests and the fault suite: the named stage panics at its `after`-th
/// unit of work (frame, batch, verdict or record; 1-based). Set with
/// `LINESIGHT_FAULT_PANIC="stage=NAME,after=N"`; never on by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanicFault {
    pub stage: String,
    pub after: u64,
}

impl PanicFault {
    pub const ENV: &'static str = "LINESIGHT_FAULT_PANIC";
    /// The stages that have a fault point.
    pub const STAGES: [&'static str; 8] =
        ["camera", "preprocess", "infer", "assemble", "line", "store", "archive", "results"];

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut stage = None;
        let mut after = None;
        for part in text.split(',') {
            match part.trim().split_once('=') {
                Some(("stage", v)) => stage = Self::STAGES.iter().find(|s| **s == v).map(|s| s.to_string()),
                Some(("after", v)) => after = v.parse::<u64>().ok().filter(|n| *n > 0),
                _ => {}
            }
        }
        match (stage, after) {
            (Some(stage), Some(after)) => Ok(Self { stage, after }),
            _ => Err(format!(
                "{}={text:?}: expected stage=NAME,after=N (N ≥ 1; NAME one of {})",
                Self::ENV,
                Self::STAGES.join(", ")
            )),
        }
    }

    /// The fault set in the environment, read once.
    pub fn from_env() -> Option<&'static PanicFault> {
        static FAULT: OnceLock<Option<PanicFault>> = OnceLock::new();
        FAULT.get_or_init(|| std::env::var(Self::ENV).ok().and_then(|t| Self::parse(&t).ok())).as_ref()
    }
}

/// A stage's fault point: panics when [`PanicFault`] names this stage and its count `n` has
/// reached `after` (counts may advance by more than one, e.g. a batch of records).
pub fn fault_point(stage: &'static str, n: u64) {
    if let Some(f) = PanicFault::from_env()
        && n >= f.after
        && f.stage == stage
    {
        panic!("FAULT INJECTION: stage {stage} panics at unit {n} ({} is set)", PanicFault::ENV);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_thread_fails_its_stage_drops_readiness_and_stops_the_station() {
        let readiness = Arc::new(Readiness::default());
        let registry = prometheus::Registry::new();
        let sup = Supervisor::new(Arc::clone(&readiness), Some(&registry)).unwrap();
        let stop = sup.stop_flag();
        sup.spawn("worker".into(), "infer", || {}).unwrap().join().unwrap();
        assert!(sup.failure().is_none() && !stop.load(Relaxed), "a thread that ends normally is no failure");
        sup.spawn("worker".into(), "infer", || panic!("boom")).unwrap().join().unwrap();
        assert_eq!(sup.failure(), Some("stage infer failed: panicked: boom"));
        assert!(stop.load(Relaxed));
        assert_eq!(readiness.stage_failure(), sup.failure());
        sup.spawn_fallible("w".into(), "store", || Err::<(), _>("disk gone")).unwrap().join().unwrap();
        assert_eq!(sup.failure(), Some("stage infer failed: panicked: boom"), "the first failure is the cause");
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        assert!(text.contains("linesight_stage_failures_total{stage=\"infer\"} 1"), "{text}");
        assert!(text.contains("linesight_stage_failures_total{stage=\"store\"} 1"), "{text}");
    }

    #[test]
    fn panic_fault_parses_only_known_stages() {
        assert_eq!(PanicFault::parse("stage=assemble,after=3"), Ok(PanicFault { stage: "assemble".into(), after: 3 }));
        assert!(PanicFault::parse("stage=nowhere,after=3").is_err());
        assert!(PanicFault::parse("stage=line,after=0").is_err());
    }
}
