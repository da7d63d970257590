//! The MVTec AD layout, which most anomaly datasets and anomalib use:
//!
//! ```text
//! <parent>/test/good/*.png                 good images
//! <parent>/test/<defect>/*.png             defective images, one folder per defect class
//! <parent>/ground_truth/<defect>/<stem>_mask.png   masks (optional; non-zero = defect)
//! ```
//!
//! `--dataset` names the `test` folder (any name works). Images are listed in class order (`good`
//! first, then the defect classes by name) and by file name within a class.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The class folder of good images.
pub const GOOD: &str = "good";

/// One labelled image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub path: PathBuf,
    /// The class folder's name (`good` or a defect class).
    pub class: String,
    pub defective: bool,
    /// Its ground-truth mask, when one exists.
    pub mask: Option<PathBuf>,
}

/// A labelled data set.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub root: PathBuf,
    pub items: Vec<Item>,
    /// Class folders in listing order (`good` first).
    pub classes: Vec<String>,
}

impl Dataset {
    /// Read the layout under `root`. Errors name the folder and the fix.
    pub fn load(root: &Path) -> Result<Self> {
        let hint = "expected the MVTec AD layout: DIR/good/* and DIR/<defect>/* images, masks in \
                    <parent of DIR>/ground_truth/<defect>/<stem>_mask.png";
        if !root.is_dir() {
            bail!("dataset {}: not a folder ({hint})", root.display());
        }
        if !root.join(GOOD).is_dir() {
            bail!("dataset {}: no `good/` folder of good images in it ({hint})", root.display());
        }
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .with_context(|| format!("dataset {}: cannot list it", root.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|name| !name.starts_with('.'))
            .collect();
        classes.sort_by(|a, b| (a != GOOD).cmp(&(b != GOOD)).then_with(|| a.cmp(b)));
        let ground_truth = root.parent().map(|p| p.join("ground_truth"));
        let mut items = Vec::new();
        for class in &classes {
            let dir = root.join(class);
            let files = crate::sources::folder::image_files(&dir)
                .with_context(|| format!("dataset {}: cannot list it", dir.display()))?;
            for path in files {
                let defective = class != GOOD;
                let mask = match (&ground_truth, path.file_stem().and_then(|s| s.to_str())) {
                    (Some(gt), Some(stem)) if defective => {
                        Some(gt.join(class).join(format!("{stem}_mask.png"))).filter(|m| m.is_file())
                    }
                    _ => None,
                };
                items.push(Item { path, class: class.clone(), defective, mask });
            }
        }
        if items.is_empty() {
            bail!(
                "dataset {}: no images in its class folders (.png/.jpg/.jpeg/.bmp/.tif/.tiff; {hint})",
                root.display()
            );
        }
        Ok(Self { root: root.to_path_buf(), items, classes })
    }

    pub fn good(&self) -> usize {
        self.items.iter().filter(|i| !i.defective).count()
    }

    pub fn defective(&self) -> usize {
        self.items.iter().filter(|i| i.defective).count()
    }

    pub fn masks(&self) -> usize {
        self.items.iter().filter(|i| i.mask.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn lists_good_first_then_defect_classes_with_their_masks() {
        let dir = tempfile::tempdir().unwrap();
        let test = dir.path().join("test");
        touch(&test.join("good/b.png"));
        touch(&test.join("good/a.png"));
        touch(&test.join("crack/a.png"));
        touch(&test.join("blob/z.JPG"));
        touch(&test.join("blob/notes.txt"));
        touch(&dir.path().join("ground_truth/crack/a_mask.png"));
        let ds = Dataset::load(&test).unwrap();
        let listed: Vec<(String, String, bool, bool)> = ds
            .items
            .iter()
            .map(|i| {
                let name = i.path.file_name().unwrap().to_string_lossy().to_string();
                (i.class.clone(), name, i.defective, i.mask.is_some())
            })
            .collect();
        let expected = [
            ("good", "a.png", false, false),
            ("good", "b.png", false, false),
            ("blob", "z.JPG", true, false),
            ("crack", "a.png", true, true),
        ];
        let expected: Vec<_> = expected.iter().map(|(c, n, d, m)| (c.to_string(), n.to_string(), *d, *m)).collect();
        assert_eq!(listed, expected);
        assert_eq!((ds.good(), ds.defective(), ds.masks()), (2, 2, 1));
        assert_eq!(ds.classes, ["good", "blob", "crack"]);
    }

    #[test]
    fn missing_good_folder_or_no_images_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("crack/a.png"));
        let err = Dataset::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no `good/` folder"), "{err}");
        std::fs::create_dir(dir.path().join("good")).unwrap();
        std::fs::remove_file(dir.path().join("crack/a.png")).unwrap();
        let err = Dataset::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no images"), "{err}");
        let err = Dataset::load(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(err.contains("not a folder"), "{err}");
    }
}
