//! An inference worker: one ONNX Runtime session running the batches preprocessing has formed.
//!
//! The worker does nothing but run: tiles were cut straight into the batch tensor by the
//! preprocess thread, and the outputs ONNX Runtime allocates are handed to the assembler as they
//! are (no copy on this thread), so the session runs back to back and the pipeline's own work
//! happens on the other cores. An inference error fails exactly the frames of that batch.
//!
//! Before a batch leaves the worker its outputs are checked: an output whose shape is not the one
//! the model was checked and warmed up with fails the batch (no decoder ever slices a surprise
//! shape), and each item whose outputs hold a NaN or an infinity is marked invalid, so its frame
//! is decided `FAILSAFE(invalid_output)` and never compared against a threshold.

use super::session::InferSession;
use crate::pipeline::messages::{BatchJob, BatchResult};
use crate::telemetry::burst::Burst;
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

/// How a batch went, for the worker's telemetry hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    Ok,
    /// The run failed, or its outputs had an unexpected shape: every frame fails safe.
    Failed,
    /// The run succeeded but some items' outputs are not finite (those frames fail safe).
    InvalidOutput,
}

/// Where a worker receives the models installed while the station runs: (slot, model).
pub type ModelInstalls = Receiver<(u16, WorkerModel)>;

/// One recipe's model in a worker: its own session, and how to feed and read it.
pub struct WorkerModel {
    pub session: InferSession,
    /// The model's name, for logs.
    pub name: String,
    pub input_name: String,
    /// `[channels, height, width]` of one item.
    pub input_shape: [usize; 3],
    pub output_names: Vec<String>,
}

/// Everything a worker thread owns.
pub struct Worker {
    /// One per model slot, by slot index: a batch runs on its recipe's model.
    pub models: Vec<WorkerModel>,
    /// Models installed while the station runs, each sent before any frame is stamped for it.
    pub installs: ModelInstalls,
    /// Called once per run with (recipe, tiles in the batch, run duration, outcome); telemetry
    /// hooks in here.
    pub on_batch: Box<dyn FnMut(u16, usize, Duration, BatchOutcome) + Send>,
    /// Fault injection (tests, benches): stall every n-th batch.
    pub stall: Option<InferenceStall>,
    /// Fault injection (tests, the fault suite): corrupt outputs (see [`OutputFault`]).
    pub output_fault: Option<OutputFault>,
}

/// Fault injection: from batch `from` on (1-based), for `count` batches (0 = for ever), every
/// output value is replaced by NaN, as a corrupt model or a numerical fault on a GPU would give;
/// with `error=1`, those runs fail instead (an inference error). Set with
/// `LINESIGHT_FAULT_NAN_OUTPUTS="from=N,count=M[,error=1]"`; never on by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputFault {
    pub from: u64,
    pub count: u64,
    pub error: bool,
}

impl OutputFault {
    pub const ENV: &'static str = "LINESIGHT_FAULT_NAN_OUTPUTS";

    /// Parse `from=N,count=M` (both optional: from 1, for ever).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut fault = Self { from: 1, count: 0, error: false };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("from", v)) => {
                    fault.from = v.parse().map_err(|_| format!("{}: from={v:?} is not a number", Self::ENV))?
                }
                Some(("error", v)) => fault.error = v == "1",
                Some(("count", v)) => {
                    fault.count = v.parse().map_err(|_| format!("{}: count={v:?} is not a number", Self::ENV))?
                }
                _ => return Err(format!("{}={text:?}: expected from=N,count=M", Self::ENV)),
            }
        }
        Ok(fault)
    }

    fn applies(&self, batch: u64) -> bool {
        batch >= self.from && (self.count == 0 || batch < self.from.saturating_add(self.count))
    }
}

/// Check a batch's outputs (`[batch, item...]` each) against the item shapes the session was
/// warmed up with. `Err` names the output and both shapes; `Ok` holds a bit per item (of the
/// first `items`) whose values are not all finite, and the index of the first output that had one.
pub fn check_batch(
    outputs: &[(&[i64], &[f32])],
    batch: usize,
    items: usize,
    item_shapes: &[Vec<usize>],
    names: &[String],
) -> Result<(u64, Option<usize>), String> {
    let mut invalid = 0u64;
    let mut first = None;
    for (o, ((shape, data), item)) in outputs.iter().zip(item_shapes).enumerate() {
        let same = shape.len() == item.len() + 1
            && shape[0] == batch as i64
            && shape[1..].iter().zip(item).all(|(&a, &b)| a == b as i64);
        let item_len: usize = item.iter().product();
        if !same || data.len() != batch * item_len {
            return Err(format!(
                "output {:?} has shape {shape:?}, the model was checked with [{batch}, {}]",
                names.get(o).map_or("?", String::as_str),
                item.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
        for k in 0..items.min(batch).min(64) {
            if !data[k * item_len..(k + 1) * item_len].iter().all(|v| v.is_finite()) {
                invalid |= 1 << k;
                first.get_or_insert(o);
            }
        }
    }
    Ok((invalid, first))
}

impl Worker {
    /// Run batches until the batch queue is closed and drained.
    pub fn run(mut self, jobs: Receiver<BatchJob>, results: Sender<BatchResult>) {
        let mut batches = 0u64;
        let mut failures = Burst::new("inference failed; the frames of these batches fail safe (inference_error)");
        let mut invalid_log =
            Burst::new("model outputs are not finite (NaN or infinity); those frames fail safe (invalid_output)");
        while let Ok(job) = jobs.recv() {
            batches += 1;
            crate::supervise::fault_point("infer", batches);
            if let Some(s) = self.stall
                && batches.is_multiple_of(s.every)
            {
                std::thread::sleep(s.stall);
            }
            let started = Instant::now();
            let mut invalid = 0u64;
            let fault = self.output_fault.filter(|f| f.applies(batches));
            // A model installed while the station runs is in `installs` before its first batch.
            while usize::from(job.recipe) >= self.models.len()
                && let Ok((slot, model)) = self.installs.try_recv()
            {
                debug_assert_eq!(usize::from(slot), self.models.len(), "slots are installed in order");
                self.models.push(model);
            }
            let Some(model) = self.models.get_mut(usize::from(job.recipe)) else {
                // Cannot happen (frames are stamped with known recipes); fail the frames safe.
                failures.failed(&format!("no model for recipe {}", job.recipe));
                (self.on_batch)(job.recipe, job.items.len(), Duration::ZERO, BatchOutcome::Failed);
                let result = BatchResult {
                    failed: true,
                    invalid: 0,
                    outputs: ArrayVec::new(),
                    batch: job.batch,
                    items: job.items,
                    infer_started: started,
                    infer_ended: started,
                };
                if results.send(result).is_err() {
                    return;
                }
                continue;
            };
            let ran = match fault {
                Some(f) if f.error => Err(ort::Error::new("FAULT INJECTION: inference error")),
                _ => model.infer(&job),
            };
            let mut outputs = match ran {
                Ok(outputs) => outputs,
                Err(e) => {
                    failures.failed(&format!("model {}: {e} ({} tiles)", model.name, job.items.len()));
                    ArrayVec::new()
                }
            };
            if !outputs.is_empty() {
                if fault.is_some() {
                    poison(&mut outputs);
                }
                match model.check(&outputs, &job) {
                    Ok((0, _)) => {
                        failures.ok();
                        invalid_log.ok();
                    }
                    Ok((mask, output)) => {
                        failures.ok();
                        invalid = mask;
                        let name = output.and_then(|o| model.output_names.get(o)).map_or("?", String::as_str);
                        invalid_log.failed(&format!(
                            "model {} output {name:?}: {} of {} items",
                            model.name,
                            mask.count_ones(),
                            job.items.len()
                        ));
                    }
                    Err(problem) => {
                        failures.failed(&format!("model {}: {problem}", model.name));
                        outputs.clear();
                    }
                }
            }
            let ended = Instant::now();
            let outcome = match (outputs.is_empty(), invalid != 0) {
                (true, _) => BatchOutcome::Failed,
                (false, true) => BatchOutcome::InvalidOutput,
                (false, false) => BatchOutcome::Ok,
            };
            (self.on_batch)(job.recipe, job.items.len(), ended - started, outcome);
            let result = BatchResult {
                failed: outputs.is_empty(),
                invalid,
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
}

impl WorkerModel {
    /// See [`check_batch`].
    fn check(&self, outputs: &[ort::value::DynValue], job: &BatchJob) -> Result<(u64, Option<usize>), String> {
        let mut views: ArrayVec<(&[i64], &[f32]), 2> = ArrayVec::new();
        for (value, name) in outputs.iter().zip(&self.output_names) {
            let (shape, data) =
                value.try_extract_tensor::<f32>().map_err(|e| format!("output {name:?} is not a float tensor: {e}"))?;
            views.push((&shape[..], data));
        }
        check_batch(&views, job.batch, job.items.len(), &self.session.output_item_shape, &self.output_names)
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

/// Fault injection: every output value becomes NaN.
fn poison(outputs: &mut [ort::value::DynValue]) {
    for value in outputs {
        if let Ok((_, data)) = value.try_extract_tensor_mut::<f32>() {
            data.fill(f32::NAN);
        }
    }
}

/// Fault injection for tests and benches: every `every`-th batch, the inference worker sleeps
/// `stall` before running it, as a hung GPU driver or an overloaded host would. Set with the
/// environment variable `LINESIGHT_FAULT_STALL_INFERENCE="every=N,ms=M"`; never on by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InferenceStall {
    pub every: u64,
    pub stall: Duration,
}

impl InferenceStall {
    /// The environment variable's name.
    pub const ENV: &'static str = "LINESIGHT_FAULT_STALL_INFERENCE";

    /// Parse `every=N,ms=M`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut every = None;
        let mut ms = None;
        for part in text.split(',') {
            match part.trim().split_once('=') {
                Some(("every", v)) => every = v.parse::<u64>().ok().filter(|n| *n > 0),
                Some(("ms", v)) => ms = v.parse::<u64>().ok(),
                _ => {}
            }
        }
        match (every, ms) {
            (Some(every), Some(ms)) => Ok(Self { every, stall: Duration::from_millis(ms) }),
            _ => Err(format!("{}={text:?}: expected every=N,ms=M (N ≥ 1)", Self::ENV)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_check_marks_non_finite_items_and_refuses_other_shapes() {
        let names = vec!["score".to_string(), "map".to_string()];
        let shapes = vec![vec![], vec![1, 2, 2]];
        let scores = [0.1, f32::NAN, 0.3, 0.0];
        let mut maps = [0.0f32; 16];
        maps[8 + 3] = f32::INFINITY; // item 2
        let outputs: [(&[i64], &[f32]); 2] = [(&[4], &scores), (&[4, 1, 2, 2], &maps)];
        // Three real items: item 3 is batch padding and is not judged.
        assert_eq!(check_batch(&outputs, 4, 3, &shapes, &names), Ok((0b110, Some(0))));
        let wrong: [(&[i64], &[f32]); 2] = [(&[4], &scores), (&[4, 2, 2, 1], &maps)];
        let e = check_batch(&wrong, 4, 3, &shapes, &names).unwrap_err();
        assert!(e.contains("\"map\"") && e.contains("[4, 2, 2, 1]") && e.contains("[4, 1, 2, 2]"), "{e}");
    }

    #[test]
    fn output_fault_parses_and_applies_to_its_batches() {
        let f = OutputFault::parse("from=3,count=2").unwrap();
        assert_eq!((f.applies(2), f.applies(3), f.applies(4), f.applies(5)), (false, true, true, false));
        assert!(OutputFault::parse("").unwrap().applies(1_000_000));
        assert!(OutputFault::parse("every=2").is_err());
    }

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
