//! Folder replay: plays the images of a directory, in file-name order, as if a camera took them.
//!
//! Used to rerun recorded production images through the line (re-validation after a model
//! change, demos, tests). The file stem becomes the part id. Images come from outside the station,
//! so decoding runs under [`image::Limits`]: a hostile or broken file costs one `BadFrame`, never
//! the process. Pacing is the camera thread's job, not this source's.
//!
//! Incomplete files are never inspected: a file whose size or modification time is still
//! changing (being copied from a camera share) is waited for until it settles, and a JPEG that
//! does not end with its end-of-image marker (cut short) is a `BadFrame`, though the decoder
//! would happily fill the missing part with gray.

use super::{Grabbed, Source, SourceError};
use crate::frame::{PixelFormat, part_id};
use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Largest width or height accepted. Line-scan cameras reach 16k pixels; anything larger is not a
/// frame from this line.
pub const MAX_SIDE_PX: u32 = 16_384;

/// Most memory one decode may allocate. 512 MiB holds a 16k × 10k RGB image; a file asking for more
/// is refused before the decoder allocates it.
pub const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// Extensions replayed (compared case-insensitively); other files in the folder are ignored.
const EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// Replays the images of one directory, sorted by file name, once or in a loop.
pub struct FolderSource {
    dir: PathBuf,
    looping: bool,
    /// The images found by the last `open`, in replay order.
    files: Vec<PathBuf>,
    /// Index in `files` of the next image to grab.
    next: usize,
    /// The current file's bytes (reused between grabs).
    file_buf: Vec<u8>,
}

/// A file is settled once its size and modification time have not changed for this long.
const SETTLE: Duration = Duration::from_millis(200);
/// Longest wait for a file still being written before it is skipped as a bad frame.
const SETTLE_MAX: Duration = Duration::from_secs(5);

impl FolderSource {
    /// A replay of `dir`. With `looping`, it starts over after the last image; without, it ends
    /// with [`SourceError::EndOfStream`]. Nothing is read until [`Source::open`].
    pub fn new(dir: impl Into<PathBuf>, looping: bool) -> Self {
        Self { dir: dir.into(), looping, files: Vec::new(), next: 0, file_buf: Vec::new() }
    }

    /// The directory replayed.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Images found by the last `open`, in replay order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl Source for FolderSource {
    /// Lists the images of the directory and rewinds to the first one.
    fn open(&mut self) -> Result<(), SourceError> {
        let files = image_files(&self.dir).map_err(|e| {
            SourceError::Disconnected(format!(
                "image folder {}: cannot read it ({e}); check the folder path in the camera config",
                self.dir.display()
            ))
        })?;
        if files.is_empty() {
            return Err(SourceError::Disconnected(format!(
                "image folder {}: no images in it; put .png/.jpg/.jpeg/.bmp/.tif/.tiff files there \
                 or point the camera config at the folder that has them",
                self.dir.display()
            )));
        }
        let (files, masks) = super::mask_files::split_off(files);
        if !masks.is_empty() {
            tracing::warn!(
                folder = %self.dir.display(),
                masks = masks.len(),
                first = %masks[0].display(),
                "defect masks beside their images are not replayed as parts"
            );
        }
        self.files = files;
        self.next = 0;
        Ok(())
    }

    fn grab(&mut self, pixels: &mut Vec<u8>) -> Result<Grabbed, SourceError> {
        if self.files.is_empty() {
            let dir = self.dir.display();
            return Err(SourceError::Disconnected(format!("image folder {dir}: not open")));
        }
        if self.next >= self.files.len() {
            if !self.looping {
                return Err(SourceError::EndOfStream);
            }
            self.next = 0;
        }
        let path = &self.files[self.next];
        // Advance before decoding so a corrupt file is reported once and the next grab moves on.
        self.next += 1;
        let bad = |(reason, e): (&'static str, String)| SourceError::BadFrame {
            reason,
            detail: format!("{}: {e}", path.display()),
        };
        wait_until_settled(path, SETTLE, SETTLE_MAX).map_err(bad)?;
        let (width, height, format) = decode_checked(path, pixels, &mut self.file_buf).map_err(bad)?;
        let part = path.file_stem().map(|stem| part_id(&stem.to_string_lossy()));
        Ok(Grabbed { width, height, format, part_id: part, captured_at: None })
    }

    fn close(&mut self) {
        self.files.clear();
        self.next = 0;
    }

    fn is_replay(&self) -> bool {
        true
    }

    /// The first image's size (read from its header).
    fn frame_size(&self) -> Option<(u32, u32)> {
        image::image_dimensions(self.files.first()?).ok()
    }
}

/// The image files (by extension) directly in `dir`, sorted by name. `is_file` follows
/// symlinks, so a folder of links to an archive counts too.
pub(crate) fn image_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| has_image_extension(path) && path.is_file())
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

pub(crate) fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| EXTENSIONS.iter().any(|known| ext.eq_ignore_ascii_case(known)))
}

fn decode_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE_PX);
    limits.max_image_height = Some(MAX_SIDE_PX);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// Wait until `path` has kept its size and modification time for `settle` (a file still being
/// copied in is not read half-written); give up after `max`.
fn wait_until_settled(path: &Path, settle: Duration, max: Duration) -> Result<(), (&'static str, String)> {
    let stat = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| (m.len(), m.modified().ok()))
            .map_err(|e| ("unreadable", format!("cannot read: {e}")))
    };
    let started = Instant::now();
    let mut last = stat(path)?;
    loop {
        // A file not modified within `settle` is settled already (the common case: no wait).
        let quiet_for = last.1.and_then(|m| SystemTime::now().duration_since(m).ok()).unwrap_or(Duration::ZERO);
        if quiet_for >= settle {
            return Ok(());
        }
        if started.elapsed() >= max {
            return Err((
                "still_writing",
                format!(
                    "still being written after {:.1} s; skipped (write files elsewhere and move them in when complete)",
                    max.as_secs_f64()
                ),
            ));
        }
        std::thread::sleep(settle - quiet_for);
        let now = stat(path)?;
        if now == last && now.1.is_some() {
            continue; // re-check its age against the clock
        }
        last = now;
    }
}

/// Decode one file into `pixels` as Gray8 (grayscale sources) or Rgb8 (everything else), after
/// checking that it is complete; `buf` holds the file's bytes (its capacity is reused). The error
/// carries a short reason (`unreadable`, `truncated`, `corrupt`) and what was wrong.
pub fn decode_checked(
    path: &Path,
    pixels: &mut Vec<u8>,
    buf: &mut Vec<u8>,
) -> Result<(u32, u32, PixelFormat), (&'static str, String)> {
    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .map_err(|e| ("unreadable", format!("cannot read: {e}")))?;
    if let Some(problem) = incomplete(buf) {
        return Err(("truncated", problem));
    }
    decode_bytes(buf, path, pixels).map_err(|e| ("corrupt", e))
}

/// Decode one file into `pixels` as Gray8 (grayscale sources) or Rgb8 (everything else),
/// refusing incomplete files (see [`decode_checked`]).
pub(crate) fn decode_into(path: &Path, pixels: &mut Vec<u8>) -> Result<(u32, u32, PixelFormat), String> {
    decode_checked(path, pixels, &mut Vec::new()).map_err(|(_, e)| e)
}

/// Why the bytes of an image file are not a whole image, when the format tells: a JPEG must end
/// with its end-of-image marker (trailing padding aside); decoders fill a missing tail with gray
/// instead of failing. Other formats' decoders fail on a short file by themselves.
fn incomplete(bytes: &[u8]) -> Option<String> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    // Some cameras pad files after the marker with zeros or 0xFF.
    let end = bytes.iter().rposition(|&b| b != 0x00 && b != 0xFF).map_or(0, |i| i + 1);
    // Entropy-coded data stuffs every 0xFF with a 0x00, so 0xFF 0xD9 there is the marker.
    let ends_with_eoi = end >= 2 && bytes[end - 2..end] == [0xFF, 0xD9];
    (!ends_with_eoi).then(|| {
        format!(
            "JPEG of {} bytes has no end-of-image marker: the file is cut short (still being copied, or damaged)",
            bytes.len()
        )
    })
}

/// Decode an image file's bytes (`path` only helps read BMP palettes).
fn decode_bytes(bytes: &[u8], path: &Path, pixels: &mut Vec<u8>) -> Result<(u32, u32, PixelFormat), String> {
    // The content decides the format, not the extension: a PNG saved as `.jpg` still replays.
    let mut reader =
        ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| format!("cannot read: {e}"))?;
    reader.limits(decode_limits());
    let is_bmp = reader.format() == Some(ImageFormat::Bmp);
    let image = reader.decode().map_err(|e| format!("cannot decode: {e}"))?;
    let (width, height) = (image.width(), image.height());
    let format = match &image {
        // The BMP decoder expands palettes to RGB, and 8-bit gray BMPs (a common machine-vision
        // export) are paletted: keep them gray, as their camera made them.
        DynamicImage::ImageRgb8(rgb) if is_bmp && bmp_has_gray_palette(path) => {
            pixels.clear();
            pixels.extend(rgb.as_raw().chunks_exact(3).map(|px| px[0]));
            PixelFormat::Gray8
        }
        _ => copy_pixels(&image, pixels),
    };
    Ok((width, height, format))
}

/// What an image file's header tells: its size, and whether it decodes to gray pixels
/// ([`PixelFormat::Gray8`]: gray with or without alpha, any depth, or a BMP whose palette is all
/// gray). Reads the header only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ImageHeader {
    pub width: u32,
    pub height: u32,
    pub gray: bool,
}

pub(crate) fn read_header(path: &Path) -> Result<ImageHeader, String> {
    use image::{ColorType, ImageDecoder};
    let reader =
        ImageReader::open(path).and_then(|r| r.with_guessed_format()).map_err(|e| format!("cannot read: {e}"))?;
    let is_bmp = reader.format() == Some(ImageFormat::Bmp);
    let decoder = reader.into_decoder().map_err(|e| format!("cannot decode the header: {e}"))?;
    let (width, height) = decoder.dimensions();
    let gray = match decoder.color_type() {
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16 => true,
        ColorType::Rgb8 if is_bmp => bmp_has_gray_palette(path),
        _ => false,
    };
    Ok(ImageHeader { width, height, gray })
}

/// Whether a BMP file is paletted (≤ 8 bits per pixel) with only gray entries in its palette.
fn bmp_has_gray_palette(path: &Path) -> bool {
    // File header (14) + largest info header (124) + largest palette (256 entries of 4 bytes).
    let mut head = Vec::with_capacity(14 + 124 + 1024);
    let read = std::fs::File::open(path).and_then(|f| f.take(14 + 124 + 1024).read_to_end(&mut head));
    if read.is_err() {
        return false;
    }
    let u16_at = |at: usize| head.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| head.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let Some(info_size) = u32_at(14).map(|s| s as usize) else {
        return false;
    };
    // OS/2 core headers (12 bytes) have 16-bit sizes and 3-byte palette entries.
    let (bpp, colors_used, entry) =
        if info_size == 12 { (u16_at(24), Some(0), 3) } else { (u16_at(28), u32_at(46), 4) };
    let (Some(bpp), Some(colors_used)) = (bpp, colors_used) else {
        return false;
    };
    if !(1..=8).contains(&bpp) {
        return false;
    }
    let count = if colors_used == 0 { 1usize << bpp } else { (colors_used as usize).min(256) };
    let start = 14 + info_size;
    let Some(palette) = head.get(start..start + count * entry) else {
        return false;
    };
    palette.chunks_exact(entry).all(|bgr| bgr[0] == bgr[1] && bgr[1] == bgr[2])
}

/// Copy `image` into `pixels` (cleared first, capacity kept), dropping alpha and reducing deeper
/// samples to 8 bits.
fn copy_pixels(image: &DynamicImage, pixels: &mut Vec<u8>) -> PixelFormat {
    pixels.clear();
    match image {
        DynamicImage::ImageLuma8(img) => {
            pixels.extend_from_slice(img.as_raw());
            PixelFormat::Gray8
        }
        DynamicImage::ImageLumaA8(img) => {
            pixels.extend(img.as_raw().chunks_exact(2).map(|px| px[0]));
            PixelFormat::Gray8
        }
        DynamicImage::ImageLuma16(img) => {
            pixels.extend(img.as_raw().iter().map(|&v| to_u8(v)));
            PixelFormat::Gray8
        }
        DynamicImage::ImageLumaA16(img) => {
            pixels.extend(img.as_raw().chunks_exact(2).map(|px| to_u8(px[0])));
            PixelFormat::Gray8
        }
        DynamicImage::ImageRgb8(img) => {
            pixels.extend_from_slice(img.as_raw());
            PixelFormat::Rgb8
        }
        DynamicImage::ImageRgba8(img) => {
            pixels.extend(img.as_raw().chunks_exact(4).flat_map(|px| [px[0], px[1], px[2]]));
            PixelFormat::Rgb8
        }
        DynamicImage::ImageRgb16(img) => {
            pixels.extend(img.as_raw().iter().map(|&v| to_u8(v)));
            PixelFormat::Rgb8
        }
        DynamicImage::ImageRgba16(img) => {
            let rgb = img.as_raw().chunks_exact(4).flat_map(|px| [px[0], px[1], px[2]]);
            pixels.extend(rgb.map(to_u8));
            PixelFormat::Rgb8
        }
        // Float images (HDR/EXR-style) and future variants: rare here, so the crate's own
        // (allocating) conversion is good enough.
        other if other.color().has_color() => {
            pixels.extend_from_slice(other.to_rgb8().as_raw());
            PixelFormat::Rgb8
        }
        other => {
            pixels.extend_from_slice(other.to_luma8().as_raw());
            PixelFormat::Gray8
        }
    }
}

/// 16-bit sample to 8 bits, rounded to nearest (65535 → 255, 257·n → n).
fn to_u8(v: u16) -> u8 {
    ((u32::from(v) * 255 + 32_767) / 65_535) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgba};

    fn gray(dir: &Path, name: &str, w: u32, h: u32, value: u8) {
        ImageBuffer::from_pixel(w, h, Luma([value])).save(dir.join(name)).unwrap();
    }

    fn grab(src: &mut FolderSource) -> Result<Grabbed, SourceError> {
        src.grab(&mut Vec::new())
    }

    #[test]
    fn replays_images_in_name_order_then_ends() {
        let dir = tempfile::tempdir().unwrap();
        gray(dir.path(), "b-002.png", 4, 3, 20);
        gray(dir.path(), "a-001.bmp", 4, 3, 10);
        gray(dir.path(), "c-003.PNG", 4, 3, 30);
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        std::fs::create_dir(dir.path().join("sub.png")).unwrap();

        let mut src = FolderSource::new(dir.path(), false);
        assert!(src.is_replay());
        src.open().unwrap();
        let mut pixels = Vec::new();
        for (id, value) in [("a-001", 10), ("b-002", 20), ("c-003", 30)] {
            let g = src.grab(&mut pixels).unwrap();
            assert_eq!(g.part_id.unwrap().as_str(), id);
            assert_eq!((g.width, g.height, g.format), (4, 3, PixelFormat::Gray8));
            assert_eq!(pixels, vec![value; 12]);
        }
        assert!(matches!(grab(&mut src), Err(SourceError::EndOfStream)));
        assert!(matches!(grab(&mut src), Err(SourceError::EndOfStream)));
    }

    #[test]
    fn looping_starts_over_after_the_last_image() {
        let dir = tempfile::tempdir().unwrap();
        gray(dir.path(), "1.png", 2, 2, 1);
        gray(dir.path(), "2.png", 2, 2, 2);
        let mut src = FolderSource::new(dir.path(), true);
        src.open().unwrap();
        let ids: Vec<String> = (0..5).map(|_| grab(&mut src).unwrap().part_id.unwrap().to_string()).collect();
        assert_eq!(ids, ["1", "2", "1", "2", "1"]);
    }

    #[test]
    fn a_corrupt_file_is_a_bad_frame_and_the_next_grab_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        gray(dir.path(), "1-good.png", 2, 2, 7);
        std::fs::write(dir.path().join("2-corrupt.png"), b"\x89PNG\r\n\x1a\nthen garbage").unwrap();
        gray(dir.path(), "3-good.jpg", 8, 8, 200);
        let mut src = FolderSource::new(dir.path(), false);
        src.open().unwrap();

        assert_eq!(grab(&mut src).unwrap().part_id.unwrap().as_str(), "1-good");
        match grab(&mut src) {
            Err(SourceError::BadFrame { reason, detail }) => {
                assert!(detail.contains("2-corrupt.png") && reason == "corrupt", "{reason}: {detail}")
            }
            other => panic!("expected BadFrame, got {other:?}"),
        }
        let mut pixels = Vec::new();
        let g = src.grab(&mut pixels).unwrap();
        assert_eq!(g.part_id.unwrap().as_str(), "3-good");
        // JPEG is lossy, but a flat image stays within a level or two.
        assert!(pixels.iter().all(|&p| p.abs_diff(200) <= 2));
        assert!(matches!(grab(&mut src), Err(SourceError::EndOfStream)));
    }

    /// A JPEG of 64×64 pixels, as its bytes.
    fn jpeg_bytes() -> Vec<u8> {
        let img = ImageBuffer::from_fn(64, 64, |x, y| Luma([((x * 4) ^ (y * 4)) as u8]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, ImageFormat::Jpeg).unwrap();
        bytes.into_inner()
    }

    #[test]
    fn truncated_images_are_bad_frames_not_inspections() {
        let dir = tempfile::tempdir().unwrap();
        let jpeg = jpeg_bytes();
        std::fs::write(dir.path().join("1-whole.jpg"), &jpeg).unwrap();
        std::fs::write(dir.path().join("2-half.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0; 100]);
        std::fs::write(dir.path().join("3-padded.jpg"), &padded).unwrap();
        let mut png = std::io::Cursor::new(Vec::new());
        ImageBuffer::from_pixel(64, 64, Luma([9u8])).write_to(&mut png, ImageFormat::Png).unwrap();
        let png = png.into_inner();
        std::fs::write(dir.path().join("4-half.png"), &png[..png.len() * 2 / 3]).unwrap();
        // Old enough to be settled.
        std::thread::sleep(SETTLE);
        let mut src = FolderSource::new(dir.path(), false);
        src.open().unwrap();
        assert_eq!(grab(&mut src).unwrap().part_id.unwrap().as_str(), "1-whole");
        match grab(&mut src) {
            Err(SourceError::BadFrame { reason, detail }) => {
                assert_eq!(reason, "truncated");
                assert!(detail.contains("2-half.jpg") && detail.contains("end-of-image"), "{detail}");
            }
            other => panic!("a JPEG cut in half was {other:?}"),
        }
        assert_eq!(grab(&mut src).unwrap().part_id.unwrap().as_str(), "3-padded", "padding after the marker is fine");
        assert!(matches!(grab(&mut src), Err(SourceError::BadFrame { .. })), "a PNG cut short fails too");
    }

    #[test]
    fn a_file_still_being_written_is_read_once_it_has_settled() {
        let dir = tempfile::tempdir().unwrap();
        let jpeg = jpeg_bytes();
        let path = dir.path().join("arriving.jpg");
        std::fs::write(&path, &jpeg[..100]).unwrap();
        let mut src = FolderSource::new(dir.path(), false);
        src.open().unwrap();
        let writer = {
            let (path, jpeg) = (path.clone(), jpeg.clone());
            std::thread::spawn(move || {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
                for chunk in jpeg[100..].chunks(jpeg.len() / 8 + 1) {
                    std::thread::sleep(Duration::from_millis(60));
                    f.write_all(chunk).unwrap();
                }
            })
        };
        let mut pixels = Vec::new();
        let g = src.grab(&mut pixels).expect("the whole file, once written");
        writer.join().unwrap();
        assert_eq!((g.width, g.height), (64, 64));
        let mut whole = Vec::new();
        decode_into(&path, &mut whole).unwrap();
        assert_eq!(pixels, whole, "decoded from the complete file");
    }

    #[test]
    fn sixteen_bit_grayscale_becomes_gray8() {
        let dir = tempfile::tempdir().unwrap();
        let img = ImageBuffer::from_fn(3, 1, |x, _| Luma([[0u16, 257 * 100, 65_535][x as usize]]));
        img.save(dir.path().join("deep.png")).unwrap();
        let mut src = FolderSource::new(dir.path(), false);
        src.open().unwrap();
        let mut pixels = Vec::new();
        let g = src.grab(&mut pixels).unwrap();
        assert_eq!((g.width, g.height, g.format), (3, 1, PixelFormat::Gray8));
        assert_eq!(pixels, [0, 100, 255]);
    }

    /// A dataset folder with each image's mask beside it (MTD's layout) replays the parts only.
    #[test]
    fn masks_beside_their_images_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let part = ImageBuffer::from_fn(8, 8, |x, y| Luma([(x * 20 + y * 3) as u8]));
        part.save(dir.path().join("a.jpg")).unwrap();
        part.save(dir.path().join("b.jpg")).unwrap();
        ImageBuffer::from_pixel(8, 8, Luma([0u8])).save(dir.path().join("a.png")).unwrap();
        let mut src = FolderSource::new(dir.path(), false);
        src.open().unwrap();
        let names: Vec<_> = src.files().iter().map(|f| f.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["a.jpg", "b.jpg"]);
        let mut pixels = Vec::new();
        assert_eq!(src.grab(&mut pixels).unwrap().format, PixelFormat::Gray8);
        assert_eq!(src.grab(&mut pixels).unwrap().format, PixelFormat::Gray8);
        assert!(matches!(src.grab(&mut pixels), Err(SourceError::EndOfStream)), "two parts, then the end");
    }

    /// What the header says (teach's image sizes and choice of model channels) is what decoding gives.
    #[test]
    fn the_header_tells_gray_as_decoding_does() {
        let dir = tempfile::tempdir().unwrap();
        let gray = ImageBuffer::from_fn(4, 4, |x, y| Luma([(x * 40 + y) as u8]));
        let deep = ImageBuffer::from_fn(4, 4, |x, _| Luma([x as u16 * 9_000]));
        let rgb = ImageBuffer::from_fn(4, 4, |x, _| image::Rgb([x as u8 * 50, 10, 200]));
        gray.save(dir.path().join("gray.png")).unwrap();
        gray.save(dir.path().join("gray.jpg")).unwrap();
        gray.save(dir.path().join("gray.bmp")).unwrap();
        deep.save(dir.path().join("deep.png")).unwrap();
        rgb.save(dir.path().join("rgb.png")).unwrap();
        rgb.save(dir.path().join("rgb.bmp")).unwrap();
        ImageBuffer::from_pixel(4, 4, Rgba([10u8, 20, 30, 128])).save(dir.path().join("rgba.tiff")).unwrap();
        let mut pixels = Vec::new();
        for (name, expect) in [
            ("gray.png", true),
            ("gray.jpg", true),
            ("gray.bmp", true),
            ("deep.png", true),
            ("rgb.png", false),
            ("rgb.bmp", false),
            ("rgba.tiff", false),
        ] {
            let path = dir.path().join(name);
            let (_, _, format) = decode_into(&path, &mut pixels).unwrap();
            assert_eq!(format == PixelFormat::Gray8, expect, "{name} decodes as {format:?}");
            assert_eq!(read_header(&path).unwrap(), ImageHeader { width: 4, height: 4, gray: expect }, "{name}");
        }
        std::fs::write(dir.path().join("junk.png"), b"not an image").unwrap();
        assert!(read_header(&dir.path().join("junk.png")).is_err());
    }

    #[test]
    fn colour_with_alpha_becomes_rgb8_into_the_callers_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let img = ImageBuffer::from_pixel(2, 2, Rgba([10u8, 20, 30, 128]));
        img.save(dir.path().join("rgba.tiff")).unwrap();
        let mut src = FolderSource::new(dir.path(), false);
        src.open().unwrap();
        let mut pixels = Vec::with_capacity(1024);
        let before = pixels.as_ptr();
        let g = src.grab(&mut pixels).unwrap();
        assert_eq!(g.format, PixelFormat::Rgb8);
        assert_eq!(pixels, [10, 20, 30].repeat(4));
        assert_eq!(pixels.as_ptr(), before, "the caller's capacity is reused");
    }

    #[test]
    fn colour_bmps_stay_rgb8() {
        let dir = tempfile::tempdir().unwrap();
        let img = ImageBuffer::from_fn(2, 1, |x, _| image::Rgb([[200u8, 0, 0], [0, 0, 9]][x as usize]));
        img.save(dir.path().join("colour.bmp")).unwrap();
        let mut src = FolderSource::new(dir.path(), false);
        src.open().unwrap();
        let mut pixels = Vec::new();
        assert_eq!(src.grab(&mut pixels).unwrap().format, PixelFormat::Rgb8);
        assert_eq!(pixels, [200, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn images_over_the_size_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        gray(dir.path(), "wide.png", MAX_SIDE_PX + 1, 1, 0);
        let mut src = FolderSource::new(dir.path(), false);
        src.open().unwrap();
        assert!(matches!(grab(&mut src), Err(SourceError::BadFrame { detail, .. }) if detail.contains("wide.png")));
    }

    #[test]
    fn a_missing_or_empty_folder_fails_to_open_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-folder");
        let err = FolderSource::new(&missing, false).open().unwrap_err().to_string();
        assert!(err.contains("no-such-folder") && err.contains("check the folder path"), "{err}");

        std::fs::write(dir.path().join("readme.txt"), "x").unwrap();
        let err = FolderSource::new(dir.path(), true).open().unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("no images"), "{err}");
    }
}
