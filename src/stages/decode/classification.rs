//! Classification: one item's class scores → the winning class and its score.

use super::segmentation::{sigmoid, softmax_strided};
use crate::model::manifest::Activation;

/// Apply `activation` to one item's `scores` in place (softmax over all classes, sigmoid per
/// class, or none) and return the index and score of the highest one. Ties go to the lower index;
/// NaN never wins unless every score is NaN (then class 0 with its NaN score).
///
/// # Panics
/// When `scores` is empty.
pub fn decode_classification(scores: &mut [f32], activation: Activation) -> (usize, f32) {
    assert!(!scores.is_empty(), "classification output has no classes");
    match activation {
        Activation::None => {}
        Activation::Sigmoid => scores.iter_mut().for_each(|v| *v = sigmoid(*v)),
        Activation::Softmax => softmax_strided(scores, 0, 1),
    }
    let mut best = 0;
    for (i, &v) in scores.iter().enumerate().skip(1) {
        if v > scores[best] || (scores[best].is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    (best, scores[best])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_without_activation() {
        let mut s = [0.1, 0.7, 0.2];
        assert_eq!(decode_classification(&mut s, Activation::None), (1, 0.7));
    }

    #[test]
    fn softmax_then_argmax() {
        // Logits (0, ln 3) → probabilities (1/4, 3/4).
        let mut s = [0.0, 3.0_f32.ln()];
        let (class, score) = decode_classification(&mut s, Activation::Softmax);
        assert_eq!(class, 1);
        assert!((score - 0.75).abs() < 1e-6);
        assert!((s[0] - 0.25).abs() < 1e-6);
    }

    #[test]
    fn sigmoid_then_argmax() {
        let mut s = [-1.0, 0.0, -2.0];
        assert_eq!(decode_classification(&mut s, Activation::Sigmoid), (1, 0.5));
    }

    #[test]
    fn ties_go_low_and_nan_loses() {
        assert_eq!(decode_classification(&mut [0.4, 0.4], Activation::None), (0, 0.4));
        assert_eq!(decode_classification(&mut [f32::NAN, 0.1], Activation::None), (1, 0.1));
        assert_eq!(decode_classification(&mut [0.1, f32::NAN], Activation::None), (0, 0.1));
    }
}
