//! A defect found in a frame, as every stage after the decoders sees it.

/// One defect found in a frame, in frame pixel coordinates.
///
/// `x`, `y` is the top-left corner of the bounding box and `w`, `h` its size, in pixels. For
/// regions (segmentation, anomaly) `area_px` is the pixel count, the scores are the max and mean
/// over the region's pixels, and `length_px` × `width_px` is the rectangle with the region's
/// second moments, along its own axis: exact for a straight scratch at any angle, 0.87 × the
/// diameter for a round pit (see `stages::decode::Component::length_width`). For boxes (detection) `area_px =
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
