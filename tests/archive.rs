//! The image archive in a running station with the result store: NG frames on disk and through
//! the API (plain and overlay), OK sampling, retention by size, a folder that cannot be written,
//! and requests that try to leave the archive.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use linesight::api::{ApiState, router};
use linesight::config;
use linesight::pipeline::accounting::Accounting;
use linesight::sinks::archive::{self, Archive};
use linesight::sinks::store::{Retention, Store, StoreContext};
use linesight::telemetry::Telemetry;
use linesight::topology::{RunOptions, Station};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tower::ServiceExt;

const KEEP: Retention = Retention { days: 0, max_inspections: 0 };

struct Run {
    _dir: tempfile::TempDir,
    root: PathBuf,
    db: PathBuf,
    archive: PathBuf,
    accounting: Arc<Accounting>,
    metrics: String,
}

/// Run a synthetic station of `frames` frames with a store and an archive; `prepare` may spoil
/// the archive folder first.
fn run(frames: u64, ok_sample_rate: f64, max_bytes: u64, prepare: impl FnOnce(&Path)) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (db, archive_dir) = (root.join("linesight.db"), root.join("images"));
    // Paced, so that the archive keeps up and every selected frame is written.
    let text = common::synthetic_station(40.0, "backpressure = \"block\"", "");
    let loaded = config::load_str(&text, "test", common::repo()).unwrap();
    let store = Store::open(&db, KEEP).unwrap_or_else(|e| panic!("{e}"));
    let archive = Archive::open(&archive_dir, vec!["cam".into()], max_bytes, 0).unwrap();
    prepare(&archive_dir);
    let (store_tx, store_rx) = crossbeam_channel::bounded(4096);
    let (archive_tx, archive_rx) = crossbeam_channel::bounded(archive::QUEUE_DEPTH);
    let telemetry = Arc::new(Telemetry::new());
    let options = RunOptions {
        max_frames: Some(frames),
        // The archive first: it marks the records it took before the store sees them.
        outputs: vec![archive::port(archive_tx, ok_sample_rate), linesight::sinks::store::port(store_tx)],
        telemetry: Some(Arc::clone(&telemetry)),
        ..Default::default()
    };
    let station = Station::build(&loaded, options).unwrap_or_else(|e| panic!("{e}"));
    let accounting = station.accounting();
    let ctx = StoreContext { station: "test".into(), cameras: vec!["cam".into()], recipes: station.recipe_contexts() };
    let threads = {
        let (a, b) = (Arc::clone(&accounting), Arc::clone(&accounting));
        [
            std::thread::spawn(move || store.run(store_rx, ctx, a)),
            std::thread::spawn(move || archive.run(archive_rx, b)),
        ]
    };
    station.run();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let metrics = telemetry.render();
    Run { _dir: dir, root, db, archive: archive_dir, accounting, metrics }
}

impl Run {
    /// `(id, verdict, image_path, width, height, counted defects)` of every inspection, oldest first.
    fn rows(&self) -> Vec<(i64, String, Option<String>, u32, u32, i64)> {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT id, verdict, image_path, width, height,
                    (SELECT COUNT(*) FROM defects d WHERE d.inspection_id = i.id AND d.counted = 1)
                 FROM inspections i ORDER BY id",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn app(&self) -> axum::Router {
        let mut state = ApiState::new(self.db.clone(), None);
        state.archive_dir = Some(self.archive.clone());
        router(state)
    }

    /// Every PNG under the archive, with its size.
    fn files(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![self.archive.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().map(Result::unwrap) {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "png") {
                    out.push((p, e.metadata().unwrap().len()));
                }
            }
        }
        out
    }
}

/// `(status, content type, body)`.
fn get(app: &axum::Router, uri: &str) -> (StatusCode, String, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let response = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let kind = response.headers().get(header::CONTENT_TYPE).map_or("", |v| v.to_str().unwrap()).to_string();
        (status, kind, response.into_body().collect().await.unwrap().to_bytes().to_vec())
    })
}

#[test]
fn ng_frames_are_archived_and_served_by_id_and_ok_frames_at_rate_zero_are_not() {
    let r = run(30, 0.0, 0, |_| {});
    let rows = r.rows();
    let s = &r.accounting.snapshot()[0];
    assert_eq!(rows.len() as u64, s.inspected() + s.failsafe());
    let written = r.accounting.archive_written.load(Relaxed);
    let dropped = r.accounting.archive_dropped_queue_full.load(Relaxed);
    assert_eq!(r.accounting.archive_errors.load(Relaxed), 0);
    assert_eq!(written + dropped, s.ng + s.failsafe(), "every NG frame archived or counted as dropped");
    assert!(written > 0 && s.ok > 0, "{s:?}");
    assert_eq!(r.files().len() as u64, 2 * written, "a plain and an overlay file per archived frame");
    let app = r.app();
    let mut outlined = 0;
    for (id, verdict, path, w, h, counted) in &rows {
        let (status, kind, body) = get(&app, &format!("/api/v1/inspections/{id}/image"));
        if verdict == "OK" {
            assert!(path.is_none(), "ok_sample_rate = 0: no OK image");
            assert_eq!(status, StatusCode::NOT_FOUND);
            continue;
        }
        assert!(path.is_some() || dropped > 0, "inspection {id}: NG without an image");
        if path.is_none() {
            continue;
        }
        assert_eq!((status, kind.as_str()), (StatusCode::OK, "image/png"), "inspection {id}");
        let plain = image::load_from_memory(&body).unwrap().to_rgb8();
        assert_eq!(plain.dimensions(), (*w, *h));
        let (status, _, body) = get(&app, &format!("/api/v1/inspections/{id}/image?overlay=true"));
        assert_eq!(status, StatusCode::OK);
        let overlay = image::load_from_memory(&body).unwrap().to_rgb8();
        assert_eq!(overlay.dimensions(), (*w, *h));
        if *counted > 0 {
            assert_ne!(plain, overlay, "inspection {id}: its defects are outlined");
            outlined += 1;
        }
    }
    assert!(outlined > 0, "some archived frame had a counted defect");
    assert!(r.metrics.contains("linesight_archive_written_total"), "{}", r.metrics);
    assert!(r.metrics.contains("linesight_archive_degraded 0"), "{}", r.metrics);
}

#[test]
fn requests_cannot_reach_outside_the_archive() {
    let r = run(10, 1.0, 0, |_| {});
    let app = r.app();
    std::fs::write(r.root.join("secret.png"), b"not for you").unwrap();
    for (uri, want) in [
        ("/api/v1/inspections/..%2Fsecret.png/image", StatusCode::BAD_REQUEST),
        ("/api/v1/inspections/1%2F..%2F..%2Fsecret/image", StatusCode::BAD_REQUEST),
        ("/api/v1/inspections/../../secret.png/image", StatusCode::NOT_FOUND),
        ("/api/v1/inspections/1/image?overlay=..%2F..%2Fsecret.png", StatusCode::BAD_REQUEST),
        ("/api/v1/inspections/1/image?path=..%2Fsecret.png", StatusCode::BAD_REQUEST),
        ("/api/v1/inspections/999999/image", StatusCode::NOT_FOUND),
    ] {
        let (status, kind, body) = get(&app, uri);
        assert_eq!(status, want, "{uri}: {}", String::from_utf8_lossy(&body));
        assert_ne!(kind, "image/png", "{uri}");
    }
    // Even a tampered database does not make the API read outside the archive.
    let conn = rusqlite::Connection::open(&r.db).unwrap();
    conn.execute("UPDATE inspections SET image_path = '../secret.png' WHERE id = 1", []).unwrap();
    let (status, _, body) = get(&app, "/api/v1/inspections/1/image");
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!String::from_utf8_lossy(&body).contains("not for you"));
}

#[test]
fn retention_by_size_deletes_the_oldest_images() {
    // Every frame archived (OK sampled at 1), the folder limited to about a quarter of them.
    let probe = run(8, 1.0, 0, |_| {});
    let pair = probe.files().iter().map(|f| f.1).sum::<u64>() / probe.accounting.archive_written.load(Relaxed);
    let max_bytes = 5 * pair;
    let r = run(20, 1.0, max_bytes, |_| {});
    let written = r.accounting.archive_written.load(Relaxed);
    assert!(written >= 15, "{written}");
    let files = r.files();
    let total: u64 = files.iter().map(|f| f.1).sum();
    assert!(total <= max_bytes, "{total} bytes kept, limit {max_bytes}");
    assert!(!files.is_empty() && (files.len() as u64) < 2 * written);
    // What is left are the newest frames, each with both its files.
    let rows = r.rows();
    let archived: Vec<&String> = rows.iter().filter_map(|row| row.2.as_ref()).collect();
    let kept: Vec<bool> = archived.iter().map(|p| r.archive.join(p).is_file()).collect();
    let first_kept = kept.iter().position(|&k| k).unwrap();
    assert!(kept[first_kept..].iter().all(|&k| k), "oldest deleted first: {kept:?}");
    for p in &archived[first_kept..] {
        assert!(r.archive.join(archive::overlay_path(p)).is_file());
    }
    let app = r.app();
    let (oldest, newest) = (rows.iter().find(|row| row.2.is_some()).unwrap().0, rows.last().unwrap().0);
    assert_eq!(get(&app, &format!("/api/v1/inspections/{oldest}/image")).0, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, &format!("/api/v1/inspections/{newest}/image")).0, StatusCode::OK);
}

#[test]
fn an_archive_that_cannot_be_written_never_stops_inspection() {
    // Files where today's (and tomorrow's, should the test cross midnight UTC) date folder would
    // go: every write fails, as on a read-only or full disk (this also works as root).
    let r = run(20, 1.0, 0, |dir| {
        let now = chrono::Utc::now();
        for day in [now, now + chrono::Duration::days(1)] {
            std::fs::write(dir.join(day.format("%Y-%m-%d").to_string()), b"").unwrap();
        }
    });
    let s = &r.accounting.snapshot()[0];
    assert_eq!(s.captured, 20);
    assert_eq!(s.in_flight(), 0, "every frame decided: {s:?}");
    assert_eq!(s.inspected() + s.failsafe(), 20);
    assert_eq!(r.accounting.archive_written.load(Relaxed), 0);
    assert!(r.accounting.archive_errors.load(Relaxed) > 0);
    assert!(r.accounting.archive_degraded.load(Relaxed));
    let errors = r.metrics.lines().find(|l| l.starts_with("linesight_errors_total") && l.contains("\"archive\""));
    assert!(errors.is_some_and(|l| !l.ends_with(" 0")), "{}", r.metrics);
    assert!(r.metrics.contains("linesight_archive_degraded 1"), "{}", r.metrics);
    // The store says the frame was handed over; the API finds no file and says 404.
    let id = r.rows()[0].0;
    assert_eq!(get(&r.app(), &format!("/api/v1/inspections/{id}/image")).0, StatusCode::NOT_FOUND);
}

/// `linesight export-reviewed`: the reviewed parts with an archived image, in the MVTec layout,
/// by their latest label; unlabelled, unsure and other recipes' parts left out.
#[test]
fn reviewed_parts_export_as_a_data_set_eval_can_read() {
    let r = run(30, 1.0, 0, |_| {});
    let conn = rusqlite::Connection::open(&r.db).unwrap();
    let ids: Vec<i64> = conn
        .prepare("SELECT id FROM inspections ORDER BY id")
        .unwrap()
        .query_map([], |x| x.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(ids.len() >= 10, "{ids:?}");
    let label = |id: i64, label: &str, class: Option<&str>| {
        conn.execute(
            "INSERT INTO reviews (inspection_id, label, class, note, reviewer, reviewed_ms) VALUES (?1, ?2, ?3, NULL, 'test', 0)",
            rusqlite::params![id, label, class],
        )
        .unwrap();
    };
    label(ids[0], "good", None);
    label(ids[1], "defect", Some("scratch"));
    label(ids[2], "defect", None);
    label(ids[3], "good", None);
    label(ids[3], "defect", Some("scratch")); // corrected: the latest label counts
    label(ids[4], "unsure", None);
    label(ids[5], "good", None);
    // One labelled part whose image is gone (retention, or never written).
    let gone: String =
        conn.query_row("SELECT image_path FROM inspections WHERE id = ?1", [ids[5]], |x| x.get(0)).unwrap();
    std::fs::remove_file(r.archive.join(&gone)).unwrap();

    let config = common::write_config(
        &r.root,
        &format!(
            "{}\n[store]\npath = \"{}\"\n\n[archive]\ndir = \"{}\"\n",
            common::synthetic_station(40.0, "", ""),
            r.db.display(),
            r.archive.display()
        ),
    );
    let out = r.root.join("reviewed");
    let (ok, stdout, stderr) = common::output(
        common::linesight()
            .arg("export-reviewed")
            .arg("--config")
            .arg(&config)
            .args(["--recipe", "default", "--out"])
            .arg(&out),
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("wrote 1 good and 3 defective") && stdout.contains("1 labelled parts had no archived image"),
        "{stdout}"
    );
    let names = |class: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(out.join("test").join(class))
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(names("good").len(), 1);
    assert_eq!(names("scratch").len(), 2);
    assert_eq!(names("defect").len(), 1);
    assert!(names("good")[0].ends_with(&format!("-{}.png", ids[0])), "{:?}", names("good"));
    // The copy is the archived image itself.
    let plain: String =
        conn.query_row("SELECT image_path FROM inspections WHERE id = ?1", [ids[0]], |x| x.get(0)).unwrap();
    assert_eq!(
        std::fs::read(r.archive.join(plain)).unwrap(),
        std::fs::read(out.join("test/good").join(&names("good")[0])).unwrap()
    );
    // eval reads it as a data set.
    let dataset = linesight::eval::dataset::Dataset::load(&out.join("test")).unwrap();
    assert_eq!(dataset.items.len(), 4);
    // Not over an export already there, nor for a recipe the station does not have.
    let (ok, _, stderr) = common::output(
        common::linesight()
            .arg("export-reviewed")
            .arg("--config")
            .arg(&config)
            .args(["--recipe", "default", "--out"])
            .arg(&out),
    );
    assert!(!ok && stderr.contains("not empty"), "{stderr}");
    let (ok, _, stderr) = common::output(
        common::linesight()
            .arg("export-reviewed")
            .arg("--config")
            .arg(&config)
            .args(["--recipe", "metal", "--out"])
            .arg(r.root.join("x")),
    );
    assert!(!ok && stderr.contains("default"), "{stderr}");
}
