//! The preprocess thread: takes frames from every camera queue, claims an in-flight slot, and
//! cuts each frame into model inputs (tiles, or one resized input) written straight into the
//! batch tensor the model will run — the dynamic batcher lives here, so inference workers do
//! nothing but run.
//!
//! Batching, like Triton's dynamic batcher: tiles from any camera accumulate in the current batch
//! until it holds `max_batch` tiles or `max_wait` has passed since its first tile; it is then
//! padded with zeros to the policy's shape (a power of two, or the model's fixed batch) and sent.
//! A partial batch is also sent before this thread waits for a free slot, so a batch never waits
//! on frames that cannot enter the pipeline until it has run (no deadlock at `max_in_flight`),
//! and as soon as a frame is cut when no batch is queued for the workers and no frame waits in
//! any camera queue: there is nothing to batch it with, so waiting would only add latency.
//!
//! Ordering: a frame's `FrameStart` is sent before any batch holding its tiles (batches that
//! fill up while a frame is being cut are held until its `FrameStart` is out). The assembler
//! drains frame starts before it handles a batch result, so it always knows the frame a result
//! belongs to.

use crate::config::InputMode;
use crate::frame::Frame;
use crate::pipeline::accounting::{Accounting, DropCause};
use crate::pipeline::messages::{BatchJob, FrameStart, MAX_BATCH, SlotId, TileRef};
use crate::pipeline::{MAX_SLOTS, Slots};
use crate::pool::{BufferPool, Pooled};
use crate::stages::infer::worker::BatchPolicy;
use crate::stages::preprocess::{Normalizer, resize_to_tensor, tile_to_tensor};
use crate::stages::tiling::TileGrid;
use crate::telemetry::burst::Burst;
use arrayvec::ArrayVec;
use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How one recipe's model takes its input: how frames are cut, normalised and batched.
#[derive(Clone)]
pub struct Cut {
    pub input_mode: InputMode,
    pub tile_w: u32,
    pub tile_h: u32,
    pub normalizer: Normalizer,
    pub policy: BatchPolicy,
    /// Frames narrower or lower than this are not inspected (see `InputSpec::min_size`).
    pub min_size: (u32, u32),
}

impl Cut {
    /// Floats in one model input item.
    pub fn item_len(&self) -> usize {
        self.normalizer.channels * (self.tile_w * self.tile_h) as usize
    }
}

pub struct Preprocessor {
    /// One per recipe, by recipe index: each frame is cut for the recipe stamped on it, and
    /// batches never mix recipes.
    /// Models installed while the station runs appear here before any frame is stamped for them.
    pub cuts: Arc<Slots<Cut>>,
    pub overlap: u32,
    /// Batch tensors, each large enough for the largest padded batch.
    pub batch_pool: BufferPool<f32>,
    pub accounting: Arc<Accounting>,
    /// Called with the time spent cutting one frame (telemetry hook).
    pub on_frame: Box<dyn FnMut(Duration) + Send>,
    /// Frames dropped as invalid, logged per burst with why.
    pub invalid_log: Burst,
}

/// A batch being filled (one per recipe at most).
struct Pending {
    recipe: u16,
    tensor: Pooled<f32>,
    items: ArrayVec<TileRef, MAX_BATCH>,
    first_at: Instant,
}

/// The queues this thread writes to.
pub struct Downstream {
    pub free_slots: Receiver<SlotId>,
    pub starts: Sender<FrameStart>,
    pub jobs: Sender<BatchJob>,
}

/// The batches being filled, by recipe.
type PendingBatches = Vec<Option<Pending>>;

impl Preprocessor {
    /// Run until every camera queue is closed and drained.
    pub fn run(mut self, cameras: Vec<Receiver<Frame>>, out: Downstream) {
        let mut open: Vec<bool> = vec![true; cameras.len()];
        let mut grid = TileGrid::default();
        let mut pending: PendingBatches = (0..MAX_SLOTS).map(|_| None).collect();
        // Batches filled while cutting the current frame, sent right after its FrameStart.
        let mut ready: Vec<BatchJob> = Vec::with_capacity(16);
        let mut frames = 0u64;
        'outer: while open.iter().any(|&o| o) {
            let mut sel = Select::new();
            let mut index_of_op = Vec::with_capacity(cameras.len());
            for (i, rx) in cameras.iter().enumerate() {
                if open[i] {
                    sel.recv(rx);
                    index_of_op.push(i);
                }
            }
            // Steady state: this inner loop reuses `sel`; it is rebuilt only when a camera closes.
            loop {
                let op = match self.next_deadline(&pending) {
                    Some(deadline) => match sel.select_deadline(deadline) {
                        Ok(op) => op,
                        Err(_) => {
                            // A batch waited long enough: run it partial.
                            if !self.flush_due(&mut pending, &out.jobs) {
                                return;
                            }
                            continue;
                        }
                    },
                    None => sel.select(),
                };
                let cam = index_of_op[op.index()];
                match op.recv(&cameras[cam]) {
                    Ok(frame) => {
                        frames += 1;
                        crate::supervise::fault_point("preprocess", frames);
                        let recipe = frame.meta.recipe;
                        if !self.process(frame, &mut grid, &mut pending, &mut ready, &out)
                            || !self.send_when_waiting_cannot_help(recipe, &mut pending, &cameras, &out.jobs)
                        {
                            return; // downstream gone
                        }
                    }
                    Err(_) => {
                        open[cam] = false;
                        continue 'outer;
                    }
                }
            }
        }
        self.flush_all(&mut pending, &out.jobs);
    }

    fn max_wait(&self, recipe: u16) -> Duration {
        self.cuts.get(usize::from(recipe)).map_or(Duration::ZERO, |c| c.policy.max_wait)
    }

    /// When the oldest pending batch has waited `max_wait`.
    fn next_deadline(&self, pending: &PendingBatches) -> Option<Instant> {
        pending.iter().flatten().map(|p| p.first_at + self.max_wait(p.recipe)).min()
    }

    /// Send the pending batches that have waited `max_wait`. Returns false when the workers are gone.
    fn flush_due(&self, pending: &mut PendingBatches, jobs: &Sender<BatchJob>) -> bool {
        let now = Instant::now();
        pending.iter_mut().all(|p| {
            let due = p.as_ref().is_some_and(|p| p.first_at + self.max_wait(p.recipe) <= now);
            !due || self.flush(p, jobs)
        })
    }

    /// After a frame of `recipe` is cut: send the tiles that wait for company now when waiting
    /// cannot help — the recipe allows no wait, or (work-conserving) no batch is queued for the
    /// workers and no frame waits in any camera queue, so nothing could join them and a worker
    /// may be idle. Under load the job queue is rarely empty, and batches still fill. Returns
    /// false when the workers are gone.
    fn send_when_waiting_cannot_help(
        &self,
        recipe: u16,
        pending: &mut PendingBatches,
        cameras: &[Receiver<Frame>],
        jobs: &Sender<BatchJob>,
    ) -> bool {
        if self.max_wait(recipe).is_zero() {
            return pending.get_mut(usize::from(recipe)).is_none_or(|p| self.flush(p, jobs));
        }
        if jobs.is_empty() && cameras.iter().all(|c| c.is_empty()) {
            return self.flush_all(pending, jobs);
        }
        true
    }

    /// Send every pending batch. Returns false when the workers are gone.
    fn flush_all(&self, pending: &mut PendingBatches, jobs: &Sender<BatchJob>) -> bool {
        pending.iter_mut().all(|p| self.flush(p, jobs))
    }

    /// Why a frame cannot be inspected, if it cannot: no pixels, fewer bytes than its size says,
    /// smaller than the model input's minimum (a 1×1 image is no part), or more tiles than a
    /// frame can carry.
    fn invalid(&self, frame: &Frame) -> Option<String> {
        let Some(cut) = self.cuts.get(usize::from(frame.meta.recipe)) else {
            return Some(format!("stamped with recipe {}, which does not exist", frame.meta.recipe));
        };
        let (w, h) = (frame.width, frame.height);
        if w == 0 || h == 0 || frame.pixels.len() < frame.stride() * h as usize {
            return Some(format!("{w}×{h} frame with {} bytes of pixels", frame.pixels.len()));
        }
        let (min_w, min_h) = cut.min_size;
        if w < min_w || h < min_h {
            return Some(format!(
                "{w}×{h} frame is smaller than the model input's minimum {min_w}×{min_h} (input.min_width/min_height)"
            ));
        }
        if cut.input_mode == InputMode::Tile {
            let tiles = crate::stages::tiling::tile_count(w, h, cut.tile_w, cut.tile_h, self.overlap);
            if tiles > usize::from(u16::MAX) {
                return Some(format!(
                    "{w}×{h} frame needs {tiles} tiles of {}×{} (at most {})",
                    cut.tile_w,
                    cut.tile_h,
                    u16::MAX
                ));
            }
        }
        None
    }

    /// Close the pending batch: pad it to its shape.
    fn seal(&self, pending: &mut Option<Pending>) -> Option<BatchJob> {
        let Pending { recipe, mut tensor, items, .. } = pending.take()?;
        // A batch is only started for a recipe that has its cut.
        let cut = self.cuts.get(usize::from(recipe))?;
        let item = cut.item_len();
        let batch = cut.policy.padded(items.len());
        // Padding items are zeros; their outputs are computed and ignored.
        tensor[items.len() * item..batch * item].fill(0.0);
        Some(BatchJob { recipe, tensor, batch, items })
    }

    /// Send the pending batch, padded. Returns false when the workers are gone.
    fn flush(&self, pending: &mut Option<Pending>, jobs: &Sender<BatchJob>) -> bool {
        self.seal(pending).is_none_or(|job| jobs.send(job).is_ok())
    }

    /// Returns false when downstream queues are closed.
    fn process(
        &mut self,
        frame: Frame,
        grid: &mut TileGrid,
        pending: &mut PendingBatches,
        ready: &mut Vec<BatchJob>,
        out: &Downstream,
    ) -> bool {
        if let Some(problem) = self.invalid(&frame) {
            self.accounting.camera(frame.meta.camera).dropped(DropCause::InvalidFrame);
            self.invalid_log.failed(&format!("camera {} seq {}: {problem}", frame.meta.camera, frame.meta.seq));
            return true;
        }
        let t0 = Instant::now();
        let recipe = frame.meta.recipe;
        let Some(cut) = self.cuts.get(usize::from(recipe)) else { return true }; // checked by `invalid`
        match cut.input_mode {
            InputMode::Tile => grid.plan(frame.width, frame.height, cut.tile_w, cut.tile_h, self.overlap),
            InputMode::Resize => {
                grid.xs.clear();
                grid.xs.push(0);
                grid.ys.clear();
                grid.ys.push(0);
            }
        }
        // Waiting for a slot is the pipeline's backpressure: while every slot is in flight the
        // camera queues fill up and their policy (drop oldest / block) applies. Before waiting,
        // send the partial batch: the slots it holds are freed only once it has run.
        let slot = match out.free_slots.try_recv() {
            Ok(slot) => slot,
            Err(TryRecvError::Disconnected) => return false,
            Err(TryRecvError::Empty) => {
                if !self.flush_all(pending, &out.jobs) {
                    return false;
                }
                match out.free_slots.recv() {
                    Ok(slot) => slot,
                    Err(_) => return false,
                }
            }
        };
        let item = cut.item_len();
        let limit = cut.policy.gather_limit();
        let tiles = grid.len();
        let mine = &mut pending[usize::from(recipe)];
        for t in 0..tiles {
            let (x0, y0) = grid.origin(t);
            let p = mine.get_or_insert_with(|| Pending {
                recipe,
                tensor: self.batch_pool.take(cut.policy.padded(limit) * item),
                items: ArrayVec::new(),
                first_at: Instant::now(),
            });
            let k = p.items.len();
            let dst = &mut p.tensor[k * item..(k + 1) * item];
            let window = match cut.input_mode {
                InputMode::Tile => {
                    tile_to_tensor(&frame, x0, y0, cut.tile_w, cut.tile_h, &cut.normalizer, dst);
                    grid.window(t, cut.tile_w, cut.tile_h, frame.width, frame.height)
                }
                InputMode::Resize => {
                    resize_to_tensor(&frame, cut.tile_w, cut.tile_h, &cut.normalizer, dst);
                    (0, 0, frame.width, frame.height)
                }
            };
            p.items.push(TileRef { slot, tile: t as u16, origin: (x0, y0), window });
            if p.items.len() == limit {
                ready.extend(self.seal(mine));
            }
        }
        (self.on_frame)(t0.elapsed());
        self.invalid_log.ok();
        if out.starts.send(FrameStart { slot, frame, tiles: tiles as u16 }).is_err() {
            return false;
        }
        for job in ready.drain(..) {
            if out.jobs.send(job).is_err() {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameMeta, PixelFormat};
    use crate::model::manifest::{InputSpec, Layout, Normalization};
    use crossbeam_channel::bounded;
    use std::time::SystemTime;

    fn preprocessor(max_batch: usize, max_wait: Duration) -> Preprocessor {
        let input = InputSpec {
            name: "x".into(),
            width: 8,
            height: 8,
            channels: 1,
            layout: Layout::Nchw,
            batch: 0,
            normalization: Normalization::default(),
            mode: None,
            min_width: None,
            min_height: None,
        };
        let policy = BatchPolicy { max_batch, max_wait, fixed_batch: None };
        let cut = Cut {
            input_mode: InputMode::Tile,
            tile_w: 8,
            tile_h: 8,
            normalizer: Normalizer::new(&input),
            policy,
            min_size: input.min_size(),
        };
        Preprocessor {
            cuts: Arc::new(Slots::from_vec(vec![cut])),
            overlap: 0,
            batch_pool: BufferPool::new(8),
            accounting: Arc::new(Accounting::new(&["a".into(), "b".into()])),
            on_frame: Box::new(|_| {}),
            invalid_log: Burst::new("test"),
        }
    }

    #[test]
    fn a_frame_smaller_than_the_minimum_is_dropped_not_judged() {
        let pre = preprocessor(4, Duration::ZERO);
        assert_eq!(pre.cuts.get(0).unwrap().min_size, (2, 2), "a quarter of the 8×8 input");
        let pool = BufferPool::new(2);
        let tiny = sized_frame(0, 1, 1, 0, &pool);
        let problem = pre.invalid(&tiny).expect("a 1×1 image is no part");
        assert!(problem.contains("minimum 2×2"), "{problem}");
        assert!(pre.invalid(&frame(0, 1, &pool)).is_none());
    }

    /// A 16×8 frame (two 8×8 tiles) from `camera`, every pixel = `value`.
    fn frame(camera: u16, value: u8, pool: &BufferPool<u8>) -> Frame {
        sized_frame(camera, 16, 8, value, pool)
    }

    /// A `width × height` gray frame from `camera`, every pixel = `value`.
    fn sized_frame(camera: u16, width: u32, height: u32, value: u8, pool: &BufferPool<u8>) -> Frame {
        let mut pixels = pool.take((width * height) as usize);
        pixels.fill(value);
        let meta = FrameMeta {
            camera,
            seq: 0,
            part_id: None,
            captured_at: Instant::now(),
            captured_wall: SystemTime::now(),
            recipe: 0,
        };
        Frame { meta, format: PixelFormat::Gray8, width, height, pixels }
    }

    /// Run a preprocessor over the given frames (camera, value) and return the batches it sent.
    fn batches(pre: Preprocessor, frames: &[(u16, u8)], slots: u16) -> Vec<BatchJob> {
        let pool = BufferPool::new(8);
        let (a_tx, a_rx) = bounded(8);
        let (b_tx, b_rx) = bounded(8);
        for &(camera, value) in frames {
            [&a_tx, &b_tx][camera as usize].send(frame(camera, value, &pool)).unwrap();
        }
        drop((a_tx, b_tx));
        let (slot_tx, slot_rx) = bounded(slots as usize);
        (0..slots).for_each(|s| slot_tx.send(s).unwrap());
        let (start_tx, start_rx) = bounded(16);
        let (job_tx, job_rx) = bounded(16);
        pre.run(vec![a_rx, b_rx], Downstream { free_slots: slot_rx, starts: start_tx, jobs: job_tx });
        assert_eq!(start_rx.try_iter().count(), frames.len(), "one FrameStart per frame");
        job_rx.try_iter().collect()
    }

    #[test]
    fn tiles_from_both_cameras_share_one_batch_cut_in_place() {
        let jobs = batches(preprocessor(4, Duration::from_secs(1)), &[(0, 51), (1, 102)], 4);
        assert_eq!(jobs.len(), 1, "two frames × two tiles fill one batch of four");
        let job = &jobs[0];
        assert_eq!(job.batch, 4);
        let slots: Vec<u16> = job.items.iter().map(|t| t.slot).collect();
        assert_eq!(slots.len(), 4);
        assert_eq!(slots.iter().filter(|&&s| s == slots[0]).count(), 2, "two tiles per frame: {slots:?}");
        // Each item's tensor holds its own frame's pixels (normalised to 0..1).
        let values: Vec<f32> = (0..4).map(|k| job.tensor[k * 64]).collect();
        let count = |v: f32| values.iter().filter(|&&x| (x - v).abs() < 1e-5).count();
        assert_eq!((count(0.2), count(0.4)), (2, 2), "{values:?}");
    }

    #[test]
    fn a_partial_batch_is_padded_to_the_next_shape() {
        // Three frames of two tiles with max_batch 8: one batch of six tiles, padded to eight.
        let jobs = batches(preprocessor(8, Duration::from_secs(1)), &[(0, 10), (1, 20), (0, 30)], 4);
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].items.len(), jobs[0].batch), (6, 8));
        assert!(jobs[0].tensor[6 * 64..8 * 64].iter().all(|&v| v == 0.0), "padding is zeros");
    }

    #[test]
    fn a_lone_frame_is_not_held_back_for_a_batch_when_the_workers_have_nothing_queued() {
        let pool = BufferPool::new(4);
        let (tx, rx) = bounded(4);
        let (slot_tx, slot_rx) = bounded(4);
        (0..4).for_each(|s| slot_tx.send(s).unwrap());
        let (start_tx, start_rx) = bounded(4);
        let (job_tx, job_rx) = bounded(4);
        // A batch already queued for the workers (they are all busy).
        let busy = BatchJob { recipe: 0, tensor: BufferPool::new(1).take(64), batch: 1, items: ArrayVec::new() };
        job_tx.send(busy).unwrap();
        let pre = preprocessor(8, Duration::from_secs(60));
        let (b_tx, b_rx) = bounded::<Frame>(1);
        let handle = std::thread::spawn(move || {
            pre.run(vec![rx, b_rx], Downstream { free_slots: slot_rx, starts: start_tx, jobs: job_tx })
        });
        // Workers busy: the first frame's two tiles wait for company (max_wait is a minute). Its
        // fate is decided before the second frame is cut, so once the second frame has started
        // the queue must still hold only the busy batch.
        for value in [1, 2] {
            tx.send(frame(0, value, &pool)).unwrap();
            start_rx.recv_timeout(Duration::from_secs(10)).expect("frame cut");
        }
        assert_eq!(job_rx.len(), 1, "tiles held back while a batch was queued");
        assert_eq!(job_rx.recv().unwrap().items.len(), 0, "the busy batch");
        // The workers' queue is empty and no frame waits: the next frame goes out without
        // waiting max_wait, with whatever was held.
        tx.send(frame(0, 3, &pool)).unwrap();
        let mut tiles = 0;
        while tiles < 6 {
            let job = job_rx.recv_timeout(Duration::from_secs(10)).expect("sent long before max_wait");
            tiles += job.items.len();
        }
        assert_eq!(tiles, 6, "three frames of two tiles");
        drop((tx, b_tx)); // both cameras closed: the thread ends
        handle.join().unwrap();
    }

    #[test]
    fn a_batch_never_waits_for_a_slot_it_holds() {
        // One slot only: the second frame cannot start until the first frame's tiles have run,
        // so the partial batch must be sent before waiting. The slot comes back here from
        // nowhere, so the run ends when the queue closes: the first batch must already be out.
        let pool = BufferPool::new(4);
        let (tx, rx) = bounded(4);
        tx.send(frame(0, 1, &pool)).unwrap();
        tx.send(frame(0, 2, &pool)).unwrap();
        drop(tx);
        let (slot_tx, slot_rx) = bounded(1);
        slot_tx.send(0).unwrap();
        let (start_tx, _start_rx) = bounded(4);
        let (job_tx, job_rx) = bounded(4);
        let pre = preprocessor(8, Duration::from_secs(60));
        let handle = std::thread::spawn(move || {
            let (_b_tx, b_rx) = bounded::<Frame>(1);
            pre.run(vec![rx, b_rx], Downstream { free_slots: slot_rx, starts: start_tx, jobs: job_tx })
        });
        let first = job_rx.recv_timeout(Duration::from_secs(5)).expect("partial batch sent before waiting for a slot");
        assert_eq!(first.items.len(), 2);
        drop(slot_tx); // closes the slot queue: preprocess stops
        handle.join().unwrap();
    }
}
