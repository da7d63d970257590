//! The model's outputs checked against its manifest: ranks and every known dimension against what
//! the task's decoder reads. Run on the graph's declared shapes at load (dynamic axes unknown) and
//! again on the real shapes of the warm-up run, so a model whose outputs disagree with its
//! manifest is refused before the station reports ready, never decoded.

use super::manifest::{DetectionFormat, InputSpec, TaskSpec};

/// One axis of an output: its size, or `None` where the graph leaves it dynamic.
pub type Dim = Option<usize>;

/// YOLO heads' strides: P3–P5 (the usual exports) and P3–P6 (the `-p6` models).
const YOLO_STRIDES: [&[usize]; 2] = [&[8, 16, 32], &[8, 16, 32, 64]];

/// Check one output's per-item shape (the batch axis removed), in the order of
/// [`TaskSpec::output_names`]. The error names the output, what was expected and what it has.
pub fn check_output(task: &TaskSpec, input: &InputSpec, index: usize, name: &str, item: &[Dim]) -> Result<(), String> {
    let shown = show(item);
    let fail =
        |expected: String| Err(format!("output {name:?} has item shape {shown} (batch axis removed); {expected}"));
    let known = |d: &Dim, want: usize| d.is_none_or(|d| d == want);
    match task {
        TaskSpec::Segmentation(s) => {
            let c = s.classes.len();
            let ok = match item {
                [ch, h, w] => known(ch, c) && nonzero(h) && nonzero(w),
                _ => false,
            };
            if !ok {
                return fail(format!(
                    "segmentation expects [classes = {c}, H, W] (one channel per listed class: {})",
                    s.classes.join(", ")
                ));
            }
        }
        TaskSpec::Classification(s) => {
            let c = s.classes.len();
            let ok = match item {
                [n] => known(n, c),
                [one, n] => known(one, 1) && known(n, c),
                _ => false,
            };
            if !ok {
                return fail(format!("classification expects [classes = {c}] (one score per listed class)"));
            }
        }
        TaskSpec::Detection(d) => {
            let c = d.classes.len();
            let (rows, anchors, layout) = match (d.format, item) {
                (DetectionFormat::Yolov5, [a, r]) => {
                    (r, a, format!("YOLOv5 expects [anchors, 5 + classes = {}]", 5 + c))
                }
                (DetectionFormat::Yolov8, [r, a]) => {
                    (r, a, format!("YOLOv8 expects [4 + classes = {}, anchors]", 4 + c))
                }
                (DetectionFormat::Yolov5, _) => {
                    return fail(format!("YOLOv5 expects [anchors, 5 + classes = {}]", 5 + c));
                }
                (DetectionFormat::Yolov8, _) => {
                    return fail(format!("YOLOv8 expects [4 + classes = {}, anchors]", 4 + c));
                }
            };
            let want_rows = match d.format {
                DetectionFormat::Yolov5 => 5 + c,
                DetectionFormat::Yolov8 => 4 + c,
            };
            if let Some(r) = rows
                && *r != want_rows
            {
                let hint = if d.format == DetectionFormat::Yolov8 && *r == want_rows + 32 {
                    " — this looks like a YOLO segmentation export (32 mask coefficients per box): instance segmentation is not supported yet, export the detect model"
                } else {
                    " — check task.classes lists every class the model was trained on, in order"
                };
                return fail(format!("{layout}{hint}"));
            }
            if let Some(a) = anchors {
                let per_cell = if d.format == DetectionFormat::Yolov5 { 3 } else { 1 };
                let expected: Vec<usize> =
                    YOLO_STRIDES.iter().map(|s| per_cell * grid_cells(input.width, input.height, s)).collect();
                if !expected.contains(a) {
                    return fail(format!(
                        "{layout}; a {}×{} input gives {} anchors (strides 8/16/32) or {} (with 64): check input.width/height match the export's image size",
                        input.width, input.height, expected[0], expected[1]
                    ));
                }
            }
        }
        TaskSpec::Anomaly(_) => {
            if index == 0 {
                let ok = item.iter().all(|d| known(d, 1));
                if !ok {
                    return fail("the anomaly image score expects one value per image ([] or [1])".into());
                }
            } else {
                let ok = match item {
                    [h, w] => nonzero(h) && nonzero(w),
                    [one, h, w] => known(one, 1) && nonzero(h) && nonzero(w),
                    _ => false,
                };
                if !ok {
                    return fail("the anomaly map expects [1, H, W] or [H, W]".into());
                }
            }
        }
    }
    Ok(())
}

/// Cells over every head's grid for an input of `w × h` (a head of stride s has ⌈w/s⌉ × ⌈h/s⌉).
fn grid_cells(w: u32, h: u32, strides: &[usize]) -> usize {
    strides.iter().map(|&s| (w as usize).div_ceil(s) * (h as usize).div_ceil(s)).sum()
}

fn nonzero(d: &Dim) -> bool {
    d.is_none_or(|d| d > 0)
}

fn show(item: &[Dim]) -> String {
    let dims: Vec<String> = item.iter().map(|d| d.map_or("?".into(), |d| d.to_string())).collect();
    format!("[{}]", dims.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::manifest::{
        Activation, AnomalySpec, ClassificationSpec, DetectionSpec, Layout, Normalization, SegmentationSpec,
    };

    fn input(w: u32, h: u32) -> InputSpec {
        InputSpec {
            name: "x".into(),
            width: w,
            height: h,
            channels: 3,
            layout: Layout::Nchw,
            batch: 0,
            normalization: Normalization::default(),
            mode: None,
            min_width: None,
            min_height: None,
        }
    }

    fn dims(d: &[usize]) -> Vec<Dim> {
        d.iter().map(|&d| Some(d)).collect()
    }

    fn seg(classes: usize) -> TaskSpec {
        TaskSpec::Segmentation(SegmentationSpec {
            output: "p".into(),
            classes: (0..classes).map(|c| format!("c{c}")).collect(),
            activation: Activation::None,
            pixel_threshold: 0.5,
            background_class: None,
        })
    }

    fn det(format: DetectionFormat, classes: usize) -> TaskSpec {
        TaskSpec::Detection(DetectionSpec {
            output: "output0".into(),
            format,
            classes: (0..classes).map(|c| format!("c{c}")).collect(),
            score_threshold: 0.25,
            iou_threshold: 0.45,
        })
    }

    #[test]
    fn segmentation_channels_must_match_the_classes() {
        let i = input(64, 64);
        assert!(check_output(&seg(1), &i, 0, "p", &dims(&[1, 64, 64])).is_ok());
        let e = check_output(&seg(1), &i, 0, "p", &dims(&[2, 64, 64])).unwrap_err();
        assert!(e.contains("\"p\"") && e.contains("[2, 64, 64]") && e.contains("classes = 1"), "{e}");
        assert!(check_output(&seg(1), &i, 0, "p", &dims(&[64, 64])).is_err(), "rank 2 is not [C, H, W]");
        assert!(check_output(&seg(2), &i, 0, "p", &[None, None, None]).is_ok(), "dynamic axes wait for warm-up");
    }

    #[test]
    fn yolo_rows_and_anchors_follow_classes_and_input_size() {
        let i = input(640, 640);
        assert!(check_output(&det(DetectionFormat::Yolov8, 80), &i, 0, "o", &dims(&[84, 8400])).is_ok());
        assert!(check_output(&det(DetectionFormat::Yolov5, 80), &i, 0, "o", &dims(&[25200, 85])).is_ok());
        let e = check_output(&det(DetectionFormat::Yolov8, 3), &i, 0, "o", &dims(&[84, 8400])).unwrap_err();
        assert!(e.contains("4 + classes = 7"), "{e}");
        let e = check_output(&det(DetectionFormat::Yolov8, 80), &i, 0, "o", &dims(&[116, 8400])).unwrap_err();
        assert!(e.contains("segmentation export"), "{e}");
        let e =
            check_output(&det(DetectionFormat::Yolov8, 80), &input(320, 320), 0, "o", &dims(&[84, 8400])).unwrap_err();
        assert!(e.contains("2100 anchors"), "{e}");
    }

    #[test]
    fn classification_and_anomaly_shapes() {
        let cls = TaskSpec::Classification(ClassificationSpec {
            output: "s".into(),
            classes: vec!["ok".into(), "bad".into()],
            activation: Activation::Softmax,
            good_class: Some("ok".into()),
        });
        let i = input(32, 32);
        assert!(check_output(&cls, &i, 0, "s", &dims(&[2])).is_ok());
        assert!(check_output(&cls, &i, 0, "s", &dims(&[3])).is_err());
        let an = TaskSpec::Anomaly(AnomalySpec {
            score_output: "pred_score".into(),
            map_output: "anomaly_map".into(),
            threshold: 1.0,
            defect_class: "anomaly".into(),
        });
        assert!(check_output(&an, &i, 0, "pred_score", &dims(&[])).is_ok());
        assert!(check_output(&an, &i, 0, "pred_score", &dims(&[4])).is_err());
        assert!(check_output(&an, &i, 1, "anomaly_map", &dims(&[1, 32, 32])).is_ok());
        assert!(check_output(&an, &i, 1, "anomaly_map", &dims(&[2, 32, 32])).is_err());
    }
}
