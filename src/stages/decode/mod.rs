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

/// Whether a score counts as reaching `threshold`. A NaN score does: a value nobody can compare is
/// never "below threshold" (the pipeline fails such frames safe before decoding; this is the
/// decoders' own guard).
#[inline]
pub fn at_or_above(score: f32, threshold: f32) -> bool {
    score >= threshold || score.is_nan()
}
