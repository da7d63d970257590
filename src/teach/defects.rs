//! `teach --defects DIR`: the labelled defective images a user gives teach, checked before use.
//!
//! `DIR/*.{png,jpg,bmp,tif}` are defective parts; `DIR/masks/<stem>_mask.png` (optional, the MVTec
//! AD convention) marks where. A file that cannot be decoded, or whose mask cannot be read or has
//! another size, is skipped and named; nothing else stops the teach.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// What [`load`] found.
#[derive(Clone, Debug, Default)]
pub struct LabelledDefects {
    /// Defective images teach uses, sorted by name.
    pub usable: Vec<PathBuf>,
    /// Of those, how many have a mask.
    pub with_masks: usize,
    /// Files skipped, each with why.
    pub skipped: Vec<String>,
}

impl LabelledDefects {
    /// Lines for the user: what was skipped and why.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self.skipped.iter().map(|s| format!("--defects: skipped {s}")).collect();
        if !self.skipped.is_empty() {
            out.push(format!(
                "--defects: {} of {} file(s) skipped; {} used",
                self.skipped.len(),
                self.skipped.len() + self.usable.len(),
                self.usable.len()
            ));
        }
        if self.usable.is_empty() {
            out.push("--defects: no usable defective image; teaching from the good images alone".into());
        }
        out
    }
}

/// The defective images in `dir` and their masks, checked.
pub fn load(dir: &Path) -> Result<LabelledDefects> {
    let files = crate::sources::folder::image_files(dir).with_context(|| {
        format!("cannot read the --defects folder {} (pass a folder of defective images)", dir.display())
    })?;
    let mut found = LabelledDefects::default();
    for path in files {
        let mut pixels = Vec::new();
        let (w, h) = match crate::sources::folder::decode_into(&path, &mut pixels) {
            Ok((w, h, _)) => (w, h),
            Err(e) => {
                found.skipped.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mask = dir.join("masks").join(format!("{stem}_mask.png"));
        if mask.exists() {
            match image::image_dimensions(&mask) {
                Ok((mw, mh)) if (mw, mh) == (w, h) => found.with_masks += 1,
                Ok((mw, mh)) => {
                    found.skipped.push(format!(
                        "{}: its mask {} is {mw}×{mh} but the image is {w}×{h} (a mask must be the image's size)",
                        path.display(),
                        mask.display()
                    ));
                    continue;
                }
                Err(e) => {
                    found.skipped.push(format!("{}: its mask {} cannot be read: {e}", path.display(), mask.display()));
                    continue;
                }
            }
        }
        found.usable.push(path);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, w: u32, h: u32) {
        image::save_buffer(path, &vec![128u8; (w * h) as usize], w, h, image::ExtendedColorType::L8).unwrap();
    }

    #[test]
    fn bad_files_and_masks_are_named_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("masks")).unwrap();
        png(&d.join("a.png"), 20, 10);
        png(&d.join("masks/a_mask.png"), 20, 10);
        png(&d.join("b.png"), 20, 10);
        png(&d.join("masks/b_mask.png"), 10, 10);
        png(&d.join("c.png"), 20, 10);
        std::fs::write(d.join("d.jpg"), b"not a jpeg").unwrap();
        std::fs::write(d.join("notes.txt"), b"ignored").unwrap();
        let found = load(d).unwrap();
        let names: Vec<_> =
            found.usable.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["a.png", "c.png"]);
        assert_eq!(found.with_masks, 1);
        assert_eq!(found.skipped.len(), 2);
        assert!(found.skipped[0].contains("b.png") && found.skipped[0].contains("10×10"), "{:?}", found.skipped);
        assert!(found.skipped[1].contains("d.jpg"));
        assert!(found.warnings().iter().any(|w| w.contains("2 of 4")));
        assert!(load(&d.join("missing")).unwrap_err().to_string().contains("--defects"));
    }
}
