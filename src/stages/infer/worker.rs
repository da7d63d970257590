//! An inference worker: one ONNX Runtime session running the batches preprocessing has formed.
//!
//! The worker does nothing but run: tiles were cut straight into the batch tensor by the
//! preprocess thread, and the outputs ONNX Runtime allocates are handed to the assembler as they
//! are (no copy on this thread), so the session runs back to back and the pipeline's own work
//! happens on the other cores. An inference error fails exactly the frames of that batch.

use super::session::InferSession;
use crate::topology::messages::{BatchJob, BatchResult};
use arrayvec::ArrayVec;
use crossbeam_channel::{Receiver, Sender};
use ort::value::TensorRef;
use std::time::{Duration, Instant};

/// Batching settings, applied by the preprocess threads that form batches.
#[derive(Clone, Debug)]
pub struct BatchPolicy {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// The model only accepts this batch size (manifest `batch`), or `None` for dynamic.
    pub fixed_batch: Option<usize>,
}

impl BatchPolicy {
    /// The batch shape used to run `n` tiles: the next power of two (capped at `max_batch`), or
    /// the model's fixed batch. ONNX Runtime then sees only a handful of shapes and its memory
    /// arena stays flat.
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
    /// `[channels, height, width]` of one item.
    pub input_shape: [usize; 3],
    pub output_names: Vec<String>,
    /// Called once per run with (tiles in the batch, run duration, whether it succeeded);
    /// telemetry hooks in here.
    pub on_batch: Box<dyn FnMut(usize, Duration, bool) + Send>,
    /// Fault injection (tests, benches): stall every n-th batch.
    pub stall: Option<crate::topology::InferenceStall>,
}

impl Worker {
    /// Run batches until the batch queue is closed and drained.
    pub fn run(mut self, jobs: Receiver<BatchJob>, results: Sender<BatchResult>) {
        let mut batches = 0u64;
        while let Ok(job) = jobs.recv() {
            batches += 1;
            if let Some(s) = self.stall
                && batches.is_multiple_of(s.every)
            {
                std::thread::sleep(s.stall);
            }
            let started = Instant::now();
            let outputs = match self.infer(&job) {
                Ok(outputs) => outputs,
                Err(e) => {
                    tracing::warn!(error = %e, tiles = job.items.len(), "inference failed; these frames fail safe");
                    ArrayVec::new()
                }
            };
            let ended = Instant::now();
            (self.on_batch)(job.items.len(), ended - started, !outputs.is_empty());
            let result = BatchResult {
                failed: outputs.is_empty(),
                outputs,
                batch: job.batch,
                items: job.items,
                infer_started: started,
                infer_ended: ended,
            };
            // The batch tensor (in `job.tensor`) goes back to its pool here.
            drop(job.tensor);
            if results.send(result).is_err() {
                return; // assembler gone: shutting down
            }
        }
    }

    fn infer(&mut self, job: &BatchJob) -> Result<ArrayVec<ort::value::DynValue, 2>, ort::Error> {
        let [c, h, w] = self.input_shape;
        let len = job.batch * c * h * w;
        let tensor = TensorRef::from_array_view(([job.batch, c, h, w], &job.tensor[..len]))?;
        let mut outputs = self.session.session.run(ort::inputs![self.input_name.as_str() => tensor])?;
        let mut values = ArrayVec::new();
        for name in &self.output_names {
            let value =
                outputs.remove(name.as_str()).ok_or_else(|| ort::Error::new(format!("output {name:?} missing")))?;
            values.push(value);
        }
        Ok(values)
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
