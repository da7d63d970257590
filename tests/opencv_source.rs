//! `OpenCvSource` against the real OpenCV of this machine: a video file written with OpenCV's own
//! `VideoWriter`, a GStreamer test pipeline, and a uri nothing can open. No mocks: these tests are
//! what tells us the backends a station needs are really there.

use linesight::frame::PixelFormat;
use linesight::sources::opencv::OpenCvSource;
use linesight::sources::{Grabbed, Source, SourceError};
use opencv::core::{CV_8UC3, Mat, Scalar, Size};
use opencv::prelude::*;
use opencv::videoio::VideoWriter;

const WIDTH: i32 = 64;
const HEIGHT: i32 = 48;
const FRAMES: usize = 10;

/// Grab until the source reports an error; returns the frames (pixels copied) and that error.
fn drain(src: &mut OpenCvSource, max: usize) -> (Vec<(Grabbed, Vec<u8>)>, SourceError) {
    let mut frames = Vec::new();
    let mut pixels = Vec::new();
    loop {
        match src.grab(&mut pixels) {
            Ok(g) => frames.push((g, pixels.clone())),
            Err(e) => return (frames, e),
        }
        assert!(frames.len() <= max, "source kept delivering past {max} frames");
    }
}

/// Write `FRAMES` flat frames, frame k at gray level 10·k, as MJPG in an AVI container.
fn write_test_video(path: &std::path::Path) {
    let fourcc = VideoWriter::fourcc('M', 'J', 'P', 'G').unwrap();
    let mut writer = VideoWriter::new(path, fourcc, 25.0, Size::new(WIDTH, HEIGHT), true).unwrap();
    assert!(writer.is_opened().unwrap(), "OpenCV cannot write MJPG/AVI here");
    for k in 0..FRAMES {
        let level = (10 * k) as f64;
        let frame = Mat::new_rows_cols_with_default(HEIGHT, WIDTH, CV_8UC3, Scalar::all(level)).unwrap();
        writer.write(&frame).unwrap();
    }
    writer.release().unwrap();
}

#[test]
fn a_video_file_replays_every_frame_then_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("line1.avi");
    write_test_video(&path);

    let mut src = OpenCvSource::new(path.to_str().unwrap(), 2_000);
    assert!(src.is_replay(), "an existing file is a replay");
    src.open().unwrap();
    let (frames, end) = drain(&mut src, FRAMES);
    assert!(matches!(end, SourceError::EndOfStream), "a file ends with EndOfStream, got {end:?}");
    assert_eq!(frames.len(), FRAMES);
    for (k, (g, pixels)) in frames.iter().enumerate() {
        assert_eq!((g.width, g.height, g.format), (WIDTH as u32, HEIGHT as u32, PixelFormat::Rgb8));
        assert_eq!(pixels.len(), (WIDTH * HEIGHT * 3) as usize);
        // MJPEG is lossy and goes through YUV, but a flat gray frame stays within a few levels.
        let expected = 10 * k as u8;
        let worst = pixels.iter().map(|p| p.abs_diff(expected)).max().unwrap();
        assert!(worst <= 3, "frame {k}: a pixel is {worst} levels off {expected}");
    }
    // Reading past the end stays at the end; a reopen starts over.
    assert!(matches!(src.grab(&mut Vec::new()), Err(SourceError::EndOfStream)));
    src.close();
    src.open().unwrap();
    assert_eq!(drain(&mut src, FRAMES).0.len(), FRAMES);
}

/// A URL goes to FFmpeg with the open/read timeouts as open params; FFmpeg refuses params it
/// does not read, so this opening at all shows they are accepted. A `file://` URL stands in for a
/// network camera.
#[test]
fn a_url_opens_through_ffmpeg_with_timeouts_and_is_live() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream.avi");
    write_test_video(&path);
    let url = format!("file://{}", path.display());

    let mut src = OpenCvSource::new(url.as_str(), 2_000);
    assert!(!src.is_replay(), "a URL is live, not a replay");
    src.open().unwrap();
    let (frames, end) = drain(&mut src, FRAMES);
    assert_eq!(frames.len(), FRAMES);
    // A live stream that stops is a lost camera, to be reopened.
    assert!(matches!(end, SourceError::Disconnected(_)), "got {end:?}");
}

/// Fails, rather than skips, when OpenCV lacks GStreamer: a station configured with a pipeline
/// would not start, and this is where we want to learn it.
#[test]
fn a_gstreamer_pipeline_delivers_its_frames_then_disconnects() {
    let info = opencv::core::get_build_information().unwrap();
    let gstreamer = info.lines().find(|line| line.trim_start().starts_with("GStreamer:"));
    assert!(
        gstreamer.is_some_and(|line| line.contains("YES")),
        "this OpenCV was built without GStreamer (build info says {gstreamer:?}); install an \
         OpenCV built with it (Debian/Ubuntu libopencv-videoio does) to use pipeline uris"
    );

    let uri = "videotestsrc num-buffers=20 ! video/x-raw,format=BGR,width=320,height=240 ! appsink";
    let mut src = OpenCvSource::new(uri, 2_000);
    assert!(!src.is_replay());
    src.open().unwrap();
    let (frames, end) = drain(&mut src, 20);
    assert_eq!(frames.len(), 20);
    for (g, pixels) in &frames {
        assert_eq!((g.width, g.height, g.format), (320, 240, PixelFormat::Rgb8));
        assert_eq!(pixels.len(), 320 * 240 * 3);
    }
    // The end of a pipeline looks like a lost camera: only files have an end of stream. The
    // camera thread reopens it, which is what a live pipeline (rtspsrc, v4l2src) needs.
    assert!(matches!(end, SourceError::Disconnected(_)), "got {end:?}");
}

#[test]
fn an_unopenable_uri_is_a_disconnect_that_names_it() {
    for uri in ["/no/such/dir/missing.avi", "nosuchgstelement ! appsink"] {
        let err = OpenCvSource::new(uri, 500).open().unwrap_err();
        assert!(matches!(err, SourceError::Disconnected(_)), "{uri}: got {err:?}");
        assert!(err.to_string().contains(uri), "{uri}: message does not name it: {err}");
    }
}
