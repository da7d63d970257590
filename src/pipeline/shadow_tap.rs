//! Where a shadow model gets its frames: an output port, offered each decided part right after
//! the line, that copies a part's pixels for the shadow of that part's recipe, when the shadow
//! has a free buffer. A shadow that falls behind (it runs at the lowest CPU priority) has no free
//! buffer, and the part is skipped and counted: the shadow samples frames, the line never waits.
//!
//! The assembler thread only ever does non-blocking queue operations and one copy here; the
//! shadow's own threads (see `crate::shadow`) do the rest.

use super::accounting::Accounting;
use super::messages::Inspection;
use super::output_port::OutputPort;
use super::recipe_switch::RecipeSwitch;
use super::verdict::Verdict;
use crate::frame::{Frame, PartId, PixelFormat};
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, unbounded};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

/// How the live model judged a part the shadow gets.
#[derive(Clone, Copy, Debug)]
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
}

/// One part for a shadow: a copy of its pixels and the live judgement.
pub struct ShadowFrame {
    pub pixels: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub live: LiveJudgement,
}

/// A shadow's end at the port: where its frames go, and the empty buffers it hands back.
pub struct Attachment {
    /// The recipe whose parts it gets.
    pub recipe: u16,
    /// By camera index.
    pub frames: Vec<Sender<ShadowFrame>>,
    /// Buffers to copy into; none free means the shadow is behind and the part is skipped.
    pub spares: Receiver<Vec<u8>>,
    /// Parts of the recipe offered to the shadow, and those skipped for want of a free buffer.
    pub offered: Arc<AtomicU64>,
    pub skipped: Arc<AtomicU64>,
}

enum Command {
    Attach(Attachment),
    /// Detach the recipe's shadow (its frame queue closes: its camera threads end).
    Detach(u16),
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

    pub fn detach(&self, recipe: u16) {
        let _ = self.commands.send(Command::Detach(recipe));
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
                    self.attached.retain(|b| b.recipe != a.recipe);
                    self.attached.push(a);
                }
                Ok(Command::Detach(recipe)) => self.attached.retain(|b| b.recipe != recipe),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }
}

impl OutputPort for ShadowPort {
    fn offer(&mut self, inspection: &mut Inspection, frame: &mut Option<Frame>, _accounting: &Accounting) {
        if !self.commands.is_empty() {
            self.apply_commands();
        }
        if self.attached.is_empty() {
            return;
        }
        let slot = inspection.meta.recipe;
        let Some(recipe) = self.switch.recipe_of(slot) else { return };
        let Some(shadow) = self.attached.iter().find(|a| a.recipe == recipe) else { return };
        let (Some(frame), Some(frames)) = (frame.as_ref(), shadow.frames.get(usize::from(inspection.meta.camera)))
        else {
            return;
        };
        shadow.offered.fetch_add(1, Relaxed);
        let Ok(mut pixels) = shadow.spares.try_recv() else {
            shadow.skipped.fetch_add(1, Relaxed);
            return;
        };
        pixels.clear();
        pixels.extend_from_slice(&frame.pixels);
        let m = &inspection.meta;
        let live = LiveJudgement {
            camera: m.camera,
            seq: m.seq,
            part_id: m.part_id,
            slot,
            verdict: inspection.verdict,
            image_score: inspection.image_score,
            captured_wall: m.captured_wall,
        };
        let shadow_frame = ShadowFrame { pixels, width: frame.width, height: frame.height, format: frame.format, live };
        match frames.try_send(shadow_frame) {
            Ok(()) => {}
            // Cannot be full (each camera's queue holds as many frames as there are buffers);
            // gone: the shadow stopped.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                shadow.skipped.fetch_add(1, Relaxed);
            }
        }
    }
}
