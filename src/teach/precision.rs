//! The backbone's numeric precision: FP32, or INT8 — the float backbone quantized by teach
//! itself (`teach::int8`: QDQ, static, int8 weights per channel, uint8 activations with ranges
//! calibrated on the product's own good images), and the taught model composed on it as on the
//! float one. INT8 pays on CPUs with VNNI-class instructions (8-bit dot products in one
//! instruction), where ONNX Runtime runs the quantized convolutions on them; on CPUs without them
//! it runs slower than FP32, and GPUs run the float graph (README, "Performance"). Hence the
//! default, `auto`: INT8 where it pays.

/// Which precision teach composes the model on (a station's `[model.teach] precision` as well,
/// hence defined with the config).
pub use crate::config::Precision;

pub use crate::stages::infer::cpu::{VNNI_CPUS, has_vnni as cpu_has_vnni};

impl Precision {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "fp32" => Ok(Self::Fp32),
            "int8" => Ok(Self::Int8),
            other => Err(format!(
                "--precision {other:?}: use `auto` (INT8 where this CPU runs it faster), `fp32` (the float \
                 backbone) or `int8` (the backbone quantized on these good images)"
            )),
        }
    }

    /// Whether to teach on INT8: `int8` always, `auto` when the model runs on the CPU and the CPU
    /// has VNNI-class instructions.
    pub fn int8(self, runs_on_cpu: bool, has_vnni: bool) -> bool {
        match self {
            Self::Int8 => true,
            Self::Fp32 => false,
            Self::Auto => runs_on_cpu && has_vnni,
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
    fn auto_is_int8_only_on_a_vnni_cpu_running_the_model() {
        assert!(Precision::Auto.int8(true, true));
        assert!(!Precision::Auto.int8(true, false));
        assert!(!Precision::Auto.int8(false, true));
        assert!(Precision::Int8.int8(false, false));
        assert!(!Precision::Fp32.int8(true, true));
    }

    #[test]
    fn parse_names_the_choices() {
        assert_eq!(Precision::parse("int8"), Ok(Precision::Int8));
        assert_eq!(Precision::parse("fp32"), Ok(Precision::Fp32));
        assert_eq!(Precision::parse("auto"), Ok(Precision::Auto));
        let e = Precision::parse("fp16").unwrap_err();
        assert!(e.contains("auto") && e.contains("fp32") && e.contains("int8"), "{e}");
    }

    #[test]
    fn only_cpus_without_vnni_get_the_warning() {
        assert_eq!(int8_warning(true), None);
        assert!(int8_warning(false).is_some_and(|w| w.contains("Zen 4")));
    }
}
