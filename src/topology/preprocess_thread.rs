//! The preprocess thread: takes frames from every camera queue, claims an in-flight slot, cuts
//! the frame into model inputs (tiles, or one resized input) and sends them to the workers.

use super::accounting::{Accounting, DropCause};
use super::messages::{FrameStart, SlotId, TileJob};
use crate::config::InputMode;
use crate::frame::Frame;
use crate::pool::BufferPool;
use crate::stages::preprocess::{Normalizer, resize_to_tensor, tile_to_tensor};
use crate::stages::tiling::TileGrid;
use crossbeam_channel::{Receiver, Select, Sender};
use std::sync::Arc;

pub struct Preprocessor {
    pub input_mode: InputMode,
    pub tile_w: u32,
    pub tile_h: u32,
    pub overlap: u32,
    pub normalizer: Normalizer,
    pub tensor_pool: BufferPool<f32>,
    pub accounting: Arc<Accounting>,
    /// Called with the time spent cutting one frame (telemetry hook).
    pub on_frame: Box<dyn FnMut(std::time::Duration) + Send>,
}

impl Preprocessor {
    /// Run until every camera queue is closed and drained.
    pub fn run(
        mut self,
        cameras: Vec<Receiver<Frame>>,
        free_slots: Receiver<SlotId>,
        starts: Sender<FrameStart>,
        jobs: Sender<TileJob>,
    ) {
        let mut open: Vec<bool> = vec![true; cameras.len()];
        let mut grid = TileGrid::default();
        while open.iter().any(|&o| o) {
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
                let op = sel.select();
                let cam = index_of_op[op.index()];
                match op.recv(&cameras[cam]) {
                    Ok(frame) => {
                        if !self.process(frame, &mut grid, &free_slots, &starts, &jobs) {
                            return; // downstream gone
                        }
                    }
                    Err(_) => {
                        open[cam] = false;
                        break;
                    }
                }
            }
        }
    }

    /// Returns false when downstream queues are closed.
    fn process(
        &mut self,
        frame: Frame,
        grid: &mut TileGrid,
        free_slots: &Receiver<SlotId>,
        starts: &Sender<FrameStart>,
        jobs: &Sender<TileJob>,
    ) -> bool {
        if frame.width == 0 || frame.height == 0 || frame.pixels.len() < frame.stride() * frame.height as usize {
            self.accounting.camera(frame.meta.camera).dropped(DropCause::InvalidFrame);
            return true;
        }
        let t0 = std::time::Instant::now();
        match self.input_mode {
            InputMode::Tile => grid.plan(frame.width, frame.height, self.tile_w, self.tile_h, self.overlap),
            InputMode::Resize => {
                grid.xs.clear();
                grid.xs.push(0);
                grid.ys.clear();
                grid.ys.push(0);
            }
        }
        // Waiting for a slot is the pipeline's backpressure: while every slot is in flight the
        // camera queues fill up and their policy (drop oldest / block) applies.
        let Ok(slot) = free_slots.recv() else { return false };
        let item = self.normalizer.channels * (self.tile_w * self.tile_h) as usize;
        let tiles = grid.len();
        for t in 0..tiles {
            let (x0, y0) = grid.origin(t);
            let mut tensor = self.tensor_pool.take(item);
            match self.input_mode {
                InputMode::Tile => {
                    tile_to_tensor(&frame, x0, y0, self.tile_w, self.tile_h, &self.normalizer, &mut tensor)
                }
                InputMode::Resize => resize_to_tensor(&frame, self.tile_w, self.tile_h, &self.normalizer, &mut tensor),
            }
            // Tiles go out as soon as they are cut so workers start early; their results may
            // reach the assembler before the FrameStart below, which it handles.
            let window = match self.input_mode {
                InputMode::Tile => grid.window(t, self.tile_w, self.tile_h, frame.width, frame.height),
                InputMode::Resize => (0, 0, frame.width, frame.height),
            };
            if jobs.send(TileJob { slot, tile: t as u16, origin: (x0, y0), window, tensor }).is_err() {
                return false;
            }
        }
        (self.on_frame)(t0.elapsed());
        starts.send(FrameStart { slot, frame, tiles: tiles as u16 }).is_ok()
    }
}
