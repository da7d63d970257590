//! Inference: ONNX Runtime sessions (one per worker) and the dynamic batcher that feeds them.

pub mod cpu;
pub mod runtime;
pub mod session;
pub mod worker;
