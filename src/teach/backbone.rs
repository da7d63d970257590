//! A backbone package (`models/backbone-*/`): the pretrained feature extractor teach mode builds
//! on, described by `backbone.toml` (input contract, the feature taps and their strides, hash and
//! provenance) and checked against its sha256 before use.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// One feature output of the backbone.
#[derive(Clone, Debug, Deserialize)]
pub struct Tap {
    pub name: String,
    /// Input pixels per feature cell.
    pub stride: usize,
    pub channels: usize,
}

/// A loaded, hash-checked backbone.
#[derive(Clone, Debug)]
pub struct Backbone {
    pub name: String,
    pub dir: PathBuf,
    pub onnx_path: PathBuf,
    pub sha256: String,
    pub onnx_bytes: Vec<u8>,
    /// Name of the image input in the backbone graph.
    pub input: String,
    /// Input height and width must be multiples of this.
    pub multiple_of: usize,
    pub taps: Vec<Tap>,
    /// Multiply-adds per input pixel the nearest-neighbour search may cost by default: the
    /// backbone's own cost per pixel sets what "no more than the backbone" allows.
    pub scoring_budget_macs_per_pixel: usize,
    /// An INT8 copy of a float backbone (its `backbone.toml` has a `[quantization]` table,
    /// written by `scripts/quantize-backbone.py`).
    pub int8: bool,
}

/// The parts of `backbone.toml` teach mode reads (provenance is for people; not parsed).
#[derive(Deserialize)]
struct Manifest {
    name: String,
    #[serde(default = "default_onnx")]
    onnx_file: String,
    sha256: String,
    input: InputSection,
    outputs: Vec<Tap>,
    #[serde(default = "default_budget")]
    scoring_budget_macs_per_pixel: usize,
    /// How an INT8 copy was quantized (for people); only its presence is read.
    #[serde(default)]
    quantization: Option<toml::Table>,
}

#[derive(Deserialize)]
struct InputSection {
    name: String,
    channels: usize,
    #[serde(default = "one")]
    multiple_of: usize,
}

fn default_onnx() -> String {
    "model.onnx".into()
}
fn one() -> usize {
    1
}
fn default_budget() -> usize {
    super::learn::SCORING_BUDGET_MACS_PER_PIXEL
}

impl Backbone {
    /// Read `dir/backbone.toml`, then the ONNX file it names (inside `dir` only), and check its hash.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let manifest_path = dir.join("backbone.toml");
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            format!(
                "backbone {}: cannot read backbone.toml ({e}); pass --backbone a folder like models/backbone-lite0",
                dir.display()
            )
        })?;
        let m: Manifest =
            toml::from_str(&text).map_err(|e| format!("backbone {}: backbone.toml is invalid: {e}", dir.display()))?;
        let plain = Path::new(&m.onnx_file).file_name().is_some_and(|n| n == m.onnx_file.as_str());
        if !plain || m.onnx_file == ".." {
            return Err(format!(
                "backbone {}: onnx_file {:?} must be a file name in the folder",
                dir.display(),
                m.onnx_file
            ));
        }
        if m.input.channels != 3 {
            return Err(format!(
                "backbone {}: input must take 3 channels (RGB), says {}",
                dir.display(),
                m.input.channels
            ));
        }
        if m.outputs.is_empty() || m.outputs.iter().any(|t| t.stride == 0 || t.channels == 0) {
            return Err(format!("backbone {}: [[outputs]] must list taps with stride and channels > 0", dir.display()));
        }
        if m.scoring_budget_macs_per_pixel == 0 {
            return Err(format!(
                "backbone {}: scoring_budget_macs_per_pixel must be at least 1 (leave it out for {})",
                dir.display(),
                default_budget()
            ));
        }
        let onnx_path = dir.join(&m.onnx_file);
        let onnx_bytes = std::fs::read(&onnx_path)
            .map_err(|e| format!("backbone {}: cannot read {}: {e}", dir.display(), m.onnx_file))?;
        let sha256 = hex::encode(Sha256::digest(&onnx_bytes));
        if !sha256.eq_ignore_ascii_case(m.sha256.trim()) {
            return Err(format!(
                "backbone {}: sha256 of {} is {sha256} but backbone.toml says {}; restore the file (git checkout) or re-export it",
                dir.display(),
                m.onnx_file,
                m.sha256
            ));
        }
        Ok(Self {
            name: m.name,
            dir: dir.to_path_buf(),
            onnx_path,
            sha256,
            onnx_bytes,
            input: m.input.name,
            multiple_of: m.input.multiple_of.max(1),
            taps: m.outputs,
            scoring_budget_macs_per_pixel: m.scoring_budget_macs_per_pixel,
            int8: m.quantization.is_some(),
        })
    }

    /// Length of one patch feature vector (all taps concatenated).
    pub fn feature_dim(&self) -> usize {
        self.taps.iter().map(|t| t.channels).sum()
    }

    /// Input pixels per patch-feature cell (the finest tap's stride).
    pub fn grid_stride(&self) -> usize {
        self.taps.iter().map(|t| t.stride).min().unwrap_or(1)
    }
}
