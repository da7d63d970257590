//! Output decoders: turn model outputs, already stitched into frame coordinates, into defects,
//! labels and boxes.
//!
//! Pure Rust, no I/O. Decoders do not allocate in steady state: results go into caller-owned
//! `Vec`s (cleared or appended to, capacity reused) and working memory into a caller-owned
//! scratch struct ([`ComponentScratch`]) that grows to the largest frame once and is then reused.
//!
//! - [`components`]: 8-connected components of a thresholded score map (the shared kernel);
//! - [`segmentation`]: per-class probability maps → one defect per component;
//! - [`classification`]: scores → label and score;
//! - [`detection`]: YOLOv5 / YOLOv8 boxes → class-aware NMS;
//! - [`anomaly`]: anomalib image score and anomaly map → verdict and regions.

pub mod anomaly;
pub mod classification;
pub mod components;
pub mod detection;
pub mod segmentation;

pub use anomaly::decode_anomaly;
pub use classification::decode_classification;
pub use components::{Component, ComponentScratch, label_components};
pub use detection::{decode_yolo, iou, nms_class_aware};
pub use segmentation::{apply_activation, decode_segmentation};

/// One defect found in a frame, in frame pixel coordinates.
///
/// `x`, `y` is the top-left corner of the bounding box and `w`, `h` its size, in pixels. For
/// regions (segmentation, anomaly) `area_px` is the pixel count and the scores are the max and
/// mean over the region's pixels; for boxes (detection) `area_px = w * h` and
/// `max_score = mean_score` = the box score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defect {
    /// Index into the model's class labels.
    pub class: u16,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub area_px: f32,
    pub max_score: f32,
    pub mean_score: f32,
}
