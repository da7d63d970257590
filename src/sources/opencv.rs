//! OpenCV capture: USB/V4L2 cameras, GStreamer pipelines, network streams and video files through
//! `cv::VideoCapture`.
//!
//! The camera config gives one string, `uri`, and [`CaptureTarget::parse`] decides what it names.
//! This module opens it with the right backend and timeouts, and turns each decoded `Mat`
//! (BGR, BGRA, 8- or 16-bit gray) into packed Rgb8 or Gray8 rows in the caller's buffer. The
//! intermediate `Mat`s are fields, so a steady stream of same-sized frames allocates nothing here.

use super::{Grabbed, Source, SourceError};
use crate::frame::PixelFormat;
use opencv::core::{self, Mat, Vector};
use opencv::imgproc;
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};
use std::path::Path;
use tracing::info;

/// What a camera `uri` names, and so which backend opens it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureTarget {
    /// `"0"`, `"1"`, …: a camera by index, backend chosen by OpenCV.
    Index(i32),
    /// `"/dev/videoN"`: a V4L2 device by path (stable with udev symlinks, unlike indices).
    DevicePath(String),
    /// Anything with a `!`: a GStreamer pipeline ending in `appsink`.
    Pipeline(String),
    /// Anything else: a video file, or a URL (`rtsp://`, `http://`) that FFmpeg opens.
    FileOrUrl(String),
}

impl CaptureTarget {
    pub fn parse(uri: &str) -> Self {
        let uri = uri.trim();
        if let Ok(index) = uri.parse::<u16>() {
            CaptureTarget::Index(i32::from(index))
        } else if uri.starts_with("/dev/video") {
            CaptureTarget::DevicePath(uri.to_owned())
        } else if uri.contains('!') {
            CaptureTarget::Pipeline(uri.to_owned())
        } else {
            CaptureTarget::FileOrUrl(uri.to_owned())
        }
    }
}

/// A camera, stream or video file read through OpenCV's `VideoCapture`.
pub struct OpenCvSource {
    uri: String,
    target: CaptureTarget,
    /// Longest wait for a frame (and for the open) before the backend gives up; 0 = backend
    /// default. FFmpeg (URLs) honours it, GStreamer from OpenCV 4.7; V4L2 cameras keep OpenCV's
    /// own select timeout (`OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT`, 10 s). The camera thread's stall
    /// detection bounds every case.
    read_timeout_ms: u32,
    /// An existing regular file: an empty read is the end of the video, not a lost camera.
    is_file: bool,
    capture: Option<VideoCapture>,
    /// The stream's timestamps on our clock (see [`super::stream_clock`]).
    clock: super::stream_clock::StreamClock,
    /// The frame as the backend delivers it.
    raw: Mat,
    /// `raw` converted to RGB or 8-bit gray, when it is not already.
    converted: Mat,
    /// A packed copy for the rare backend that hands out frames with padded rows.
    packed: Mat,
}

impl OpenCvSource {
    /// A source for `uri` (see [`CaptureTarget`]). Nothing is opened until [`Source::open`].
    pub fn new(uri: impl Into<String>, read_timeout_ms: u32) -> Self {
        let uri = uri.into();
        let target = CaptureTarget::parse(&uri);
        let is_file = is_existing_file(&target);
        Self {
            uri,
            target,
            read_timeout_ms,
            is_file,
            capture: None,
            clock: Default::default(),
            raw: Mat::default(),
            converted: Mat::default(),
            packed: Mat::default(),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn target(&self) -> &CaptureTarget {
        &self.target
    }

    /// Open params carrying the timeouts. A backend may refuse to open on a param it does not
    /// read (OpenCV 4.6's GStreamer does: "can't set property 53"), so these go only to backends
    /// known to read them.
    fn timeout_params(&self) -> Vector<i32> {
        let mut params = Vector::new();
        if self.read_timeout_ms > 0 {
            let ms = i32::try_from(self.read_timeout_ms).unwrap_or(i32::MAX);
            params.push(videoio::CAP_PROP_OPEN_TIMEOUT_MSEC);
            params.push(ms);
            params.push(videoio::CAP_PROP_READ_TIMEOUT_MSEC);
            params.push(ms);
        }
        params
    }

    fn open_capture(&self) -> opencv::Result<VideoCapture> {
        match &self.target {
            CaptureTarget::Index(index) => VideoCapture::new(*index, videoio::CAP_ANY),
            CaptureTarget::DevicePath(path) => VideoCapture::from_file(path, videoio::CAP_V4L2),
            // OpenCV's GStreamer backend reads timeouts from 4.7 on (opencv/opencv#22919); older
            // ones refuse to open with them. Pipelines can carry their own (rtspsrc timeout=…).
            CaptureTarget::Pipeline(pipeline) if gstreamer_has_timeouts() => {
                VideoCapture::from_file_with_params(pipeline, videoio::CAP_GSTREAMER, &self.timeout_params())
            }
            CaptureTarget::Pipeline(pipeline) => VideoCapture::from_file(pipeline, videoio::CAP_GSTREAMER),
            // A local file needs no timeouts, and CAP_ANY lets OpenCV pick any backend that reads
            // the container.
            CaptureTarget::FileOrUrl(path) if self.is_file => VideoCapture::from_file(path, videoio::CAP_ANY),
            CaptureTarget::FileOrUrl(url) => {
                VideoCapture::from_file_with_params(url, videoio::CAP_FFMPEG, &self.timeout_params())
            }
        }
    }
}

/// Whether the OpenCV loaded at run time is 4.7 or later.
fn gstreamer_has_timeouts() -> bool {
    (core::get_version_major(), core::get_version_minor()) >= (4, 7)
}

fn is_existing_file(target: &CaptureTarget) -> bool {
    matches!(target, CaptureTarget::FileOrUrl(path) if Path::new(path).is_file())
}

impl Source for OpenCvSource {
    fn open(&mut self) -> Result<(), SourceError> {
        self.close();
        self.is_file = is_existing_file(&self.target);
        let fail = |why: String| SourceError::Disconnected(format!("cannot open camera uri {:?}: {why}", self.uri));
        let capture = self.open_capture().map_err(|e| fail(e.to_string()))?;
        if !capture.is_opened().unwrap_or(false) {
            return Err(fail(
                "no OpenCV backend could open it; check that the device, file or stream exists \
                 and, for a pipeline, that it runs with gst-launch-1.0"
                    .to_owned(),
            ));
        }
        let backend = capture.get_backend_name().unwrap_or_default();
        info!(uri = %self.uri, backend = %backend, file = self.is_file, "capture opened");
        self.capture = Some(capture);
        self.clock.reset();
        Ok(())
    }

    fn grab(&mut self, pixels: &mut Vec<u8>) -> Result<Grabbed, SourceError> {
        let uri = &self.uri;
        let capture = self.capture.as_mut().ok_or_else(|| SourceError::Disconnected(format!("{uri}: not open")))?;
        let got =
            capture.read(&mut self.raw).map_err(|e| SourceError::Disconnected(format!("{uri}: read failed: {e}")))?;
        let arrived = std::time::Instant::now();
        if !got || self.raw.empty() {
            return Err(if self.is_file {
                SourceError::EndOfStream
            } else {
                SourceError::Disconnected(format!("{uri}: no frame (device gone or stream ended)"))
            });
        }
        let bad = |e: opencv::Error| SourceError::BadFrame { reason: "grab_failed", detail: format!("{uri}: {e}") };
        let (format, frame) = match self.raw.typ() {
            core::CV_8UC1 => (PixelFormat::Gray8, &self.raw),
            core::CV_8UC3 => {
                imgproc::cvt_color(&self.raw, &mut self.converted, imgproc::COLOR_BGR2RGB, 0).map_err(bad)?;
                (PixelFormat::Rgb8, &self.converted)
            }
            core::CV_8UC4 => {
                imgproc::cvt_color(&self.raw, &mut self.converted, imgproc::COLOR_BGRA2RGB, 0).map_err(bad)?;
                (PixelFormat::Rgb8, &self.converted)
            }
            core::CV_16UC1 => {
                // Full 16-bit range onto 8 bits (65535 → 255), like the folder source does.
                self.raw.convert_to(&mut self.converted, core::CV_8U, 1.0 / 257.0, 0.0).map_err(bad)?;
                (PixelFormat::Gray8, &self.converted)
            }
            other => {
                let name = core::type_to_string(other).unwrap_or_else(|_| other.to_string());
                return Err(SourceError::BadFrame {
                    reason: "unsupported",
                    detail: format!("{uri}: unsupported pixel type {name}"),
                });
            }
        };
        let (width, height) = (frame.cols() as u32, frame.rows() as u32);
        copy_packed(frame, &mut self.packed, pixels).map_err(bad)?;
        let expected = width as usize * height as usize * format.channels();
        if pixels.len() != expected {
            return Err(SourceError::BadFrame {
                reason: "wrong_size",
                detail: format!("{uri}: frame has {} bytes, expected {expected} for {width}x{height}", pixels.len()),
            });
        }
        // A live stream's own timestamp says when the frame was taken (a file's says where in
        // the video it is: replays are stamped on arrival).
        let captured_at = if self.is_file {
            None
        } else {
            let stream_ms = self.capture.as_ref().and_then(|c| c.get(videoio::CAP_PROP_POS_MSEC).ok());
            stream_ms.and_then(|ms| self.clock.captured_at(ms, arrived))
        };
        Ok(Grabbed { width, height, format, part_id: None, captured_at })
    }

    fn close(&mut self) {
        if let Some(mut capture) = self.capture.take() {
            // Releasing a capture that is already gone fails harmlessly; nothing to report.
            let _ = capture.release();
        }
    }

    fn is_replay(&self) -> bool {
        self.is_file
    }

    /// The size the backend reports for an open capture (not every backend knows it).
    fn frame_size(&self) -> Option<(u32, u32)> {
        let capture = self.capture.as_ref()?;
        let w = capture.get(videoio::CAP_PROP_FRAME_WIDTH).ok()?;
        let h = capture.get(videoio::CAP_PROP_FRAME_HEIGHT).ok()?;
        (w >= 1.0 && h >= 1.0).then_some((w as u32, h as u32))
    }
}

/// Copy `frame` into `pixels` as packed rows (cleared first, capacity kept).
fn copy_packed(frame: &Mat, packed: &mut Mat, pixels: &mut Vec<u8>) -> opencv::Result<()> {
    // Backends may wrap their own buffers with padded rows (GStreamer aligns strides); copy_to
    // repacks into `packed`, which keeps its allocation between frames of the same size.
    let source = if frame.is_continuous() {
        frame
    } else {
        frame.copy_to(packed)?;
        &*packed
    };
    pixels.clear();
    pixels.extend_from_slice(source.data_bytes()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_the_right_kind_of_target() {
        use CaptureTarget::*;
        assert_eq!(CaptureTarget::parse("0"), Index(0));
        assert_eq!(CaptureTarget::parse(" 2 "), Index(2));
        assert_eq!(CaptureTarget::parse("/dev/video1"), DevicePath("/dev/video1".into()));
        let pipeline = "videotestsrc ! video/x-raw,format=BGR ! appsink";
        assert_eq!(CaptureTarget::parse(pipeline), Pipeline(pipeline.into()));
        assert_eq!(CaptureTarget::parse("rtsp://cam/1"), FileOrUrl("rtsp://cam/1".into()));
        assert_eq!(CaptureTarget::parse("line1.avi"), FileOrUrl("line1.avi".into()));
        assert_eq!(CaptureTarget::parse("-1"), FileOrUrl("-1".into()));
    }

    #[test]
    fn only_existing_files_are_replays() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().to_str().unwrap();
        assert!(OpenCvSource::new(path, 0).is_replay());
        assert!(!OpenCvSource::new("/no/such/video.avi", 0).is_replay());
        assert!(!OpenCvSource::new("rtsp://cam/1", 0).is_replay());
        assert!(!OpenCvSource::new("0", 0).is_replay());
    }

    #[test]
    fn grabbing_before_open_is_a_disconnect() {
        let mut src = OpenCvSource::new("/no/such/video.avi", 0);
        assert!(matches!(src.grab(&mut Vec::new()), Err(SourceError::Disconnected(_))));
    }
}
