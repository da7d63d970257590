//! What travels on the queues between pipeline threads. Everything here is moved, never shared,
//! and buffers are pooled, so sending a message does not allocate.

use crate::frame::{Frame, FrameMeta};
use crate::pool::Pooled;
use crate::stages::decide::Verdict;
use crate::stages::decode::Defect;
use arrayvec::ArrayVec;
use std::time::{Instant, SystemTime};

/// Index of an in-flight frame's slot in the assembler's table.
pub type SlotId = u16;

/// Preprocess → assembler: a frame entered the pipeline, cut into `tiles` model inputs.
pub struct FrameStart {
    pub slot: SlotId,
    pub frame: Frame,
    pub tiles: u16,
}

/// Preprocess → inference workers: one model input.
pub struct TileJob {
    pub slot: SlotId,
    pub tile: u16,
    /// `(x0, y0)` of the tile in the frame (tile mode) — used to stitch outputs back.
    pub origin: (u32, u32),
    /// The frame area this tile's outputs are stitched into (see `TileGrid::window`).
    pub window: (u32, u32, u32, u32),
    pub tensor: Pooled<f32>,
}

/// Most outputs a task reads (anomaly: score + map).
pub const MAX_OUTPUTS: usize = 2;

/// Inference workers → assembler: the model's outputs for one tile, or why there are none.
pub struct TileResult {
    pub slot: SlotId,
    pub tile: u16,
    pub origin: (u32, u32),
    pub window: (u32, u32, u32, u32),
    /// One buffer per output the task reads (empty on error).
    pub outputs: ArrayVec<Pooled<f32>, MAX_OUTPUTS>,
    pub failed: bool,
    pub infer_started: Instant,
    pub infer_ended: Instant,
    /// Tiles in the batch this tile ran in (padding excluded).
    pub batch_size: u16,
}

/// Most defects carried per inspection record; more are counted in `defects_truncated`.
pub const MAX_DEFECTS: usize = 32;

/// A defect in a record, with whether it counted towards the verdict.
#[derive(Clone, Copy, Debug)]
pub struct RecordedDefect {
    pub defect: Defect,
    pub counted: bool,
}

/// Assembler → outputs: one part's verdict with everything a result record needs.
#[derive(Clone)]
pub struct Inspection {
    pub meta: FrameMeta,
    pub width: u32,
    pub height: u32,
    pub verdict: Verdict,
    pub defects: ArrayVec<RecordedDefect, MAX_DEFECTS>,
    pub defects_truncated: u32,
    /// For anomaly models: the image score (else NaN).
    pub image_score: f32,
    pub infer_started: Instant,
    pub infer_ended: Instant,
    pub decided_at: Instant,
    pub decided_wall: SystemTime,
}
