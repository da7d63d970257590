//! Working-plane scale: millimetres per pixel on the inspected surface, from one image of the
//! target lying on that surface.
//!
//! The target's points are undistorted (into the pixel grid of the undistorted frames the station
//! inspects), a homography maps them to the board's millimetres, and the scale is the area scale
//! of that homography at the board's centre: `sqrt(|det J|)`. How much the scale changes across
//! the board (a tilted plane) and between the two image axes is reported, so a user knows how far
//! one number holds.

use super::CalibrationError;
use super::file::{Calibration, PlaneScale, ScaleSource};
use super::target::TargetSpec;
use opencv::calib3d;
use opencv::core::{self, Mat, Point2f, TermCriteria, Vector};
use opencv::prelude::*;

/// Above this spread across the board the scale is reported with a warning: the surface is not
/// parallel to the image plane, and one scale misstates sizes towards the image edges.
pub const SPREAD_WARN_PCT: f64 = 1.0;

/// A measured scale and how well one number describes the plane.
#[derive(Clone, Debug)]
pub struct ScaleMeasurement {
    pub scale: PlaneScale,
    /// (largest − smallest) local scale at the board's four outer points, % of the centre's.
    pub spread_pct: f64,
    /// Difference between the scales along the two principal directions at the centre, %.
    pub anisotropy_pct: f64,
    /// RMS distance between the board points and their homography images, mm.
    pub residual_mm: f64,
}

/// Points from distorted image pixels to undistorted ones (same camera matrix).
pub fn undistort_points(cal: &Calibration, points: &[[f32; 2]]) -> Result<Vec<[f64; 2]>, CalibrationError> {
    let (k, d) = cal.opencv_matrices()?;
    let src: Vector<Point2f> = points.iter().map(|p| Point2f::new(p[0], p[1])).collect();
    let mut dst = Vector::<Point2f>::new();
    let criteria = TermCriteria::new(core::TermCriteria_COUNT + core::TermCriteria_EPS, 100, 1e-12)?;
    calib3d::undistort_points_iter(&src, &mut dst, &k, &d, &core::no_array(), &k, criteria)?;
    Ok(dst.iter().map(|p| [f64::from(p.x), f64::from(p.y)]).collect())
}

/// Measure the scale from the target's points (as detected, distorted) in one image of the
/// target lying on the working plane.
pub fn measure(
    cal: &Calibration,
    spec: &TargetSpec,
    detected: &[[f32; 2]],
    image_name: &str,
) -> Result<ScaleMeasurement, CalibrationError> {
    let px = undistort_points(cal, detected)?;
    let mm = spec.object_points();
    let src: Vector<Point2f> = px.iter().map(|p| Point2f::new(p[0] as f32, p[1] as f32)).collect();
    let dst: Vector<Point2f> = mm.iter().map(|p| Point2f::new(p[0], p[1])).collect();
    let hm = calib3d::find_homography(&src, &dst, &mut Mat::default(), 0, 3.0)?;
    if hm.empty() {
        return Err(CalibrationError::Input(format!("{image_name}: no homography fits the target's points")));
    }
    let v = super::solve::mat_values(&hm)?;
    let h: [f64; 9] = v.try_into().map_err(|_| CalibrationError::Input("homography is not 3 × 3".into()))?;

    let n = px.len() as f64;
    let centre = [px.iter().map(|p| p[0]).sum::<f64>() / n, px.iter().map(|p| p[1]).sum::<f64>() / n];
    let j = jacobian(&h, centre);
    let mm_per_px = (j[0] * j[3] - j[1] * j[2]).abs().sqrt();
    let (s1, s2) = singular_values(j);
    let anisotropy_pct = (s1 / s2 - 1.0) * 100.0;

    let (cols, rows) = (spec.board.cols as usize, spec.board.rows as usize);
    let corners = [0, cols - 1, (rows - 1) * cols, rows * cols - 1];
    let local: Vec<f64> = corners
        .iter()
        .map(|&i| {
            let j = jacobian(&h, px[i]);
            (j[0] * j[3] - j[1] * j[2]).abs().sqrt()
        })
        .collect();
    let spread_pct = (local.iter().copied().fold(f64::MIN, f64::max) - local.iter().copied().fold(f64::MAX, f64::min))
        / mm_per_px
        * 100.0;

    let residual_mm = (px
        .iter()
        .zip(&mm)
        .map(|(p, o)| {
            let q = apply(&h, *p);
            (q[0] - f64::from(o[0])).powi(2) + (q[1] - f64::from(o[1])).powi(2)
        })
        .sum::<f64>()
        / n)
        .sqrt();
    let note = format!(
        "target on the working plane in {image_name}: homography residual {residual_mm:.4} mm, scale spread across the board {spread_pct:.2} %, anisotropy {anisotropy_pct:.2} %"
    );
    Ok(ScaleMeasurement {
        scale: PlaneScale { mm_per_px, source: ScaleSource::Homography, note, homography: Some(h) },
        spread_pct,
        anisotropy_pct,
        residual_mm,
    })
}

/// A scale set by hand.
pub fn manual(mm_per_px: f64) -> Result<PlaneScale, CalibrationError> {
    if !(mm_per_px.is_finite() && mm_per_px > 0.0) {
        return Err(CalibrationError::Input(format!("--mm-per-px {mm_per_px}: must be a positive number")));
    }
    Ok(PlaneScale { mm_per_px, source: ScaleSource::Manual, note: "set by hand".into(), homography: None })
}

/// Where a homography sends a point.
pub fn apply(h: &[f64; 9], p: [f64; 2]) -> [f64; 2] {
    let w = h[6] * p[0] + h[7] * p[1] + h[8];
    [(h[0] * p[0] + h[1] * p[1] + h[2]) / w, (h[3] * p[0] + h[4] * p[1] + h[5]) / w]
}

/// The homography's derivative at `p`, row-major `[dX/du dX/dv; dY/du dY/dv]`.
fn jacobian(h: &[f64; 9], p: [f64; 2]) -> [f64; 4] {
    let w = h[6] * p[0] + h[7] * p[1] + h[8];
    let q = apply(h, p);
    [(h[0] - q[0] * h[6]) / w, (h[1] - q[0] * h[7]) / w, (h[3] - q[1] * h[6]) / w, (h[4] - q[1] * h[7]) / w]
}

/// Singular values (largest first) of a 2 × 2 matrix.
fn singular_values(j: [f64; 4]) -> (f64, f64) {
    let (a, b, c, d) = (j[0], j[1], j[2], j[3]);
    let s = a * a + b * b + c * c + d * d;
    let det = (a * d - b * c).abs();
    let root = (s * s - 4.0 * det * det).max(0.0).sqrt();
    (((s + root) / 2.0).sqrt(), ((s - root) / 2.0).max(0.0).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_similarity_has_one_scale_everywhere() {
        // 0.1 mm/px, rotated 30°, shifted: J has singular values 0.1, 0.1.
        let (c, s) = (0.1 * 30f64.to_radians().cos(), 0.1 * 30f64.to_radians().sin());
        let h = [c, -s, 5.0, s, c, -3.0, 0.0, 0.0, 1.0];
        let j = jacobian(&h, [123.0, 45.0]);
        assert!(((j[0] * j[3] - j[1] * j[2]).sqrt() - 0.1).abs() < 1e-12);
        let (s1, s2) = singular_values(j);
        assert!((s1 - 0.1).abs() < 1e-12 && (s2 - 0.1).abs() < 1e-12);
    }

    #[test]
    fn manual_scales_must_be_positive() {
        assert!(manual(0.05).is_ok());
        assert!(manual(0.0).is_err() && manual(f64::NAN).is_err());
    }
}
