//! Loading a model package from disk: manifest parsed, ONNX file located inside the package
//! folder only (no path escapes), sha256 checked against the manifest.

use super::manifest::Manifest;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A model package whose manifest parsed and whose ONNX file matches its recorded hash.
#[derive(Clone, Debug)]
pub struct ModelPackage {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub onnx_path: PathBuf,
    /// The hex sha256 of the ONNX file (equal to the manifest's).
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(
        "model package {dir}: no model.toml there (point [model].package at a folder holding model.onnx + model.toml)"
    )]
    MissingManifest { dir: PathBuf },
    #[error("model package {dir}: cannot read {file}: {source}")]
    Read { dir: PathBuf, file: String, source: std::io::Error },
    #[error("model package {dir}: model.toml is invalid: {message}")]
    BadManifest { dir: PathBuf, message: String },
    #[error("model package {dir}: onnx_file {file:?} must be a plain file name inside the package folder")]
    UnsafePath { dir: PathBuf, file: String },
    #[error(
        "model package {dir}: sha256 of {file} is {actual} but model.toml says {expected}; the model file changed or is corrupt — restore it, or re-export the package"
    )]
    HashMismatch { dir: PathBuf, file: String, expected: String, actual: String },
}

impl ModelPackage {
    /// Read `dir/model.toml`, then hash the ONNX file it names and compare.
    pub fn load(dir: &Path) -> Result<Self, PackageError> {
        let manifest_path = dir.join("model.toml");
        if !manifest_path.is_file() {
            return Err(PackageError::MissingManifest { dir: dir.to_path_buf() });
        }
        let text = std::fs::read_to_string(&manifest_path).map_err(|source| PackageError::Read {
            dir: dir.to_path_buf(),
            file: "model.toml".into(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| PackageError::BadManifest {
            dir: dir.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let problems = manifest.problems();
        if !problems.is_empty() {
            return Err(PackageError::BadManifest { dir: dir.to_path_buf(), message: problems.join("; ") });
        }
        // Models come from configured folders only: a manifest may not point outside its own
        // folder (ONNX external-data path traversal has been a CVE class).
        let file = manifest.onnx_file.clone();
        let plain = Path::new(&file).file_name().map(|n| n == file.as_str()).unwrap_or(false);
        if !plain || file == ".." {
            return Err(PackageError::UnsafePath { dir: dir.to_path_buf(), file });
        }
        let onnx_path = dir.join(&file);
        let bytes = std::fs::read(&onnx_path).map_err(|source| PackageError::Read {
            dir: dir.to_path_buf(),
            file: file.clone(),
            source,
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(manifest.sha256.trim()) {
            return Err(PackageError::HashMismatch {
                dir: dir.to_path_buf(),
                file,
                expected: manifest.sha256.clone(),
                actual,
            });
        }
        Ok(Self { dir: dir.to_path_buf(), manifest, onnx_path, sha256: actual })
    }
}
