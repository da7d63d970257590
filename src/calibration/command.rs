//! `linesight calibrate`: find the target in every view (in parallel, with a progress bar),
//! calibrate, report the fit, optionally measure or set the working-plane scale, and write the
//! calibration file.

use super::file::{Calibration, utc_now};
use super::solve::{self, OUTLIER_FACTOR, OUTLIER_FLOOR_PX};
use super::target::TargetSpec;
use super::{CalibrationError, detect, scale};
use opencv::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Image file extensions taken from a folder.
const IMAGE_EXTENSIONS: [&str; 9] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "pgm", "ppm", "webp"];

/// What to do, as the command line says it.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// A folder, or a glob pattern (`views/left*.jpg`). None with `from`: scale only.
    pub images: Option<String>,
    /// The target; needed to calibrate or to measure the scale from a plane image.
    pub spec: Option<TargetSpec>,
    pub out: PathBuf,
    /// Start from this calibration instead of calibrating (to add or change the scale).
    pub from: Option<PathBuf>,
    /// One image of the target lying on the working plane: measure the scale from it.
    pub plane_image: Option<PathBuf>,
    /// Or set the scale by hand.
    pub mm_per_px: Option<f64>,
    pub min_views: usize,
    /// Recalibrate once without the outlier views.
    pub drop_outliers: bool,
}

/// What happened to one view.
#[derive(Clone, Debug)]
enum View {
    Found { size: (u32, u32), points: Vec<[f32; 2]> },
    NotFound { size: (u32, u32) },
    Unreadable(String),
}

/// Run the command; the report goes to `out`, progress to stderr.
pub fn run(opts: &CalibrateOptions, out: &mut dyn Write) -> Result<Calibration, CalibrationError> {
    let io = |e: std::io::Error| CalibrationError::Input(format!("writing the report: {e}"));
    let mut cal = match (&opts.from, &opts.images) {
        (Some(from), _) => {
            if opts.plane_image.is_none() && opts.mm_per_px.is_none() {
                return Err(CalibrationError::Input(
                    "--from only changes the scale: give --plane-image IMG or --mm-per-px X".into(),
                ));
            }
            let cal = Calibration::load(from)?;
            writeln!(out, "intrinsics from {} (image {}×{})", from.display(), cal.image_width, cal.image_height)
                .map_err(io)?;
            cal
        }
        (None, Some(images)) => calibrate_views(opts, images, out)?,
        (None, None) => return Err(CalibrationError::Input("give --images DIR_OR_GLOB (or --from FILE.yaml)".into())),
    };

    if let Some(path) = &opts.plane_image {
        let m = plane_scale(&cal, &need_spec(opts)?, path)?;
        writeln!(
            out,
            "working-plane scale: {:.6} mm/px from {} (homography residual {:.4} mm; spread across the board {:.2} %, anisotropy {:.2} %)",
            m.scale.mm_per_px,
            path.display(),
            m.residual_mm,
            m.spread_pct,
            m.anisotropy_pct
        )
        .map_err(io)?;
        if m.spread_pct > scale::SPREAD_WARN_PCT {
            writeln!(
                out,
                "warning: the scale varies by {:.1} % across the target: the surface is not parallel to the image plane, so sizes away from the target's position are off by up to that much",
                m.spread_pct
            )
            .map_err(io)?;
        }
        cal.scale = Some(m.scale);
    } else if let Some(mm_per_px) = opts.mm_per_px {
        cal.scale = Some(scale::manual(mm_per_px)?);
        writeln!(out, "working-plane scale: {mm_per_px} mm/px, set by hand").map_err(io)?;
    } else if cal.scale.is_none() {
        writeln!(
            out,
            "no working-plane scale: rules in mm need one (add --plane-image IMG with the target lying on the inspected surface, or --mm-per-px X)"
        )
        .map_err(io)?;
    }
    cal.save(&opts.out)?;
    writeln!(out, "wrote {}", opts.out.display()).map_err(io)?;
    Ok(cal)
}

fn need_spec(opts: &CalibrateOptions) -> Result<TargetSpec, CalibrationError> {
    opts.spec.ok_or_else(|| CalibrationError::Input("give the target: --target, --board and --spacing-mm".into()))
}

/// Detect the target in every view, calibrate, and report.
fn calibrate_views(
    opts: &CalibrateOptions,
    images: &str,
    out: &mut dyn Write,
) -> Result<Calibration, CalibrationError> {
    let io = |e: std::io::Error| CalibrationError::Input(format!("writing the report: {e}"));
    let spec = need_spec(opts)?;
    let paths = list_images(images)?;
    let views = detect_all(&paths, &spec);
    let names: Vec<String> = paths.iter().map(|p| display_name(p)).collect();

    // The first readable view fixes the image size; views of another size are skipped.
    let size = views.iter().find_map(|v| match v {
        View::Found { size, .. } | View::NotFound { size } => Some(*size),
        View::Unreadable(_) => None,
    });
    let Some(size) = size else {
        return Err(CalibrationError::Input(format!("none of the {} image(s) could be read", paths.len())));
    };
    let mut used = Vec::new();
    let mut skipped = Vec::new();
    for (name, view) in names.iter().zip(views) {
        match view {
            View::Found { size: s, .. } | View::NotFound { size: s } if s != size => skipped
                .push(format!("{name}: size {}×{} differs from the first view's {}×{}", s.0, s.1, size.0, size.1)),
            View::Found { points, .. } => used.push((name.clone(), points)),
            View::NotFound { .. } => skipped.push(format!("{name}: target not found")),
            View::Unreadable(reason) => skipped.push(format!("{name}: {reason}")),
        }
    }
    writeln!(
        out,
        "{} image(s): target {} {} (spacing {} mm) found in {}",
        paths.len(),
        spec.target,
        spec.board,
        spec.spacing_mm,
        used.len()
    )
    .map_err(io)?;
    for s in &skipped {
        writeln!(out, "  skipped {s}").map_err(io)?;
    }

    let points: Vec<Vec<[f32; 2]>> = used.iter().map(|(_, p)| p.clone()).collect();
    let mut solved = solve::calibrate(&points, &spec, size, opts.min_views)?;
    let mut outliers = solve::outliers(&solved.per_view_px);
    if opts.drop_outliers && !outliers.is_empty() {
        writeln!(out, "recalibrating without {} outlier view(s)", outliers.len()).map_err(io)?;
        for &i in outliers.iter().rev() {
            let (name, _) = used.remove(i);
            skipped.push(format!("{name}: outlier (dropped with --drop-outliers)"));
        }
        let points: Vec<Vec<[f32; 2]>> = used.iter().map(|(_, p)| p.clone()).collect();
        solved = solve::calibrate(&points, &spec, size, opts.min_views)?;
        outliers = solve::outliers(&solved.per_view_px);
    }

    let k = &solved.camera_matrix;
    writeln!(out, "calibrated from {} view(s), image {}×{}", used.len(), size.0, size.1).map_err(io)?;
    writeln!(out, "RMS reprojection error: {:.4} px", solved.rms_px).map_err(io)?;
    writeln!(out, "fx {:.3}  fy {:.3}  cx {:.3}  cy {:.3}  (px)", k[0], k[4], k[2], k[5]).map_err(io)?;
    let d = &solved.dist_coeffs;
    let labels = ["k1", "k2", "p1", "p2", "k3"];
    let dist: Vec<String> = labels.iter().zip(d).map(|(l, v)| format!("{l} {v:.6}")).collect();
    writeln!(out, "{}", dist.join("  ")).map_err(io)?;
    writeln!(out, "per-view RMS error (px):").map_err(io)?;
    for (i, ((name, _), e)) in used.iter().zip(&solved.per_view_px).enumerate() {
        let flag = if outliers.contains(&i) { "  <- outlier" } else { "" };
        writeln!(out, "  {name:<24} {e:.4}{flag}").map_err(io)?;
    }
    if outliers.is_empty() {
        writeln!(out, "outliers (> {OUTLIER_FACTOR} × median and > {OUTLIER_FLOOR_PX} px): none").map_err(io)?;
    } else {
        let list: Vec<&str> = outliers.iter().map(|&i| used[i].0.as_str()).collect();
        writeln!(
            out,
            "outliers (> {OUTLIER_FACTOR} × median and > {OUTLIER_FLOOR_PX} px): {} — check them for blur or a misdetection, or rerun with --drop-outliers",
            list.join(", ")
        )
        .map_err(io)?;
    }

    Ok(Calibration {
        image_width: size.0,
        image_height: size.1,
        camera_matrix: solved.camera_matrix,
        dist_coeffs: solved.dist_coeffs,
        rms_px: Some(solved.rms_px),
        per_view_px: solved.per_view_px,
        target: Some(spec),
        views: used.into_iter().map(|(n, _)| n).collect(),
        skipped,
        calibration_time: utc_now(),
        scale: None,
    })
}

/// Measure the working-plane scale from one image of the target lying on the plane.
pub fn plane_scale(
    cal: &Calibration,
    spec: &TargetSpec,
    path: &Path,
) -> Result<scale::ScaleMeasurement, CalibrationError> {
    let img = detect::read_gray(path)?;
    let size = (img.cols() as u32, img.rows() as u32);
    if size != (cal.image_width, cal.image_height) {
        return Err(CalibrationError::Input(format!(
            "{}: image is {}×{}, the calibration is for {}×{}",
            path.display(),
            size.0,
            size.1,
            cal.image_width,
            cal.image_height
        )));
    }
    let points = detect::detect(&img, spec)?.ok_or_else(|| {
        CalibrationError::Input(format!(
            "{}: target {} {} not found; the whole target must be visible and in focus",
            path.display(),
            spec.target,
            spec.board
        ))
    })?;
    scale::measure(cal, spec, &points, &display_name(path))
}

/// Every image in a folder, or every match of a glob pattern, sorted by path.
pub fn list_images(images: &str) -> Result<Vec<PathBuf>, CalibrationError> {
    let dir = Path::new(images);
    let mut paths: Vec<PathBuf> = if dir.is_dir() {
        std::fs::read_dir(dir)
            .map_err(|e| CalibrationError::Input(format!("{images}: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect()
    } else {
        glob::glob(images)
            .map_err(|e| CalibrationError::Input(format!("--images {images:?}: not a folder or a valid glob: {e}")))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect()
    };
    paths.sort();
    if paths.is_empty() {
        return Err(CalibrationError::Input(format!(
            "--images {images:?}: no image files there (a folder, or a quoted glob such as 'views/*.jpg')"
        )));
    }
    Ok(paths)
}

/// Detect the target in every view on all cores, with a progress bar on stderr (hidden when
/// stderr is not a terminal).
fn detect_all(paths: &[PathBuf], spec: &TargetSpec) -> Vec<View> {
    let bar = indicatif::ProgressBar::new(paths.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("finding the target {bar:40} {pos}/{len} views {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(paths.len()).max(1);
    let mut views: Vec<(usize, View)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Relaxed);
                        let Some(path) = paths.get(i) else { break };
                        done.push((i, detect_view(path, spec)));
                        bar.inc(1);
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    });
    bar.finish_and_clear();
    views.sort_by_key(|(i, _)| *i);
    views.into_iter().map(|(_, v)| v).collect()
}

fn detect_view(path: &Path, spec: &TargetSpec) -> View {
    let img = match detect::read_gray(path) {
        Ok(img) => img,
        Err(e) => return View::Unreadable(e.to_string()),
    };
    let size = (img.cols() as u32, img.rows() as u32);
    match detect::detect(&img, spec) {
        Ok(Some(points)) => View::Found { size, points },
        Ok(None) => View::NotFound { size },
        Err(e) => View::Unreadable(format!("detection failed: {e}")),
    }
}

fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}
