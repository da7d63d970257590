//! The archive's writer thread: encodes each queued frame as PNG (plain and overlay), writes it
//! atomically (temporary file, then rename), and prunes the folder by size and age. A write that
//! fails removes its temporary file, and opening the archive removes any a crash left behind.

use super::retention::{RETENTION_INTERVAL, prune};
use super::{ArchiveJob, heat_path, overlay_path, relative_path};
use crate::frame::PixelFormat;
use crate::pipeline::accounting::Accounting;
use crate::pipeline::messages::RecordedDefect;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use image::{ExtendedColorType, ImageFormat};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

/// At most one write-error log line per this interval; the rest are counted in it.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Outline thickness in the overlay, in pixels.
const LINE_PX: u32 = 2;
/// Outline colours: a defect that counted towards the verdict, and one that did not.
const COUNTED_RGB: [u8; 3] = [255, 0, 255];
const IGNORED_RGB: [u8; 3] = [255, 200, 0];

/// Why the archive could not be opened.
#[derive(Debug, thiserror::Error)]
#[error(
    "image archive {path}: cannot create the folder: {source} (check [archive] dir and that linesight may write there)"
)]
pub struct ArchiveError {
    path: PathBuf,
    source: std::io::Error,
}

/// An open archive folder, ready for its writer thread.
pub struct Archive {
    dir: PathBuf,
    cameras: Vec<String>,
    max_bytes: u64,
    max_age_days: u32,
}

impl Archive {
    /// Create the folder when missing, and remove the temporary files of writes a crash cut
    /// short. `cameras` names camera indices (for file names).
    pub fn open(dir: &Path, cameras: Vec<String>, max_bytes: u64, max_age_days: u32) -> Result<Self, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(|source| ArchiveError { path: dir.to_path_buf(), source })?;
        let removed = remove_stale_temporaries(dir);
        if removed > 0 {
            tracing::info!(dir = %dir.display(), removed, "image archive: removed temporary files of unfinished writes");
        }
        Ok(Self { dir: dir.to_path_buf(), cameras, max_bytes, max_age_days })
    }

    /// The archive folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write every frame from `rx` until the queue closes. Each frame goes back to its camera's
    /// pool as soon as it is written (or fails to be).
    pub fn run(self, rx: Receiver<ArchiveJob>, accounting: Arc<Accounting>) {
        let mut errors = ErrorLog { last: None, suppressed: 0 };
        let mut overlay = Vec::new();
        let mut next_prune = Instant::now();
        // Bytes in the folder as of the last prune, plus what was written since.
        let mut total = 0u64;
        let mut jobs = 0u64;
        loop {
            if Instant::now() >= next_prune || (self.max_bytes > 0 && total > self.max_bytes) {
                match prune(&self.dir, self.max_bytes, self.max_age_days, SystemTime::now()) {
                    Ok(kept) => total = kept,
                    Err(e) => errors.log(&self.dir, "retention failed", &e),
                }
                next_prune = Instant::now() + RETENTION_INTERVAL;
            }
            let job = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            jobs += 1;
            crate::supervise::fault_point("archive", jobs);
            match self.write(&job, &mut overlay) {
                Ok(bytes) => {
                    total += bytes;
                    accounting.archive_written.fetch_add(1, Relaxed);
                    accounting.archive_degraded.store(false, Relaxed);
                }
                Err(e) => {
                    accounting.archive_errors.fetch_add(1, Relaxed);
                    accounting.archive_degraded.store(true, Relaxed);
                    errors.log(&self.dir, "write failed; this frame is not archived, inspection goes on", &e);
                }
            }
        }
        // The last writes may have outgrown the limit: leave the folder within it.
        if self.max_bytes > 0
            && total > self.max_bytes
            && let Err(e) = prune(&self.dir, self.max_bytes, self.max_age_days, SystemTime::now())
        {
            errors.log(&self.dir, "retention failed", &e);
        }
    }

    /// Write one frame's files (plain, overlay, heat map); returns the bytes written.
    fn write(&self, job: &ArchiveJob, overlay: &mut Vec<u8>) -> std::io::Result<u64> {
        let f = &job.frame;
        let camera = self.cameras.get(f.meta.camera as usize).map_or("camera", String::as_str);
        let rel = relative_path(camera, &f.meta);
        let plain = self.dir.join(&rel);
        if let Some(parent) = plain.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let colour = match f.format {
            PixelFormat::Gray8 => ExtendedColorType::L8,
            PixelFormat::Rgb8 => ExtendedColorType::Rgb8,
        };
        let len = f.stride() * f.height as usize;
        let mut bytes = save_png(&plain, &f.pixels[..len], f.width, f.height, colour)?;
        draw_overlay(&f.pixels[..len], f.format, f.width, f.height, &job.inspection.defects, overlay);
        bytes += save_png(&self.dir.join(overlay_path(&rel)), overlay, f.width, f.height, ExtendedColorType::Rgb8)?;
        if let Some(heat) = &job.heat {
            bytes +=
                save_png(&self.dir.join(heat_path(&rel)), &heat.cells, heat.width, heat.height, ExtendedColorType::L8)?;
        }
        Ok(bytes)
    }
}

/// Suffix of a file being written; renamed to its final name once complete.
const TEMPORARY_SUFFIX: &str = ".tmp";

/// Encode to `<path>.tmp`, then rename: a reader never sees half a file. On failure (a full disk,
/// say) the temporary file is removed, so failed writes do not fill the disk further.
fn save_png(path: &Path, pixels: &[u8], w: u32, h: u32, colour: ExtendedColorType) -> std::io::Result<u64> {
    let tmp = path.with_extension("png.tmp");
    let write = || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        image::write_buffer_with_format(&mut out, pixels, w, h, colour, ImageFormat::Png).map_err(|e| match e {
            image::ImageError::IoError(e) => e,
            other => std::io::Error::other(other),
        })?;
        // Flush here: dropping the writer would swallow the last write's error (a full disk),
        // and a cut-short file would be renamed into place as if complete.
        out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(gone) if gone.kind() == std::io::ErrorKind::NotFound => {}
            Err(stuck) => {
                tracing::warn!(file = %tmp.display(), error = %stuck, "image archive: cannot remove a temporary file")
            }
        }
        return Err(e);
    }
    Ok(std::fs::metadata(path)?.len())
}

/// Remove the temporary files in the archive's `date/camera/` folders (and at its top); returns
/// how many went. Only this archive writes there, so any such file is an unfinished write.
fn remove_stale_temporaries(dir: &Path) -> usize {
    let entries = |d: &Path| std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path());
    let mut removed = 0;
    let mut remove = |file: PathBuf| {
        let temporary = file.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(TEMPORARY_SUFFIX));
        if temporary && file.is_file() {
            match std::fs::remove_file(&file) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "image archive: cannot remove a stale temporary file")
                }
            }
        }
    };
    for top in entries(dir) {
        if top.is_dir() {
            for camera in entries(&top).filter(|p| p.is_dir()) {
                entries(&camera).for_each(&mut remove);
            }
        } else {
            remove(top);
        }
    }
    removed
}

/// The frame as RGB in `out`, with each defect's bounding box outlined (magenta when it counted
/// towards the verdict, amber when it did not).
pub fn draw_overlay(pixels: &[u8], format: PixelFormat, w: u32, h: u32, defects: &[RecordedDefect], out: &mut Vec<u8>) {
    out.clear();
    match format {
        PixelFormat::Gray8 => out.extend(pixels.iter().flat_map(|&p| [p, p, p])),
        PixelFormat::Rgb8 => out.extend_from_slice(pixels),
    }
    if w == 0 || h == 0 {
        return;
    }
    let mut put = |x: u32, y: u32, rgb: [u8; 3]| {
        let i = 3 * (y as usize * w as usize + x as usize);
        out[i..i + 3].copy_from_slice(&rgb);
    };
    for d in defects {
        let rgb = if d.counted { COUNTED_RGB } else { IGNORED_RGB };
        let b = &d.defect;
        let clamp = |v: f32, max: u32| (v.max(0.0) as u32).min(max - 1);
        let (x0, y0) = (clamp(b.x, w), clamp(b.y, h));
        let (x1, y1) = (clamp(b.x + b.w - 1.0, w).max(x0), clamp(b.y + b.h - 1.0, h).max(y0));
        for t in 0..LINE_PX {
            for x in x0..=x1 {
                put(x, (y0 + t).min(y1), rgb);
                put(x, y1.saturating_sub(t).max(y0), rgb);
            }
            for y in y0..=y1 {
                put((x0 + t).min(x1), y, rgb);
                put(x1.saturating_sub(t).max(x0), y, rgb);
            }
        }
    }
}

/// Rate-limited error logging: one line per [`ERROR_LOG_INTERVAL`], saying how many were held back.
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn log(&mut self, dir: &Path, what: &str, e: &std::io::Error) {
        if self.last.is_some_and(|t| t.elapsed() < ERROR_LOG_INTERVAL) {
            self.suppressed += 1;
            return;
        }
        tracing::error!(dir = %dir.display(), error = %e, suppressed = self.suppressed, "image archive: {what}");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Defect;

    const GRAY: ExtendedColorType = ExtendedColorType::L8;

    fn temporaries(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() && !p.is_symlink() {
                    stack.push(p);
                } else if p.to_string_lossy().ends_with(".tmp") {
                    found.push(p);
                }
            }
        }
        found
    }

    /// A full disk mid-write: the temporary file is `/dev/full` behind a link (a write there
    /// fails with ENOSPC, even as root). The failed write must not leave its temporary behind.
    #[test]
    fn a_write_that_fails_on_a_full_disk_removes_its_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("cam_0000000001.png");
        std::os::unix::fs::symlink("/dev/full", target.with_extension("png.tmp")).unwrap();
        let err = save_png(&target, &[7u8; 64 * 64], 64, 64, GRAY).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "expected ENOSPC from /dev/full: {err}");
        assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
        assert!(!target.exists());
    }

    /// A rename that fails (the final name is taken by a folder) removes the finished temporary.
    #[test]
    fn a_write_whose_rename_fails_removes_its_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("cam_0000000002.png");
        std::fs::create_dir_all(target.join("occupied")).unwrap();
        assert!(save_png(&target, &[7u8; 16], 4, 4, GRAY).is_err());
        assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
        // A write that succeeds leaves only its final file.
        let ok = dir.path().join("cam_0000000003.png");
        assert!(save_png(&ok, &[7u8; 16], 4, 4, GRAY).unwrap() > 0);
        assert!(ok.is_file() && temporaries(dir.path()).is_empty());
    }

    #[test]
    fn opening_the_archive_removes_the_temporaries_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let camera = dir.path().join("2024-05-01/cam");
        std::fs::create_dir_all(&camera).unwrap();
        for name in ["cam_0000000001.png.tmp", "cam_0000000002_overlay.png.tmp", "cam_0000000003.png"] {
            std::fs::write(camera.join(name), b"x").unwrap();
        }
        std::fs::write(dir.path().join("stray.png.tmp"), b"x").unwrap();
        Archive::open(dir.path(), vec!["cam".into()], 0, 0).unwrap();
        assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
        assert!(camera.join("cam_0000000003.png").is_file(), "finished images stay");
    }

    #[test]
    fn the_overlay_outlines_each_defect_and_leaves_the_rest() {
        let (w, h) = (8, 6);
        let px = vec![100u8; (w * h) as usize];
        let d = RecordedDefect { defect: Defect::from_box(0, 2.0, 1.0, 4.0, 4.0, 0.9), counted: true };
        let mut out = Vec::new();
        draw_overlay(&px, PixelFormat::Gray8, w, h, &[d], &mut out);
        let at = |out: &[u8], x: usize, y: usize| out[3 * (y * w as usize + x)..3 * (y * w as usize + x) + 3].to_vec();
        assert_eq!(at(&out, 2, 1), COUNTED_RGB);
        assert_eq!(at(&out, 5, 4), COUNTED_RGB);
        assert_eq!(at(&out, 0, 0), [100, 100, 100]);
        assert_eq!(at(&out, 7, 5), [100, 100, 100]);
        // A box past the frame edge is clipped, not a panic.
        let far = RecordedDefect { defect: Defect::from_box(0, 6.0, 4.0, 40.0, 40.0, 0.9), counted: false };
        draw_overlay(&px, PixelFormat::Gray8, w, h, &[far], &mut out);
        assert_eq!(at(&out, 7, 5), IGNORED_RGB);
    }
}
