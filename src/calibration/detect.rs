//! Finding the target in one view with OpenCV's `calib3d`: chessboard corners refined to
//! sub-pixel accuracy, or circle-grid centres from the blob detector.

use super::CalibrationError;
use super::target::{Target, TargetSpec};
use opencv::calib3d;
use opencv::core::{self, Mat, Point2f, Size, TermCriteria, Vector};
use opencv::features2d::{Feature2D, SimpleBlobDetector, SimpleBlobDetector_Params};
use opencv::imgcodecs;
use opencv::imgproc;
use opencv::prelude::*;
use std::path::Path;

/// Read an image file as 8-bit grayscale.
pub fn read_gray(path: &Path) -> Result<Mat, CalibrationError> {
    let name = path.to_str().ok_or_else(|| CalibrationError::Input(format!("{}: not a UTF-8 path", path.display())))?;
    let img = imgcodecs::imread(name, imgcodecs::IMREAD_GRAYSCALE)?;
    if img.empty() {
        return Err(CalibrationError::Input(format!("{}: not a readable image", path.display())));
    }
    Ok(img)
}

/// Wrap packed 8-bit grayscale rows as an OpenCV image (one copy).
pub fn gray_mat(pixels: &[u8], width: u32, height: u32) -> Result<Mat, CalibrationError> {
    if pixels.len() != (width * height) as usize {
        return Err(CalibrationError::Input(format!("image buffer is not {width}×{height} gray")));
    }
    let flat = Mat::from_slice(pixels)?;
    Ok(flat.reshape(1, height as i32)?.try_clone()?)
}

/// The target's points in the image, row by row as [`TargetSpec::object_points`], or `None` when
/// the whole target was not found.
pub fn detect(gray: &Mat, spec: &TargetSpec) -> Result<Option<Vec<[f32; 2]>>, CalibrationError> {
    let size = Size::new(spec.board.cols as i32, spec.board.rows as i32);
    let mut points = Vector::<Point2f>::new();
    let found = match spec.target {
        Target::Chessboard => {
            let flags = calib3d::CALIB_CB_ADAPTIVE_THRESH | calib3d::CALIB_CB_NORMALIZE_IMAGE;
            let found = calib3d::find_chessboard_corners(gray, size, &mut points, flags)?;
            if found {
                refine_corners(gray, &mut points)?;
            }
            found
        }
        Target::Circles | Target::AsymmetricCircles => {
            let grid = if spec.target == Target::Circles {
                calib3d::CALIB_CB_SYMMETRIC_GRID
            } else {
                calib3d::CALIB_CB_ASYMMETRIC_GRID
            };
            let detector: core::Ptr<Feature2D> =
                SimpleBlobDetector::create(SimpleBlobDetector_Params::default()?)?.into();
            let mut found = calib3d::find_circles_grid(gray, size, &mut points, grid, Some(&detector))?;
            if !found {
                // The blob detector looks for dark circles; try light circles on a dark board.
                let mut inverted = Mat::default();
                core::bitwise_not_def(gray, &mut inverted)?;
                found = calib3d::find_circles_grid(&inverted, size, &mut points, grid, Some(&detector))?;
            }
            found
        }
    };
    if !found || points.len() != spec.board.points() {
        return Ok(None);
    }
    Ok(Some(points.iter().map(|p| [p.x, p.y]).collect()))
}

/// `cornerSubPix` with a search window that fits the board: half the distance to the nearest
/// neighbouring corner (capped at OpenCV's usual 11 px), so it never reaches the next corner.
fn refine_corners(gray: &Mat, points: &mut Vector<Point2f>) -> Result<(), CalibrationError> {
    let pts: Vec<Point2f> = points.to_vec();
    let mut nearest = f32::INFINITY;
    for (i, a) in pts.iter().enumerate() {
        for b in &pts[i + 1..] {
            nearest = nearest.min((a.x - b.x).hypot(a.y - b.y));
        }
    }
    let half = ((nearest * 0.5) as i32 - 1).clamp(2, 11);
    let criteria = TermCriteria::new(core::TermCriteria_EPS + core::TermCriteria_COUNT, 30, 1e-4)?;
    imgproc::corner_sub_pix(gray, points, Size::new(half, half), Size::new(-1, -1), criteria)?;
    Ok(())
}
