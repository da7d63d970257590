//! The line thread: the one place that decides what the line does, and when.
//!
//! It registers every captured part (from the camera threads), takes verdicts (from the
//! assembler), wakes at each part's decision time and deadline ([`Schedule`]), toggles the
//! heartbeat, derives station-ready from the station's health, and hands [`LineEvent`]s to the
//! adapters, which run on a tokio runtime of their own thread. Everything between them is a
//! bounded queue that is never waited on, and the line thread sleeps in `park_timeout`, never in
//! a channel (see [`crate::pipeline::handoff`] for why).

use super::audit::{self, AuditRecord, Fate};
use super::event::{ErrorCode, FailsafeReason, LineAction, LineEvent, LineVerdict, StationStatus};
use super::metrics::LineMetrics;
use super::schedule::{Due, Schedule, Timing, VerdictIn, VerdictOutcome};
use super::{ADAPTER_QUEUE_DEPTH, AdapterContext, MonoClock};
use crate::config::{CameraTrigger, LineConfig, LoadedConfig};
use crate::pipeline::handoff::{self, Handoff, Inbox, Wakeup};
use crate::pipeline::messages::Inspection;
use crate::pipeline::{CapturedPart, LineTap, Trigger};
use crate::pipeline::{FailsafeCause, Verdict};
use crate::supervise::Supervisor;
use crate::telemetry::Readiness;
use crate::telemetry::burst::Burst;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Parts registered but not yet past their deadline that the line can hold; a camera whose part
/// cannot be registered is counted (see `Accounting::line_untracked`) and its verdict ignored.
pub const PARTS_QUEUE_DEPTH: usize = 4096;

/// The running line output. [`LineOutput::finish`] waits for the last deadline after the
/// pipeline has drained.
pub struct LineOutput {
    parts: Handoff<CapturedPart>,
    verdicts: Sender<Inspection>,
    /// Wakes the line thread: whoever sends `verdicts` calls it after each one.
    wake: Wakeup,
    camera_triggers: Vec<Option<Inbox<Trigger>>>,
    thread: JoinHandle<()>,
    io: JoinHandle<()>,
    /// The `[line] events` writer, which ends after the line thread.
    audit_writer: Option<JoinHandle<()>>,
    /// The CPU wake-latency request (see [`super::priority`]), released when the line stops.
    _cpu_wake_latency: Option<std::fs::File>,
    pub metrics: Arc<LineMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum LineStartError {
    #[error("line output: cannot open the events file {path}: {source} (check the folder exists and is writable)")]
    Events { path: std::path::PathBuf, source: std::io::Error },
    #[error("line output: cannot start its threads: {0}")]
    Spawn(std::io::Error),
}

impl LineOutput {
    /// Start the adapters and the line thread. They report "not ready" until the station is.
    pub fn start(
        cfg: &LineConfig,
        loaded: &LoadedConfig,
        readiness: Arc<Readiness>,
        registry: Option<&prometheus::Registry>,
        supervisor: &Arc<Supervisor>,
        recipes: Option<Arc<crate::pipeline::RecipeSwitch>>,
    ) -> Result<Self, LineStartError> {
        let metrics = Arc::new(LineMetrics::new(registry));
        let realtime = cfg.realtime;
        let cpu_wake_latency =
            if realtime { super::priority::hold_cpu_wake_latency(cfg.cpu_wake_latency_us) } else { None };
        let clock = MonoClock::new();
        let timing = Timing {
            // The config's helpers never panic on a value (validated ranges keep them exact).
            delay: cfg.delay(),
            margin: cfg.margin(),
            pulse: cfg.pulse(),
            fire_window: cfg.fire_window(),
            failsafe: cfg.failsafe,
        };
        let cameras: Vec<String> = loaded.config.cameras.iter().map(|c| c.id.clone()).collect();
        let audit = match &cfg.events {
            Some(path) => {
                let path = loaded.resolve(path);
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|source| LineStartError::Events { path: path.clone(), source })?;
                Some(audit::spawn(file, cameras.clone(), clock).map_err(LineStartError::Spawn)?)
            }
            None => None,
        };
        let (audit, audit_writer) = audit.unzip();

        // The line thread's three inputs share its wakeup.
        let wake = Wakeup::default();
        let (trigger_tx, trigger_rx) = bounded::<Trigger>(256);
        let trigger_tx = Handoff::new(trigger_tx, wake.clone());
        let station = loaded.config.station.name.clone();
        let context = |name: &'static str| AdapterContext {
            name,
            station: station.clone(),
            metrics: metrics.adapter(name),
            line: Arc::clone(&metrics),
            triggers: trigger_tx.clone(),
            clock,
            fire_window: timing.fire_window(),
            recipes: recipes.clone(),
            audit: loaded.config.store.as_ref().map(|s| loaded.resolve(&s.path)),
        };
        let mut adapters = Vec::new();
        let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> = Vec::new();
        let mut add = |ctx: AdapterContext| {
            let (tx, rx) = tokio::sync::mpsc::channel(ADAPTER_QUEUE_DEPTH);
            adapters.push((tx, ctx.metrics.undelivered.clone(), ctx.name));
            rx
        };
        if let Some(c) = &cfg.modbus {
            let ctx = context("modbus");
            let rx = add(ctx.clone());
            tasks.push(Box::pin(super::modbus::run(c.clone(), rx, ctx)));
        }
        if let Some(c) = &cfg.mqtt {
            let ctx = context("mqtt");
            let rx = add(ctx.clone());
            tasks.push(Box::pin(super::mqtt::run(c.clone(), rx, ctx)));
        }
        if let Some(c) = &cfg.webhook {
            let ctx = context("webhook");
            let rx = add(ctx.clone());
            tasks.push(Box::pin(super::webhook::run(c.clone(), rx, ctx)));
        }
        if let Some(c) = &cfg.command {
            let ctx = context("command");
            let rx = add(ctx.clone());
            tasks.push(Box::pin(super::command::run(c.clone(), rx, ctx)));
        }
        drop(trigger_tx);
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(LineStartError::Spawn)?;
        let io_supervisor = Arc::clone(supervisor);
        let io = supervisor
            .spawn("line-io".into(), "line-io", move || {
                if realtime {
                    super::priority::raise_current_thread("line-io");
                }
                runtime.block_on(async move {
                    let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
                    for h in handles {
                        if let Err(e) = h.await {
                            // An adapter that died leaves the line without its output.
                            io_supervisor.fail("line-io", &format!("a line adapter task failed: {e}"));
                        }
                    }
                });
            })
            .map_err(LineStartError::Spawn)?;

        let (parts_tx, parts_rx) = bounded(PARTS_QUEUE_DEPTH);
        let (verdicts_tx, verdicts_rx) = bounded(crate::pipeline::messages::OUTPUT_QUEUE_DEPTH);
        let mut camera_triggers = Vec::new();
        let mut trigger_outs = Vec::new();
        for cam in &loaded.config.cameras {
            if cam.trigger == CameraTrigger::Line {
                let (tx, rx) = handoff::handoff(64);
                trigger_outs.push(tx);
                camera_triggers.push(Some(rx));
            } else {
                camera_triggers.push(None);
            }
        }
        let thread_state = LineThread {
            schedule: Schedule::new(timing, cameras.len(), PARTS_QUEUE_DEPTH),
            parts: Some(parts_rx),
            verdicts: Some(verdicts_rx),
            triggers: Some(trigger_rx),
            trigger_outs,
            adapters,
            metrics: Arc::clone(&metrics),
            readiness,
            heartbeat: Duration::from_millis(cfg.heartbeat_ms),
            audit,
            was_running: false,
            logs: Logs::default(),
            wake: wake.clone(),
            verdicts_seen: 0,
        };
        let thread = supervisor
            .spawn("line".into(), "line", move || {
                if realtime {
                    super::priority::raise_current_thread("line");
                }
                thread_state.run()
            })
            .map_err(LineStartError::Spawn)?;
        let parts = Handoff::new(parts_tx, wake.clone());
        Ok(Self {
            parts,
            verdicts: verdicts_tx,
            wake,
            camera_triggers,
            thread,
            io,
            audit_writer,
            _cpu_wake_latency: cpu_wake_latency,
            metrics,
        })
    }

    /// Camera `index`'s tap (call once per camera).
    pub fn tap(&mut self, index: usize) -> LineTap {
        LineTap { parts: self.parts.clone(), triggers: self.camera_triggers.get_mut(index).and_then(Option::take) }
    }

    /// Where the assembler sends verdicts; it must [`Wakeup::wake`] [`LineOutput::wakeup`] after
    /// each one.
    pub fn verdicts(&self) -> Sender<Inspection> {
        self.verdicts.clone()
    }

    /// What wakes the line thread.
    pub fn wakeup(&self) -> Wakeup {
        self.wake.clone()
    }

    /// After the pipeline has stopped: act on the parts still in flight at their deadlines,
    /// report "not ready", and stop the adapters.
    pub fn finish(self) {
        let Self { parts, verdicts, wake, thread, io, audit_writer, .. } = self;
        // The last senders: the line thread sees its inputs closed when it next looks.
        drop((parts, verdicts));
        wake.wake();
        if thread.join().is_err() {
            tracing::error!("line thread panicked");
        }
        if io.join().is_err() {
            tracing::error!("line adapter thread panicked");
        }
        if audit_writer.is_some_and(|w| w.join().is_err()) {
            tracing::error!("line events writer panicked");
        }
    }
}

/// The line thread's state.
struct LineThread {
    schedule: Schedule,
    parts: Option<Receiver<CapturedPart>>,
    verdicts: Option<Receiver<Inspection>>,
    triggers: Option<Receiver<Trigger>>,
    trigger_outs: Vec<Handoff<Trigger>>,
    adapters: Vec<(tokio::sync::mpsc::Sender<LineEvent>, prometheus::IntCounter, &'static str)>,
    metrics: Arc<LineMetrics>,
    readiness: Arc<Readiness>,
    heartbeat: Duration,
    audit: Option<Sender<AuditRecord>>,
    /// Rate-limited logs of the per-part problems.
    logs: Logs,
    /// The pipeline has been running (so "not running" now means stopping, not starting).
    was_running: bool,
    /// Bound to the line thread: its inputs' senders wake it.
    wake: Wakeup,
    /// Verdicts received (the fault-injection point counts them).
    verdicts_seen: u64,
}

impl LineThread {
    fn run(mut self) {
        self.wake.bind_current();
        let mut status = StationStatus { ready: false, error: ErrorCode::Starting };
        self.metrics.ready.set(0);
        self.send(LineEvent::Status(status));
        let mut beat = false;
        let mut next_beat = Instant::now() + self.heartbeat;
        let mut inference_failures = 0u64;
        loop {
            // Registrations first, so a verdict always finds its part. A closed input is retired.
            while let Some(p) = next(&mut self.parts) {
                self.schedule.register(p);
            }
            while let Some(insp) = next(&mut self.verdicts) {
                if matches!(
                    insp.verdict,
                    Verdict::Failsafe(FailsafeCause::InferenceError | FailsafeCause::InvalidOutput)
                ) {
                    inference_failures += 1;
                }
                self.on_verdict(&insp);
            }
            while let Some(t) = next(&mut self.triggers) {
                self.metrics.triggers.inc();
                self.metrics.missed_triggers.inc_by(u64::from(t.missed));
                for out in &self.trigger_outs {
                    // A camera that has not taken its previous 64 triggers is not capturing:
                    // this part gets no frame, so it is counted as a missed trigger.
                    if out.try_send(t).is_err() {
                        self.metrics.missed_triggers.inc();
                        self.logs.triggers.failed("a triggered camera is not keeping up with the PLC's triggers");
                    }
                }
            }
            let now = Instant::now();
            while let Some(due) = self.schedule.pop_due(now) {
                self.on_due(due, now);
            }
            if now >= next_beat {
                beat = !beat;
                next_beat += self.heartbeat;
                if next_beat < now {
                    next_beat = now + self.heartbeat;
                }
                self.send(LineEvent::Heartbeat(beat));
                self.was_running |= self.readiness.pipeline.is_released();
                let new = self.health(inference_failures > 0);
                inference_failures = 0;
                if new != status {
                    status = new;
                    self.metrics.ready.set(i64::from(status.ready));
                    tracing::info!(ready = status.ready, error = ?status.error, "station-ready signal to the line changed");
                    self.send(LineEvent::Status(status));
                }
            }
            let inputs_closed = self.parts.is_none() && self.verdicts.is_none();
            if inputs_closed && self.schedule.pending() == 0 {
                break;
            }
            let wake_at = self.schedule.next_wake().map_or(next_beat, |w| w.min(next_beat));
            handoff::sleep_until(wake_at);
        }
        self.metrics.ready.set(0);
        self.send(LineEvent::Status(StationStatus { ready: false, error: ErrorCode::Stopping }));
        // Dropping the senders closes each adapter's queue: they write their last state and end.
    }

    fn on_verdict(&mut self, insp: &Inspection) {
        self.verdicts_seen += 1;
        crate::supervise::fault_point("line", self.verdicts_seen);
        let now = Instant::now();
        let v = verdict_in(insp);
        match self.schedule.verdict(v, now) {
            VerdictOutcome::Accepted(outcome) => {
                self.logs.late.ok();
                if let Some(reason) = outcome.failsafe {
                    self.metrics.failsafe(reason).inc();
                }
                self.send(LineEvent::Result(outcome));
            }
            VerdictOutcome::Late { camera, seq, verdict, late_by } => {
                self.metrics.late_verdicts.inc();
                self.logs.late.failed(&format!(
                    "camera {camera} seq {seq}: {verdict:?} {:.1} ms after its decision time",
                    late_by.as_secs_f64() * 1e3
                ));
                self.audit(AuditRecord::late(camera, seq, insp.meta.part_id, verdict, now, Fate::LateVerdict));
            }
            VerdictOutcome::Untracked { camera, seq } => {
                self.metrics.untracked_verdicts.inc();
                self.audit(AuditRecord::late(camera, seq, insp.meta.part_id, v.verdict, now, Fate::Untracked));
            }
        }
    }

    fn on_due(&mut self, due: Due, now: Instant) {
        match due {
            Due::FailsafeDecided(outcome) => {
                self.metrics.failsafe(outcome.failsafe.unwrap_or(FailsafeReason::NoVerdict)).inc();
                self.logs
                    .failsafe
                    .failed(&format!("camera {} seq {}: {:?}", outcome.camera, outcome.seq, outcome.action));
                self.send(LineEvent::Result(outcome));
                if outcome.action == LineAction::StopLine {
                    self.send(LineEvent::StopLine { outcome });
                }
            }
            Due::Fire(outcome) => {
                self.logs.missed.ok();
                let pulse = self.schedule.timing().pulse;
                self.send(LineEvent::Reject { outcome, pulse });
                self.metrics.rejects.inc();
                self.metrics.fire_lateness.observe(now.saturating_duration_since(outcome.deadline).as_secs_f64());
                self.audit(AuditRecord::of(&outcome, Some(now), Fate::Fired));
            }
            Due::Passed(outcome) if outcome.failsafe.is_none() => {
                self.logs.failsafe.ok();
                self.audit(AuditRecord::of(&outcome, None, Fate::Passed));
            }
            Due::Passed(outcome) => self.audit(AuditRecord::of(&outcome, None, Fate::Passed)),
            Due::Missed(outcome) => {
                self.metrics.deadline_misses.inc();
                self.logs.missed.failed(&format!(
                    "camera {} seq {}: {:.1} ms after its deadline",
                    outcome.camera,
                    outcome.seq,
                    now.saturating_duration_since(outcome.deadline).as_secs_f64() * 1e3
                ));
                self.audit(AuditRecord::missed(&outcome, now));
            }
        }
    }

    /// Hand an event to every adapter; a full queue counts as undelivered for that adapter.
    fn send(&self, event: LineEvent) {
        for (tx, undelivered, name) in &self.adapters {
            match tx.try_send(event) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    if matches!(event, LineEvent::Reject { .. } | LineEvent::Result(_) | LineEvent::StopLine { .. }) {
                        undelivered.inc();
                        tracing::warn!(adapter = name, "adapter queue full: event not delivered");
                    }
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    fn audit(&self, record: AuditRecord) {
        if let Some(tx) = &self.audit
            && let Err(TrySendError::Full(_)) = tx.try_send(record)
        {
            tracing::warn!("line events file writer is behind: record dropped");
        }
    }

    /// Station-ready for the line: model warmed, pipeline running, every camera up, and no
    /// inference failure in the last heartbeat period.
    fn health(&self, inference_failed: bool) -> StationStatus {
        let error = if self.readiness.stage_failure().is_some() {
            ErrorCode::StageFailed
        } else if !self.readiness.model.is_released() {
            ErrorCode::Starting
        } else if self.readiness.outputs_invalid() {
            ErrorCode::InvalidOutput
        } else if !self.readiness.pipeline.is_released() {
            // The pipeline latch is released once running and reset when capture stops.
            if self.was_running { ErrorCode::Stopping } else { ErrorCode::Starting }
        } else if !self.readiness.is_ready() {
            ErrorCode::CameraDown
        } else if inference_failed {
            ErrorCode::InferenceFailing
        } else {
            ErrorCode::None
        };
        StationStatus { ready: error == ErrorCode::None, error }
    }
}

/// Per-part problems, each logged once per burst (a stalled pipeline hits every part).
struct Logs {
    failsafe: Burst,
    late: Burst,
    missed: Burst,
    triggers: Burst,
}

impl Default for Logs {
    fn default() -> Self {
        Self {
            failsafe: Burst::new("line: parts without a verdict by their decision time get the fail-safe action"),
            late: Burst::new(
                "line: verdicts after their decision time are recorded, not acted on (the fail-safe acted)",
            ),
            missed: Burst::new("line: rejects not fired because their fire window had passed (deadline misses)"),
            triggers: Burst::new("line: PLC triggers lost (counted in linesight_line_missed_triggers_total)"),
        }
    }
}

/// The next item queued on `input`, if any; retires the input (sets `None`) once it is closed
/// and empty.
fn next<T>(input: &mut Option<Receiver<T>>) -> Option<T> {
    match input.as_ref()?.try_recv() {
        Ok(item) => Some(item),
        Err(crossbeam_channel::TryRecvError::Empty) => None,
        Err(crossbeam_channel::TryRecvError::Disconnected) => {
            *input = None;
            None
        }
    }
}

/// The line's view of a pipeline verdict: the class code is the highest-scoring counted defect.
fn verdict_in(insp: &Inspection) -> VerdictIn {
    let (verdict, failsafe) = match insp.verdict {
        Verdict::Ok => (LineVerdict::Ok, None),
        Verdict::Ng => (LineVerdict::Ng, None),
        Verdict::Failsafe(FailsafeCause::InferenceError) => {
            (LineVerdict::Failsafe, Some(FailsafeReason::InferenceError))
        }
        Verdict::Failsafe(FailsafeCause::Timeout) => (LineVerdict::Failsafe, Some(FailsafeReason::PipelineTimeout)),
        Verdict::Failsafe(FailsafeCause::InvalidOutput) => (LineVerdict::Failsafe, Some(FailsafeReason::InvalidOutput)),
    };
    let class_code = insp
        .defects
        .iter()
        .filter(|d| d.counted)
        .max_by(|a, b| a.defect.max_score.total_cmp(&b.defect.max_score))
        .map_or(0, |d| d.defect.class + 1);
    VerdictIn { camera: insp.meta.camera, seq: insp.meta.seq, verdict, failsafe, class_code }
}
