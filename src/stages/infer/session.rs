//! One ONNX Runtime session for one inference worker: built with the configured execution
//! provider (falling back to CPU with a clear log line), its inputs and outputs checked against
//! the model manifest, and warmed up before the station reports ready.

use super::runtime;
use crate::config::Provider;
use crate::model::ModelPackage;
use crate::model::manifest::TaskSpec;
use crate::model::outputs::{Dim, check_output};
use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::value::TensorRef;

/// How to build sessions; one [`InferSession`] per worker is made from it.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub provider: Provider,
    pub device_id: i32,
    pub intra_threads: usize,
    /// ONNX Runtime's intra-op threads spin-wait between runs (`[model] intra_spinning`).
    pub intra_spinning: bool,
}

/// A checked, warmed-up session and what we learnt about its outputs.
pub struct InferSession {
    pub session: Session,
    /// The execution provider actually in use (after any fallback).
    pub provider: Provider,
    /// Elements per batch item of each output the task reads, in `TaskSpec::output_names` order.
    pub output_item_len: Vec<usize>,
    /// Shape of each such output for one batch item (without the batch dimension).
    pub output_item_shape: Vec<Vec<usize>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Runtime(String),
    #[error("model {model}: ONNX Runtime cannot load {path}: {message}")]
    Load { model: String, path: String, message: String },
    #[error("model {model}: graph does not match its manifest: {problem}")]
    Mismatch { model: String, problem: String },
    #[error("model {model}: warm-up run failed: {message}")]
    WarmUp { model: String, message: String },
}

impl InferSession {
    /// Build, check and warm up a session for `package`. Warm-up runs once at every batch size in
    /// `warm_batches` (the shapes the batcher will use), so the first real frames pay no start-up
    /// cost and the memory arena has its final size before the station reports ready.
    pub fn new(package: &ModelPackage, opts: &SessionOptions, warm_batches: &[usize]) -> Result<Self, SessionError> {
        let env = runtime::environment().map_err(SessionError::Runtime)?;
        let model = package.manifest.name.clone();
        let load_err = |e: &dyn std::fmt::Display| SessionError::Load {
            model: model.clone(),
            path: package.onnx_path.display().to_string(),
            message: e.to_string(),
        };
        let mut builder = Session::builder(env).map_err(|e| load_err(&e))?;
        builder = builder
            .with_intra_threads(opts.intra_threads)
            .map_err(|e| load_err(&e))?
            .with_inter_threads(1)
            .map_err(|e| load_err(&e))?
            .with_intra_op_spinning(opts.intra_spinning)
            .map_err(|e| load_err(&e))?;
        let provider = register_provider(&mut builder, opts, &model);
        let session = builder.commit_from_file(&package.onnx_path).map_err(|e| load_err(&e))?;
        let mut this = Self { session, provider, output_item_len: Vec::new(), output_item_shape: Vec::new() };
        this.check_io(package)?;
        for &batch in warm_batches.iter().rev() {
            this.warm_up(package, batch)?;
        }
        Ok(this)
    }

    fn check_io(&self, package: &ModelPackage) -> Result<(), SessionError> {
        let m = &package.manifest;
        let mismatch = |problem: String| SessionError::Mismatch { model: m.name.clone(), problem };
        let input = self.session.inputs().iter().find(|i| i.name() == m.input.name).ok_or_else(|| {
            mismatch(format!(
                "input {:?} not in graph (graph inputs: {})",
                m.input.name,
                self.session.inputs().iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        if self.session.inputs().len() != 1 {
            return Err(mismatch(format!("expected one input, graph has {}", self.session.inputs().len())));
        }
        let shape = input.dtype().tensor_shape().ok_or_else(|| mismatch("input is not a tensor".into()))?;
        if input.dtype().tensor_type() != Some(ort::value::TensorElementType::Float32) {
            return Err(mismatch(format!("input {:?} must be float32", m.input.name)));
        }
        let want = [m.input.batch as i64, m.input.channels as i64, m.input.height as i64, m.input.width as i64];
        let ok = shape.len() == 4
            && shape.iter().zip(want).enumerate().all(|(axis, (&got, want))| {
                // A dynamic axis (-1) accepts anything; batch 0 in the manifest means "dynamic".
                got < 0 || (axis == 0 && want == 0) || got == want
            });
        if !ok {
            return Err(mismatch(format!(
                "input {:?} has shape {shape:?}, manifest says [N={}, C={}, H={}, W={}] (batch 0 = dynamic)",
                m.input.name, m.input.batch, m.input.channels, m.input.height, m.input.width
            )));
        }
        let names = m.task.output_names();
        for (index, name) in names.iter().enumerate() {
            let Some(output) = self.session.outputs().iter().find(|o| o.name() == *name) else {
                return Err(mismatch(format!(
                    "output {name:?} not in graph (graph outputs: {})",
                    self.session.outputs().iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
                )));
            };
            if output.dtype().tensor_type() != Some(ort::value::TensorElementType::Float32) {
                return Err(mismatch(format!(
                    "output {name:?} must be a float32 tensor, the graph has {:?}",
                    output.dtype()
                )));
            }
            // The batch axis first, then the item; a dynamic axis (-1) is checked after warm-up.
            if let Some(shape) = output.dtype().tensor_shape()
                && !shape.is_empty()
            {
                let item: Vec<Dim> = shape.iter().skip(1).map(|&d| usize::try_from(d).ok()).collect();
                check_output(&m.task, &m.input, index, name, &item).map_err(mismatch)?;
            }
        }
        if let TaskSpec::Detection(_) = &m.task {
            // A YOLO segmentation export carries mask prototypes ([N, 32, H/4, W/4]) beside its
            // boxes: decoding only the boxes would silently drop what the model was made for.
            if let Some(protos) = self
                .session
                .outputs()
                .iter()
                .find(|o| !names.contains(&o.name()) && o.dtype().tensor_shape().is_some_and(|s| s.len() == 4))
            {
                return Err(mismatch(format!(
                    "output {:?} looks like YOLO segmentation mask prototypes: YOLO instance segmentation is not supported yet (export the detect model, or use a segmentation task)",
                    protos.name()
                )));
            }
        }
        Ok(())
    }

    fn warm_up(&mut self, package: &ModelPackage, warm_batch: usize) -> Result<(), SessionError> {
        let m = &package.manifest;
        let batch = if m.input.batch > 0 { m.input.batch as usize } else { warm_batch.max(1) };
        let item = (m.input.channels * m.input.height * m.input.width) as usize;
        let data = vec![0.5f32; batch * item];
        let shape = [batch, m.input.channels as usize, m.input.height as usize, m.input.width as usize];
        let warm_err =
            |e: &dyn std::fmt::Display| SessionError::WarmUp { model: m.name.clone(), message: e.to_string() };
        let tensor = TensorRef::from_array_view((shape, &data[..])).map_err(|e| warm_err(&e))?;
        let outputs = self.session.run(ort::inputs![m.input.name.as_str() => tensor]).map_err(|e| warm_err(&e))?;
        let mut lens = Vec::new();
        let mut shapes = Vec::new();
        for name in m.task.output_names() {
            let (shape, values) = outputs[name].try_extract_tensor::<f32>().map_err(|e| warm_err(&e))?;
            if shape.is_empty() || shape[0] as usize != batch {
                return Err(warm_err(&format!(
                    "output {name:?} has shape {shape:?}; its first axis must be the batch ({batch})"
                )));
            }
            let item: Vec<usize> = shape.iter().skip(1).map(|&d| d as usize).collect();
            let dims: Vec<Dim> = item.iter().map(|&d| Some(d)).collect();
            check_output(&m.task, &m.input, lens.len(), name, &dims)
                .map_err(|problem| SessionError::Mismatch { model: m.name.clone(), problem })?;
            lens.push(values.len() / batch);
            shapes.push(item);
        }
        drop(outputs);
        self.output_item_len = lens;
        self.output_item_shape = shapes;
        Ok(())
    }
}

/// Register the configured accelerator, or say clearly that we run on CPU instead.
fn register_provider(
    builder: &mut ort::session::builder::SessionBuilder,
    opts: &SessionOptions,
    model: &str,
) -> Provider {
    let attempt = match opts.provider {
        Provider::Cpu => return Provider::Cpu,
        Provider::Cuda => ep::CUDA::default().with_device_id(opts.device_id).register(builder),
        Provider::Tensorrt => ep::TensorRT::default()
            .with_device_id(opts.device_id)
            .with_engine_cache(true)
            .with_engine_cache_path(".cache/tensorrt")
            .with_timing_cache(true)
            .register(builder)
            .and_then(|()| {
                // TensorRT hands unsupported nodes to CUDA; register it as the second choice.
                ep::CUDA::default().with_device_id(opts.device_id).register(builder)
            }),
    };
    match attempt {
        Ok(()) => {
            tracing::info!(model, provider = ?opts.provider, device = opts.device_id, "execution provider registered");
            opts.provider
        }
        Err(e) => {
            tracing::warn!(
                model,
                provider = ?opts.provider,
                error = %e,
                "execution provider unavailable (needs the onnxruntime-gpu library and CUDA drivers); falling back to CPU"
            );
            Provider::Cpu
        }
    }
}
