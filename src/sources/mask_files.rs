//! Defect masks lying among the images of a folder. Public defect sets keep each image's mask
//! beside it (MTD: `<stem>.png` next to `<stem>.jpg`; MVTec-style exports: `<stem>_mask.png`), and
//! a folder copied from one — parts with their masks — would otherwise teach the masks as good
//! parts (black images in the bank and among the held-out goods that set the threshold) or, in a
//! folder camera, replay them as parts.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Share of a mask's pixels that are pure black or white (anti-aliased edges allowed).
const BINARY_SHARE: f64 = 0.99;

/// `files` without the defect masks among them, and the masks: a file named as the mask of
/// another image in the list (`<stem>.png` beside `<stem>` with another extension, or
/// `<stem>_mask.<ext>` beside `<stem>.<any>`) whose pixels are (almost) all 0 or 255.
/// Unreadable candidates stay (teach names them when it reads them).
pub fn split_off(files: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut by_stem: std::collections::HashMap<PathBuf, usize> = std::collections::HashMap::new();
    for f in &files {
        *by_stem.entry(f.with_extension("")).or_default() += 1;
    }
    let masks: HashSet<PathBuf> =
        files.iter().filter(|f| named_as_mask(f, &by_stem) && is_binary(f)).cloned().collect();
    if masks.is_empty() {
        return (files, Vec::new());
    }
    let (masks, parts): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|f| masks.contains(f));
    (parts, masks)
}

/// Named like the mask of another image in the folder: a PNG sharing its stem with another
/// file, or `<stem>_mask.*` where some `<stem>.*` is there too.
fn named_as_mask(f: &Path, by_stem: &std::collections::HashMap<PathBuf, usize>) -> bool {
    let png = f.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let stem = f.with_extension("");
    let shares_stem = by_stem.get(&stem).is_some_and(|&n| n > 1);
    let image_of_mask = stem
        .file_name()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_suffix("_mask"))
        .is_some_and(|image| by_stem.contains_key(&stem.with_file_name(image)));
    (png && shares_stem) || image_of_mask
}

fn is_binary(f: &Path) -> bool {
    let Ok(img) = image::open(f) else { return false };
    let gray = img.to_luma8();
    let pixels = gray.as_raw();
    if pixels.is_empty() {
        return false;
    }
    let binary = pixels.iter().filter(|&&v| v == 0 || v == 255).count();
    binary as f64 >= BINARY_SHARE * pixels.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(path: &Path, f: impl Fn(u32, u32) -> u8) {
        image::GrayImage::from_fn(16, 12, |x, y| image::Luma([f(x, y)])).save(path).unwrap();
    }

    #[test]
    fn masks_beside_their_images_are_set_apart_and_parts_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let texture = |x: u32, y: u32| (x * 13 + y * 7) as u8;
        gray(&p("a.jpg"), texture);
        gray(&p("a.png"), |_, _| 0); // MTD: an empty mask beside its image
        gray(&p("b.jpg"), texture);
        gray(&p("b.png"), |x, _| if x < 4 { 255 } else { 0 }); // a defect's mask
        gray(&p("c.png"), |_, _| 0); // a black part with no twin: a part, if a dull one
        gray(&p("d.jpg"), texture);
        gray(&p("d.png"), texture); // the same part saved twice: not binary, a part
        gray(&p("e.bmp"), texture);
        gray(&p("e_mask.png"), |_, _| 0); // MVTec-style
        gray(&p("f_mask.png"), |_, _| 0); // no f.*: a part that happens to be called so
        let files: Vec<PathBuf> =
            ["a.jpg", "a.png", "b.jpg", "b.png", "c.png", "d.jpg", "d.png", "e.bmp", "e_mask.png", "f_mask.png"]
                .iter()
                .map(|n| p(n))
                .collect();
        let (parts, masks) = split_off(files);
        let names =
            |v: &[PathBuf]| v.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect::<Vec<_>>();
        assert_eq!(names(&masks), ["a.png", "b.png", "e_mask.png"]);
        assert_eq!(names(&parts), ["a.jpg", "b.jpg", "c.png", "d.jpg", "d.png", "e.bmp", "f_mask.png"]);
    }
}
