//! Writing a taught model package: `model.onnx` + `model.toml`, all or nothing.

use super::feeder::input_spec;
use super::onnx::{self, InputShape};
use crate::model::manifest::{AnomalySpec, Manifest, Provenance, TaskSpec, TeachInfo};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Write `model.onnx` + `model.toml` into a temporary sibling of `out`, then rename it into place
/// (replacing an older package there, unless `keep_existing`).
pub(crate) fn write_package(
    out: &Path,
    name: &str,
    model: &[u8],
    shape: InputShape,
    threshold: f32,
    info: &TeachInfo,
    keep_existing: bool,
) -> Result<()> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.teach-{}",
        out.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut input = input_spec(shape);
    input.mode = Some(info.input_mode);
    let manifest = Manifest {
        name: name.into(),
        onnx_file: "model.onnx".into(),
        sha256: hex::encode(Sha256::digest(model)),
        input,
        task: TaskSpec::Anomaly(AnomalySpec {
            score_output: onnx::SCORE.into(),
            map_output: onnx::MAP.into(),
            threshold,
            defect_class: "anomaly".into(),
        }),
        provenance: Provenance {
            made_by: format!("linesight teach {}", env!("CARGO_PKG_VERSION")),
            licence: "the backbone's (see its backbone.toml): Apache-2.0 for the shipped ones".into(),
            notes: format!(
                "PatchCore-style model taught from {} good images with backbone {}; threshold {threshold} from {} held-out good images",
                info.teach_images, info.backbone, info.holdout_images
            ),
        },
        teach: Some(info.clone()),
    };
    let text = toml::to_string_pretty(&manifest).context("serialising model.toml")?;
    let header = "# A taught anomaly model, written by `linesight teach`: the backbone and the scoring step\n\
                  # (memory bank baked in) as one ONNX graph. Teach again rather than editing by hand.\n";
    std::fs::write(tmp.join("model.onnx"), model).context("writing model.onnx")?;
    std::fs::write(tmp.join("model.toml"), format!("{header}{text}")).context("writing model.toml")?;
    let taken = || out.join("model.toml").is_file();
    if keep_existing && taken() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok(());
    }
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("cannot replace the old package {}", out.display()))?;
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        let _ = std::fs::remove_dir_all(&tmp);
        if keep_existing && taken() {
            return Ok(());
        }
        return Err(e).with_context(|| format!("cannot move the package into {}", out.display()));
    }
    Ok(())
}
