//! The image archive: every NG and fail-safe frame, and a deterministic share of OK frames, saved
//! as PNG (plain, and with the defects outlined) under `[archive] dir`, for audits and the API.
//!
//! The assembler decides which frames are archived ([`selected`]) and hands the [`Frame`] itself
//! (its pixels stay on loan from the camera's pool: nothing is copied or allocated on the frame
//! path) to one writer thread through a bounded queue. A full queue loses the image, counted in
//! `linesight_archive_dropped_total{reason="queue_full"}`; a failed write (read-only folder, full
//! disk) is counted in `linesight_errors_total{stage="archive"}` and raises
//! `linesight_archive_degraded` until a write succeeds again. Neither ever stops inspection.
//!
//! Files are laid out by date (UTC) and camera, named from camera, sequence number and part id,
//! every component sanitised ([`relative_path`]). The result store records the same relative
//! path for each archived inspection, which is how the API finds an inspection's image: by id in
//! the database, never from a path in a request.

mod retention;
mod writer;

pub use retention::{RETENTION_INTERVAL, prune};
pub use writer::{Archive, ArchiveError, draw_overlay};

use crate::frame::{Frame, FrameMeta};
use crate::pipeline::Verdict;
use crate::pipeline::messages::{HeatSource, Inspection};
use crate::pipeline::{Accounting, OutputPort};
use crossbeam_channel::{Sender, TrySendError};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

/// Frames waiting for the archive writer. Each holds a camera pool buffer, so every camera's pool
/// is sized for this many more (see `topology`).
pub const QUEUE_DEPTH: usize = 8;

/// Suffix of the variant with the defects outlined.
const OVERLAY_SUFFIX: &str = "_overlay.png";
/// Suffix of the heat map ([`HeatMap`]).
const HEAT_SUFFIX: &str = "_heat.png";

/// Assembler → archive writer: a decided frame, its record and its heat map.
pub struct ArchiveJob {
    pub frame: Frame,
    pub inspection: Inspection,
    pub heat: Option<HeatMap>,
}

/// Longest side of a heat map, in cells: enough to see where a defect is, small enough to make
/// on the assembler thread and carry inline (no allocation on the frame path).
pub const HEAT_MAX_SIDE: usize = 64;

/// A frame's anomaly map, max-pooled to at most [`HEAT_MAX_SIDE`] cells a side: each cell
/// `128 × score / threshold` (clamped to 0..=255: 128 is the threshold, 255 twice it or more).
pub struct HeatMap {
    pub width: u32,
    pub height: u32,
    pub cells: arrayvec::ArrayVec<u8, { HEAT_MAX_SIDE * HEAT_MAX_SIDE }>,
}

impl HeatMap {
    /// `None` for a map whose threshold cannot scale it (not positive and finite), or that holds
    /// a NaN (none should: a frame with non-finite outputs fails safe and lends no map).
    /// `columns`: scratch for one row of column maxima, kept by the caller (it grows once, to
    /// the widest frame, and is never allocated again).
    pub fn of(src: HeatSource<'_>, columns: &mut Vec<f32>) -> Option<Self> {
        let (w, h) = (src.width as usize, src.height as usize);
        if !(src.threshold.is_finite() && src.threshold > 0.0) || w == 0 || h == 0 || src.scores.len() < w * h {
            return None;
        }
        let step = w.div_ceil(HEAT_MAX_SIDE).max(h.div_ceil(HEAT_MAX_SIDE));
        let (cw, ch) = (w.div_ceil(step), h.div_ceil(step));
        // Branch-free maxima (`>` keeps the running maximum), so the compiler vectorises them:
        // each band of `step` rows into one row of column maxima, then that row into cells.
        let larger = |m: f32, v: f32| if v > m { v } else { m };
        columns.clear();
        columns.resize(w, f32::NEG_INFINITY);
        let mut nan = false;
        let mut cells = arrayvec::ArrayVec::new();
        for (y, row) in src.scores[..w * h].chunks_exact(w).enumerate() {
            for (c, &v) in columns.iter_mut().zip(row) {
                nan |= v.is_nan();
                *c = larger(*c, v);
            }
            if (y + 1) % step == 0 || y + 1 == h {
                for segment in columns.chunks(step) {
                    let top = segment.iter().fold(f32::NEG_INFINITY, |m, &v| larger(m, v));
                    cells.push((128.0 * top / src.threshold).clamp(0.0, 255.0) as u8);
                }
                columns.fill(f32::NEG_INFINITY);
            }
        }
        debug_assert_eq!(cells.len(), cw * ch);
        (!nan).then_some(Self { width: cw as u32, height: ch as u32, cells })
    }
}

/// The archive's port for the assembler, fed by `tx` with every NG and fail-safe frame and the
/// [`selected`] share `ok_sample_rate` of OK frames.
pub fn port(tx: Sender<ArchiveJob>, ok_sample_rate: f64) -> Box<dyn OutputPort> {
    Box::new(ArchivePort { tx, ok_sample_rate, columns: Vec::new() })
}

/// The archive's port: takes the selected frames (no copy: the pixels go back to the camera's
/// pool once written). A full queue loses the image (counted), never the verdict.
struct ArchivePort {
    tx: Sender<ArchiveJob>,
    ok_sample_rate: f64,
    /// [`HeatMap::of`]'s scratch.
    columns: Vec<f32>,
}

impl OutputPort for ArchivePort {
    fn offer(
        &mut self,
        inspection: &mut Inspection,
        frame: &mut Option<Frame>,
        heat: Option<HeatSource<'_>>,
        accounting: &Accounting,
    ) {
        if !selected(inspection.verdict, inspection.meta.seq, self.ok_sample_rate) {
            return;
        }
        let Some(frame) = frame.take() else { return };
        inspection.archived = true;
        // No heat map for a job the full queue will refuse: the assembler is its only sender.
        let heat = if self.tx.is_full() { None } else { heat.and_then(|h| HeatMap::of(h, &mut self.columns)) };
        match self.tx.try_send(ArchiveJob { frame, inspection: inspection.clone(), heat }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                inspection.archived = false;
                accounting.archive_dropped_queue_full.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => inspection.archived = false,
        }
    }

    fn frames_held(&self) -> usize {
        // Its queue, and the one being written.
        QUEUE_DEPTH + 1
    }
}

/// Whether a frame with this verdict and sequence number is archived: every NG and fail-safe
/// frame, and OK frames whose sequence number hashes below `ok_sample_rate` (the same frames on
/// every run, spread evenly over the sequence).
pub fn selected(verdict: Verdict, seq: u64, ok_sample_rate: f64) -> bool {
    match verdict {
        Verdict::Ok => {
            // Fibonacci hashing: the top 53 bits as a uniform fraction in [0, 1).
            let h = seq.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
            (h as f64 / (1u64 << 53) as f64) < ok_sample_rate
        }
        Verdict::Ng | Verdict::Failsafe(_) => true,
    }
}

/// Letters, digits, `-` and `_` kept, anything else `_`, at most 64 characters: a file name part
/// that cannot leave its folder or hide.
pub fn sanitize(s: &str) -> String {
    let out: String =
        s.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if out.is_empty() { "_".into() } else { out }
}

/// The plain image's path under the archive folder: `YYYY-MM-DD/<camera>/<camera>_<seq>[_<part>].png`,
/// the date being the capture's (UTC). The store computes the same path for the same frame.
pub fn relative_path(camera: &str, meta: &FrameMeta) -> String {
    let ms = meta.captured_wall.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let date = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y-%m-%d");
    let cam = sanitize(camera);
    match &meta.part_id {
        Some(p) => format!("{date}/{cam}/{cam}_{:010}_{}.png", meta.seq, sanitize(p)),
        None => format!("{date}/{cam}/{cam}_{:010}.png", meta.seq),
    }
}

/// The overlay variant's path, next to the plain one.
pub fn overlay_path(plain: &str) -> String {
    format!("{}{OVERLAY_SUFFIX}", plain.strip_suffix(".png").unwrap_or(plain))
}

/// The plain file's stem of any of a frame's files (plain, overlay, heat map): the files that
/// go together; `None` for a file that is none of them.
pub(super) fn frame_stem(name: &str) -> Option<&str> {
    name.strip_suffix(OVERLAY_SUFFIX).or_else(|| name.strip_suffix(HEAT_SUFFIX)).or_else(|| name.strip_suffix(".png"))
}

/// The heat map's path, next to the plain one.
pub fn heat_path(plain: &str) -> String {
    format!("{}{HEAT_SUFFIX}", plain.strip_suffix(".png").unwrap_or(plain))
}

/// `relative` resolved under `dir`, if it is a plain relative path made of sanitised parts (a
/// damaged or foreign database must not make the API read outside the archive).
pub fn resolve(dir: &Path, relative: &str) -> Option<PathBuf> {
    let rel = Path::new(relative);
    let safe = rel.components().count() == 3
        && rel.components().all(|c| match c {
            Component::Normal(s) => s.to_str().is_some_and(|s| {
                !s.starts_with('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            }),
            _ => false,
        });
    safe.then(|| dir.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::part_id;
    use crate::pipeline::FailsafeCause;
    use std::time::{Duration, Instant, UNIX_EPOCH};

    #[test]
    fn a_heat_map_keeps_the_hottest_score_of_each_cell_scaled_to_the_threshold() {
        let (w, h, threshold) = (200u32, 100u32, 0.5f32);
        let mut scores = vec![0.25f32; (w * h) as usize];
        scores[(40 * w + 150) as usize] = 1.0; // twice the threshold: full scale
        scores[(90 * w + 10) as usize] = 0.5; // at the threshold: mid scale
        let mut columns = Vec::new();
        let heat = HeatMap::of(HeatSource { width: w, height: h, scores: &scores, threshold }, &mut columns).unwrap();
        // Cells of 4 × 4 pixels (the longer side decides): 50 × 25.
        assert_eq!((heat.width, heat.height, heat.cells.len()), (50, 25, 50 * 25));
        let cell = |x: usize, y: usize| heat.cells[y * 50 + x];
        assert_eq!(cell(150 / 4, 40 / 4), 255);
        assert_eq!(cell(10 / 4, 90 / 4), 128);
        assert_eq!(cell(20, 20), 64, "half the threshold everywhere else");
        let bad = HeatSource { width: w, height: h, scores: &scores, threshold: f32::NAN };
        assert!(HeatMap::of(bad, &mut columns).is_none(), "no scale, no heat map");
        let short = HeatSource { width: w, height: h, scores: &scores[..10], threshold };
        assert!(HeatMap::of(short, &mut columns).is_none(), "a map shorter than the frame is refused, not read past");
        scores[(5 * w + 5) as usize] = f32::NAN;
        let with_nan = HeatSource { width: w, height: h, scores: &scores, threshold };
        assert!(HeatMap::of(with_nan, &mut columns).is_none(), "a NaN is never shown as a cool cell");
    }

    fn meta(part: Option<&str>) -> FrameMeta {
        FrameMeta {
            camera: 0,
            seq: 42,
            part_id: part.map(part_id),
            captured_at: Instant::now(),
            // 2024-05-01T00:00:01Z
            captured_wall: UNIX_EPOCH + Duration::from_millis(1_714_521_601_000),
            recipe: 0,
        }
    }

    #[test]
    fn paths_are_sanitised_and_stay_inside_the_archive() {
        assert_eq!(relative_path("cam", &meta(None)), "2024-05-01/cam/cam_0000000042.png");
        let p = relative_path("../cam 1", &meta(Some("../../etc/passwd")));
        assert_eq!(p, "2024-05-01/___cam_1/___cam_1_0000000042_______etc_passwd.png");
        assert_eq!(overlay_path(&p), "2024-05-01/___cam_1/___cam_1_0000000042_______etc_passwd_overlay.png");
        let dir = Path::new("/a");
        assert!(resolve(dir, &p).is_some());
        for bad in ["../x/y.png", "/etc/passwd", "a/../b.png", "a/b/.hidden", "a/b/c/d.png", "a\\b/c/d.png", ""] {
            assert_eq!(resolve(dir, bad), None, "{bad}");
        }
    }

    #[test]
    fn every_ng_is_selected_and_ok_frames_at_the_sample_rate() {
        assert!(selected(Verdict::Ng, 1, 0.0));
        assert!(selected(Verdict::Failsafe(FailsafeCause::Timeout), 1, 0.0));
        assert!((0..1000).all(|s| !selected(Verdict::Ok, s, 0.0)));
        assert!((0..1000).all(|s| selected(Verdict::Ok, s, 1.0)));
        let n = (0..100_000).filter(|&s| selected(Verdict::Ok, s, 0.01)).count();
        assert!((800..1200).contains(&n), "{n}");
        assert_eq!(selected(Verdict::Ok, 7, 0.3), selected(Verdict::Ok, 7, 0.3));
    }
}
