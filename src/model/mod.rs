//! Model packages: `models/<name>/model.onnx` + `model.toml`.

pub mod manifest;
