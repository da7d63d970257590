//! The camera thread: pulls frames from a [`Source`], paces them, stamps them, undistorts them
//! when the camera is calibrated, and pushes them into the camera's bounded queue under its
//! backpressure policy. A camera that disconnects or stalls is reopened with exponential
//! backoff; the other cameras never notice.
//!
//! The source itself runs on a helper thread of its own (the *grabber*), driven one request at a
//! time: the camera thread waits for each open and grab only so long (`open_timeout`, the stall
//! timeout), so a device that hangs in an open or a read (a network stream with no sender) never
//! blocks the camera thread, its queue, the line or a shutdown. A hung grabber is abandoned and a
//! fresh source is built for the next attempt.
//!
//! Frames are stamped with the source's own capture time where it has one, and a frame older than
//! `max_frame_age` on arrival (a stalled stream delivering its backlog) is dropped as `stale`.

use super::{Source, SourceError};
use crate::calibration::Undistorter;
use crate::config::Backpressure;
use crate::frame::{Frame, FrameMeta, PartId};
use crate::pipeline::accounting::{Accounting, DropCause};
use crate::pipeline::handoff::Inbox;
use crate::pipeline::{CapturedPart, RecipeSwitch};
use crate::pipeline::{LineTap, Trigger};
use crate::pool::{BufferPool, Pooled};
use crate::telemetry::burst::Burst;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

/// Builds a fresh source for a camera: the first one, and one after a hung source was abandoned.
pub type SourceFactory = Box<dyn FnMut() -> Result<Box<dyn Source>, SourceError> + Send>;

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
    /// Longest wait for the source to open.
    pub open_timeout: Duration,
    /// Longest wait for one grab before the source is taken for hung.
    pub grab_timeout: Duration,
    /// Frames older than this on arrival are dropped as stale.
    pub max_frame_age: Duration,
}

/// One camera's thread state.
pub struct CameraThread {
    pub settings: CameraSettings,
    /// The first source, and whether it is open already (replays are opened when the station
    /// is built, so a missing folder fails the start); live ones are opened by this thread.
    pub source: Option<(Box<dyn Source>, bool)>,
    pub factory: SourceFactory,
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
    /// Which recipe judges each frame: stamped on it at capture.
    pub recipes: Arc<RecipeSwitch>,
}

/// Camera thread → grabber.
enum Request {
    Open,
    Grab(Pooled<u8>),
    Close,
}

/// Grabber → camera thread.
enum Reply {
    Opened(Result<(), SourceError>),
    Grabbed(Pooled<u8>, Result<super::Grabbed, SourceError>),
}

/// The helper thread that owns a source; see the module docs.
struct Grabber {
    requests: Sender<Request>,
    replies: Receiver<Reply>,
}

/// What waiting for the grabber gave.
enum Call {
    Reply(Reply),
    /// No reply within the time allowed: the source hangs.
    TimedOut,
    /// The grabber thread is gone (its source panicked).
    Died,
    /// The station is stopping.
    Stopped,
}

impl Grabber {
    fn spawn(camera: &str, mut source: Box<dyn Source>) -> std::io::Result<Self> {
        let (requests, rx) = bounded::<Request>(1);
        let (tx, replies) = bounded::<Reply>(1);
        // Named like the camera thread, so the allocation test counts it as the camera's.
        std::thread::Builder::new().name(format!("camera-grab-{camera}")).spawn(move || {
            while let Ok(request) = rx.recv() {
                let reply = match request {
                    Request::Open => Reply::Opened(source.open()),
                    Request::Grab(mut pixels) => {
                        let grabbed = source.grab(pixels.as_vec_mut());
                        Reply::Grabbed(pixels, grabbed)
                    }
                    Request::Close => {
                        source.close();
                        continue;
                    }
                };
                if tx.send(reply).is_err() {
                    break;
                }
            }
            source.close();
        })?;
        Ok(Self { requests, replies })
    }

    /// Send `request` and wait for its reply, at most `timeout`, giving up early on a stop.
    fn call(&self, request: Request, timeout: Duration, stop: &AtomicBool) -> Call {
        if self.requests.send(request).is_err() {
            return Call::Died;
        }
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match self.replies.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(reply) => return Call::Reply(reply),
                Err(RecvTimeoutError::Disconnected) => return Call::Died,
                Err(RecvTimeoutError::Timeout) => {
                    if stop.load(Relaxed) {
                        return Call::Stopped;
                    }
                    if start.elapsed() >= timeout {
                        return Call::TimedOut;
                    }
                }
            }
        }
    }
}

impl CameraThread {
    /// Capture until stopped, `max_frames` is reached, or a replay source ends.
    pub fn run(mut self) {
        let s = self.settings.clone();
        let accounting = Arc::clone(&self.accounting);
        let counters = accounting.camera(s.index);
        // Never panics: `fps` is validated, and the helper saturates whatever it is given.
        let period = crate::config::timing::frame_period(s.fps);
        let mut next_due = Instant::now();
        let mut seq = 0u64;
        let mut bad_frames = BadFrameLog::default();
        let mut stale_log = Burst::new("frames older than the camera's max_frame_age are dropped as stale");
        let mut last_size_log: Option<Instant> = None;
        let mut trigger = None;
        // The grabber, and whether its source is open.
        let mut grabber: Option<(Grabber, bool)> = None;
        if let Some((source, opened)) = self.source.take() {
            match Grabber::spawn(&s.id, source) {
                Ok(g) => grabber = Some((g, opened)),
                Err(e) => {
                    tracing::error!(camera = %s.id, error = %e, "cannot start the camera's grab thread; retrying")
                }
            }
        }
        if matches!(grabber, Some((_, true))) {
            counters.set_up();
        }
        let mut first_open = true;
        while !self.stop.load(Relaxed) && s.max_frames.is_none_or(|m| seq < m) {
            if !matches!(grabber, Some((_, true))) {
                match self.open(grabber.take(), first_open) {
                    Some(g) => grabber = Some((g, true)),
                    None => break,
                }
                first_open = false;
                next_due = Instant::now();
            }
            let Some((g, _)) = &grabber else { continue };
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
            let t0 = Instant::now();
            let (mut pixels, grabbed) = match g.call(Request::Grab(self.pool.take(0)), s.grab_timeout, &self.stop) {
                Call::Reply(Reply::Grabbed(pixels, grabbed)) => (pixels, grabbed),
                Call::Reply(Reply::Opened(_)) => continue, // not asked for; cannot happen
                Call::Stopped => break,
                Call::TimedOut | Call::Died => {
                    let why = format!(
                        "no frame within {} ms: the source hangs in a read; abandoned, a fresh one is opened",
                        s.grab_timeout.as_millis()
                    );
                    self.down(&why, trigger.take(), &mut seq);
                    grabber = None; // the hung thread is left to itself
                    continue;
                }
            };
            match grabbed {
                Ok(g) => {
                    (self.on_grab)(t0.elapsed());
                    let now = Instant::now();
                    // The source's own capture time where it has one; never in the future.
                    let captured_at = g.captured_at.filter(|&t| t <= now).unwrap_or(now);
                    let age = now - captured_at;
                    let meta = FrameMeta {
                        camera: s.index,
                        seq,
                        part_id: trigger.map(|t: Trigger| acquisition_part_id(t.acquisition_id)).or(g.part_id),
                        captured_at,
                        captured_wall: SystemTime::now() - age,
                        recipe: self.recipes.stamp(usize::from(s.index), seq),
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
                    crate::supervise::fault_point("camera", seq);
                    counters.captured.fetch_add(1, Relaxed);
                    counters.set_up();
                    counters.last_frame_ns.store((now - accounting.epoch).as_nanos() as u64, Relaxed);
                    if age > s.max_frame_age {
                        counters.dropped(DropCause::Stale);
                        stale_log.failed(&format!(
                            "camera {} seq {}: captured {} ms before it arrived (max_frame_age_ms {})",
                            s.id,
                            meta.seq,
                            age.as_millis(),
                            s.max_frame_age.as_millis()
                        ));
                        continue;
                    }
                    stale_log.ok();
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
                Err(SourceError::BadFrame { reason, detail }) => {
                    counters.capture_errors.fetch_add(1, Relaxed);
                    if let Some(t) = trigger.take() {
                        self.lost_trigger(t, &mut seq);
                    }
                    bad_frames.log(&s.id, reason, &detail, Instant::now());
                }
                Err(SourceError::Disconnected(msg)) => {
                    self.down(&msg, trigger.take(), &mut seq);
                    if let Some((g, open)) = &mut grabber {
                        let _ = g.requests.try_send(Request::Close);
                        *open = false;
                    }
                }
            }
        }
        if let Some((g, _)) = grabber {
            // Closes the source on its own thread (a hung one is simply left).
            drop(g);
        }
        counters.set_down("stopped");
    }

    /// Mark the camera down with `why`; a part triggered meanwhile is lost (and failed safe).
    fn down(&self, why: &str, trigger: Option<Trigger>, seq: &mut u64) {
        let counters = self.accounting.camera(self.settings.index);
        counters.set_down(why);
        tracing::warn!(camera = %self.settings.id, reason = why, "camera down; reopening with backoff");
        if let Some(t) = trigger {
            self.lost_trigger(t, seq);
        }
    }

    /// Open the camera (reusing `grabber`'s source, or a fresh one from the factory), retrying
    /// with exponential backoff until it opens or the station stops (then `None`). Each attempt
    /// waits at most the open timeout.
    fn open(&mut self, mut grabber: Option<(Grabber, bool)>, first: bool) -> Option<Grabber> {
        let s = self.settings.clone();
        let counters = self.accounting.camera(s.index);
        let mut delay = s.reconnect_initial;
        let mut attempt = 0u32;
        loop {
            // A first open at start tries at once; every other attempt waits its backoff first.
            if attempt > 0 || !first {
                if !sleep_unless_stopped(delay, &self.stop) {
                    return None;
                }
                delay = (delay * 2).min(s.reconnect_max);
                counters.reconnects.fetch_add(1, Relaxed);
            }
            attempt += 1;
            let g = match grabber.take() {
                Some((g, _)) => g,
                None => match (self.factory)().and_then(|source| {
                    Grabber::spawn(&s.id, source).map_err(|e| SourceError::Disconnected(format!("grab thread: {e}")))
                }) {
                    Ok(g) => g,
                    Err(e) => {
                        counters.set_down(&e.to_string());
                        tracing::warn!(camera = %s.id, error = %e, retry_in_ms = delay.as_millis() as u64, "camera cannot be opened");
                        continue;
                    }
                },
            };
            match g.call(Request::Open, s.open_timeout, &self.stop) {
                Call::Reply(Reply::Opened(Ok(()))) => {
                    if attempt > 1 || !first {
                        tracing::info!(camera = %s.id, "camera reconnected");
                    }
                    counters.set_up();
                    return Some(g);
                }
                Call::Reply(Reply::Opened(Err(e))) => {
                    counters.set_down(&e.to_string());
                    tracing::warn!(camera = %s.id, error = %e, retry_in_ms = delay.as_millis() as u64, "camera open failed");
                    grabber = Some((g, false));
                }
                Call::Reply(Reply::Grabbed(..)) => grabber = Some((g, false)), // not asked for
                Call::Stopped => return None,
                Call::TimedOut | Call::Died => {
                    let why = format!(
                        "did not open within {} ms (open_timeout_ms): abandoned, retrying with a fresh source",
                        s.open_timeout.as_millis()
                    );
                    counters.set_down(&why);
                    tracing::warn!(camera = %s.id, reason = %why, retry_in_ms = delay.as_millis() as u64, "camera open timed out");
                }
            }
        }
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
            Backpressure::Block => {
                // Wait for room, but not past a stop: a dead consumer must not hang this thread
                // (the camera holds a receiver itself, so the queue never reports it gone).
                let mut frame = frame;
                loop {
                    match self.tx.send_timeout(frame, Duration::from_millis(50)) {
                        Ok(()) => return true,
                        Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return false,
                        Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => {
                            if self.stop.load(Relaxed) {
                                // Captured but never queued: a drop, so the accounting adds up.
                                self.accounting.camera(back.meta.camera).dropped(DropCause::QueueFull);
                                return false;
                            }
                            frame = back;
                        }
                    }
                }
            }
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
}

/// Logs of frames that could not be read, rate-limited per reason (truncated, corrupt, ...), not
/// per run: each bad file is named, unless one reason floods the log (more than
/// [`BadFrameLog::NAMED_PER_WINDOW`] in a window), when the rest are summarised with a count.
#[derive(Default)]
struct BadFrameLog {
    reasons: Vec<ReasonLog>,
}

struct ReasonLog {
    reason: &'static str,
    window_start: Instant,
    named: u32,
    suppressed: u64,
    last: String,
}

impl BadFrameLog {
    const NAMED_PER_WINDOW: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(5);

    /// Log one bad frame; returns whether it was named in the log.
    fn log(&mut self, camera: &str, reason: &'static str, detail: &str, now: Instant) -> bool {
        let i = match self.reasons.iter().position(|r| r.reason == reason) {
            Some(i) => i,
            None => {
                self.reasons.push(ReasonLog {
                    reason,
                    window_start: now,
                    named: 0,
                    suppressed: 0,
                    last: String::new(),
                });
                self.reasons.len() - 1
            }
        };
        let r = &mut self.reasons[i];
        if now.duration_since(r.window_start) >= Self::WINDOW {
            if r.suppressed > 0 {
                tracing::warn!(camera, reason, more = r.suppressed, last = %r.last, "more frames could not be read (not named above); skipped");
            }
            (r.window_start, r.named, r.suppressed) = (now, 0, 0);
        }
        if r.named < Self::NAMED_PER_WINDOW {
            r.named += 1;
            tracing::warn!(camera, reason, error = %detail, "frame could not be read; skipped");
            true
        } else {
            r.suppressed += 1;
            detail.clone_into(&mut r.last);
            false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_file_is_named_unless_one_reason_floods_the_log() {
        let mut log = BadFrameLog::default();
        let t0 = Instant::now();
        // Six bad files of two reasons: every one is named.
        for i in 0..6 {
            let reason = if i % 2 == 0 { "truncated" } else { "corrupt" };
            assert!(log.log("cam", reason, &format!("{i}.jpg"), t0), "file {i} not named");
        }
        // A flood of one reason: named up to the limit, then counted; another reason still named.
        let named = (0..50).filter(|i| log.log("cam", "truncated", &format!("f{i}"), t0)).count();
        assert_eq!(named as u32, BadFrameLog::NAMED_PER_WINDOW - 3);
        assert!(log.log("cam", "still_writing", "x.jpg", t0));
        // The next window names files again.
        assert!(log.log("cam", "truncated", "later.jpg", t0 + BadFrameLog::WINDOW));
    }
}
