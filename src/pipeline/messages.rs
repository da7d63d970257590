//! What travels on the queues between pipeline threads. Everything here is moved, never shared,
//! and buffers are pooled, so sending a message does not allocate.

use super::{Defect, Verdict};
use crate::frame::{Frame, FrameMeta};
use crate::pool::Pooled;
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

/// Bounded queue between the assembler and each output: room for bursts, never a wait.
pub const OUTPUT_QUEUE_DEPTH: usize = 1024;

/// Largest batch the pipeline forms (`pipeline.max_batch` is validated against it).
pub const MAX_BATCH: usize = 64;

/// Where one batch item came from and where its outputs go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileRef {
    pub slot: SlotId,
    pub tile: u16,
    /// `(x0, y0)` of the tile in the frame (tile mode) — used to stitch outputs back.
    pub origin: (u32, u32),
    /// The frame area this tile's outputs are stitched into (see `TileGrid::window`).
    pub window: (u32, u32, u32, u32),
}

/// Preprocess → inference workers: a batch ready to run. Tiles were cut straight into `tensor`
/// (`batch` items of the model's input size; items past `items.len()` are zero padding).
pub struct BatchJob {
    /// The recipe whose model runs it (every item's frame is stamped with it).
    pub recipe: u16,
    pub tensor: Pooled<f32>,
    pub batch: usize,
    pub items: ArrayVec<TileRef, MAX_BATCH>,
}

/// Inference workers → assembler: a batch's outputs as ONNX Runtime returned them (one value
/// per output the task reads, each `[batch, ...]`), or the failure.
pub struct BatchResult {
    pub items: ArrayVec<TileRef, MAX_BATCH>,
    pub batch: usize,
    pub outputs: ArrayVec<ort::value::DynValue, MAX_OUTPUTS>,
    pub failed: bool,
    /// Bit k set: item k's outputs hold a NaN or an infinity (its frame fails safe).
    pub invalid: u64,
    pub infer_started: Instant,
    pub infer_ended: Instant,
}

/// Most outputs a task reads (anomaly: score + map).
pub const MAX_OUTPUTS: usize = 2;

/// One tile's outputs kept by the assembler when they arrive before their frame's `FrameStart`
/// (rare: the two travel on different queues), copied out of the batch into pooled buffers.
pub struct EarlyTile {
    pub tile: TileRef,
    pub outputs: ArrayVec<Pooled<f32>, MAX_OUTPUTS>,
    pub failed: bool,
    pub invalid: bool,
    pub infer_started: Instant,
    pub infer_ended: Instant,
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
    /// For anomaly models: the image-score threshold the part was judged against (else NaN).
    pub threshold: f32,
    /// The camera's millimetres per pixel on the inspected surface, when it has a scale.
    pub mm_per_px: Option<f32>,
    pub infer_started: Instant,
    pub infer_ended: Instant,
    pub decided_at: Instant,
    pub decided_wall: SystemTime,
    /// The frame was handed to the image archive (its file may still fail to be written).
    pub archived: bool,
}

/// Assembler → `linesight eval`: one frame's stitched per-pixel defect scores (anomaly: the
/// anomaly map; segmentation: the max over defect classes), row-major `height × width`. Only sent
/// when a station is built with `topology::Station::with_score_maps`; never on a production line.
pub struct ScoreMap {
    pub part_id: Option<crate::frame::PartId>,
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub scores: Vec<f32>,
}

/// A decided anomaly frame's per-pixel scores, lent to the outputs while they are offered the
/// part (the archive keeps a small heat map of the frames it saves).
#[derive(Clone, Copy)]
pub struct HeatSource<'a> {
    pub width: u32,
    pub height: u32,
    /// Row-major `height × width`; finite (a frame with non-finite outputs fails safe and lends
    /// no map).
    pub scores: &'a [f32],
    /// The image-score threshold the part was judged against (regions are where the map reaches it).
    pub threshold: f32,
}
