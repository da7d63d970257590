//! The INT8 copy of a float backbone, made inside teach from the product's own good images.
//!
//! 1. ONNX Runtime's basic graph optimisations fold the backbone's constants (and each explicit
//!    `Pad` into its convolution), so the graph is one chain of convolutions and additions;
//! 2. the calibration: the folded graph, with every tensor the INT8 graph will quantize as an
//!    extra output, runs on inputs fed exactly as teach feeds the backbone (the recipe's input
//!    handling and contrast); each tensor's range is its observed minimum and maximum clipped to
//!    the 99.999th percentile of its magnitude, so a handful of extreme activations do not
//!    coarsen the steps for all the others (ONNX Runtime's `percentile` calibration, as
//!    `scripts/quantize-backbone.py` uses it);
//! 3. the QDQ rewrite (`onnx::qdq`).
//!
//! The result is an ordinary [`Backbone`] teach composes the model on, as on the float one.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use onnx_protobuf::ModelProto;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use protobuf::{Message, MessageField};
use sha2::{Digest, Sha256};

use super::backbone::Backbone;
pub use super::onnx::qdq::WeightBits;
use super::onnx::{self, InputShape, qdq};
use crate::stages::infer::runtime;

/// The share of each tensor's magnitudes inside its calibrated range.
const PERCENTILE: f64 = 0.99999;
/// Inputs the calibration runs (fewer when teach has fewer): enough for stable ranges at the
/// 99.999th percentile (every input adds a few hundred thousand values per tensor).
pub const CALIBRATION_INPUTS: usize = 64;
/// Inputs run together in one calibration batch.
const BATCH: usize = 4;

/// What the quantization did, for teach's report and `model.toml`.
#[derive(Clone, Debug)]
pub struct Quantized {
    pub calibration_inputs: usize,
    pub weight_bits: WeightBits,
    pub tensors: usize,
    pub seconds: f64,
}

/// The INT8 copy of `float`, calibrated on `inputs` (model inputs of `shape`, as teach's feeder
/// makes them, concatenated).
pub fn quantize(
    float: &Backbone,
    shape: InputShape,
    inputs: &[f32],
    bits: WeightBits,
    threads: usize,
) -> Result<(Backbone, Quantized)> {
    let started = Instant::now();
    let count = inputs.len() / shape.item_len();
    if count == 0 {
        return Err(anyhow!("no calibration inputs for the INT8 backbone"));
    }
    let folded_bytes = fold_constants(&float.onnx_bytes, threads)?;
    let mut model = ModelProto::parse_from_bytes(&folded_bytes).context("reading the optimised backbone")?;
    let mut graph = model.graph.take().ok_or_else(|| anyhow!("the optimised backbone has no graph"))?;
    let plan = qdq::plan(&graph);
    if plan.tensors.is_empty() {
        return Err(anyhow!("backbone {}: nothing to quantize (no convolutions after its stem)", float.name));
    }
    let folded = Backbone { onnx_bytes: folded_bytes, ..float.clone() };
    let calibration = onnx::calibration_graph(&folded, shape, &plan.tensors).map_err(|e| anyhow!(e))?;
    let ranges = calibrate(&calibration, &plan.tensors, shape, inputs, threads)?;
    qdq::apply(&mut graph, &plan, &ranges, bits).map_err(|e| anyhow!(e))?;
    model.graph = MessageField::some(graph);
    let onnx_bytes = model.write_to_bytes().context("writing the INT8 backbone")?;
    let report = Quantized {
        calibration_inputs: count,
        weight_bits: bits,
        tensors: plan.tensors.len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    let int8 = Backbone {
        name: format!("{}-int8", float.name),
        sha256: hex::encode(Sha256::digest(&onnx_bytes)),
        onnx_bytes,
        int8: true,
        ..float.clone()
    };
    Ok((int8, report))
}

/// ONNX Runtime's basic (semantics-preserving) optimisations, saved as a model.
fn fold_constants(model: &[u8], threads: usize) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir().context("a temporary folder for the optimised backbone")?;
    let path = dir.path().join("folded.onnx");
    let env = runtime::environment().map_err(|e| anyhow!(e))?;
    let ort_err = |e: &dyn std::fmt::Display| anyhow!("ONNX Runtime: {e}");
    let session = ort::session::Session::builder(env)
        .map_err(|e| ort_err(&e))?
        .with_optimization_level(GraphOptimizationLevel::Level1)
        .map_err(|e| ort_err(&e))?
        .with_intra_threads(threads)
        .map_err(|e| ort_err(&e))?
        .with_optimized_model_path(&path)
        .map_err(|e| ort_err(&e))?
        .commit_from_memory(model)
        .map_err(|e| anyhow!("ONNX Runtime cannot load the backbone: {e}"))?;
    drop(session);
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// Each tensor's range over the calibration inputs.
fn calibrate(
    graph: &[u8],
    tensors: &[String],
    shape: InputShape,
    inputs: &[f32],
    threads: usize,
) -> Result<HashMap<String, qdq::Range>> {
    let mut session = super::learn::session_from_bytes(graph, threads).context("loading the calibration graph")?;
    let mut histograms: Vec<Magnitudes> = tensors.iter().map(|_| Magnitudes::new()).collect();
    for batch in inputs.chunks(BATCH * shape.item_len()) {
        let n = batch.len() / shape.item_len();
        let tensor = TensorRef::from_array_view(([n, shape.channels, shape.height, shape.width], batch))?;
        let outputs = session.run(ort::inputs![onnx::INPUT => tensor])?;
        for (name, h) in tensors.iter().zip(&mut histograms) {
            let (_, values) = outputs[name.as_str()].try_extract_tensor::<f32>()?;
            h.add(values);
        }
    }
    tensors
        .iter()
        .zip(&histograms)
        .map(|(name, h)| {
            h.range(PERCENTILE).map(|r| (name.clone(), r)).ok_or_else(|| {
                anyhow!("calibrating the INT8 backbone: tensor {name} had no finite value on the good images")
            })
        })
        .collect()
}

/// A tensor's observed minimum and maximum and a histogram of its magnitudes on a logarithmic
/// scale (the float's exponent and top mantissa bits: steps of at most 1/64 of the value), so
/// one pass over the values gives any percentile without keeping them.
struct Magnitudes {
    counts: Vec<u64>,
    total: u64,
    min: f32,
    max: f32,
}

/// Bits of a positive float dropped to find its bin: 8 exponent and 6 mantissa bits stay.
const SHIFT: u32 = 17;

impl Magnitudes {
    fn new() -> Self {
        Self { counts: vec![0; 1 << (31 - SHIFT)], total: 0, min: f32::INFINITY, max: f32::NEG_INFINITY }
    }

    fn add(&mut self, values: &[f32]) {
        for &v in values {
            if !v.is_finite() {
                continue;
            }
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            self.counts[(v.abs().to_bits() >> SHIFT) as usize] += 1;
            self.total += 1;
        }
    }

    /// `[max(min, −m), min(max, m)]` with m the magnitude below which `share` of the values lie.
    fn range(&self, share: f64) -> Option<qdq::Range> {
        if self.total == 0 {
            return None;
        }
        let wanted = (share * self.total as f64).ceil() as u64;
        let mut seen = 0;
        let mut limit = f32::INFINITY;
        for (bin, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= wanted {
                // The bin's upper edge: the magnitude the share lies below.
                limit = f32::from_bits(((bin as u32) + 1) << SHIFT);
                break;
            }
        }
        Some((self.min.max(-limit), self.max.min(limit)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_clips_rare_extremes_and_keeps_the_bulk() {
        let mut h = Magnitudes::new();
        // 1,000,000 values in [-2, 3], and three outliers at ±1000.
        let bulk: Vec<f32> = (0..1_000_000).map(|i| -2.0 + 5.0 * (i as f32) / 1_000_000.0).collect();
        h.add(&bulk);
        h.add(&[1000.0, -1000.0, 999.0, f32::NAN, f32::INFINITY]);
        let (lo, hi) = h.range(PERCENTILE).unwrap();
        // The same magnitude bounds both sides (the observed minimum is beyond it).
        assert!((-3.05..=-2.99).contains(&lo), "{lo}");
        assert!((2.99..=3.05).contains(&hi), "{hi}");
        // Every value kept: the observed extremes.
        let (lo, hi) = h.range(1.0).unwrap();
        assert_eq!((lo, hi), (-1000.0, 1000.0));
    }

    #[test]
    fn a_non_negative_tensor_keeps_zero_as_its_floor() {
        let mut h = Magnitudes::new();
        h.add(&[0.0, 0.5, 6.0, 6.0, 3.0]);
        assert_eq!(h.range(1.0), Some((0.0, 6.0)));
        assert_eq!(Magnitudes::new().range(PERCENTILE), None);
    }
}
