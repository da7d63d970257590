//! The live view's pictures: each camera's latest part, at most a few times a second, as a
//! small JPEG with its verdict and defect boxes, ready to send to any number of browsers.
//!
//! Parts are copied off the line through the shadow tap only while somebody watches
//! ([`Watching`]), rate-limited per camera, never waiting: a busy encoder means the part is
//! skipped. One thread downscales and encodes each part once and keeps the latest per camera in
//! a `watch` channel: a slow browser misses pictures, it never queues them against the line.

use crate::frame::PixelFormat;
use crate::pipeline::shadow_tap::{Attachment, ShadowFrame, ShadowTap, TapTarget};
use base64::Engine;
use crossbeam_channel::bounded;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;
use tokio::sync::watch;

/// Pictures per second per camera, at most.
pub const MAX_RATE: f64 = 8.0;
/// Width of the pictures sent (height follows the frame's aspect ratio).
pub const THUMBNAIL_WIDTH: u32 = 320;
/// JPEG quality of the pictures.
const QUALITY: u8 = 70;

/// One camera's latest picture, as the JSON the live stream sends.
pub type Picture = Option<Arc<str>>;

/// Each camera's latest picture.
pub struct LiveView {
    cameras: Vec<String>,
    latest: Vec<watch::Sender<Picture>>,
    /// Subscriptions open now: the tap copies parts for the view only while there is one.
    watchers: Arc<AtomicUsize>,
}

/// A subscription to every camera's latest picture; the tap stops copying parts for the view
/// once the last one is dropped.
pub struct Watching {
    pub pictures: Vec<watch::Receiver<Picture>>,
    watchers: Arc<AtomicUsize>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Relaxed);
    }
}

impl LiveView {
    /// Start taking pictures of `cameras` (ids, by index) off `tap`.
    pub fn start(tap: &ShadowTap, cameras: Vec<String>) -> std::io::Result<Arc<Self>> {
        let latest: Vec<watch::Sender<Picture>> = cameras.iter().map(|_| watch::Sender::new(None)).collect();
        let watchers = Arc::new(AtomicUsize::new(0));
        let view = Arc::new(Self { cameras, latest, watchers: Arc::clone(&watchers) });
        let n = view.cameras.len();
        let (frames_tx, frames) = bounded(2 * n);
        let (spares, spare_rx) = bounded(2 * n);
        for _ in 0..2 * n {
            let _ = spares.send(Vec::new());
        }
        for c in 0..n {
            tap.attach(Attachment {
                target: TapTarget::Camera(c as u16),
                credit: 0.0,
                min_interval: Some(Duration::from_secs_f64(1.0 / MAX_RATE)),
                last_taken: None,
                share: 1.0,
                frames: vec![frames_tx.clone()],
                spares: spare_rx.clone(),
                offered: Arc::new(AtomicU64::new(0)),
                skipped: Arc::new(AtomicU64::new(0)),
                watchers: Some(Arc::clone(&watchers)),
            });
        }
        drop(frames_tx);
        let worker = Arc::clone(&view);
        std::thread::Builder::new().name("live-view".into()).spawn(move || {
            // Ends when the station stops (the tap's port, holding the senders, is dropped).
            for frame in frames {
                let camera = usize::from(frame.live.camera);
                if let Some(tx) = worker.latest.get(camera)
                    && tx.receiver_count() > 0
                {
                    match picture(&worker.cameras[camera], &frame) {
                        Ok(json) => {
                            tx.send_replace(Some(json.into()));
                        }
                        Err(e) => tracing::debug!(error = %e, "live view: a picture could not be encoded"),
                    }
                }
                let _ = spares.send(frame.pixels);
            }
        })?;
        Ok(view)
    }

    /// The camera ids, by index.
    pub fn cameras(&self) -> &[String] {
        &self.cameras
    }

    /// Follow every camera's latest picture, for as long as the subscription is kept.
    pub fn subscribe(&self) -> Watching {
        self.watchers.fetch_add(1, Relaxed);
        Watching {
            pictures: self.latest.iter().map(watch::Sender::subscribe).collect(),
            watchers: Arc::clone(&self.watchers),
        }
    }
}

/// The picture of one part: downscaled, JPEG, base64, with the live judgement.
fn picture(camera: &str, frame: &ShadowFrame) -> Result<String, image::ImageError> {
    let (w, h) = (frame.width, frame.height);
    let tw = THUMBNAIL_WIDTH.min(w).max(1);
    let th = ((u64::from(h) * u64::from(tw) / u64::from(w.max(1))) as u32).max(1);
    let mut jpeg = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, QUALITY);
    let short = || {
        image::ImageError::Parameter(image::error::ParameterError::from_kind(
            image::error::ParameterErrorKind::DimensionMismatch,
        ))
    };
    match frame.format {
        PixelFormat::Gray8 => {
            let img = image::GrayImage::from_raw(w, h, frame.pixels.clone()).ok_or_else(short)?;
            encoder.encode_image(&image::imageops::thumbnail(&img, tw, th))?;
        }
        PixelFormat::Rgb8 => {
            let img = image::RgbImage::from_raw(w, h, frame.pixels.clone()).ok_or_else(short)?;
            encoder.encode_image(&image::imageops::thumbnail(&img, tw, th))?;
        }
    }
    let live = &frame.live;
    let captured_ms = live.captured_wall.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Ok(json!({
        "camera": camera,
        "seq": live.seq,
        "part_id": live.part_id.as_ref().map(|p| p.as_str()),
        "verdict": live.verdict.as_str(),
        "score": live.image_score.is_finite().then_some(live.image_score),
        "width": w,
        "height": h,
        "boxes": live.boxes.as_slice(),
        "captured_unix_ms": captured_ms,
        "jpeg": base64::engine::general_purpose::STANDARD.encode(&jpeg),
    })
    .to_string())
}
