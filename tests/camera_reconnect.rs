//! Real OpenCV cameras inside a running station: a GStreamer camera that keeps failing is
//! reopened with backoff while a second camera goes on undisturbed, and its state is visible.

mod common;

use linesight::config;
use linesight::topology::{RunOptions, Station};
use std::time::{Duration, Instant};

#[test]
fn a_failing_camera_is_reopened_and_the_other_camera_keeps_going() {
    // videotestsrc ends after 5 buffers: to the station that is a camera that drops out.
    let text = format!(
        r#"
[[camera]]
id = "flaky"
reconnect_initial_ms = 50
reconnect_max_ms = 200
[camera.source]
kind = "opencv"
uri = "videotestsrc num-buffers=5 ! video/x-raw,format=BGR,width=160,height=120 ! appsink"

[[camera]]
id = "steady"
fps = 20
[camera.source]
kind = "synthetic"
width = 256
height = 256

[model]
package = "{}"
"#,
        common::demo_model()
    );
    let loaded = config::load_str(&text, "test", common::repo()).unwrap();
    let station = Station::build(&loaded, RunOptions::default()).unwrap();
    let stop = station.stop_handle();
    let accounting = station.accounting();
    let runner = std::thread::spawn(move || station.run());
    let t0 = Instant::now();
    let mut saw_down = false;
    while t0.elapsed() < Duration::from_secs(4) {
        saw_down |= !accounting.snapshot()[0].up;
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runner.join().unwrap();
    let snaps = accounting.snapshot();
    let (flaky, steady) = (&snaps[0], &snaps[1]);
    assert!(flaky.reconnects >= 2, "{flaky:?}");
    assert!(flaky.captured >= 10, "frames after reopening: {flaky:?}");
    assert!(saw_down, "the camera's down state was visible");
    assert!(steady.captured >= 40, "the other camera kept capturing: {steady:?}");
    for s in &snaps {
        assert_eq!(s.in_flight(), 0, "{s:?}");
    }
}
