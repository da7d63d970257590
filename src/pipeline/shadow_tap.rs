//! Where a shadow model gets its frames (and a teach job the next parts of a camera): an output
//! port, offered each decided part right after the line, that copies a part's pixels for whoever
//! is attached to that part's recipe or camera, when they have a free buffer. A shadow that falls behind (it runs at the lowest CPU priority) has no free
//! buffer, and the part is skipped and counted: the shadow samples frames, the line never waits.
//!
//! The assembler thread only ever does non-blocking queue operations and one copy here; the
//! shadow's own threads (see the `shadow` module) do the rest.

use super::accounting::Accounting;
use super::messages::{HeatSource, Inspection};
use super::output_port::OutputPort;
use super::recipe_switch::RecipeSwitch;
use super::verdict::Verdict;
use crate::frame::{Frame, PartId, PixelFormat};
use arrayvec::ArrayVec;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, unbounded};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant, SystemTime};

/// Most defect boxes a copied part carries (the live view draws them).
pub const MAX_BOXES: usize = 16;

/// How the live model judged a part the shadow gets.
#[derive(Clone, Debug)]
pub struct LiveJudgement {
    pub camera: u16,
    pub seq: u64,
    pub part_id: Option<PartId>,
    /// The model slot that judged it.
    pub slot: u16,
    pub verdict: Verdict,
    /// Anomaly models: the image score (else NaN).
    pub image_score: f32,
    pub captured_wall: SystemTime,
    /// The counted defects' boxes (x, y, w, h in frame pixels), the first [`MAX_BOXES`].
    pub boxes: ArrayVec<[f32; 4], MAX_BOXES>,
}

/// One part for a shadow: a copy of its pixels and the live judgement.
pub struct ShadowFrame {
    pub pixels: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub live: LiveJudgement,
}

/// Whose parts an attachment gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapTarget {
    /// Every part judged by the recipe (index), whichever model slot it runs in.
    Recipe(u16),
    /// Every part of the camera (index).
    Camera(u16),
}

/// An attachment's end at the port: where its frames go, and the empty buffers it hands back.
pub struct Attachment {
    pub target: TapTarget,
    /// The share's token bucket (see [`Attachment::within_share`]); start at 0.
    pub credit: f64,
    /// A recipe's: one queue per camera, by index; a camera's: one.
    pub frames: Vec<Sender<ShadowFrame>>,
    /// Buffers to copy into; none free means the shadow is behind and the part is skipped.
    pub spares: Receiver<Vec<u8>>,
    /// Most of the parts offered it takes, 0 < share <= 1: a shadow's cap on what it may cost
    /// the line even where idle CPU would let it take more (see the `shadow` module).
    pub share: f64,
    /// At most one part per interval (the live view's frame rate); none: no limit.
    pub min_interval: Option<Duration>,
    /// When it last took a part (for `min_interval`); start at none.
    pub last_taken: Option<Instant>,
    /// Parts offered, and those skipped (over its share, or no free buffer).
    pub offered: Arc<AtomicU64>,
    pub skipped: Arc<AtomicU64>,
    /// Take parts only while this counts somebody (the live view: browsers watching); none:
    /// always.
    pub watchers: Option<Arc<AtomicUsize>>,
}

impl Attachment {
    /// Whether the next part is due: within the share, and at least `min_interval` after the
    /// last part taken.
    fn due(&mut self) -> bool {
        if let Some(interval) = self.min_interval {
            let now = Instant::now();
            if self.last_taken.is_some_and(|t| now.duration_since(t) < interval) {
                return false;
            }
            if !self.within_share() {
                return false;
            }
            self.last_taken = Some(now);
            return true;
        }
        self.within_share()
    }

    /// Whether the next part is within the share: a token bucket filled by `share` per part.
    fn within_share(&mut self) -> bool {
        self.credit = (self.credit + self.share).min(2.0);
        if self.credit >= 1.0 {
            self.credit -= 1.0;
            true
        } else {
            false
        }
    }
}

enum Command {
    Attach(Attachment),
    /// Detach what is attached to the target (its frame queues close).
    Detach(TapTarget),
}

/// Attaches and detaches shadows while the station runs (held by whoever starts them).
#[derive(Clone)]
pub struct ShadowTap {
    commands: Sender<Command>,
}

impl ShadowTap {
    pub fn attach(&self, attachment: Attachment) {
        let _ = self.commands.send(Command::Attach(attachment));
    }

    pub fn detach(&self, target: TapTarget) {
        let _ = self.commands.send(Command::Detach(target));
    }
}

/// The port (for the assembler) and the tap (for whoever starts shadows).
pub fn shadow_port(switch: Arc<RecipeSwitch>) -> (Box<dyn OutputPort>, ShadowTap) {
    let (tx, rx) = unbounded();
    (Box::new(ShadowPort { commands: rx, attached: Vec::new(), switch }), ShadowTap { commands: tx })
}

struct ShadowPort {
    commands: Receiver<Command>,
    attached: Vec<Attachment>,
    switch: Arc<RecipeSwitch>,
}

impl ShadowPort {
    fn apply_commands(&mut self) {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Attach(a)) => {
                    self.attached.retain(|b| b.target != a.target);
                    self.attached.push(a);
                }
                Ok(Command::Detach(target)) => self.attached.retain(|b| b.target != target),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }
}

impl OutputPort for ShadowPort {
    fn offer(
        &mut self,
        inspection: &mut Inspection,
        frame: &mut Option<Frame>,
        _heat: Option<HeatSource<'_>>,
        _accounting: &Accounting,
    ) {
        if !self.commands.is_empty() {
            self.apply_commands();
        }
        if self.attached.is_empty() {
            return;
        }
        let Some(frame) = frame.as_ref() else { return };
        let slot = inspection.meta.recipe;
        let recipe = self.switch.recipe_of(slot);
        let camera = inspection.meta.camera;
        for a in &mut self.attached {
            let wanted = match a.target {
                TapTarget::Recipe(r) => recipe == Some(r),
                TapTarget::Camera(c) => camera == c,
            };
            if wanted {
                offer(a, inspection, frame, slot);
            }
        }
    }
}

/// Copy the part for `a` if it has a free buffer; else count it skipped.
fn offer(a: &mut Attachment, inspection: &Inspection, frame: &Frame, slot: u16) {
    let m = &inspection.meta;
    // By camera index for a recipe's attachment; a camera's attachment has one queue.
    let queue = match a.target {
        TapTarget::Recipe(_) => usize::from(m.camera),
        TapTarget::Camera(_) => 0,
    };
    if queue >= a.frames.len() || a.watchers.as_ref().is_some_and(|w| w.load(Relaxed) == 0) {
        return;
    }
    a.offered.fetch_add(1, Relaxed);
    if !a.due() {
        a.skipped.fetch_add(1, Relaxed);
        return;
    }
    let queue = &a.frames[queue];
    let Ok(mut pixels) = a.spares.try_recv() else {
        a.skipped.fetch_add(1, Relaxed);
        return;
    };
    pixels.clear();
    pixels.extend_from_slice(&frame.pixels);
    let live = LiveJudgement {
        camera: m.camera,
        seq: m.seq,
        part_id: m.part_id,
        slot,
        verdict: inspection.verdict,
        image_score: inspection.image_score,
        captured_wall: m.captured_wall,
        boxes: inspection
            .defects
            .iter()
            .filter(|d| d.counted)
            .take(MAX_BOXES)
            .map(|d| [d.defect.x, d.defect.y, d.defect.w, d.defect.h])
            .collect(),
    };
    let copy = ShadowFrame { pixels, width: frame.width, height: frame.height, format: frame.format, live };
    match queue.try_send(copy) {
        Ok(()) => {}
        // Cannot be full (each queue holds as many frames as there are buffers); gone: the
        // attachment's reader stopped.
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            a.skipped.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameMeta;
    use crate::pool::BufferPool;
    use crossbeam_channel::bounded;

    fn part(seq: u64, pool: &BufferPool<u8>) -> (Inspection, Frame) {
        let meta = FrameMeta {
            camera: 0,
            seq,
            part_id: None,
            captured_at: Instant::now(),
            captured_wall: SystemTime::now(),
            recipe: 0,
        };
        let now = Instant::now();
        let inspection = Inspection {
            meta,
            width: 4,
            height: 2,
            verdict: Verdict::Ok,
            defects: ArrayVec::new(),
            defects_truncated: 0,
            image_score: f32::NAN,
            threshold: f32::NAN,
            mm_per_px: None,
            infer_started: now,
            infer_ended: now,
            decided_at: now,
            decided_wall: SystemTime::now(),
            archived: false,
        };
        let frame = Frame { meta, format: PixelFormat::Gray8, width: 4, height: 2, pixels: pool.take(8) };
        (inspection, frame)
    }

    /// An attachment with watchers (the live view) copies parts only while somebody watches.
    #[test]
    fn a_watched_attachment_takes_parts_only_while_watched() {
        let (tx, rx) = bounded(8);
        let (spare_tx, spares) = bounded(8);
        for _ in 0..8 {
            spare_tx.send(Vec::new()).unwrap();
        }
        let watchers = Arc::new(AtomicUsize::new(0));
        let mut a = Attachment {
            target: TapTarget::Camera(0),
            credit: 0.0,
            frames: vec![tx],
            spares,
            share: 1.0,
            min_interval: None,
            last_taken: None,
            offered: Arc::default(),
            skipped: Arc::default(),
            watchers: Some(Arc::clone(&watchers)),
        };
        let pool = BufferPool::new(4);
        for seq in 0..3 {
            let (inspection, frame) = part(seq, &pool);
            offer(&mut a, &inspection, &frame, 0);
        }
        assert!(rx.try_recv().is_err(), "nobody watches: nothing copied");
        assert_eq!(a.offered.load(Relaxed), 0);
        watchers.fetch_add(1, Relaxed);
        let (inspection, frame) = part(3, &pool);
        offer(&mut a, &inspection, &frame, 0);
        assert_eq!(rx.try_recv().expect("a watcher: the part is copied").live.seq, 3);
        watchers.fetch_sub(1, Relaxed);
        let (inspection, frame) = part(4, &pool);
        offer(&mut a, &inspection, &frame, 0);
        assert!(rx.try_recv().is_err(), "the last watcher left: copying stops");
    }
}
