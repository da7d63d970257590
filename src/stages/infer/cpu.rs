//! What this CPU can do that decides how fast a model runs on it.

/// CPUs whose VNNI-class instructions (8-bit dot products in one instruction) make INT8 models
/// pay, in words.
pub const VNNI_CPUS: &str =
    "Intel Xeon Cascade Lake and later, Intel Core Ice Lake and Alder Lake and later, AMD Zen 4 and later";

/// Whether this CPU has VNNI-class instructions (AVX-512 VNNI or AVX-VNNI on x86-64; the dot
/// product instructions on aarch64), which ONNX Runtime's quantized kernels use.
pub fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni") || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}
