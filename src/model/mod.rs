//! Model packages: `models/<name>/model.onnx` + `model.toml` (the manifest), hash-checked at load.

pub mod manifest;
pub mod outputs;
pub mod package;

pub use manifest::Manifest;
pub use package::{ModelPackage, PackageError};
