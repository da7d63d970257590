//! The backbone's numeric precision: FP32, or an INT8 copy of the same backbone.
//!
//! The INT8 copy (QDQ, static: int8 weights per channel, uint8 activations with ranges calibrated
//! on good images) is made beside the float package by `scripts/quantize-backbone.py`, with ONNX
//! Runtime's own quantizer (`make backbone-int8 IMAGES=DIR`); teach composes the taught model on
//! it exactly as on the float one. It pays on CPUs with VNNI-class instructions (8-bit dot
//! products in one instruction), where ONNX Runtime runs the quantized convolutions on them; on
//! CPUs without them it runs slower than FP32 (README, "Performance").

use std::path::{Path, PathBuf};

/// Which copy of the backbone teach composes the model on (a station's `[model.teach]
/// precision` as well, hence defined with the config).
pub use crate::config::{Precision, int8_sibling};

pub use crate::stages::infer::cpu::{VNNI_CPUS, has_vnni as cpu_has_vnni};

impl Precision {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "fp32" => Ok(Self::Fp32),
            "int8" => Ok(Self::Int8),
            other => {
                Err(format!("--precision {other:?}: use `fp32` (the float backbone) or `int8` (its quantized copy)"))
            }
        }
    }

    /// The backbone package to teach on, given the float one: itself, or its INT8 copy
    /// `<float>-int8` beside it, which must exist.
    pub fn backbone(self, float: &Path) -> Result<PathBuf, String> {
        match self {
            Self::Fp32 => Ok(float.to_path_buf()),
            Self::Int8 => {
                let int8 = int8_sibling(float);
                if int8.join("backbone.toml").is_file() {
                    Ok(int8)
                } else {
                    Err(format!(
                        "--precision int8: no INT8 backbone at {} (backbone.toml missing). Make it from good images of \
                         the product: `make backbone-int8 BACKBONE={} IMAGES=DIR` (scripts/quantize-backbone.py)",
                        int8.display(),
                        float.display()
                    ))
                }
            }
        }
    }
}

/// What to tell the user who teaches on INT8 on this CPU, if anything.
pub fn int8_warning(has_vnni: bool) -> Option<String> {
    (!has_vnni).then(|| {
        format!(
            "this CPU has no VNNI-class instructions: the INT8 backbone runs slower than FP32 here; it pays on {VNNI_CPUS}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_uses_the_copy_beside_the_float_backbone_and_names_the_fix_when_it_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let float = dir.path().join("backbone-lite2");
        std::fs::create_dir_all(&float).unwrap();
        assert_eq!(Precision::Fp32.backbone(&float).unwrap(), float);
        let missing = Precision::Int8.backbone(&float).unwrap_err();
        assert!(missing.contains("backbone-lite2-int8") && missing.contains("make backbone-int8"), "{missing}");
        let int8 = dir.path().join("backbone-lite2-int8");
        std::fs::create_dir_all(&int8).unwrap();
        std::fs::write(int8.join("backbone.toml"), "").unwrap();
        assert_eq!(Precision::Int8.backbone(&float).unwrap(), int8);
    }

    #[test]
    fn parse_names_the_choices() {
        assert_eq!(Precision::parse("int8"), Ok(Precision::Int8));
        assert_eq!(Precision::parse("fp32"), Ok(Precision::Fp32));
        let e = Precision::parse("fp16").unwrap_err();
        assert!(e.contains("fp32") && e.contains("int8"), "{e}");
    }

    #[test]
    fn only_cpus_without_vnni_get_the_warning() {
        assert_eq!(int8_warning(true), None);
        assert!(int8_warning(false).is_some_and(|w| w.contains("Zen 4")));
    }
}
