//! The ONNX Runtime environment: the shared library is loaded once per process, from a
//! project-local copy extracted by `scripts/setup.sh` (or from `ORT_DYLIB_PATH`).

use std::path::PathBuf;
use std::sync::OnceLock;

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Where we look for `libonnxruntime.so`, in order. `ORT_DYLIB_PATH`, when set, is the only
/// candidate: an explicit choice must not be silently replaced by another copy.
pub fn library_candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    out.push(PathBuf::from(".ort/lib/libonnxruntime.so"));
    // The binary built in `target/release/` of a checkout finds the checkout's copy.
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            out.push(up.join(".ort/lib/libonnxruntime.so"));
        }
    }
    out
}

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static ort::environment::Environment, String> {
    ENVIRONMENT
        .get_or_init(|| {
            let candidates = library_candidates();
            let Some(lib) = candidates.iter().find(|p| p.is_file()) else {
                return Err(format!(
                    "ONNX Runtime library not found (looked for {}); run `make setup` (scripts/setup.sh), or set ORT_DYLIB_PATH to an existing libonnxruntime.so",
                    candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                ));
            };
            let builder = ort::init_from(lib).map_err(|e| {
                format!("cannot load ONNX Runtime from {}: {e} (re-run `make setup` or point ORT_DYLIB_PATH at a working libonnxruntime.so)", lib.display())
            })?;
            let env = builder
                .with_name("linesight")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", lib.display()))?;
            tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
            Ok(env)
        })
        .as_ref()
        .map_err(Clone::clone)
}
