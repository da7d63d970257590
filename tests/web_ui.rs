//! The web UI in a real browser: a station with two synthetic cameras, the API, the store and
//! the archive, driven by headless Chromium through WebDriver (tests/browser/ui_check.py, with
//! Debian's chromium and chromedriver and selenium from the project's venv, all installed by
//! `make test`'s set-up). `LINESIGHT_SCREENSHOTS=DIR` saves each page's screenshot there
//! (`make screenshots`).

mod common;

use std::time::Duration;

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
    let port = common::free_port();
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
    heat_maps_point_at_the_defects(&dir.path().join("ui.db"), &dir.path().join("archive"));
}

/// The heat map the review page shows is where the defect is: on each archived NG part with
/// regions, its hottest cell lies in one of the part's regions.
fn heat_maps_point_at_the_defects(db: &std::path::Path, archive: &std::path::Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, image_path, width FROM inspections WHERE verdict = 'NG' AND image_path IS NOT NULL")
        .unwrap();
    let parts: Vec<(i64, String, u32)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
    let (mut checked, mut inside) = (0, 0);
    for (id, path, width) in parts {
        let heat = archive.join(linesight::sinks::archive::heat_path(&path));
        let Ok(map) = image::open(&heat) else { continue };
        let map = map.to_luma8();
        let mut boxes = conn.prepare("SELECT x, y, w, h FROM defects WHERE inspection_id = ?1").unwrap();
        let boxes: Vec<[f64; 4]> = boxes
            .query_map([id], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        if boxes.is_empty() {
            continue;
        }
        let (hx, hy, _) = map.enumerate_pixels().max_by_key(|(_, _, p)| p.0[0]).unwrap();
        // The cell's extent in frame pixels (cells are square).
        let cell = f64::from(width) / f64::from(map.width());
        let (x0, y0) = (f64::from(hx) * cell, f64::from(hy) * cell);
        checked += 1;
        if boxes.iter().any(|b| x0 + cell >= b[0] && x0 <= b[0] + b[2] && y0 + cell >= b[1] && y0 <= b[1] + b[3]) {
            inside += 1;
        }
    }
    println!("heat maps: the hottest cell is in a region on {inside} of {checked} NG parts");
    assert!(checked >= 5, "too few archived NG parts with regions and a heat map to judge ({checked})");
    assert!(inside * 10 >= checked * 9, "the hottest cell is in a region on only {inside} of {checked} NG parts");
}
