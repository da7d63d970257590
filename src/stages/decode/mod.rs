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

/// One defect found in a frame, in frame pixel coordinates.
///
/// `x`, `y` is the top-left corner of the bounding box and `w`, `h` its size, in pixels. For
/// regions (segmentation, anomaly) `area_px` is the pixel count, the scores are the max and mean
/// over the region's pixels, and `length_px` × `width_px` is the rectangle with the region's
/// second moments, along its own axis: exact for a straight scratch at any angle, 0.87 × the
/// diameter for a round pit (see [`Component::length_width`]). For boxes (detection) `area_px =
/// w * h`, length and width are the box's longer and shorter side, and `max_score = mean_score` =
/// the box score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defect {
    /// Index into the model's class labels.
    pub class: u16,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub area_px: f32,
    pub length_px: f32,
    pub width_px: f32,
    pub max_score: f32,
    pub mean_score: f32,
}

impl Defect {
    /// A box-shaped defect (detection, or a whole-frame classification) with one score.
    pub fn from_box(class: u16, x: f32, y: f32, w: f32, h: f32, score: f32) -> Self {
        Self {
            class,
            x,
            y,
            w,
            h,
            area_px: w * h,
            length_px: w.max(h),
            width_px: w.min(h),
            max_score: score,
            mean_score: score,
        }
    }

    /// Its size in millimetres at `mm_per_px` on the inspected surface (worked out in f64, so
    /// 807 px at 0.1 mm/px is 8.07 mm², not 8.070001).
    pub fn in_mm(&self, mm_per_px: f32) -> DefectMm {
        let s = f64::from(mm_per_px);
        DefectMm {
            area_mm2: (f64::from(self.area_px) * s * s) as f32,
            length_mm: (f64::from(self.length_px) * s) as f32,
            width_mm: (f64::from(self.width_px) * s) as f32,
        }
    }
}

/// A defect's size on the inspected surface.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DefectMm {
    pub area_mm2: f32,
    pub length_mm: f32,
    pub width_mm: f32,
}
