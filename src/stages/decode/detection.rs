//! Detection: YOLOv5 / YOLOv8 raw outputs → boxes in frame coordinates → class-aware NMS.
//!
//! Boxes are decoded per tile with the tile's origin added, gathered for the whole frame, then
//! suppressed once with [`nms_class_aware`], so a defect straddling two tiles keeps one box.

use crate::model::manifest::DetectionFormat;
use crate::pipeline::Defect;
use std::cmp::Ordering;

/// Anchors processed together in the transposed (YOLOv8) layout, so each class row is read in
/// contiguous runs instead of one value per anchor.
const BLOCK: usize = 64;

/// Decode one image's raw YOLO output into boxes scoring `>= score_threshold`, **appended** to
/// `out` (not cleared, so the boxes of every tile of a frame can be gathered before one NMS).
///
/// - [`DetectionFormat::Yolov5`]: `raw` is `[anchors, 5 + classes]` rows of
///   `cx, cy, w, h, objectness, class scores…`; score = objectness × best class score. The scores
///   are probabilities in `[0, 1]` as YOLOv5 exports them, so anchors with objectness below the
///   threshold are skipped without reading their classes.
/// - [`DetectionFormat::Yolov8`]: `raw` is `[4 + classes, anchors]` (transposed, no objectness);
///   score = best class score.
///
/// Each anchor yields at most one box, for its best class (ties go to the lower class). `x`, `y`
/// is the top-left corner plus `origin` (the tile's top-left in the frame). Boxes are not clipped;
/// boxes with a non-positive or NaN width or height are dropped.
///
/// An output that is not a whole number of rows, or more classes than a `u16` indexes, is an
/// error (nothing appended): the frame fails safe, no decoder panics on a shape.
pub fn decode_yolo(
    raw: &[f32],
    format: DetectionFormat,
    classes: usize,
    score_threshold: f32,
    origin: (f32, f32),
    out: &mut Vec<Defect>,
) -> Result<(), String> {
    if classes == 0 || classes > usize::from(u16::MAX) + 1 {
        return Err(format!("{classes} classes: YOLO decoding needs 1..=65536"));
    }
    let row_len = match format {
        DetectionFormat::Yolov5 => 5 + classes,
        DetectionFormat::Yolov8 => 4 + classes,
    };
    if !raw.len().is_multiple_of(row_len) {
        return Err(format!(
            "{format:?} output of {} values is not a whole number of rows of {row_len} ({classes} classes)",
            raw.len()
        ));
    }
    match format {
        DetectionFormat::Yolov5 => decode_v5(raw, classes, score_threshold, origin, out),
        DetectionFormat::Yolov8 => decode_v8(raw, classes, score_threshold, origin, out),
    }
    Ok(())
}

fn decode_v5(raw: &[f32], classes: usize, threshold: f32, origin: (f32, f32), out: &mut Vec<Defect>) {
    let row_len = 5 + classes;
    for row in raw.chunks_exact(row_len) {
        // Scores are probabilities, so objectness × class ≤ objectness.
        let objectness = row[4];
        if objectness >= threshold {
            let (class, best) = best_class(&row[5..]);
            let score = objectness * best;
            if score >= threshold {
                push_box(out, [row[0], row[1], row[2], row[3]], class, score, origin);
            }
        }
    }
}

fn decode_v8(raw: &[f32], classes: usize, threshold: f32, origin: (f32, f32), out: &mut Vec<Defect>) {
    let rows = 4 + classes;
    let anchors = raw.len() / rows;
    let row = |r: usize| &raw[r * anchors..(r + 1) * anchors];
    for start in (0..anchors).step_by(BLOCK) {
        let n = BLOCK.min(anchors - start);
        let mut best = [f32::NEG_INFINITY; BLOCK];
        let mut best_class = [0u16; BLOCK];
        for class in 0..classes {
            let scores = &row(4 + class)[start..start + n];
            for (i, &s) in scores.iter().enumerate() {
                if s > best[i] {
                    best[i] = s;
                    best_class[i] = class as u16;
                }
            }
        }
        for i in 0..n {
            if best[i] >= threshold {
                let a = start + i;
                let cxcywh = [row(0)[a], row(1)[a], row(2)[a], row(3)[a]];
                push_box(out, cxcywh, best_class[i], best[i], origin);
            }
        }
    }
}

/// Index and value of the highest score; ties go to the lower index, NaN never wins.
fn best_class(scores: &[f32]) -> (u16, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &s) in scores.iter().enumerate() {
        if s > best.1 {
            best = (i as u16, s);
        }
    }
    best
}

fn push_box(out: &mut Vec<Defect>, [cx, cy, w, h]: [f32; 4], class: u16, score: f32, origin: (f32, f32)) {
    if w > 0.0 && h > 0.0 {
        out.push(Defect::from_box(class, cx - w / 2.0 + origin.0, cy - h / 2.0 + origin.1, w, h, score));
    }
}

/// Intersection over union of two boxes (0 when they do not overlap or both are empty).
pub fn iou(a: &Defect, b: &Defect) -> f32 {
    let iw = ((a.x + a.w).min(b.x + b.w) - a.x.max(b.x)).max(0.0);
    let ih = ((a.y + a.h).min(b.y + b.h) - a.y.max(b.y)).max(0.0);
    let inter = iw * ih;
    let union = a.w * a.h + b.w * b.h - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// The order NMS visits boxes in: score descending, then class, x, y, w, h ascending, so the
/// result does not depend on the input order.
fn nms_order(a: &Defect, b: &Defect) -> Ordering {
    b.max_score
        .total_cmp(&a.max_score)
        .then(a.class.cmp(&b.class))
        .then(a.x.total_cmp(&b.x))
        .then(a.y.total_cmp(&b.y))
        .then(a.w.total_cmp(&b.w))
        .then(a.h.total_cmp(&b.h))
}

/// Greedy class-aware non-maximum suppression, in place: boxes are sorted by score (highest
/// first) and a box is dropped when it overlaps an already kept box **of the same class** with
/// IoU `> iou_threshold`. The survivors stay in `boxes`, highest score first. Does not allocate.
pub fn nms_class_aware(boxes: &mut Vec<Defect>, iou_threshold: f32) {
    // Unstable sort: the stable one allocates a buffer; `nms_order` is total, so ties are equal boxes.
    boxes.sort_unstable_by(nms_order);
    let mut kept = 0;
    for i in 0..boxes.len() {
        let candidate = boxes[i];
        let suppressed = boxes[..kept].iter().any(|k| k.class == candidate.class && iou(k, &candidate) > iou_threshold);
        if !suppressed {
            boxes[kept] = candidate;
            kept += 1;
        }
    }
    boxes.truncate(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ragged_output_or_no_classes_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        assert!(decode_yolo(&[0.0; 13], DetectionFormat::Yolov5, 2, 0.5, (0.0, 0.0), &mut out).is_err());
        assert!(decode_yolo(&[0.0; 13], DetectionFormat::Yolov8, 2, 0.5, (0.0, 0.0), &mut out).is_err());
        assert!(decode_yolo(&[0.0; 12], DetectionFormat::Yolov8, 0, 0.5, (0.0, 0.0), &mut out).is_err());
        assert!(out.is_empty());
    }
    use proptest::prelude::*;

    fn bx(class: u16, x: f32, y: f32, w: f32, h: f32, score: f32) -> Defect {
        Defect::from_box(class, x, y, w, h, score)
    }

    #[test]
    fn yolov5_rows_score_is_objectness_times_class() {
        #[rustfmt::skip]
        let raw = [
            // cx, cy, w, h, obj, c0, c1
            10.0, 20.0, 4.0, 6.0, 0.9, 0.2, 0.8,  // 0.72, class 1 → kept
            50.0, 50.0, 2.0, 2.0, 0.6, 0.9, 0.1,  // 0.54, class 0 → below 0.6
            30.0, 30.0, 8.0, 8.0, 0.3, 1.0, 1.0,  // objectness below threshold
            40.0, 40.0, 0.0, 8.0, 1.0, 1.0, 0.0,  // zero width → dropped
        ];
        let mut out = vec![bx(0, 0.0, 0.0, 1.0, 1.0, 1.0)];
        decode_yolo(&raw, DetectionFormat::Yolov5, 2, 0.6, (100.0, 200.0), &mut out).unwrap();
        assert_eq!(out.len(), 2, "appends: {out:?}");
        let b = out[1];
        // Top-left = (10 − 2 + 100, 20 − 3 + 200).
        assert_eq!((b.class, b.x, b.y, b.w, b.h, b.area_px), (1, 108.0, 217.0, 4.0, 6.0, 24.0));
        assert!((b.max_score - 0.72).abs() < 1e-6);
        assert_eq!(b.max_score, b.mean_score);
    }

    #[test]
    fn yolov8_is_transposed_without_objectness() {
        // 3 anchors, 2 classes: rows cx, cy, w, h, c0, c1.
        #[rustfmt::skip]
        let raw = [
            10.0, 20.0, 30.0,  // cx
            10.0, 20.0, 30.0,  // cy
             4.0,  2.0,  6.0,  // w
             4.0,  2.0,  2.0,  // h
             0.1,  0.5,  0.7,  // c0
             0.9,  0.2,  0.7,  // c1
        ];
        let mut out = Vec::new();
        decode_yolo(&raw, DetectionFormat::Yolov8, 2, 0.5, (0.0, 0.0), &mut out).unwrap();
        assert_eq!(
            out,
            vec![bx(1, 8.0, 8.0, 4.0, 4.0, 0.9), bx(0, 19.0, 19.0, 2.0, 2.0, 0.5), bx(0, 27.0, 29.0, 6.0, 2.0, 0.7)]
        );
    }

    #[test]
    fn yolov8_blocks_cover_every_anchor() {
        // More anchors than one block: only the last anchor scores.
        let anchors = BLOCK * 2 + 3;
        let mut raw = vec![0.0; 5 * anchors];
        for a in 0..anchors {
            raw[2 * anchors + a] = 1.0;
            raw[3 * anchors + a] = 1.0;
        }
        raw[anchors - 1] = 7.5; // cx of the last anchor
        raw[5 * anchors - 1] = 0.8;
        let mut out = Vec::new();
        decode_yolo(&raw, DetectionFormat::Yolov8, 1, 0.5, (0.0, 0.0), &mut out).unwrap();
        assert_eq!(out, vec![bx(0, 7.0, -0.5, 1.0, 1.0, 0.8)]);
    }

    #[test]
    fn iou_by_hand() {
        // Overlap 1 × 2 = 2, union 4 + 4 − 2 = 6.
        let a = bx(0, 0.0, 0.0, 2.0, 2.0, 1.0);
        let b = bx(0, 1.0, 0.0, 2.0, 2.0, 1.0);
        assert!((iou(&a, &b) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&a, &bx(0, 5.0, 5.0, 1.0, 1.0, 1.0)), 0.0);
        assert_eq!(iou(&a, &a), 1.0);
    }

    #[test]
    fn nms_suppresses_only_within_a_class() {
        let mut boxes = vec![
            bx(0, 1.0, 0.0, 2.0, 2.0, 0.8), // IoU 1/3 with the 0.9 box: suppressed at 0.3
            bx(0, 0.0, 0.0, 2.0, 2.0, 0.9),
            bx(1, 0.0, 0.0, 2.0, 2.0, 0.7),  // same place, other class: kept
            bx(0, 10.0, 0.0, 2.0, 2.0, 0.6), // far away: kept
        ];
        nms_class_aware(&mut boxes, 0.3);
        let scores: Vec<f32> = boxes.iter().map(|b| b.max_score).collect();
        assert_eq!(scores, vec![0.9, 0.7, 0.6]);

        let mut boxes = vec![bx(0, 1.0, 0.0, 2.0, 2.0, 0.8), bx(0, 0.0, 0.0, 2.0, 2.0, 0.9)];
        nms_class_aware(&mut boxes, 0.5);
        assert_eq!(boxes.len(), 2, "IoU 1/3 is not above 0.5");
    }

    /// Naive reference: visit in score order, each kept box marks every later overlapping box.
    fn naive_nms(boxes: &[Defect], t: f32) -> Vec<Defect> {
        let mut sorted = boxes.to_vec();
        sorted.sort_by(nms_order);
        let mut suppressed = vec![false; sorted.len()];
        let mut out = Vec::new();
        for i in 0..sorted.len() {
            if suppressed[i] {
                continue;
            }
            out.push(sorted[i]);
            for j in i + 1..sorted.len() {
                if sorted[j].class == sorted[i].class && iou(&sorted[i], &sorted[j]) > t {
                    suppressed[j] = true;
                }
            }
        }
        out
    }

    fn arb_box() -> impl Strategy<Value = Defect> {
        (0u16..3, 0u8..12, 0u8..12, 1u8..6, 1u8..6, 0u8..5)
            .prop_map(|(c, x, y, w, h, s)| bx(c, x.into(), y.into(), w.into(), h.into(), f32::from(s) / 4.0))
    }

    proptest! {
        #[test]
        fn nms_matches_naive(boxes in prop::collection::vec(arb_box(), 0..40), t in 0.0f32..1.0) {
            let mut got = boxes.clone();
            nms_class_aware(&mut got, t);
            prop_assert_eq!(&got, &naive_nms(&boxes, t));
            for (i, a) in got.iter().enumerate() {
                for b in &got[i + 1..] {
                    prop_assert!(a.class != b.class || iou(a, b) <= t);
                }
            }
        }
    }
}
