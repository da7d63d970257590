//! The web UI in a real browser: a station with two synthetic cameras, the API, the store and
//! the archive, driven by headless Chromium through WebDriver (tests/browser/ui_check.py, with
//! Debian's chromium and chromedriver and selenium from the project's venv, all installed by
//! `make test`'s set-up). `LINESIGHT_SCREENSHOTS=DIR` saves each page's screenshot there
//! (`make screenshots`).

mod common;

use std::net::TcpListener;
use std::time::Duration;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_pages_work_in_a_real_browser() {
    let python = common::repo().join(".venv/bin/python");
    assert!(
        python.is_file() && std::path::Path::new("/usr/bin/chromedriver").is_file(),
        "the browser test needs the venv's selenium and Debian's chromium-driver: run `make test` (its set-up installs them)"
    );
    let _one = common::one_station();
    let dir = tempfile::tempdir().unwrap();
    let hash = |t: &str| hex::encode(linesight::api::auth::sha256(t));
    let text = format!(
        r#"
[station]
name = "ui"

[[camera]]
id = "metal"
fps = 15
[camera.source]
kind = "synthetic"
surface = "brushed_metal"
width = 256
height = 256
defect_probability = 0.5
seed = 1

[[camera]]
id = "tile"
fps = 15
[camera.source]
kind = "synthetic"
surface = "ceramic_tile"
width = 256
height = 256
defect_probability = 0.5
seed = 2

# Taught on first start, as the demo station is: an anomaly model with an image-score threshold,
# so that reviewed parts make an operating point.
[model]
package = "{model}"

[model.teach]
synthetic_parts = 16
holdout_fraction = 0.4
backbone = "{backbone}"
coreset_ratio = 0.01
grid_stride = 8

[[rule]]
class = "anomaly"
max_count = 0

[store]
path = "{store}"

[archive]
dir = "{archive}"
ok_sample_rate = 0.2

[[api.tokens]]
name = "line-operator"
role = "operator"
sha256 = "{op}"

[[api.tokens]]
name = "quality-screen"
role = "viewer"
sha256 = "{viewer}"
"#,
        model = dir.path().join("taught-model").display(),
        backbone = common::repo().join("models/backbone-lite0").display(),
        store = dir.path().join("ui.db").display(),
        archive = dir.path().join("archive").display(),
        op = hash("op-token"),
        viewer = hash("viewer-token"),
    );
    let config = common::write_config(dir.path(), &text);
    let port = free_port();
    let mut cmd = common::linesight_run();
    cmd.arg("--config").arg(&config).args(["--api-listen", &format!("127.0.0.1:{port}")]);
    cmd.env("LINESIGHT_API_TOKEN", "admin-token");
    let (_station, admin, log) = common::spawn_with_admin(cmd);
    let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    common::wait_for(
        Duration::from_secs(60),
        || format!("the station ready, with parts to review:\n{}", log.lock().unwrap()),
        || {
            let ready = common::http_get(admin, "/readyz").ok()?.0 == 200;
            let (_, queue) = common::http_get(api, "/api/v1/review/queue").ok()?;
            let queue: serde_json::Value = serde_json::from_str(&queue).ok()?;
            (ready && queue["items"].as_array().is_some_and(|i| i.iter().any(|x| x["has_image"] == true))).then_some(())
        },
    );

    let mut browser = std::process::Command::new(&python);
    browser.arg(common::repo().join("tests/browser/ui_check.py")).args([
        "--base",
        &format!("http://{api}"),
        "--operator",
        "op-token",
        "--viewer",
        "viewer-token",
        "--admin",
        "admin-token",
    ]);
    if let Ok(shots) = std::env::var("LINESIGHT_SCREENSHOTS") {
        std::fs::create_dir_all(&shots).unwrap();
        browser.args(["--shots", &shots]);
    }
    let (ok, stdout, stderr) = common::output(&mut browser);
    println!("{stdout}");
    assert!(ok, "the browser check failed:\n{stdout}\n{stderr}\nstation log:\n{}", log.lock().unwrap());
}
