//! The assembler: collects each in-flight frame's tile outputs, stitches them into frame
//! coordinates, decodes defects, applies the decision, and emits one [`Inspection`] per frame.
//!
//! It runs on one thread and owns the slot table outright (no locks): preprocess announces a frame
//! with [`FrameStart`], workers deliver [`BatchResult`]s (possibly before the announcement — they
//! travel on different queues), and when every tile is in, the slot is decided and handed back to
//! preprocess through the free-slot queue.

use super::stitch::{Region, paste_max};
use crate::config::InputMode;
use crate::frame::Frame;
use crate::model::manifest::{Activation, TaskSpec};
use crate::pipeline::accounting::Accounting;
use crate::pipeline::messages::{
    BatchResult, EarlyTile, FrameStart, HeatSource, Inspection, MAX_DEFECTS, MAX_OUTPUTS, RecordedDefect, ScoreMap,
    SlotId, TileRef,
};
use crate::pipeline::output_port::OutputPort;
use crate::pipeline::{Defect, FailsafeCause, Verdict};
use crate::pipeline::{LiveThresholds, Slots};
use crate::pool::BufferPool;
use crate::stages::decide::{self, Rules};
use crate::stages::decode::{
    ComponentScratch, apply_activation, decode_anomaly, decode_classification, decode_segmentation, decode_yolo,
    nms_class_aware,
};
use crate::telemetry::StationMetrics;
use crate::telemetry::burst::Burst;
use arrayvec::ArrayVec;
use crossbeam_channel::{Receiver, Select, Sender};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

/// The static facts the assembler needs about the recipes and the station.
pub struct AssemblerPlan {
    /// By recipe (model slot) index: each frame is judged by the recipe stamped on it. Models
    /// installed while the station runs are added before any frame is stamped for them.
    pub recipes: Arc<Slots<RecipePlan>>,
    /// Millimetres per pixel per camera index (None: no scale; rules in mm are not applied).
    pub mm_per_px: Vec<Option<f32>>,
    pub verdict_deadline: Duration,
}

/// How one recipe's model outputs are stitched, decoded and decided.
pub struct RecipePlan {
    /// The task, with the recipe's threshold in force.
    pub task: TaskSpec,
    pub input_mode: InputMode,
    pub tile_w: u32,
    pub tile_h: u32,
    /// Per output the task reads: shape of one batch item, e.g. `[C, H, W]`.
    pub output_item_shape: Vec<Vec<usize>>,
    pub rules: Rules,
    /// Regions of interest per camera index.
    pub rois: Vec<Vec<[u32; 4]>>,
    /// Per class of this model: its index in the station's defect metrics (every recipe's
    /// classes, each name once).
    pub metric_classes: Vec<usize>,
}

#[derive(Default)]
struct Slot {
    frame: Option<Frame>,
    /// The recipe stamped on the frame.
    recipe: u16,
    tiles: u16,
    done: u16,
    failed: bool,
    /// A tile's outputs were not finite (checked by the inference worker).
    invalid: bool,
    /// Results that arrived before their `FrameStart`.
    early: Vec<EarlyTile>,
    /// Stitched maps (segmentation: classes × H × W; anomaly: 1 × H × W).
    maps: Vec<f32>,
    /// Classification: per-class max probability over tiles.
    class_scores: Vec<f32>,
    /// Detection: boxes from every tile, in frame coordinates.
    boxes: Vec<Defect>,
    /// Anomaly: max image score over tiles.
    score: f32,
    infer_started: Option<Instant>,
    infer_ended: Option<Instant>,
}

/// The assembler thread's state.
pub struct Assembler {
    plan: AssemblerPlan,
    slots: Vec<Slot>,
    free_slots: Sender<SlotId>,
    /// Where each decided part goes, offered in order (see [`OutputPort`]).
    outputs: Vec<Box<dyn OutputPort>>,
    /// Each recipe's threshold in force (anomaly models), changeable while the station runs.
    thresholds: Arc<LiveThresholds>,
    accounting: Arc<Accounting>,
    metrics: Arc<StationMetrics>,
    /// Buffers for outputs that arrive before their frame (see [`EarlyTile`]).
    early_pool: BufferPool<f32>,
    scratch: ComponentScratch,
    /// Outputs a decoder could not read (rate-limited log; those frames fail safe).
    decode_errors: Burst,
    /// Frames decided so far (the fault-injection point counts them).
    decided: u64,
    defects: Vec<Defect>,
    counted: Vec<bool>,
    class_counts: Vec<u32>,
    /// `linesight eval` only: every frame's per-pixel scores (see [`ScoreMap`]). Sent with a
    /// blocking send, so no map is lost; it allocates, so it is never set on a production line.
    score_maps: Option<Sender<ScoreMap>>,
}

impl AssemblerPlan {
    /// The plan of recipe `recipe`. Frames reach the assembler only stamped with an installed
    /// recipe (preprocess drops any other as invalid), and installs are never undone.
    fn recipe(&self, recipe: u16) -> &RecipePlan {
        self.recipes.get(usize::from(recipe)).expect("a frame's recipe is installed before it is stamped")
    }
}

impl Assembler {
    pub fn new(
        plan: AssemblerPlan,
        slots: usize,
        free_slots: Sender<SlotId>,
        outputs: Vec<Box<dyn OutputPort>>,
        thresholds: Arc<LiveThresholds>,
        accounting: Arc<Accounting>,
        metrics: Arc<StationMetrics>,
    ) -> Self {
        Self {
            plan,
            slots: (0..slots).map(|_| Slot { early: Vec::with_capacity(64), ..Default::default() }).collect(),
            free_slots,
            outputs,
            thresholds,
            accounting,
            metrics,
            // Room for thousands of regions: noisy maps must not grow it on the frame path.
            early_pool: BufferPool::new(4 * slots),
            scratch: ComponentScratch::with_capacity(4096, 16 * 1024),
            decided: 0,
            decode_errors: Burst::new("model outputs could not be decoded; those frames fail safe (inference_error)"),
            defects: Vec::with_capacity(256),
            counted: Vec::with_capacity(256),
            class_counts: Vec::with_capacity(64),
            score_maps: None,
        }
    }

    /// Also send every decided frame's per-pixel scores to `tx` (`linesight eval`).
    pub fn with_score_maps(mut self, tx: Option<Sender<ScoreMap>>) -> Self {
        self.score_maps = tx;
        self
    }

    /// Send the slot's per-pixel scores (segmentation and anomaly models; not for a failed frame).
    fn send_score_map(&self, id: SlotId, inspection: &Inspection) {
        let Some(tx) = &self.score_maps else { return };
        let slot = &self.slots[id as usize];
        let pixels = inspection.width as usize * inspection.height as usize;
        if slot.failed || slot.invalid || pixels == 0 {
            return;
        }
        let scores = match &self.plan.recipe(slot.recipe).task {
            TaskSpec::Anomaly(_) => slot.maps[..pixels].to_vec(),
            TaskSpec::Segmentation(s) => {
                let mut scores = vec![f32::NEG_INFINITY; pixels];
                for class in (0..s.classes.len()).filter(|&c| Some(c) != s.background_class) {
                    let plane = &slot.maps[class * pixels..(class + 1) * pixels];
                    scores.iter_mut().zip(plane).for_each(|(s, &v)| *s = s.max(v));
                }
                scores
            }
            TaskSpec::Classification(_) | TaskSpec::Detection(_) => return,
        };
        let meta = &inspection.meta;
        let map = ScoreMap {
            part_id: meta.part_id,
            seq: meta.seq,
            width: inspection.width,
            height: inspection.height,
            scores,
        };
        let _ = tx.send(map);
    }

    /// Run until both inbound queues are closed and drained.
    pub fn run(mut self, starts: Receiver<FrameStart>, results: Receiver<BatchResult>) {
        let mut starts_open = true;
        let mut results_open = true;
        while starts_open || results_open {
            // Select is rebuilt only when a queue closes; steady state reuses it.
            let mut sel = Select::new();
            let i_start = starts_open.then(|| sel.recv(&starts));
            let i_result = results_open.then(|| sel.recv(&results));
            loop {
                let op = sel.select();
                let idx = op.index();
                if Some(idx) == i_start {
                    match op.recv(&starts) {
                        Ok(s) => self.on_start(s),
                        Err(_) => {
                            starts_open = false;
                            break;
                        }
                    }
                } else if Some(idx) == i_result {
                    match op.recv(&results) {
                        Ok(r) => {
                            // Every frame start sent before this batch is in the queue by now
                            // (preprocess sends a frame's start before its batches): take them
                            // first, so the batch's frames are known.
                            while let Ok(s) = starts.try_recv() {
                                self.on_start(s);
                            }
                            self.on_batch(r)
                        }
                        Err(_) => {
                            results_open = false;
                            break;
                        }
                    }
                }
            }
        }
    }

    fn on_start(&mut self, start: FrameStart) {
        let slot = &mut self.slots[start.slot as usize];
        let (w, h) = (start.frame.width as usize, start.frame.height as usize);
        slot.tiles = start.tiles;
        // Preprocess only lets through frames stamped with a recipe that exists.
        slot.recipe = start.frame.meta.recipe;
        slot.failed = false;
        slot.invalid = false;
        slot.score = f32::NEG_INFINITY;
        slot.boxes.clear();
        slot.infer_started = None;
        slot.infer_ended = None;
        match &self.plan.recipe(slot.recipe).task {
            TaskSpec::Segmentation(s) => reset(&mut slot.maps, s.classes.len() * w * h, 0.0),
            TaskSpec::Anomaly(_) => reset(&mut slot.maps, w * h, f32::NEG_INFINITY),
            TaskSpec::Classification(s) => reset(&mut slot.class_scores, s.classes.len(), f32::NEG_INFINITY),
            TaskSpec::Detection(_) => {}
        }
        slot.frame = Some(start.frame);
        let mut early = std::mem::take(&mut slot.early);
        for mut e in early.drain(..) {
            let mut outputs: ArrayVec<&mut [f32], MAX_OUTPUTS> = e.outputs.iter_mut().map(|b| &mut b[..]).collect();
            self.merge(e.tile, &mut outputs, (e.failed, e.invalid), (e.infer_started, e.infer_ended));
            // `e` drops here: its buffers go back to the early pool.
        }
        // Keep the vector's capacity for the next early arrival.
        self.slots[start.slot as usize].early = early;
        self.maybe_finish(start.slot);
    }

    /// Take one batch's outputs apart, tile by tile, straight from ONNX Runtime's tensors.
    fn on_batch(&mut self, result: BatchResult) {
        let BatchResult { items, batch, mut outputs, mut failed, invalid, infer_started, infer_ended } = result;
        let mut data: ArrayVec<&mut [f32], MAX_OUTPUTS> = ArrayVec::new();
        if !failed {
            for value in outputs.iter_mut() {
                match value.try_extract_tensor_mut::<f32>() {
                    Ok((_, values)) => data.push(values),
                    Err(e) => {
                        tracing::warn!(error = %e, "model output is not a float tensor; these frames fail safe");
                        failed = true;
                    }
                }
            }
        }
        let times = (infer_started, infer_ended);
        for (k, tile) in items.iter().enumerate() {
            let tile_invalid = k < 64 && invalid & (1 << k) != 0;
            let mut item: ArrayVec<&mut [f32], MAX_OUTPUTS> = data
                .iter_mut()
                .map(|d| {
                    let len = d.len() / batch;
                    &mut d[k * len..(k + 1) * len]
                })
                .collect();
            if self.slots[tile.slot as usize].frame.is_none() {
                let outputs = item
                    .iter()
                    .map(|src| {
                        let mut buf = self.early_pool.take(src.len());
                        buf.copy_from_slice(src);
                        buf
                    })
                    .collect();
                self.slots[tile.slot as usize].early.push(EarlyTile {
                    tile: *tile,
                    outputs,
                    failed,
                    invalid: tile_invalid,
                    infer_started,
                    infer_ended,
                });
                continue;
            }
            self.merge(*tile, &mut item, (failed, tile_invalid), times);
            self.maybe_finish(tile.slot);
        }
        // `outputs` drops here: ONNX Runtime frees the batch's output tensors.
    }

    /// Fold one tile's outputs (one slice per output the task reads) into its slot.
    /// `(failed, invalid)`: the tile's batch failed; its outputs are not finite. Either way its
    /// values are never read: the frame fails safe.
    fn merge(
        &mut self,
        tile: TileRef,
        outputs: &mut [&mut [f32]],
        (failed, invalid): (bool, bool),
        times: (Instant, Instant),
    ) {
        let slot = &mut self.slots[tile.slot as usize];
        let plan = self.plan.recipe(slot.recipe);
        slot.done += 1;
        slot.infer_started = Some(slot.infer_started.map_or(times.0, |t| t.min(times.0)));
        slot.infer_ended = Some(slot.infer_ended.map_or(times.1, |t| t.max(times.1)));
        if failed || slot.failed {
            slot.failed = true;
            return;
        }
        if invalid || slot.invalid {
            slot.invalid = true;
            return;
        }
        let frame = slot.frame.as_ref().expect("merge only after FrameStart");
        let (fw, fh) = (frame.width as usize, frame.height as usize);
        let region = match plan.input_mode {
            InputMode::Tile => {
                Region { x0: tile.origin.0, y0: tile.origin.1, w: plan.tile_w, h: plan.tile_h, window: tile.window }
            }
            InputMode::Resize => Region::whole(0, 0, frame.width, frame.height),
        };
        let merged = match &plan.task {
            TaskSpec::Segmentation(s) => {
                let (c, mh, mw) = chw(&plan.output_item_shape[0]);
                apply_activation(outputs[0], c, mh * mw, s.activation)
                    .and_then(|()| paste_max(outputs[0], c, mh, mw, &mut slot.maps, fw, fh, region))
            }
            TaskSpec::Anomaly(_) => {
                slot.score = slot.score.max(outputs[0].iter().copied().fold(f32::NEG_INFINITY, f32::max));
                let (c, mh, mw) = chw(&plan.output_item_shape[1]);
                match outputs[1].get(..mh * mw) {
                    Some(map) => paste_max(map, c.min(1), mh, mw, &mut slot.maps, fw, fh, region),
                    None => Err(format!("anomaly map of {} values, expected {mh} × {mw}", outputs[1].len())),
                }
            }
            TaskSpec::Classification(s) => {
                let scores = &mut *outputs[0];
                let n = scores.len();
                let activated = if s.activation != Activation::None {
                    apply_activation(scores, n, 1, s.activation)
                } else {
                    Ok(())
                };
                for (acc, &p) in slot.class_scores.iter_mut().zip(scores.iter()) {
                    *acc = acc.max(p);
                }
                activated
            }
            TaskSpec::Detection(s) => {
                let start = slot.boxes.len();
                let origin = match plan.input_mode {
                    InputMode::Tile => (tile.origin.0 as f32, tile.origin.1 as f32),
                    InputMode::Resize => (0.0, 0.0),
                };
                let decoded =
                    decode_yolo(outputs[0], s.format, s.classes.len(), s.score_threshold, origin, &mut slot.boxes);
                if plan.input_mode == InputMode::Resize {
                    let (sx, sy) = (fw as f32 / plan.tile_w as f32, fh as f32 / plan.tile_h as f32);
                    for b in &mut slot.boxes[start..] {
                        (b.x, b.y, b.w, b.h) = (b.x * sx, b.y * sy, b.w * sx, b.h * sy);
                        b.area_px = b.w * b.h;
                    }
                }
                decoded
            }
        };
        // The worker checked every output's shape, so this is a decoder's own guard: the frame
        // fails safe as an inference error rather than a thread panicking.
        if let Err(problem) = merged {
            slot.failed = true;
            self.decode_errors.failed(&problem);
        }
    }

    fn maybe_finish(&mut self, id: SlotId) {
        let slot = &self.slots[id as usize];
        if slot.frame.is_none() || slot.done < slot.tiles {
            return;
        }
        self.decided += 1;
        crate::supervise::fault_point("assemble", self.decided);
        let t0 = Instant::now();
        let mut inspection = self.decide(id);
        self.metrics.decode.observe(t0.elapsed().as_secs_f64());
        self.send_score_map(id, &inspection);
        let camera = inspection.meta.camera as usize;
        if let Some(h) = self.metrics.capture_to_verdict.get(camera) {
            h.observe(inspection.decided_at.duration_since(inspection.meta.captured_at).as_secs_f64());
        }
        let metric_classes = &self.plan.recipe(inspection.meta.recipe).metric_classes;
        for d in inspection.defects.iter().filter(|d| d.counted) {
            let class = metric_classes.get(usize::from(d.defect.class));
            if let Some(c) = class.and_then(|k| self.metrics.defects.get(camera).and_then(|c| c.get(*k))) {
                c.inc();
            }
        }
        let counters = self.accounting.camera(inspection.meta.camera);
        match inspection.verdict {
            Verdict::Ok => &counters.ok,
            Verdict::Ng => &counters.ng,
            Verdict::Failsafe(FailsafeCause::InferenceError) => &counters.failsafe_inference_error,
            Verdict::Failsafe(FailsafeCause::Timeout) => &counters.failsafe_timeout,
            Verdict::Failsafe(FailsafeCause::InvalidOutput) => &counters.failsafe_invalid_output,
        }
        .fetch_add(1, Relaxed);
        // Every output in turn, never waiting; the pixels go back to the camera's pool afterwards
        // (unless an output, the archive, took them).
        let mut frame = self.slots[id as usize].frame.take();
        let slot = &self.slots[id as usize];
        let pixels = inspection.width as usize * inspection.height as usize;
        let heat = match &self.plan.recipe(slot.recipe).task {
            TaskSpec::Anomaly(_) if !slot.failed && !slot.invalid && pixels > 0 && slot.maps.len() >= pixels => {
                Some(HeatSource {
                    width: inspection.width,
                    height: inspection.height,
                    scores: &slot.maps[..pixels],
                    threshold: inspection.threshold,
                })
            }
            _ => None,
        };
        for out in &mut self.outputs {
            out.offer(&mut inspection, &mut frame, heat, &self.accounting);
        }
        drop(frame);
        self.slots[id as usize].done = 0;
        let _ = self.free_slots.send(id);
    }

    /// Decode and decide a complete slot.
    fn decide(&mut self, id: SlotId) -> Inspection {
        let slot = &mut self.slots[id as usize];
        let plan = self.plan.recipe(slot.recipe);
        let frame = slot.frame.as_ref().expect("complete slot has its frame");
        let (w, h) = (frame.width as usize, frame.height as usize);
        let mut image_score = f32::NAN;
        // Anomaly models: the recipe's threshold now (it may change while the station runs).
        let threshold = match &plan.task {
            TaskSpec::Anomaly(a) => self.thresholds.get(usize::from(slot.recipe)).unwrap_or(a.threshold),
            _ => f32::NAN,
        };
        self.defects.clear();
        if !slot.failed && !slot.invalid {
            match &plan.task {
                TaskSpec::Segmentation(s) => decode_segmentation(
                    &slot.maps,
                    s.classes.len(),
                    w,
                    h,
                    s.pixel_threshold,
                    s.background_class,
                    &mut self.scratch,
                    &mut self.defects,
                ),
                TaskSpec::Anomaly(_) => {
                    image_score = slot.score;
                    // Regions are kept only for anomalous parts (image score ≥ threshold), so the
                    // verdict follows the image score: a score that is not the map's maximum (a
                    // taught model's is the mean of its top pixels) may leave hot specks above the
                    // threshold on a part that scored good.
                    let anomalous = decode_anomaly(
                        slot.score,
                        &slot.maps,
                        w,
                        h,
                        threshold,
                        0,
                        &mut self.scratch,
                        &mut self.defects,
                    );
                    if !anomalous {
                        self.defects.clear();
                    }
                }
                TaskSpec::Classification(c) => {
                    let (class, score) = decode_classification(&mut slot.class_scores, Activation::None);
                    let good = c.good_class.as_deref().and_then(|g| c.classes.iter().position(|x| x == g));
                    if Some(class) != good {
                        self.defects.push(Defect::from_box(class as u16, 0.0, 0.0, w as f32, h as f32, score));
                    }
                }
                TaskSpec::Detection(d) => {
                    nms_class_aware(&mut slot.boxes, d.iou_threshold);
                    self.defects.extend_from_slice(&slot.boxes);
                }
            }
        }
        let meta = frame.meta;
        let now = Instant::now();
        let verdict = if slot.failed {
            Verdict::Failsafe(FailsafeCause::InferenceError)
        } else if slot.invalid {
            Verdict::Failsafe(FailsafeCause::InvalidOutput)
        } else if now.duration_since(meta.captured_at) > self.plan.verdict_deadline {
            Verdict::Failsafe(FailsafeCause::Timeout)
        } else {
            let rois = plan.rois.get(meta.camera as usize).map(Vec::as_slice).unwrap_or(&[]);
            let mm_per_px = self.plan.mm_per_px.get(meta.camera as usize).copied().flatten();
            decide::decide(&mut self.defects, rois, mm_per_px, &plan.rules, &mut self.counted, &mut self.class_counts)
        };
        let mut defects = ArrayVec::new();
        let mut truncated = 0;
        for (i, d) in self.defects.iter().enumerate() {
            let counted = self.counted.get(i).copied().unwrap_or(false);
            if defects.try_push(RecordedDefect { defect: *d, counted }).is_err() {
                truncated += 1;
            }
        }
        debug_assert!(defects.len() <= MAX_DEFECTS);
        Inspection {
            meta,
            width: frame.width,
            height: frame.height,
            verdict,
            defects,
            defects_truncated: truncated,
            image_score,
            threshold,
            mm_per_px: self.plan.mm_per_px.get(meta.camera as usize).copied().flatten(),
            infer_started: slot.infer_started.unwrap_or(now),
            infer_ended: slot.infer_ended.unwrap_or(now),
            decided_at: now,
            decided_wall: SystemTime::now(),
            archived: false,
        }
    }
}

fn reset(buf: &mut Vec<f32>, len: usize, value: f32) {
    buf.clear();
    buf.resize(len, value);
}

/// Read `[C, H, W]` (or `[H, W]`, `[1, H, W]`…) as (channels, height, width).
fn chw(shape: &[usize]) -> (usize, usize, usize) {
    match shape {
        [h, w] => (1, *h, *w),
        [c, h, w] => (*c, *h, *w),
        [.., c, h, w] => (*c, *h, *w),
        [n] => (1, 1, *n),
        [] => (1, 1, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameMeta, PixelFormat};
    use crate::model::manifest::SegmentationSpec;
    use crossbeam_channel::bounded;

    fn plan() -> AssemblerPlan {
        let recipe = RecipePlan {
            task: TaskSpec::Segmentation(SegmentationSpec {
                output: "p".into(),
                classes: vec!["defect".into()],
                activation: Activation::None,
                pixel_threshold: 0.5,
                background_class: None,
            }),
            input_mode: InputMode::Tile,
            tile_w: 4,
            tile_h: 4,
            output_item_shape: vec![vec![1, 4, 4]],
            rules: Rules::resolve(&[], &["defect".into()]).unwrap(),
            rois: vec![vec![]],
            metric_classes: vec![0],
        };
        AssemblerPlan {
            recipes: Arc::new(Slots::from_vec(vec![recipe])),
            mm_per_px: vec![None],
            verdict_deadline: Duration::from_secs(60),
        }
    }

    fn frame(pool: &BufferPool<u8>) -> Frame {
        let meta = FrameMeta {
            camera: 0,
            seq: 7,
            part_id: None,
            captured_at: Instant::now(),
            captured_wall: SystemTime::now(),
            recipe: 0,
        };
        Frame { meta, format: PixelFormat::Gray8, width: 6, height: 4, pixels: pool.take(24) }
    }

    /// Tiles at x = 0 and x = 2 on a 6-wide frame overlap in columns 2..4, split at column 3.
    fn tile_ref(t: u16) -> TileRef {
        let x0 = 2 * t as u32;
        let window = if x0 == 0 { (0, 0, 3, 4) } else { (3, 0, 6, 4) };
        TileRef { slot: 0, tile: t, origin: (x0, 0), window }
    }

    /// One batch holding the given tiles, with real ONNX Runtime tensors as outputs.
    fn batch(tiles: &[(u16, [f32; 16])], failed: bool) -> BatchResult {
        crate::stages::infer::runtime::environment().expect("ONNX Runtime (run `make setup`)");
        let mut data = Vec::new();
        let mut items = ArrayVec::new();
        for (t, values) in tiles {
            data.extend_from_slice(values);
            items.push(tile_ref(*t));
        }
        let tensor = ort::value::Tensor::from_array(([tiles.len(), 1, 4, 4], data)).unwrap().into_dyn();
        let mut outputs = ArrayVec::new();
        if !failed {
            outputs.push(tensor);
        }
        let now = Instant::now();
        BatchResult { items, batch: tiles.len(), outputs, failed, invalid: 0, infer_started: now, infer_ended: now }
    }

    /// Drive an assembler with the frame announced first or last, and tiles in one or two
    /// batches; return the one inspection.
    fn assemble(start_first: bool, tiles: [[f32; 16]; 2], fail_second: bool) -> Inspection {
        let acc = Arc::new(Accounting::new(&["cam".into()]));
        let (free_tx, free_rx) = bounded(1);
        let (out_tx, out_rx) = bounded(4);
        let metrics = StationMetrics::new(&acc, &["defect".into()], &[("m", "0")], None).unwrap();
        let mut a = Assembler::new(
            plan(),
            1,
            free_tx,
            vec![crate::pipeline::RecordPort::results(out_tx)],
            Arc::new(LiveThresholds::new(&[None])),
            Arc::clone(&acc),
            Arc::new(metrics),
        );
        let px = BufferPool::new(1);
        let start = FrameStart { slot: 0, frame: frame(&px), tiles: 2 };
        let batches = if fail_second {
            vec![batch(&[(0, tiles[0])], false), batch(&[(1, tiles[1])], true)]
        } else {
            vec![batch(&[(0, tiles[0]), (1, tiles[1])], false)]
        };
        if start_first {
            a.on_start(start);
            batches.into_iter().for_each(|b| a.on_batch(b));
        } else {
            batches.into_iter().for_each(|b| a.on_batch(b));
            a.on_start(start);
        }
        assert_eq!(free_rx.try_recv().ok(), Some(0), "slot handed back");
        out_rx.try_recv().expect("one inspection")
    }

    #[test]
    fn tiles_are_stitched_into_one_defect_in_frame_coordinates() {
        // Tile 0 sees a defect pixel at frame (2, 1); tile 1 at frame (3, 1) and (4, 1): one
        // region of 3 pixels. Tile 0's border pixel (3, 1) = 0.95 lies outside its stitch window
        // and must not leak into the frame.
        let mut t0 = [0.0; 16];
        t0[4 + 2] = 0.9;
        t0[4 + 3] = 0.95;
        let mut t1 = [0.0; 16];
        t1[4 + 1] = 0.7;
        t1[4 + 2] = 0.8;
        for start_first in [true, false] {
            let i = assemble(start_first, [t0, t1], false);
            assert_eq!(i.verdict, Verdict::Ng);
            assert_eq!(i.defects.len(), 1);
            let d = i.defects[0].defect;
            assert_eq!((d.x, d.y, d.w, d.h, d.area_px), (2.0, 1.0, 3.0, 1.0, 3.0));
            assert_eq!(d.max_score, 0.9);
        }
    }

    #[test]
    fn a_failed_tile_makes_the_whole_frame_fail_safe() {
        for start_first in [true, false] {
            let i = assemble(start_first, [[0.0; 16], [0.9; 16]], true);
            assert_eq!(i.verdict, Verdict::Failsafe(FailsafeCause::InferenceError));
        }
    }
}
