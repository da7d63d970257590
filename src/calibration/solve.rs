//! Camera intrinsics from detected views: OpenCV's `calibrateCamera` (default model: fx, fy, cx,
//! cy and distortion k1, k2, p1, p2, k3), with the RMS and per-view reprojection errors, and the
//! views whose error stands out.

use super::CalibrationError;
use super::target::TargetSpec;
use opencv::calib3d;
use opencv::core::{self, Mat, Point2f, Point3f, Size, TermCriteria, Vector};
use opencv::prelude::*;

/// Fewest usable views `linesight calibrate` accepts by default. Each view fixes six pose
/// parameters besides the nine intrinsics; below about eight views the distortion terms are
/// poorly constrained even when the RMS looks good.
pub const DEFAULT_MIN_VIEWS: usize = 8;

/// A view is an outlier when its RMS error exceeds this many times the median view's...
pub const OUTLIER_FACTOR: f64 = 3.0;
/// ...and this many pixels (so that an excellent set does not flag views at 0.1 px).
pub const OUTLIER_FLOOR_PX: f64 = 0.3;

/// The solved intrinsics and how well they fit the views.
#[derive(Clone, Debug)]
pub struct Solved {
    /// Row-major 3 × 3 camera matrix `[fx 0 cx; 0 fy cy; 0 0 1]`.
    pub camera_matrix: [f64; 9],
    /// k1, k2, p1, p2, k3.
    pub dist_coeffs: Vec<f64>,
    /// RMS reprojection error over every point of every view, in pixels.
    pub rms_px: f64,
    /// RMS reprojection error of each view, in pixels.
    pub per_view_px: Vec<f64>,
}

/// Calibrate from the image points of each view (`views[i]` in the order of
/// [`TargetSpec::object_points`]).
pub fn calibrate(
    views: &[Vec<[f32; 2]>],
    spec: &TargetSpec,
    image_size: (u32, u32),
    min_views: usize,
) -> Result<Solved, CalibrationError> {
    if views.len() < min_views {
        return Err(CalibrationError::TooFewViews { usable: views.len(), needed: min_views });
    }
    let object: Vector<Point3f> = spec.object_points().iter().map(|p| Point3f::new(p[0], p[1], p[2])).collect();
    let mut object_points = Vector::<Vector<Point3f>>::new();
    let mut image_points = Vector::<Vector<Point2f>>::new();
    for v in views {
        object_points.push(object.clone());
        image_points.push(v.iter().map(|p| Point2f::new(p[0], p[1])).collect());
    }
    let mut camera_matrix = Mat::default();
    let mut dist = Mat::default();
    let (mut rvecs, mut tvecs) = (Vector::<Mat>::new(), Vector::<Mat>::new());
    let (mut std_in, mut std_ex, mut per_view) = (Mat::default(), Mat::default(), Mat::default());
    let criteria = TermCriteria::new(core::TermCriteria_COUNT + core::TermCriteria_EPS, 30, f64::EPSILON)?;
    let rms = calib3d::calibrate_camera_extended(
        &object_points,
        &image_points,
        Size::new(image_size.0 as i32, image_size.1 as i32),
        &mut camera_matrix,
        &mut dist,
        &mut rvecs,
        &mut tvecs,
        &mut std_in,
        &mut std_ex,
        &mut per_view,
        0,
        criteria,
    )?;
    let mut k = [0.0; 9];
    for (i, v) in k.iter_mut().enumerate() {
        *v = *camera_matrix.at_2d::<f64>((i / 3) as i32, (i % 3) as i32)?;
    }
    Ok(Solved { camera_matrix: k, dist_coeffs: mat_values(&dist)?, rms_px: rms, per_view_px: mat_values(&per_view)? })
}

/// Every value of a continuous `f64` matrix, row-major.
pub fn mat_values(m: &Mat) -> Result<Vec<f64>, CalibrationError> {
    let m = m.try_clone()?; // a clone is continuous
    Ok(m.data_typed::<f64>()?.to_vec())
}

/// Indices of views whose error exceeds both `OUTLIER_FACTOR` × the median view error and
/// `OUTLIER_FLOOR_PX`.
pub fn outliers(per_view_px: &[f64]) -> Vec<usize> {
    if per_view_px.is_empty() {
        return Vec::new();
    }
    let mut sorted = per_view_px.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let limit = (OUTLIER_FACTOR * median).max(OUTLIER_FLOOR_PX);
    per_view_px.iter().enumerate().filter(|(_, e)| **e > limit).map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::target::{Board, Target};

    #[test]
    fn outliers_stand_out_from_the_median_and_the_floor() {
        assert_eq!(outliers(&[0.05, 0.06, 0.07, 0.2, 0.06]), Vec::<usize>::new(), "0.2 px is under the floor");
        assert_eq!(outliers(&[0.1, 0.12, 0.11, 0.9, 0.1]), vec![3]);
        assert!(outliers(&[]).is_empty());
    }

    #[test]
    fn too_few_views_says_how_many_more_are_needed() {
        let spec = TargetSpec::new(Target::Chessboard, Board { cols: 4, rows: 3 }, 10.0).unwrap();
        let views = vec![vec![[0.0f32, 0.0]; 12]; 3];
        let err = calibrate(&views, &spec, (640, 480), 8).unwrap_err().to_string();
        assert!(err.contains("3 usable") && err.contains("5 more"), "{err}");
    }
}
