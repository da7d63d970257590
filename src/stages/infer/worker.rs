//! An inference worker: a dynamic batcher in front of its own ONNX Runtime session.
//!
//! Workers pull tiles from one shared queue (so load spreads across them), gather up to
//! `max_batch` tiles or until `max_wait` has passed since the first one, pad the batch up to the
//! next allowed shape (powers of two up to `max_batch`, or the model's fixed batch) so ONNX
//! Runtime sees only a few shapes and its memory arena stays flat, run, and send each tile's
//! outputs on. An inference error fails exactly the tiles of that batch.

use super::session::InferSession;
use crate::pool::BufferPool;
use crate::topology::messages::{TileJob, TileResult};
use arrayvec::ArrayVec;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ort::value::TensorRef;
use std::time::{Duration, Instant};

/// Batching settings for one worker.
#[derive(Clone, Debug)]
pub struct BatchPolicy {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// The model only accepts this batch size (manifest `batch`), or `None` for dynamic.
    pub fixed_batch: Option<usize>,
}

impl BatchPolicy {
    /// The batch shape used to run `n` tiles.
    pub fn padded(&self, n: usize) -> usize {
        match self.fixed_batch {
            Some(b) => b,
            None => n.next_power_of_two().min(self.max_batch).max(n),
        }
    }

    /// Every batch shape this policy can produce, smallest first.
    pub fn shapes(&self) -> Vec<usize> {
        let mut shapes: Vec<usize> = (1..=self.gather_limit()).map(|n| self.padded(n)).collect();
        shapes.dedup();
        shapes
    }

    /// Most tiles gathered into one run.
    pub fn gather_limit(&self) -> usize {
        self.fixed_batch.unwrap_or(self.max_batch).min(self.max_batch.max(1))
    }
}

/// Everything a worker thread owns.
pub struct Worker {
    pub session: InferSession,
    pub input_name: String,
    pub input_shape: [usize; 3],
    pub output_names: Vec<String>,
    pub policy: BatchPolicy,
    pub output_pool: BufferPool<f32>,
    /// Called once per run with (batch size, run duration); telemetry hooks in here.
    pub on_batch: Box<dyn FnMut(usize, Duration) + Send>,
}

impl Worker {
    /// Run until the job queue is closed and drained.
    pub fn run(mut self, jobs: Receiver<TileJob>, results: Sender<TileResult>) {
        let item_len = self.input_shape.iter().product::<usize>();
        let limit = self.policy.gather_limit();
        let largest = self.policy.padded(limit);
        let mut batch_input = vec![0.0f32; largest * item_len];
        let mut pending: Vec<TileJob> = Vec::with_capacity(limit);
        while let Ok(first) = jobs.recv() {
            pending.push(first);
            let deadline = Instant::now() + self.policy.max_wait;
            while pending.len() < limit {
                match jobs.recv_deadline(deadline) {
                    Ok(job) => pending.push(job),
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            self.run_batch(&mut pending, &mut batch_input, item_len, &results);
        }
    }

    fn run_batch(
        &mut self,
        pending: &mut Vec<TileJob>,
        batch_input: &mut [f32],
        item_len: usize,
        results: &Sender<TileResult>,
    ) {
        let n = pending.len();
        let padded = self.policy.padded(n);
        let input = &mut batch_input[..padded * item_len];
        for (i, job) in pending.iter().enumerate() {
            input[i * item_len..(i + 1) * item_len].copy_from_slice(&job.tensor);
        }
        // Padding items: zeros. Their outputs are computed and ignored.
        input[n * item_len..].fill(0.0);
        let [c, h, w] = self.input_shape;
        let started = Instant::now();
        let outcome = self.infer(input, [padded, c, h, w], pending, started);
        let ended = Instant::now();
        (self.on_batch)(n, ended - started);
        let mut outputs_per_tile = match outcome {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, tiles = n, "inference failed; these frames fail safe");
                (0..n).map(|_| ArrayVec::new()).collect()
            }
        };
        for (job, outputs) in pending.drain(..).zip(outputs_per_tile.drain(..)) {
            let failed = outputs.is_empty();
            let result = TileResult {
                slot: job.slot,
                tile: job.tile,
                origin: job.origin,
                window: job.window,
                outputs,
                failed,
                infer_started: started,
                infer_ended: ended,
                batch_size: n as u16,
            };
            // The tile's input tensor (in `job`) goes back to its pool here.
            drop(job);
            if results.send(result).is_err() {
                return; // assembler gone: shutting down
            }
        }
    }

    /// Run the session and copy each real tile's slice of every output into a pooled buffer.
    fn infer(
        &mut self,
        input: &[f32],
        shape: [usize; 4],
        pending: &[TileJob],
        _started: Instant,
    ) -> Result<Vec<ArrayVec<crate::pool::Pooled<f32>, 2>>, ort::Error> {
        let tensor = TensorRef::from_array_view((shape, input))?;
        let outputs = self.session.session.run(ort::inputs![self.input_name.as_str() => tensor])?;
        let batch = shape[0];
        let mut per_tile: Vec<ArrayVec<crate::pool::Pooled<f32>, 2>> =
            (0..pending.len()).map(|_| ArrayVec::new()).collect();
        for name in &self.output_names {
            let (_, values) = outputs[name.as_str()].try_extract_tensor::<f32>()?;
            let item = values.len() / batch;
            for (i, slot) in per_tile.iter_mut().enumerate() {
                let mut buf = self.output_pool.take(item);
                buf.copy_from_slice(&values[i * item..(i + 1) * item]);
                slot.push(buf);
            }
        }
        Ok(per_tile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_padded_to_a_few_shapes() {
        let p = BatchPolicy { max_batch: 8, max_wait: Duration::ZERO, fixed_batch: None };
        let shapes: Vec<usize> = (1..=8).map(|n| p.padded(n)).collect();
        assert_eq!(shapes, vec![1, 2, 4, 4, 8, 8, 8, 8]);
        assert_eq!(p.shapes(), vec![1, 2, 4, 8]);
        let odd = BatchPolicy { max_batch: 6, max_wait: Duration::ZERO, fixed_batch: None };
        assert_eq!(odd.padded(5), 6, "never more than max_batch");
        let fixed = BatchPolicy { max_batch: 8, max_wait: Duration::ZERO, fixed_batch: Some(4) };
        assert_eq!(fixed.gather_limit(), 4);
        assert_eq!(fixed.padded(1), 4);
    }
}
