//! Frame sources: one OS thread per camera pulls frames from a [`Source`] and stamps them.
//!
//! A source only knows how to open its device and grab the next image into a buffer; the camera
//! thread ([`camera`]) owns pacing, stamping, backpressure, stall detection and reconnects, so
//! every kind of source behaves the same on the line.

pub mod camera;
pub mod folder;
pub mod mask_files;
pub mod opencv;
pub mod stream_clock;
pub mod synthetic;

use crate::frame::{PartId, PixelFormat};

/// What one successful grab produced. The pixels were written into the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Grabbed {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// Part identifier when the source knows it (e.g. from a file name).
    pub part_id: Option<PartId>,
    /// When the image was taken, by the source's own clock (a stream's buffer timestamps),
    /// mapped onto this process's monotonic clock; `None`: when it was grabbed.
    pub captured_at: Option<std::time::Instant>,
}

/// Why a grab produced no frame. The camera thread decides what each means for the line.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A finite source (folder played once, video file) has no more frames.
    #[error("end of stream")]
    EndOfStream,
    /// This one image could not be read (corrupt or truncated file, unsupported format); the
    /// next may be fine. `reason` is a short fixed word (logs are rate-limited per reason);
    /// `detail` names the file or device and what was wrong.
    #[error("bad frame ({reason}): {detail}")]
    BadFrame { reason: &'static str, detail: String },
    /// The device is gone or stalled; the camera thread reopens it with backoff.
    #[error("camera disconnected: {0}")]
    Disconnected(String),
}

/// A camera, file replay or generator. Implementations do blocking I/O; they run on their own
/// thread and never see the rest of the pipeline.
pub trait Source: Send {
    /// Open (or reopen after a disconnect) the device. An error here is retried with backoff,
    /// except at start-up, where the station refuses to start with a camera it cannot open.
    fn open(&mut self) -> Result<(), SourceError>;

    /// Grab the next image into `pixels` (resize it as needed; its capacity is reused).
    fn grab(&mut self, pixels: &mut Vec<u8>) -> Result<Grabbed, SourceError>;

    /// Release the device (before a reopen or at shutdown).
    fn close(&mut self) {}

    /// True for sources that replay recorded data (files): they default to `block` backpressure
    /// so that no frame is lost, and stop at end of stream.
    fn is_replay(&self) -> bool {
        false
    }

    /// The size of the frames it will deliver, when an open source knows it before the first
    /// grab (checked against the camera's calibration at start).
    fn frame_size(&self) -> Option<(u32, u32)> {
        None
    }
}

/// Make the source a camera's config describes. Relative folder paths resolve against `base`.
pub fn build(
    cfg: &crate::config::SourceConfig,
    base: &crate::config::LoadedConfig,
) -> Result<Box<dyn Source>, SourceError> {
    use crate::config::SourceConfig;
    Ok(match cfg {
        SourceConfig::Synthetic(s) => {
            let surface =
                s.surface.parse().map_err(|e: crate::synth::SynthError| SourceError::Disconnected(e.to_string()))?;
            let params = crate::synth::SynthParams {
                width: s.width,
                height: s.height,
                surface,
                defect_probability: s.defect_probability,
                seed: s.seed,
            };
            Box::new(synthetic::SyntheticSource::new(params)?)
        }
        SourceConfig::Folder(f) => Box::new(folder::FolderSource::new(base.resolve(&f.path), f.looping)),
        SourceConfig::Opencv(o) => {
            Box::new(opencv::OpenCvSource::new(o.uri.clone(), o.read_timeout_ms.min(u32::MAX as u64) as u32))
        }
    })
}
