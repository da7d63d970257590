//! The camera thread: pulls frames from a [`Source`], paces them, stamps them, undistorts them
//! when the camera is calibrated, and pushes them into the camera's bounded queue under its
//! backpressure policy. A camera that disconnects or stalls is reopened with exponential
//! backoff; the other cameras never notice.

use super::{Source, SourceError};
use crate::calibration::Undistorter;
use crate::config::Backpressure;
use crate::frame::{Frame, FrameMeta, PartId};
use crate::pool::BufferPool;
use crate::sinks::line::schedule::CapturedPart;
use crate::sinks::line::wake::Inbox;
use crate::sinks::line::{LineTap, Trigger};
use crate::topology::accounting::{Accounting, DropCause};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

/// Settings for one camera thread.
#[derive(Clone, Debug)]
pub struct CameraSettings {
    pub index: u16,
    pub id: String,
    pub fps: f64,
    pub backpressure: Backpressure,
    pub max_frames: Option<u64>,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

/// One camera's thread state.
pub struct CameraThread {
    pub settings: CameraSettings,
    pub source: Box<dyn Source>,
    pub pool: BufferPool<u8>,
    /// Producer side of the camera queue.
    pub tx: Sender<Frame>,
    /// A consumer handle on the same queue: `drop_oldest` pops the oldest frame through it.
    pub rx: Receiver<Frame>,
    pub accounting: Arc<Accounting>,
    pub stop: Arc<AtomicBool>,
    /// Called with the time one grab took (telemetry hook).
    pub on_grab: Box<dyn FnMut(Duration) + Send>,
    /// Lens undistortion, from the camera's calibration: each frame is remapped into a second
    /// buffer from `pool`, and the grabbed one goes back.
    pub undistort: Option<Undistorter>,
    /// Called with the time one undistortion took (telemetry hook).
    pub on_undistort: Box<dyn FnMut(Duration) + Send>,
    /// The line output: every captured part is registered with it (so it gets a deadline even
    /// if its frame is dropped later), and a triggered camera captures on its triggers.
    pub line: Option<LineTap>,
}

impl CameraThread {
    /// Capture until stopped, `max_frames` is reached, or a replay source ends. The source must
    /// already be open (the station refuses to start with a camera it cannot open).
    pub fn run(mut self) {
        let s = self.settings.clone();
        let accounting = Arc::clone(&self.accounting);
        let counters = accounting.camera(s.index);
        counters.up.store(true, Relaxed);
        let period = (s.fps > 0.0).then(|| Duration::from_secs_f64(1.0 / s.fps));
        let mut next_due = Instant::now();
        let mut seq = 0u64;
        let mut last_error_log: Option<Instant> = None;
        let mut last_size_log: Option<Instant> = None;
        let mut trigger = None;
        while !self.stop.load(Relaxed) && s.max_frames.is_none_or(|m| seq < m) {
            if let Some(triggers) = self.line.as_ref().and_then(|l| l.triggers.as_ref()) {
                match wait_for_trigger(triggers, &self.stop) {
                    Some(t) => trigger = Some(t),
                    None => break,
                }
            } else if let Some(period) = period {
                let now = Instant::now();
                if next_due > now {
                    std::thread::sleep(next_due - now);
                }
                // Behind by more than a period (slow source): restart the schedule from now
                // rather than bursting to catch up.
                next_due = (next_due + period).max(Instant::now() - period);
            }
            let mut pixels = self.pool.take(0);
            let t0 = Instant::now();
            match self.source.grab(pixels.as_vec_mut()) {
                Ok(g) => {
                    (self.on_grab)(t0.elapsed());
                    let captured_at = Instant::now();
                    let meta = FrameMeta {
                        camera: s.index,
                        seq,
                        part_id: trigger.map(|t: Trigger| acquisition_part_id(t.acquisition_id)).or(g.part_id),
                        captured_at,
                        captured_wall: SystemTime::now(),
                    };
                    if let Some(line) = &self.line {
                        // Registered before anything can drop the frame: a part the line knows
                        // about gets the fail-safe at its deadline even if it is never inspected.
                        let basis = trigger.take().map_or(captured_at, |t| t.at);
                        let part = CapturedPart { camera: s.index, seq, part_id: meta.part_id, basis };
                        if line.parts.try_send(part).is_err() {
                            accounting.line_untracked.fetch_add(1, Relaxed);
                        }
                    }
                    seq += 1;
                    counters.captured.fetch_add(1, Relaxed);
                    counters.up.store(true, Relaxed);
                    counters.last_frame_ns.store((captured_at - accounting.epoch).as_nanos() as u64, Relaxed);
                    if let Some(u) = &self.undistort {
                        let want = u.size();
                        let bytes = g.width as usize * g.height as usize * g.format.channels();
                        if (g.width, g.height) != want || pixels.len() != bytes {
                            // Intrinsics hold for one image size only: measuring this frame
                            // would be wrong, so it is dropped (counted) rather than inspected.
                            counters.dropped(DropCause::InvalidFrame);
                            if last_size_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                                tracing::warn!(camera = %s.id, width = g.width, height = g.height, calibrated_width = want.0, calibrated_height = want.1, "frame size differs from the camera's calibration; frame dropped (calibrate at this resolution)");
                                last_size_log = Some(Instant::now());
                            }
                            continue;
                        }
                        let mut out = self.pool.take(bytes);
                        let t1 = Instant::now();
                        u.apply(&pixels, &mut out, g.format.channels());
                        (self.on_undistort)(t1.elapsed());
                        pixels = out; // the grabbed buffer goes back to the pool
                    }
                    let frame = Frame { meta, format: g.format, width: g.width, height: g.height, pixels };
                    if !self.push(frame) {
                        break;
                    }
                }
                Err(SourceError::EndOfStream) => {
                    tracing::info!(camera = %s.id, frames = seq, "source ended");
                    break;
                }
                Err(SourceError::BadFrame(msg)) => {
                    counters.capture_errors.fetch_add(1, Relaxed);
                    if let Some(t) = trigger.take() {
                        self.lost_trigger(t, &mut seq);
                    }
                    // Rate-limited: a folder of broken files must not flood the log.
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        tracing::warn!(camera = %s.id, error = %msg, "frame could not be read; skipped");
                        last_error_log = Some(Instant::now());
                    }
                }
                Err(SourceError::Disconnected(msg)) => {
                    counters.up.store(false, Relaxed);
                    if let Some(t) = trigger.take() {
                        self.lost_trigger(t, &mut seq);
                    }
                    tracing::warn!(camera = %s.id, error = %msg, "camera down; reconnecting");
                    if !self.reconnect() {
                        break;
                    }
                    counters.up.store(true, Relaxed);
                    next_due = Instant::now();
                }
            }
        }
        self.source.close();
        counters.up.store(false, Relaxed);
    }

    /// A triggered part whose image could not be grabbed is still a part on the line: it is
    /// counted as captured and dropped (invalid frame), and registered with the line so that the
    /// fail-safe acts on it at its deadline.
    fn lost_trigger(&self, trigger: Trigger, seq: &mut u64) {
        let counters = self.accounting.camera(self.settings.index);
        counters.captured.fetch_add(1, Relaxed);
        counters.dropped(DropCause::InvalidFrame);
        if let Some(line) = &self.line {
            let part_id = Some(acquisition_part_id(trigger.acquisition_id));
            let part = CapturedPart { camera: self.settings.index, seq: *seq, part_id, basis: trigger.at };
            if line.parts.try_send(part).is_err() {
                self.accounting.line_untracked.fetch_add(1, Relaxed);
            }
        }
        *seq += 1;
    }

    /// Queue a frame under the backpressure policy. Returns false when the pipeline is gone.
    fn push(&self, frame: Frame) -> bool {
        match self.settings.backpressure {
            Backpressure::Block => self.tx.send(frame).is_ok(),
            Backpressure::DropOldest => {
                let mut frame = frame;
                loop {
                    match self.tx.try_send(frame) {
                        Ok(()) => return true,
                        Err(TrySendError::Disconnected(_)) => return false,
                        Err(TrySendError::Full(back)) => {
                            frame = back;
                            // Make room by dropping the oldest queued frame (the consumer may
                            // have taken it meanwhile, in which case there is room now).
                            if let Ok(old) = self.rx.try_recv() {
                                self.accounting.camera(old.meta.camera).dropped(DropCause::QueueFull);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reopen with exponential backoff until it works or the station stops.
    fn reconnect(&mut self) -> bool {
        let s = &self.settings;
        let counters = self.accounting.camera(s.index);
        let mut delay = s.reconnect_initial;
        self.source.close();
        loop {
            if !sleep_unless_stopped(delay, &self.stop) {
                return false;
            }
            counters.reconnects.fetch_add(1, Relaxed);
            match self.source.open() {
                Ok(()) => {
                    tracing::info!(camera = %s.id, "camera reconnected");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(camera = %s.id, error = %e, retry_in_ms = (delay * 2).min(s.reconnect_max).as_millis() as u64, "reconnect failed");
                    delay = (delay * 2).min(s.reconnect_max);
                }
            }
        }
    }
}

/// Block until the line triggers a capture; `None` when stopped or the line is gone.
fn wait_for_trigger(triggers: &Inbox<Trigger>, stop: &AtomicBool) -> Option<Trigger> {
    while !stop.load(Relaxed) {
        match triggers.recv_until(Instant::now() + Duration::from_millis(50)) {
            Ok(t) => return Some(t),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
        }
    }
    None
}

/// The PLC's acquisition id as a part id (formatted in place: no allocation).
fn acquisition_part_id(id: u16) -> PartId {
    use std::fmt::Write;
    let mut part = PartId::new();
    let _ = write!(part, "{id}");
    part
}

/// Sleep in short steps so a stop request is honoured quickly. False if stopped.
fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + total;
    while Instant::now() < end {
        if stop.load(Relaxed) {
            return false;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    !stop.load(Relaxed)
}
