//! Camera calibration: lens intrinsics and distortion, undistortion on the frame path, and the
//! millimetres-per-pixel scale of the inspected surface, so decision rules can speak millimetres.
//!
//! - [`target`]: chessboard and circle-grid targets, their points in mm;
//! - [`detect`]: finding the target in a view (OpenCV `calib3d`);
//! - [`solve`]: `calibrateCamera`, RMS and per-view errors, outlier views;
//! - [`file`]: the calibration file (OpenCV FileStorage YAML plus linesight's fields), read and
//!   checked;
//! - [`scale`]: the working-plane scale from one image of the target lying on that plane;
//! - [`undistort`]: remap tables built once, applied per frame without allocating;
//! - [`command`]: `linesight calibrate`.
//!
//! Everything here but [`undistort::Undistorter::apply`] runs at set-up time, never per frame.

pub mod command;
pub mod detect;
pub mod file;
pub mod scale;
pub mod solve;
pub mod target;
pub mod undistort;

pub use file::{Calibration, PlaneScale, ScaleSource};
pub use target::{Board, Target, TargetSpec};
pub use undistort::Undistorter;

/// Why calibrating, or using a calibration, failed. Messages name the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// Bad arguments or unusable input images.
    #[error("{0}")]
    Input(String),
    #[error(
        "only {usable} usable view(s), and calibration needs at least {needed}: add {} more view(s) that show the whole target, tilted and at different places in the image",
        needed - usable
    )]
    TooFewViews { usable: usize, needed: usize },
    /// A calibration file that cannot be used, and why.
    #[error("calibration file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("OpenCV: {}", .0.message)]
    OpenCv(#[from] opencv::Error),
}

/// What the station knows about one camera's geometry, resolved from its config.
#[derive(Clone, Debug, Default)]
pub struct CameraGeometry {
    /// The camera's calibration file, loaded and checked.
    pub calibration: Option<Calibration>,
    /// Whether frames are undistorted (a calibration is given and `undistort` is on).
    pub undistort: bool,
    /// Millimetres per pixel: the config's `mm_per_px` if set, else the calibration's scale.
    pub mm_per_px: Option<f64>,
    /// Where `mm_per_px` came from: `config`, `calibration (homography)`, `calibration (manual)`.
    pub scale_origin: Option<String>,
}
