//! The next parts of one camera, copied off the line through the shadow tap and written as PNG:
//! the good parts a teach job learns from when the operator vouches for what runs now. Parts the
//! station could not judge (fail-safe) are left out; parts that pass while the writer is busy
//! are skipped (the tap never waits).

use crate::frame::PixelFormat;
use crate::pipeline::Verdict;
use crate::pipeline::shadow_tap::{Attachment, ShadowTap, TapTarget};
use crossbeam_channel::{RecvTimeoutError, bounded};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// Copy the next `parts` parts of camera `camera` (index) into `dir` as `part-NNNNN.png`,
/// calling `progress` with the count after each. Gives up after `limit` (an idle or triggered
/// camera) with what it has. Returns how many it wrote.
pub fn capture_parts(
    tap: &ShadowTap,
    camera: u16,
    parts: usize,
    dir: &Path,
    limit: Duration,
    mut progress: impl FnMut(usize),
) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let (frames_tx, frames) = bounded(2);
    let (spares, spare_rx) = bounded(2);
    for _ in 0..2 {
        let _ = spares.send(Vec::new());
    }
    let target = TapTarget::Camera(camera);
    tap.attach(Attachment {
        target,
        credit: 0.0,
        min_interval: None,
        last_taken: None,
        share: 1.0,
        frames: vec![frames_tx],
        spares: spare_rx,
        offered: Arc::new(AtomicU64::new(0)),
        skipped: Arc::new(AtomicU64::new(0)),
        watchers: None,
    });
    let deadline = Instant::now() + limit;
    let mut written = 0;
    let result = loop {
        if written >= parts {
            break Ok(written);
        }
        let frame = match frames.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(f) => f,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break Ok(written),
        };
        if !matches!(frame.live.verdict, Verdict::Failsafe(_)) {
            let colour = match frame.format {
                PixelFormat::Gray8 => image::ExtendedColorType::L8,
                PixelFormat::Rgb8 => image::ExtendedColorType::Rgb8,
            };
            let path = dir.join(format!("part-{written:05}.png"));
            if let Err(e) = image::save_buffer(&path, &frame.pixels, frame.width, frame.height, colour) {
                break Err(std::io::Error::other(format!("writing {}: {e}", path.display())));
            }
            written += 1;
            progress(written);
        }
        let _ = spares.send(frame.pixels);
    };
    tap.detach(target);
    result
}
