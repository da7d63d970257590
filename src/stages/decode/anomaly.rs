//! Anomaly detection (anomalib-style): an image score and a per-pixel anomaly map → a verdict and
//! the anomalous regions.

use super::components::{ComponentScratch, label_components};
use crate::pipeline::Defect;

/// Decode one frame's anomaly output. `map` is the `height × width` anomaly map in frame
/// coordinates, on the same raw scale as `image_score` and `threshold`.
///
/// Returns whether the frame is anomalous (`image_score >= threshold`; a NaN score is anomalous:
/// a value nobody can compare is never "below threshold"). `out` is
/// cleared, then gets one defect of `class` per 8-connected region of map pixels `>= threshold`,
/// in raster order of each region's first pixel.
///
/// Regions are reported **whether or not** the frame is anomalous: the image score and the map
/// come from different heads and need not agree (a hot speck on a frame that scores just under
/// the threshold), and the verdict stage, not the decoder, decides what a region on a good frame
/// means (near miss to log, or nothing).
///
/// # Panics
/// When `map.len() != width * height`.
#[allow(clippy::too_many_arguments)] // Flat on purpose: the caller unpacks its spec once.
pub fn decode_anomaly(
    image_score: f32,
    map: &[f32],
    width: usize,
    height: usize,
    threshold: f32,
    class: u16,
    scratch: &mut ComponentScratch,
    out: &mut Vec<Defect>,
) -> bool {
    out.clear();
    let components = label_components(map, width, height, threshold, scratch);
    out.extend(components.iter().map(|c| c.to_defect(class)));
    super::at_or_above(image_score, threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    const MAP: [f32; 12] = [
        0.0, 3.0, 4.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        2.0, 0.0, 0.0, 2.5,
    ];

    #[test]
    fn anomalous_frame_with_its_regions() {
        let mut scratch = ComponentScratch::new();
        let mut out = Vec::new();
        assert!(decode_anomaly(4.0, &MAP, 4, 3, 2.5, 7, &mut scratch, &mut out));
        assert_eq!(
            out,
            vec![
                Defect {
                    class: 7,
                    x: 1.0,
                    y: 0.0,
                    w: 2.0,
                    h: 1.0,
                    area_px: 2.0,
                    length_px: 2.0,
                    width_px: 1.0,
                    max_score: 4.0,
                    mean_score: 3.5
                },
                Defect {
                    class: 7,
                    x: 3.0,
                    y: 2.0,
                    w: 1.0,
                    h: 1.0,
                    area_px: 1.0,
                    length_px: 1.0,
                    width_px: 1.0,
                    max_score: 2.5,
                    mean_score: 2.5
                },
            ]
        );
    }

    #[test]
    fn regions_are_reported_on_a_good_frame_too() {
        let mut scratch = ComponentScratch::new();
        let mut out = Vec::new();
        assert!(!decode_anomaly(2.0, &MAP, 4, 3, 3.5, 0, &mut scratch, &mut out));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].x, out[0].y, out[0].area_px, out[0].max_score), (2.0, 0.0, 1.0, 4.0));
        assert!(decode_anomaly(f32::NAN, &MAP, 4, 3, 5.0, 0, &mut scratch, &mut out), "NaN is never below threshold");
        assert!(out.is_empty());
    }
}
