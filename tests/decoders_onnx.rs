//! The decoders fed by real ONNX Runtime: each tiny fixture graph (`tests/fixtures/*.onnx`, made
//! by `make_fixtures.py`) runs a hand-made tensor, its outputs go through the decoder, and the
//! result must be the defects, label or boxes worked out by hand in each test.
//!
//! ONNX Runtime is loaded from `ORT_DYLIB_PATH` when set, else from `.ort/lib/libonnxruntime.so`
//! (put there by `scripts/setup.sh`).

use linesight::model::manifest::{Activation, DetectionFormat};
use linesight::pipeline::Defect;
use linesight::stages::decode::{
    ComponentScratch, apply_activation, decode_anomaly, decode_classification, decode_segmentation, decode_yolo,
    nms_class_aware,
};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

type TestResult = Result<(), Box<dyn Error>>;

/// One environment per test process: the runtime library can only be loaded once.
fn environment() -> &'static Environment {
    static ENV: OnceLock<Environment> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = std::env::var_os("ORT_DYLIB_PATH")
            .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".ort/lib/libonnxruntime.so"), PathBuf::from);
        ort::init_from(&lib)
            .unwrap_or_else(|e| panic!("loading {} failed (run scripts/setup.sh): {e}", lib.display()))
            .build()
            .expect("ONNX Runtime environment")
    })
}

/// A tensor output copied out of the session: shape and values.
struct Output {
    shape: Vec<i64>,
    data: Vec<f32>,
}

/// Run `data` (of `shape`) as input `input` of fixture `model`; return the named outputs.
fn run(
    model: &str,
    input: &str,
    shape: &[usize],
    data: &[f32],
    outputs: &[&str],
) -> Result<Vec<Output>, Box<dyn Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model);
    let mut session = Session::builder(environment())?.commit_from_file(&path)?;
    let tensor = TensorRef::from_array_view((shape, data))?;
    let results = session.run(ort::inputs![input => tensor])?;
    outputs
        .iter()
        .map(|name| {
            let (shape, data) = results[*name].try_extract_tensor::<f32>()?;
            Ok(Output { shape: shape.to_vec(), data: data.to_vec() })
        })
        .collect()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn assert_close(got: f32, want: f32, what: &str) {
    assert!((got - want).abs() < 1e-5, "{what}: got {got}, want {want}");
}

/// Compare two defects field by field, scores within float tolerance.
fn assert_defect(got: &Defect, want: &Defect) {
    assert_eq!(
        (got.class, got.x, got.y, got.w, got.h, got.area_px),
        (want.class, want.x, want.y, want.w, want.h, want.area_px),
        "{got:?}"
    );
    assert_close(got.max_score, want.max_score, "max_score");
    assert_close(got.mean_score, want.mean_score, "mean_score");
}

/// A region: length and width are not compared by [`assert_defect`] (the kernel's unit tests check
/// them), so they are set to the box's sides.
fn region(class: u16, [x, y, w, h]: [f32; 4], area_px: f32, max_score: f32, mean_score: f32) -> Defect {
    Defect { area_px, max_score, mean_score, ..Defect::from_box(class, x, y, w, h, 0.0) }
}

fn boxed(class: u16, [x, y, w, h]: [f32; 4], score: f32) -> Defect {
    Defect::from_box(class, x, y, w, h, score)
}

#[test]
fn segmentation_logits_to_regions() -> TestResult {
    // Batch of two 2 × 8 × 8 logit maps, background logit −6 everywhere.
    let (w, h, plane) = (8, 8, 64);
    let mut input = vec![-6.0f32; 2 * 2 * plane];
    let at = |class: usize, x: usize, y: usize| class * plane + y * w + x;
    // Item 0, class 0: a 3 × 2 block at (1, 2), logit 2, with one logit-4 pixel at (3, 2).
    for y in 2..4 {
        for x in 1..4 {
            input[at(0, x, y)] = 2.0;
        }
    }
    input[at(0, 3, 2)] = 4.0;
    // Item 0, class 1: a diagonal pair (6, 5)–(7, 6) at logit 0 (exactly 0.5) and a lone pixel.
    input[at(1, 6, 5)] = 0.0;
    input[at(1, 7, 6)] = 0.0;
    input[at(1, 0, 7)] = 1.0;
    // Item 1 stays background.

    let mut out = run("seg_identity.onnx", "image", &[2, 2, 8, 8], &input, &["probs"])?;
    let probs = &mut out[0];
    assert_eq!(probs.shape, [2, 2, 8, 8]);
    apply_activation(&mut probs.data, 2, plane, Activation::Sigmoid).unwrap();

    let mut scratch = ComponentScratch::new();
    let mut defects = Vec::new();
    let (item0, item1) = probs.data.split_at(2 * plane);
    decode_segmentation(item0, 2, w, h, 0.5, None, &mut scratch, &mut defects);
    let block_mean = (5.0 * sigmoid(2.0) + sigmoid(4.0)) / 6.0;
    let want = [
        region(0, [1.0, 2.0, 3.0, 2.0], 6.0, sigmoid(4.0), block_mean),
        region(1, [6.0, 5.0, 2.0, 2.0], 2.0, 0.5, 0.5),
        region(1, [0.0, 7.0, 1.0, 1.0], 1.0, sigmoid(1.0), sigmoid(1.0)),
    ];
    assert_eq!(defects.len(), want.len(), "{defects:?}");
    defects.iter().zip(&want).for_each(|(g, w)| assert_defect(g, w));

    // Class 0 as background leaves only the class-1 regions.
    decode_segmentation(item0, 2, w, h, 0.5, Some(0), &mut scratch, &mut defects);
    assert_eq!(defects.len(), 2);
    assert!(defects.iter().all(|d| d.class == 1));

    decode_segmentation(item1, 2, w, h, 0.5, None, &mut scratch, &mut defects);
    assert!(defects.is_empty(), "{defects:?}");
    Ok(())
}

#[test]
fn classification_logits_to_labels() -> TestResult {
    // The graph multiplies by (1, 2, 3): item 0 → logits (0, ln 3, 0) → softmax (1/5, 3/5, 1/5);
    // item 1 → logits (0, 0, ln 4) → (1/6, 1/6, 2/3).
    let input = [0.0, 3.0f32.ln() / 2.0, 0.0, 0.0, 0.0, 4.0f32.ln() / 3.0];
    let mut out = run("cls_tiny.onnx", "image", &[2, 3], &input, &["logits"])?;
    let logits = &mut out[0];
    assert_eq!(logits.shape, [2, 3]);
    let (item0, item1) = logits.data.split_at_mut(3);

    let (class, score) = decode_classification(item0, Activation::Softmax);
    assert_eq!(class, 1);
    assert_close(score, 0.6, "item 0 score");
    assert_close(item0[0], 0.2, "item 0 class 0");

    let (class, score) = decode_classification(item1, Activation::Softmax);
    assert_eq!(class, 2);
    assert_close(score, 2.0 / 3.0, "item 1 score");
    Ok(())
}

#[test]
fn yolov5_rows_to_boxes_after_nms() -> TestResult {
    #[rustfmt::skip]
    let input = [
        // cx,  cy,   w,    h,   obj, c0,  c1
        20.0, 20.0, 10.0, 10.0, 0.9, 0.9, 0.1,  // class 0, 0.81
        21.0, 20.0, 10.0, 10.0, 0.8, 0.9, 0.2,  // class 0, 0.72, IoU 90/110 with the first: suppressed
        21.0, 20.0, 10.0, 10.0, 0.8, 0.1, 0.75, // class 1, 0.6: other class, kept
        50.0, 60.0,  4.0,  2.0, 0.2, 1.0, 0.0,  // 0.2: below the score threshold
    ];
    let out = run("yolov5_tiny.onnx", "image", &[1, 4, 7], &input, &["output0"])?;
    assert_eq!(out[0].shape, [1, 4, 7]);

    let mut boxes = Vec::new();
    decode_yolo(&out[0].data, DetectionFormat::Yolov5, 2, 0.25, (100.0, 0.0), &mut boxes).unwrap();
    assert_eq!(boxes.len(), 3, "{boxes:?}");
    nms_class_aware(&mut boxes, 0.45);
    let want = [boxed(0, [115.0, 15.0, 10.0, 10.0], 0.81), boxed(1, [116.0, 15.0, 10.0, 10.0], 0.6)];
    assert_eq!(boxes.len(), want.len(), "{boxes:?}");
    boxes.iter().zip(&want).for_each(|(g, w)| assert_defect(g, w));
    Ok(())
}

#[test]
fn yolov8_transposed_boxes_from_two_tiles() -> TestResult {
    // Per-anchor rows in; the graph transposes them to YOLOv8's [4 + classes, anchors].
    #[rustfmt::skip]
    let input = [
        // tile 0, origin (0, 0):  cx, cy, w, h, c0, c1
        10.0, 10.0, 4.0, 4.0, 0.9, 0.0,  // class 0, 0.9 → (8, 8, 4, 4)
        11.0, 10.0, 4.0, 4.0, 0.8, 0.1,  // IoU 12/20 with the first: suppressed
        30.0, 30.0, 6.0, 2.0, 0.2, 0.3,  // class 1, 0.3 → (27, 29, 6, 2)
         5.0,  5.0, 2.0, 2.0, 0.1, 0.2,  // below the score threshold
        // tile 1, origin (8, 0)
         2.5, 10.0, 4.0, 4.0, 0.7, 0.0,  // frame box (8.5, 8, 4, 4): IoU 14/18 with tile 0's best
         0.0,  0.0, 0.0, 0.0, 0.0, 0.0,
         0.0,  0.0, 0.0, 0.0, 0.0, 0.0,
         0.0,  0.0, 0.0, 0.0, 0.0, 0.0,
    ];
    let out = run("yolov8_tiny.onnx", "image", &[2, 4, 6], &input, &["output0"])?;
    assert_eq!(out[0].shape, [2, 6, 4]);

    let mut boxes = Vec::new();
    let (tile0, tile1) = out[0].data.split_at(24);
    decode_yolo(tile0, DetectionFormat::Yolov8, 2, 0.25, (0.0, 0.0), &mut boxes).unwrap();
    decode_yolo(tile1, DetectionFormat::Yolov8, 2, 0.25, (8.0, 0.0), &mut boxes).unwrap();
    assert_eq!(boxes.len(), 4, "{boxes:?}");
    nms_class_aware(&mut boxes, 0.5);
    let want = [boxed(0, [8.0, 8.0, 4.0, 4.0], 0.9), boxed(1, [27.0, 29.0, 6.0, 2.0], 0.3)];
    assert_eq!(boxes.len(), want.len(), "{boxes:?}");
    boxes.iter().zip(&want).for_each(|(g, w)| assert_defect(g, w));
    Ok(())
}

#[test]
fn anomalib_score_and_map_to_verdict_and_regions() -> TestResult {
    // Two 8 × 8 maps at 0.1; item 0 has an L of three hot pixels and one hot corner pixel.
    let mut input = vec![0.1f32; 2 * 64];
    input[8 + 2] = 0.7; // (2, 1)
    input[8 + 3] = 0.9; // (3, 1)
    input[16 + 3] = 0.6; // (3, 2)
    input[63] = 0.55; // (7, 7)
    input[64 + 10] = 0.45; // item 1: warm, not hot

    let out = run("anomalib_tiny.onnx", "input", &[2, 1, 8, 8], &input, &["pred_score", "anomaly_map"])?;
    let (scores, map) = (&out[0], &out[1]);
    assert_eq!(scores.shape, [2]);
    assert_eq!(map.shape, [2, 1, 8, 8]);
    assert_eq!(scores.data, [0.9, 0.45], "pred_score is the max of the map");

    let mut scratch = ComponentScratch::new();
    let mut defects = Vec::new();
    let anomalous = decode_anomaly(scores.data[0], &map.data[..64], 8, 8, 0.5, 0, &mut scratch, &mut defects);
    assert!(anomalous);
    let want = [
        region(0, [2.0, 1.0, 2.0, 2.0], 3.0, 0.9, (0.7 + 0.9 + 0.6) / 3.0),
        region(0, [7.0, 7.0, 1.0, 1.0], 1.0, 0.55, 0.55),
    ];
    assert_eq!(defects.len(), want.len(), "{defects:?}");
    defects.iter().zip(&want).for_each(|(g, w)| assert_defect(g, w));

    let anomalous = decode_anomaly(scores.data[1], &map.data[64..], 8, 8, 0.5, 0, &mut scratch, &mut defects);
    assert!(!anomalous);
    assert!(defects.is_empty(), "{defects:?}");
    Ok(())
}
