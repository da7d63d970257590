//! Calibration end to end, with real OpenCV and the real binary:
//!
//! - synthetic chessboard views rendered through a known lens (`calibration/render.rs`, no
//!   OpenCV) → `linesight calibrate` → the file's intrinsics match the lens;
//! - real views of an asymmetric circle grid from an industrial camera
//!   (`../shared/datasets/calibration-circles`) → every view detected, RMS reported;
//! - a defect of known size in millimetres, rendered through the distorting lens → the station
//!   (undistortion, the identity model fixture, decision in mm) → its size in the results JSON;
//! - bad input: views without a target, too few views, corrupt or mismatched files;
//! - the undistortion kernel against OpenCV's `remap`, and its cost per frame.

mod common;
#[path = "calibration/render.rs"]
mod render;

use common::{linesight, linesight_run, output};
use linesight::calibration::{Board, Calibration, Target, TargetSpec, Undistorter, detect, solve};
use opencv::core::{self as cvcore, FileStorage, Mat};
use opencv::prelude::*;
use render::{Lens, Pose};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

/// A wide-ish lens with strong barrel distortion: 7 % at the image corners.
const LENS: Lens = Lens {
    fx: 602.0,
    fy: 598.0,
    cx: 323.5,
    cy: 236.8,
    dist: [-0.28, 0.11, 0.0012, -0.0009, -0.02],
    width: 640,
    height: 480,
};

/// The chessboard: 9 × 6 inner corners, 25 mm squares; its centre in board coordinates.
const BOARD: (u32, u32, f64) = (9, 6, 25.0);
const BOARD_CENTRE: [f64; 2] = [100.0, 62.5];

/// The working plane: the board lying square to the camera, 450 mm away.
fn working_plane() -> Pose {
    Pose::new(0.0, 0.0, 0.0, BOARD_CENTRE, [0.0, 0.0, 450.0])
}

/// 25 views: tilted up to 30°, turned, at 420–640 mm, placed all over the image.
fn chessboard_poses() -> Vec<Pose> {
    let v = |rx, ry, rz, at| Pose::new(rx, ry, rz, BOARD_CENTRE, at);
    vec![
        working_plane(),
        v(25.0, 0.0, 0.0, [0.0, 0.0, 460.0]),
        v(-25.0, 0.0, 0.0, [0.0, 0.0, 460.0]),
        v(0.0, 25.0, 0.0, [0.0, 0.0, 460.0]),
        v(0.0, -25.0, 0.0, [0.0, 0.0, 460.0]),
        v(20.0, 20.0, 10.0, [-55.0, -35.0, 500.0]),
        v(-20.0, 20.0, -10.0, [55.0, -35.0, 500.0]),
        v(20.0, -20.0, 5.0, [-55.0, 35.0, 500.0]),
        v(-20.0, -20.0, -5.0, [55.0, 35.0, 500.0]),
        v(10.0, -30.0, 15.0, [0.0, 0.0, 470.0]),
        v(30.0, 10.0, -15.0, [20.0, 15.0, 520.0]),
        v(-15.0, 15.0, 30.0, [-30.0, 5.0, 520.0]),
        v(0.0, 0.0, -20.0, [-65.0, -45.0, 520.0]),
        v(0.0, 0.0, 20.0, [65.0, 45.0, 520.0]),
        v(15.0, -10.0, 0.0, [0.0, 0.0, 420.0]),
        v(0.0, 0.0, 10.0, [70.0, -45.0, 520.0]),
        v(0.0, 0.0, -10.0, [-70.0, 45.0, 520.0]),
        // Further away and pushed into the corners and edges, where distortion is strongest.
        v(10.0, 10.0, 0.0, [-185.0, -130.0, 640.0]),
        v(-10.0, 10.0, 0.0, [170.0, -125.0, 640.0]),
        v(10.0, -10.0, 0.0, [-180.0, 120.0, 640.0]),
        v(-10.0, -10.0, 0.0, [165.0, 118.0, 640.0]),
        v(0.0, 20.0, 0.0, [-175.0, 0.0, 600.0]),
        v(0.0, -20.0, 0.0, [170.0, 0.0, 600.0]),
        v(20.0, 0.0, 0.0, [0.0, -120.0, 600.0]),
        v(-20.0, 0.0, 0.0, [0.0, 120.0, 600.0]),
    ]
}

/// The rays of `LENS`, cast once per test binary.
fn rays() -> &'static [[f64; 2]] {
    static RAYS: OnceLock<Vec<[f64; 2]>> = OnceLock::new();
    RAYS.get_or_init(|| LENS.rays())
}

/// Rendered chessboard views, the working-plane image, and the calibration `linesight calibrate`
/// made from them (once per test binary).
struct ChessFixture {
    dir: tempfile::TempDir,
    report: String,
}

impl ChessFixture {
    fn views(&self) -> PathBuf {
        self.dir.path().join("views")
    }
    fn calibration(&self) -> PathBuf {
        self.dir.path().join("camera.yaml")
    }
}

fn chess() -> &'static ChessFixture {
    static FIXTURE: OnceLock<ChessFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let views = dir.path().join("views");
        std::fs::create_dir(&views).unwrap();
        let (cols, rows, s) = BOARD;
        let quiet_zone = ((-2.0 * s, f64::from(cols) * s + s), (-2.0 * s, f64::from(rows) * s + s));
        for (k, pose) in chessboard_poses().iter().enumerate() {
            assert!(render::visible(&LENS, pose, quiet_zone.0, quiet_zone.1, 2.0), "view {k}: board leaves the image");
            let px = render::render(&LENS, rays(), pose, render::chessboard(cols, rows, s), render::GREY, 2.0);
            render::save_png(&views.join(format!("view{k:02}.png")), &LENS, px);
        }
        let plane = dir.path().join("plane.png");
        let px = render::render(&LENS, rays(), &working_plane(), render::chessboard(cols, rows, s), render::GREY, 2.0);
        render::save_png(&plane, &LENS, px);
        let (ok, report, stderr) = output(
            linesight()
                .args(["calibrate", "--target", "chessboard", "--board", "9x6", "--spacing-mm", "25", "--images"])
                .arg(&views)
                .arg("--plane-image")
                .arg(&plane)
                .arg("--out")
                .arg(dir.path().join("camera.yaml")),
        );
        assert!(ok, "linesight calibrate failed: {stderr}\n{report}");
        ChessFixture { dir, report }
    })
}

/// The largest distance, in pixels, between the rays two lenses assign to the same pixel, over
/// a grid covering the area the views' points reach (the frame less a 7.5 % border; beyond it a
/// fitted model only extrapolates): how far apart the whole models (matrix and distortion) are.
fn model_gap_px(a: &Lens, b: &Lens) -> f64 {
    let mut worst = 0.0f64;
    for gy in 0..=16 {
        for gx in 0..=20 {
            let (u, v) = (48.0 + f64::from(gx) * 544.0 / 20.0, 36.0 + f64::from(gy) * 408.0 / 16.0);
            let (ra, rb) = (a.ray(u, v), b.ray(u, v));
            worst = worst.max(((ra[0] - rb[0]) * a.fx).hypot((ra[1] - rb[1]) * a.fy));
        }
    }
    worst
}

fn lens_of(cal: &Calibration) -> Lens {
    let d = &cal.dist_coeffs;
    Lens {
        fx: cal.fx(),
        fy: cal.fy(),
        cx: cal.cx(),
        cy: cal.cy(),
        dist: [d[0], d[1], d[2], d[3], d[4]],
        width: cal.image_width,
        height: cal.image_height,
    }
}

#[test]
fn synthetic_chessboard_views_give_back_the_lens() {
    let fx = chess();
    let cal = Calibration::load(&fx.calibration()).unwrap();
    let rel = |got: f64, want: f64| (got - want).abs() / want;
    let errors = [
        ("fx", rel(cal.fx(), LENS.fx)),
        ("fy", rel(cal.fy(), LENS.fy)),
        ("cx", rel(cal.cx(), LENS.cx)),
        ("cy", rel(cal.cy(), LENS.cy)),
    ];
    let rms = cal.rms_px.unwrap();
    let gap = model_gap_px(&LENS, &lens_of(&cal));
    eprintln!(
        "synthetic chessboard: {} views, RMS {rms:.4} px; relative errors {errors:?}; distortion {:?} (true {:?}), \
         largest gap between the true and the recovered lens model {gap:.3} px\n{}",
        cal.views.len(),
        cal.dist_coeffs,
        LENS.dist,
        fx.report
    );
    assert_eq!(cal.views.len(), 25, "every rendered view used: {:?}", cal.skipped);
    for (name, e) in errors {
        assert!(e < 0.01, "{name} off by {:.3} %", e * 100.0);
    }
    assert!(rms < 0.1, "RMS {rms} px");
    // The distortion, stated as what it does: over the area the views cover, the recovered model
    // sends every pixel within 0.5 px of where the true lens does (the coefficients trade off
    // against each other, so one by one they are checked loosely).
    assert!(gap < 0.5, "recovered model is {gap} px from the true one");
    let tolerance = [0.01, 0.03, 0.0005, 0.0005, 0.05]; // k1 k2 p1 p2 k3
    for (i, tol) in tolerance.iter().enumerate() {
        let (got, want) = (cal.dist_coeffs[i], LENS.dist[i]);
        assert!((got - want).abs() < *tol, "distortion coefficient {i}: {got} vs {want} (± {tol})");
    }
    assert!(cal.per_view_px.iter().all(|e| *e < 0.2), "{:?}", cal.per_view_px);
    assert!(fx.report.contains("outliers") && fx.report.contains("none"), "{}", fx.report);

    // The working plane: fronto-parallel at 450 mm, so 450 / f mm per pixel (between 450/602 and
    // 450/598, whose geometric mean the homography's area scale is).
    let scale = cal.scale.as_ref().expect("--plane-image gives a scale");
    let want = 450.0 / (LENS.fx * LENS.fy).sqrt();
    assert!(rel(scale.mm_per_px, want) < 0.005, "mm/px {} vs {want}", scale.mm_per_px);
    assert_eq!(scale.source.as_str(), "homography");
    assert!(scale.note.contains("plane.png"), "{}", scale.note);
}

#[test]
fn the_calibration_file_is_an_opencv_filestorage_file() {
    // Read with OpenCV's own FileStorage, as OpenCV's tools would: the standard names and types.
    let cal = Calibration::load(&chess().calibration()).unwrap();
    let fs = FileStorage::new(chess().calibration().to_str().unwrap(), cvcore::FileStorage_READ, "").unwrap();
    assert!(fs.is_opened().unwrap());
    let k = fs.get("camera_matrix").unwrap().mat().unwrap();
    assert_eq!((k.rows(), k.cols(), k.typ()), (3, 3, cvcore::CV_64F));
    assert_eq!(*k.at_2d::<f64>(0, 0).unwrap(), cal.fx());
    let d = fs.get("distortion_coefficients").unwrap().mat().unwrap();
    assert_eq!(d.total(), 5);
    assert_eq!(fs.get("image_width").unwrap().to_i32().unwrap(), 640);
    assert_eq!(fs.get("image_height").unwrap().to_i32().unwrap(), 480);
    let rms = fs.get("avg_reprojection_error").unwrap().to_f64().unwrap();
    assert!(rms > 0.0 && rms < 0.1);
    // And the file written back reads the same.
    let again = Calibration::from_yaml(&cal.to_yaml().unwrap()).unwrap();
    assert_eq!(again, cal);
}

/// The real views: every one detected, RMS around OpenCV's 0.07 px.
#[test]
fn real_circle_grid_views_are_all_detected() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/calibration-circles");
    assert!(
        data.join("left01.jpg").is_file(),
        "the real calibration views are missing: expected {} (see ../shared/datasets/README.md)",
        data.display()
    );
    let dir = tempfile::tempdir().unwrap();
    for side in ["left", "right"] {
        let out = dir.path().join(format!("{side}.yaml"));
        let pattern = data.join(format!("{side}*.jpg"));
        let (ok, report, stderr) = output(
            linesight()
                .args(["calibrate", "--target", "asymmetric-circles", "--board", "4x11", "--spacing-mm", "20"])
                .args(["--images", pattern.to_str().unwrap(), "--out"])
                .arg(&out),
        );
        assert!(ok, "{stderr}\n{report}");
        let cal = Calibration::load(&out).unwrap();
        let rms = cal.rms_px.unwrap();
        eprintln!(
            "{side}: {} of 25 views, RMS {rms:.4} px, fx {:.2} fy {:.2} cx {:.2} cy {:.2}, k {:?}",
            cal.views.len(),
            cal.fx(),
            cal.fy(),
            cal.cx(),
            cal.cy(),
            cal.dist_coeffs
        );
        assert_eq!(cal.views.len(), 25, "{side}: skipped {:?}", cal.skipped);
        assert!(cal.skipped.is_empty());
        assert!(report.contains(&format!("RMS reprojection error: {rms:.4} px")), "{report}");
        assert!(rms < 0.1, "{side}: RMS {rms}");
        assert_eq!((cal.image_width, cal.image_height), (640, 512));
        let t = cal.target.unwrap();
        assert_eq!((t.target, t.board), (Target::AsymmetricCircles, Board { cols: 4, rows: 11 }));
    }
}

#[test]
fn symmetric_circle_grids_calibrate_too() {
    // Library API, no CLI: detect + calibrate on rendered views of a 7 × 5 circle grid.
    let spec = TargetSpec::new(Target::Circles, Board { cols: 7, rows: 5 }, 30.0).unwrap();
    let centre = [90.0, 60.0];
    let poses = [
        (0.0, 0.0, 0.0, [0.0, 0.0, 480.0]),
        (25.0, 0.0, 5.0, [0.0, 0.0, 480.0]),
        (-25.0, 0.0, -5.0, [0.0, 0.0, 480.0]),
        (0.0, 25.0, 0.0, [0.0, 0.0, 480.0]),
        (0.0, -25.0, 10.0, [0.0, 0.0, 480.0]),
        (20.0, 20.0, 0.0, [-60.0, -40.0, 520.0]),
        (-20.0, 20.0, 0.0, [60.0, -40.0, 520.0]),
        (20.0, -20.0, 0.0, [-60.0, 40.0, 520.0]),
        (-20.0, -20.0, 0.0, [60.0, 40.0, 520.0]),
        (10.0, 10.0, 20.0, [0.0, 0.0, 440.0]),
    ];
    let mut views = Vec::new();
    for (k, &(rx, ry, rz, at)) in poses.iter().enumerate() {
        let pose = Pose::new(rx, ry, rz, centre, at);
        assert!(render::visible(&LENS, &pose, (-30.0, 210.0), (-30.0, 150.0), 2.0), "view {k}");
        let px = render::render(&LENS, rays(), &pose, render::circle_grid(7, 5, 30.0, 8.0), render::GREY, 2.0);
        let img = detect::gray_mat(&px, LENS.width, LENS.height).unwrap();
        views.push(detect::detect(&img, &spec).unwrap().unwrap_or_else(|| panic!("grid not found in view {k}")));
    }
    let solved = solve::calibrate(&views, &spec, (640, 480), 8).unwrap();
    let k = solved.camera_matrix;
    eprintln!(
        "symmetric circles: RMS {:.4} px, fx {:.2} fy {:.2} cx {:.2} cy {:.2}",
        solved.rms_px, k[0], k[4], k[2], k[5]
    );
    assert!((k[0] / LENS.fx - 1.0).abs() < 0.01 && (k[4] / LENS.fy - 1.0).abs() < 0.01, "{k:?}");
    assert!(solved.rms_px < 0.15, "RMS {}", solved.rms_px);
}

/// The defect scene on the working plane: a 40 × 4 mm scratch at 30° near the top-left corner
/// of the image and a pit of 15 mm diameter near the bottom-right, bright on a dark surface.
struct Scene {
    scratch_centre: [f64; 2],
    pit_centre: [f64; 2],
}

const SCRATCH: (f64, f64, f64) = (40.0, 4.0, 30.0);
const PIT_DIAMETER: f64 = 15.0;

impl Scene {
    fn new() -> Self {
        let plane = working_plane();
        Self {
            scratch_centre: LENS.plane_point(&plane, 105.0, 90.0),
            pit_centre: LENS.plane_point(&plane, 545.0, 395.0),
        }
    }

    fn shade(&self) -> impl Fn(f64, f64) -> f64 + '_ {
        let (len, wid, angle) = SCRATCH;
        let (c, s) = (angle.to_radians().cos(), angle.to_radians().sin());
        move |x, y| {
            let (dx, dy) = (x - self.scratch_centre[0], y - self.scratch_centre[1]);
            let (along, across) = (dx * c + dy * s, -dx * s + dy * c);
            let in_scratch = along.abs() <= len / 2.0 && across.abs() <= wid / 2.0;
            let in_pit = (x - self.pit_centre[0]).hypot(y - self.pit_centre[1]) <= PIT_DIAMETER / 2.0;
            if in_scratch || in_pit { 220.0 } else { 40.0 }
        }
    }
}

/// Run the station over `frames` with a config written into `dir`; return the JSON records.
fn run_station(dir: &Path, camera_extra: &str, rule: &str) -> Vec<serde_json::Value> {
    let model = common::repo().join("tests/fixtures/gray_identity");
    let text = format!(
        "[station]\nname = \"calibrated\"\n\n[[camera]]\nid = \"cam\"\n{camera_extra}\n[camera.source]\nkind = \"folder\"\npath = \"frames\"\n\n[model]\npackage = \"{}\"\n\n[pipeline]\ntile_overlap_px = 16\n\n[[rule]]\nclass = \"scratch\"\n{rule}\n",
        model.display()
    );
    let cfg = common::write_config(dir, &text);
    let (ok, _, stderr) = output(linesight().args(["check", "--config"]).arg(&cfg));
    assert!(ok, "check: {stderr}");
    let results = dir.join("results.jsonl");
    let _ = std::fs::remove_file(&results); // the results file is appended to
    let (ok, _, stderr) = output(linesight_run().arg("--config").arg(&cfg).arg("--results").arg(&results));
    assert!(ok, "run: {stderr}");
    std::fs::read_to_string(&results).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_defect_of_known_size_is_reported_in_mm_within_2_percent() {
    let fx = chess();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("frames")).unwrap();
    let scene = Scene::new();
    let px = render::render(&LENS, rays(), &working_plane(), scene.shade(), 40.0, 2.0);
    render::save_png(&dir.path().join("frames/part_000001.png"), &LENS, px);
    std::fs::copy(fx.calibration(), dir.path().join("camera.yaml")).unwrap();

    // Calibrated: undistorted frames, the plane's scale. The rule counts scratches from 30 mm.
    let records = run_station(dir.path(), "calibration = \"camera.yaml\"", "min_length_mm = 30.0");
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["verdict"], "NG", "{r}");
    let mm_per_px = r["mm_per_px"].as_f64().expect("the record carries the scale");
    let defects = r["defects"].as_array().unwrap();
    assert_eq!(defects.len(), 2, "{r}");
    let (scratch, pit) = if defects[0]["x"].as_f64() < defects[1]["x"].as_f64() {
        (&defects[0], &defects[1])
    } else {
        (&defects[1], &defects[0])
    };
    let f = |d: &serde_json::Value, k: &str| d[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {d}"));
    let (len, wid, _) = SCRATCH;
    let pit_area = std::f64::consts::PI * (PIT_DIAMETER / 2.0).powi(2);
    let err = |got: f64, want: f64| (got / want - 1.0) * 100.0;
    eprintln!(
        "calibrated, {mm_per_px:.5} mm/px: scratch length {:.3} mm ({:+.2} %), width {:.3} mm ({:+.2} %), area {:.2} mm² ({:+.2} %); pit area {:.2} mm² ({:+.2} %)",
        f(scratch, "length_mm"),
        err(f(scratch, "length_mm"), len),
        f(scratch, "width_mm"),
        err(f(scratch, "width_mm"), wid),
        f(scratch, "area_mm2"),
        err(f(scratch, "area_mm2"), len * wid),
        f(pit, "area_mm2"),
        err(f(pit, "area_mm2"), pit_area),
    );
    assert!(err(f(scratch, "length_mm"), len).abs() < 2.0, "{scratch}");
    assert!(err(f(scratch, "area_mm2"), len * wid).abs() < 2.0, "{scratch}");
    assert!(err(f(pit, "area_mm2"), pit_area).abs() < 2.0, "{pit}");
    assert!(err(f(scratch, "width_mm"), wid).abs() < 10.0, "{scratch}");
    // Pixels and mm agree through the scale; the rule counted the scratch (≥ 30 mm), not the pit.
    assert!((f(scratch, "length_mm") - f(scratch, "length_px") * mm_per_px).abs() < 1e-3);
    assert_eq!((scratch["counted"].as_bool(), pit["counted"].as_bool()), (Some(true), Some(false)));

    // The same frame measured without undistortion, at the same scale: near the corners the lens
    // shrinks the defects by far more than 2 %, which is what the calibration removes.
    let records = run_station(
        dir.path(),
        &format!("calibration = \"camera.yaml\"\nundistort = false\nmm_per_px = {mm_per_px}"),
        "",
    );
    let raw = &records[0]["defects"];
    let raw_len = raw.as_array().unwrap().iter().map(|d| f(d, "length_mm")).fold(0.0, f64::max);
    eprintln!("without undistortion: scratch length {raw_len:.3} mm ({:+.2} %)", err(raw_len, len));
    assert!(err(raw_len, len) < -3.0, "the distorted frame should under-measure: {raw_len}");
}

#[test]
fn views_without_a_target_are_listed_and_too_few_views_say_how_many_more() {
    let fx = chess();
    let dir = tempfile::tempdir().unwrap();
    for k in 0..3 {
        let name = format!("view{k:02}.png");
        std::fs::copy(fx.views().join(&name), dir.path().join(&name)).unwrap();
    }
    render::save_png(&dir.path().join("blank.png"), &LENS, vec![128; 640 * 480]);
    std::fs::write(dir.path().join("corrupt.png"), b"not a png").unwrap();
    let out = dir.path().join("camera.yaml");
    let (ok, report, stderr) = output(
        linesight()
            .args(["calibrate", "--target", "chessboard", "--board", "9x6", "--spacing-mm", "25", "--images"])
            .arg(dir.path())
            .arg("--out")
            .arg(&out),
    );
    assert!(!ok);
    assert!(report.contains("skipped blank.png: target not found"), "{report}");
    assert!(report.contains("skipped corrupt.png") && report.contains("not a readable image"), "{report}");
    assert!(stderr.contains("only 3 usable view(s)") && stderr.contains("add 5 more"), "{stderr}");
    assert!(!out.exists(), "no file is written when calibration fails");

    // With --min-views 3 the same views calibrate, the bad ones still listed in the file.
    let (ok, _, stderr) = output(
        linesight()
            .args(["calibrate", "--target", "chessboard", "--board", "9x6", "--spacing-mm", "25", "--min-views", "3"])
            .arg("--images")
            .arg(dir.path())
            .arg("--out")
            .arg(&out),
    );
    assert!(ok, "{stderr}");
    let cal = Calibration::load(&out).unwrap();
    assert_eq!(cal.views.len(), 3);
    assert_eq!(cal.skipped.len(), 2, "{:?}", cal.skipped);
}

/// `linesight check` with one camera; returns (success, stderr).
fn check(dir: &Path, source: &str, camera_extra: &str, rule: &str) -> (bool, String) {
    let text = format!(
        "[[camera]]\nid = \"cam\"\n{camera_extra}\n[camera.source]\n{source}\n\n[model]\npackage = \"{}\"\n\n[[rule]]\nclass = \"defect\"\n{rule}\n",
        common::demo_model()
    );
    let cfg = common::write_config(dir, &text);
    let (ok, _, stderr) = output(linesight().args(["check", "--config"]).arg(&cfg));
    (ok, stderr)
}

#[test]
fn check_refuses_bad_calibrations_and_mm_rules_without_a_scale() {
    let dir = tempfile::tempdir().unwrap();
    let good = Calibration::load(&chess().calibration()).unwrap(); // 640 × 480, with a scale
    let synth = |w: u32, h: u32| format!("kind = \"synthetic\"\nwidth = {w}\nheight = {h}");

    // A good file on a matching camera passes, mm rule included.
    good.save(&dir.path().join("good.yaml")).unwrap();
    let (ok, stderr) = check(dir.path(), &synth(640, 480), "calibration = \"good.yaml\"", "min_area_mm2 = 1.0");
    assert!(ok, "{stderr}");

    // Corrupt, or missing the camera matrix, or nonsense values: refused with the reason.
    std::fs::write(dir.path().join("corrupt.yaml"), "%YAML:1.0\n---\ncamera_matrix: [1, 2\n").unwrap();
    let text = good.to_yaml().unwrap();
    let cut = text.find("\ncamera_matrix:").unwrap();
    let end = text[cut..].find("# k1").unwrap() + cut;
    std::fs::write(dir.path().join("no_matrix.yaml"), format!("{}{}", &text[..cut], &text[end..])).unwrap();
    std::fs::write(dir.path().join("garbage.yaml"), "just some text\n").unwrap();
    let negative =
        Calibration { camera_matrix: [-600.0, 0.0, 320.0, 0.0, 600.0, 240.0, 0.0, 0.0, 1.0], ..good.clone() };
    std::fs::write(dir.path().join("negative.yaml"), negative.to_yaml().unwrap()).unwrap();
    for (file, reason) in [
        ("corrupt.yaml", "not a valid FileStorage file"),
        ("no_matrix.yaml", "missing camera_matrix"),
        ("garbage.yaml", "not an OpenCV FileStorage file"),
        ("negative.yaml", "focal lengths"),
        ("absent.yaml", "no such file"),
    ] {
        let (ok, stderr) = check(dir.path(), &synth(640, 480), &format!("calibration = \"{file}\""), "");
        assert!(!ok, "{file} accepted");
        assert!(stderr.contains("camera[0].calibration") && stderr.contains(reason), "{file}: {stderr}");
    }

    // Made for another image size: refused, from the config (synthetic) or from the source.
    let (ok, stderr) = check(dir.path(), &synth(480, 480), "calibration = \"good.yaml\"", "");
    assert!(!ok && stderr.contains("made for 640×480") && stderr.contains("480×480"), "{stderr}");
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    image::GrayImage::new(320, 240).save(frames.join("a.png")).unwrap();
    let (ok, stderr) = check(dir.path(), "kind = \"folder\"\npath = \"frames\"", "calibration = \"good.yaml\"", "");
    assert!(!ok && stderr.contains("made for 640×480") && stderr.contains("320×240"), "{stderr}");

    // A rule in mm on a camera without a scale names the rule, the camera and the fix.
    let unscaled = Calibration { scale: None, ..good.clone() };
    unscaled.save(&dir.path().join("unscaled.yaml")).unwrap();
    for camera in ["", "calibration = \"unscaled.yaml\""] {
        let (ok, stderr) = check(dir.path(), &synth(640, 480), camera, "min_length_mm = 2.0");
        assert!(!ok);
        assert!(
            stderr.contains("rule[0].min_length_mm")
                && stderr.contains("no millimetre scale")
                && stderr.contains("mm_per_px"),
            "{stderr}"
        );
    }
    // A scale set by hand is enough.
    let (ok, stderr) = check(dir.path(), &synth(640, 480), "mm_per_px = 0.05", "min_length_mm = 2.0");
    assert!(ok, "{stderr}");
    // Nonsense values in mm are refused, and max_width_mm needs min_length_mm.
    let (ok, stderr) = check(dir.path(), &synth(640, 480), "mm_per_px = -1.0", "max_width_mm = 0.5\nmin_area_mm2 = -2");
    assert!(!ok);
    for expected in
        ["camera[0].mm_per_px", "rule[0].min_area_mm2", "rule[0].max_width_mm = 0.5: only works with min_length_mm"]
    {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}

#[test]
fn undistortion_matches_opencv_remap_and_costs_little_per_frame() {
    let fx = chess();
    let cal = Calibration::load(&fx.calibration()).unwrap();
    let u = Undistorter::new(&cal).unwrap();
    let src = image::open(fx.views().join("view05.png")).unwrap().to_luma8().into_raw();
    let mut ours = vec![0u8; src.len()];
    u.apply(&src, &mut ours, 1);

    // OpenCV's remap with its own maps, bilinear.
    let (k, d) = cal.opencv_matrices().unwrap();
    let (mut m1, mut m2) = (Mat::default(), Mat::default());
    let size = cvcore::Size::new(640, 480);
    opencv::calib3d::init_undistort_rectify_map(
        &k,
        &d,
        &cvcore::no_array(),
        &k,
        size,
        cvcore::CV_32FC1,
        &mut m1,
        &mut m2,
    )
    .unwrap();
    let src_mat = detect::gray_mat(&src, 640, 480).unwrap();
    let mut theirs = Mat::default();
    opencv::imgproc::remap(
        &src_mat,
        &mut theirs,
        &m1,
        &m2,
        opencv::imgproc::INTER_LINEAR,
        cvcore::BORDER_CONSTANT,
        cvcore::Scalar::default(),
    )
    .unwrap();
    let theirs = theirs.data_bytes().unwrap();
    // Compare where the source is at least one pixel inside the frame (borders differ by design)
    // with exact bilinear interpolation (f64) and with OpenCV, whose weights are in 1/32 px.
    let (mx, my) = (m1.data_typed::<f32>().unwrap(), m2.data_typed::<f32>().unwrap());
    let exact = |x: f64, y: f64| {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let at = |xx: f64, yy: f64| f64::from(src[yy as usize * 640 + xx as usize]);
        let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1.0, y0) * fx;
        let bottom = at(x0, y0 + 1.0) * (1.0 - fx) + at(x0 + 1.0, y0 + 1.0) * fx;
        top * (1.0 - fy) + bottom * fy
    };
    let (mut worst, mut worst_cv, mut sum_cv, mut n) = (0.0f64, 0i32, 0i64, 0i64);
    for i in 0..src.len() {
        if mx[i] >= 1.0 && my[i] >= 1.0 && mx[i] <= 638.0 && my[i] <= 478.0 {
            let want = exact(f64::from(mx[i]), f64::from(my[i]));
            worst = worst.max((f64::from(ours[i]) - want).abs());
            let diff = (i32::from(ours[i]) - i32::from(theirs[i])).abs();
            worst_cv = worst_cv.max(diff);
            sum_cv += i64::from(diff);
            n += 1;
        }
    }
    let mean_cv = sum_cv as f64 / n as f64;
    eprintln!(
        "undistort over {n} pixels: max {worst:.3} grey levels from exact bilinear; vs cv::remap max {worst_cv}, mean {mean_cv:.4}"
    );
    assert!(n > 250_000);
    assert!(worst <= 1.0, "{worst} grey levels from exact bilinear interpolation");
    assert!(worst_cv <= 6 && mean_cv < 0.1, "vs OpenCV: max {worst_cv}, mean {mean_cv}");

    // Per-frame cost, p50 / p99 over 300 frames, at 640 × 512 (the real camera, real tables) and
    // 480 × 480 (the demo cameras).
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/calibration-circles/left01.jpg");
    let left = linesight::calibration::command::run(
        &linesight::calibration::command::CalibrateOptions {
            images: Some(real.parent().unwrap().join("left*.jpg").to_str().unwrap().to_string()),
            spec: Some(TargetSpec::new(Target::AsymmetricCircles, Board { cols: 4, rows: 11 }, 20.0).unwrap()),
            out: fx.dir.path().join("left.yaml"),
            from: None,
            plane_image: None,
            mm_per_px: None,
            min_views: 8,
            drop_outliers: false,
        },
        &mut std::io::sink(),
    )
    .unwrap();
    let small = Calibration {
        image_width: 480,
        image_height: 480,
        camera_matrix: [450.0, 0.0, 240.0, 0.0, 450.0, 240.0, 0.0, 0.0, 1.0],
        ..cal.clone()
    };
    for (name, c) in [("640×512", &left), ("480×480", &small)] {
        let u = Undistorter::new(c).unwrap();
        let n = (c.image_width * c.image_height) as usize;
        let frame: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = vec![0u8; n];
        let mut times: Vec<f64> = (0..300)
            .map(|_| {
                let t = Instant::now();
                u.apply(&frame, &mut out, 1);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let (p50, p99) = (times[150], times[296]);
        let cv_src = detect::gray_mat(&frame, c.image_width, c.image_height).unwrap();
        let (k, d) = c.opencv_matrices().unwrap();
        let size = cvcore::Size::new(c.image_width as i32, c.image_height as i32);
        let (mut m1, mut m2) = (Mat::default(), Mat::default());
        opencv::calib3d::init_undistort_rectify_map(
            &k,
            &d,
            &cvcore::no_array(),
            &k,
            size,
            cvcore::CV_16SC2,
            &mut m1,
            &mut m2,
        )
        .unwrap();
        let mut dst = Mat::default();
        let mut cv: Vec<f64> = (0..300)
            .map(|_| {
                let t = Instant::now();
                opencv::imgproc::remap(&cv_src, &mut dst, &m1, &m2, 1, 0, cvcore::Scalar::default()).unwrap();
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        cv.sort_by(f64::total_cmp);
        eprintln!(
            "undistort {name}: p50 {p50:.0} µs, p99 {p99:.0} µs per frame (OpenCV remap, fixed-point maps, its own threads: p50 {:.0} µs, p99 {:.0} µs)",
            cv[150], cv[296]
        );
        assert!(p50 < 20_000.0, "undistorting one {name} frame takes {p50} µs");
    }
}

#[test]
fn frames_of_another_size_than_the_calibration_are_dropped_and_counted() {
    // The first frame sets what `check` sees (640 × 480, as calibrated); a later 320 × 240 frame
    // cannot be undistorted or measured with these intrinsics: dropped as an invalid frame.
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for (name, (w, h)) in [("a.png", (640, 480)), ("b.png", (320, 240)), ("c.png", (640, 480))] {
        image::GrayImage::new(w, h).save(frames.join(name)).unwrap();
    }
    std::fs::copy(chess().calibration(), dir.path().join("camera.yaml")).unwrap();
    let model = common::repo().join("tests/fixtures/gray_identity");
    let text = format!(
        "[[camera]]\nid = \"cam\"\ncalibration = \"camera.yaml\"\n[camera.source]\nkind = \"folder\"\npath = \"frames\"\n\n[model]\npackage = \"{}\"\n\n[pipeline]\ntile_overlap_px = 16\n",
        model.display()
    );
    let cfg = common::write_config(dir.path(), &text);
    let (ok, summary, stderr) = output(linesight_run().args(["--summary", "-", "--config"]).arg(&cfg));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("frame size differs from the camera's calibration"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    let cam = &summary["cameras"][0];
    assert_eq!((cam["captured"].as_u64(), cam["dropped_invalid_frame"].as_u64()), (Some(3), Some(1)), "{cam}");
    assert_eq!(cam["ok"].as_u64().unwrap() + cam["ng"].as_u64().unwrap(), 2, "{cam}");
}
