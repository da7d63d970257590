//! Segmentation: per-class probability maps `C × H × W` → one [`Defect`] per connected region of
//! pixels at or above the pixel threshold, plus the output activations shared with other tasks.

use super::components::{ComponentScratch, label_components};
use crate::model::manifest::Activation;
use crate::pipeline::Defect;

/// Apply `activation` in place to `data`, laid out as `[items, channels, plane_len]` (one item or a
/// whole batch; `plane_len` = H × W, or 1 for `[N, C]` scores).
///
/// Sigmoid maps each value on its own; softmax normalises across the channels of each pixel
/// (numerically stable: the pixel's max is subtracted first). `None` leaves the data as is.
///
/// Data that is not a whole number of items is an error (left as is): no panic on a shape.
pub fn apply_activation(
    data: &mut [f32],
    channels: usize,
    plane_len: usize,
    activation: Activation,
) -> Result<(), String> {
    let item_len = channels * plane_len;
    if item_len == 0 || !data.len().is_multiple_of(item_len) {
        return Err(format!("data of {} values is not a whole number of {channels} × {plane_len} items", data.len()));
    }
    match activation {
        Activation::None => {}
        Activation::Sigmoid => data.iter_mut().for_each(|v| *v = sigmoid(*v)),
        Activation::Softmax => {
            for item in data.chunks_exact_mut(item_len.max(1)) {
                for p in 0..plane_len {
                    softmax_strided(item, p, plane_len);
                }
            }
        }
    }
    Ok(())
}

/// The logistic function; saturates to exactly 0 or 1 far from zero instead of overflowing.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Softmax over `data[start], data[start + stride], …`.
pub(super) fn softmax_strided(data: &mut [f32], start: usize, stride: usize) {
    let max = data[start..].iter().step_by(stride).fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in data[start..].iter_mut().step_by(stride) {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in data[start..].iter_mut().step_by(stride) {
        *v /= sum;
    }
}

/// Decode one frame's `classes × height × width` probabilities (already activated, see
/// [`apply_activation`]) into defects: for each class except `background_class`, each
/// 8-connected region of pixels with probability `>= pixel_threshold` becomes one defect.
///
/// `out` is cleared first. Defects come out by class, then in raster order of each region's first
/// pixel.
///
/// # Panics
/// When `probs.len() != classes * width * height`, or `classes > 65536`.
#[allow(clippy::too_many_arguments)] // Flat on purpose: the caller unpacks its spec once.
pub fn decode_segmentation(
    probs: &[f32],
    classes: usize,
    width: usize,
    height: usize,
    pixel_threshold: f32,
    background_class: Option<usize>,
    scratch: &mut ComponentScratch,
    out: &mut Vec<Defect>,
) {
    let plane_len = width * height;
    assert_eq!(probs.len(), classes * plane_len, "probabilities are not classes × width × height");
    assert!(classes <= usize::from(u16::MAX) + 1, "more classes than a u16 can index");
    out.clear();
    for (class, plane) in probs.chunks_exact(plane_len.max(1)).enumerate().take(classes) {
        if Some(class) == background_class {
            continue;
        }
        let components = label_components(plane, width, height, pixel_threshold, scratch);
        out.extend(components.iter().map(|c| c.to_defect(class as u16)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_values_and_saturation() {
        let mut data = [0.0, 2.0_f32.ln(), -1000.0, 1000.0];
        apply_activation(&mut data, 4, 1, Activation::Sigmoid).unwrap();
        // sigmoid(ln 2) = 1 / (1 + 1/2) = 2/3.
        assert_eq!(data[0], 0.5);
        assert!((data[1] - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!((data[2], data[3]), (0.0, 1.0));
    }

    #[test]
    fn softmax_runs_across_channels_per_pixel() {
        // Two channels, two pixels: pixel 0 logits (0, ln 3) → (1/4, 3/4); pixel 1 (5, 5) → ½, ½.
        let mut data = [0.0, 5.0, 3.0_f32.ln(), 5.0];
        apply_activation(&mut data, 2, 2, Activation::Softmax).unwrap();
        let want = [0.25, 0.5, 0.75, 0.5];
        for (got, want) in data.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{data:?}");
        }
    }

    #[test]
    fn softmax_handles_a_batch_and_huge_logits() {
        let mut data = [1000.0, 1000.0, -1000.0, 0.0];
        apply_activation(&mut data, 2, 1, Activation::Softmax).unwrap();
        assert_eq!(data, [0.5, 0.5, 0.0, 1.0]);
    }

    #[test]
    fn one_defect_per_region_per_class_skipping_background() {
        // 2 classes on a 4 × 3 frame; class 0 is background and would otherwise yield a region.
        #[rustfmt::skip]
        let probs = [
            // class 0 (background)
            0.9, 0.9, 0.9, 0.9,
            0.9, 0.9, 0.9, 0.9,
            0.9, 0.9, 0.9, 0.9,
            // class 1
            0.6, 0.8, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.7,
            0.0, 0.0, 0.0, 0.5,
        ];
        let mut scratch = ComponentScratch::new();
        let mut out = vec![Defect::from_box(9, 0.0, 0.0, 0.0, 0.0, 0.0)];
        decode_segmentation(&probs, 2, 4, 3, 0.5, Some(0), &mut scratch, &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        let top = out[0];
        assert_eq!((top.class, top.x, top.y, top.w, top.h, top.area_px), (1, 0.0, 0.0, 2.0, 1.0, 2.0));
        assert_eq!(top.max_score, 0.8);
        assert!((top.mean_score - 0.7).abs() < 1e-6);
        let right = out[1];
        assert_eq!((right.class, right.x, right.y, right.w, right.h, right.area_px), (1, 3.0, 1.0, 1.0, 2.0, 2.0));
        assert!((right.mean_score - 0.6).abs() < 1e-6);

        decode_segmentation(&probs, 2, 4, 3, 0.5, None, &mut scratch, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!((out[0].class, out[0].area_px, out[0].w, out[0].h), (0, 12.0, 4.0, 3.0));
    }
}
