//! The decision: defects + per-class rules + regions of interest (+ the camera's millimetres per
//! pixel, for rules in mm) → OK / NG, and which defects caused it. Pure and table-tested; the fail-safe verdicts (inference error, timeout) are set by
//! the pipeline, which knows about time and errors.

use crate::config::RuleConfig;
use crate::pipeline::{Defect, Verdict};

/// A rule resolved against the model's class list. A defect counts when its score, area (px and
/// mm²) reach the minimums and it is long enough (`min_length_mm`) or too wide to tolerate
/// (`max_width_mm`); the part is NG when more than `max_count` defects of the class count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    pub min_score: f32,
    pub min_area_px: f32,
    pub min_area_mm2: f32,
    pub min_length_mm: f32,
    /// `INFINITY` when unset.
    pub max_width_mm: f32,
    pub max_count: u32,
}

impl Rule {
    /// Whether any criterion is in millimetres (the camera then needs a scale).
    pub fn uses_mm(&self) -> bool {
        self.min_area_mm2 > 0.0 || self.min_length_mm > 0.0 || self.max_width_mm.is_finite()
    }

    /// Whether a defect counts under this rule, at `mm_per_px` on the surface. Without a scale
    /// the mm criteria are not applied, so the defect counts when the others pass: the strict
    /// side (`linesight check` refuses mm rules for a camera without a scale anyway).
    pub fn counts(&self, d: &Defect, mm_per_px: Option<f32>) -> bool {
        if d.max_score < self.min_score || d.area_px < self.min_area_px {
            return false;
        }
        match mm_per_px {
            Some(s) if self.uses_mm() => {
                let mm = d.in_mm(s);
                mm.area_mm2 >= self.min_area_mm2
                    && (mm.length_mm >= self.min_length_mm || mm.width_mm > self.max_width_mm)
            }
            _ => true,
        }
    }
}

/// A class with no rule (and no `*` rule) rejects on any defect: the safe default.
const STRICT: Rule = Rule {
    min_score: 0.0,
    min_area_px: 0.0,
    min_area_mm2: 0.0,
    min_length_mm: 0.0,
    max_width_mm: f32::INFINITY,
    max_count: 0,
};

/// Rules indexed by class index.
#[derive(Clone, Debug)]
pub struct Rules {
    per_class: Vec<Rule>,
}

impl Rules {
    /// Resolve config rules against the model's classes. Unknown class names are an error that
    /// lists the model's classes.
    pub fn resolve(rules: &[RuleConfig], classes: &[String]) -> Result<Self, String> {
        let wildcard = rules.iter().find(|r| r.class == "*").map(to_rule).unwrap_or(STRICT);
        let mut per_class = vec![wildcard; classes.len()];
        for r in rules.iter().filter(|r| r.class != "*") {
            let Some(i) = classes.iter().position(|c| *c == r.class) else {
                return Err(format!(
                    "rule for class {:?}: the model has no such class (its classes: {})",
                    r.class,
                    classes.join(", ")
                ));
            };
            per_class[i] = to_rule(r);
        }
        Ok(Self { per_class })
    }

    pub fn for_class(&self, class: u16) -> Rule {
        self.per_class.get(class as usize).copied().unwrap_or(STRICT)
    }
}

fn to_rule(r: &RuleConfig) -> Rule {
    Rule {
        min_score: r.min_score,
        min_area_px: r.min_area_px,
        min_area_mm2: r.min_area_mm2.unwrap_or(0.0),
        min_length_mm: r.min_length_mm.unwrap_or(0.0),
        max_width_mm: r.max_width_mm.unwrap_or(f32::INFINITY),
        max_count: r.max_count,
    }
}

/// True when the defect's centre lies in one of the regions (or there are no regions).
pub fn in_roi(d: &Defect, rois: &[[u32; 4]]) -> bool {
    if rois.is_empty() {
        return true;
    }
    let (cx, cy) = (d.x + d.w / 2.0, d.y + d.h / 2.0);
    rois.iter().any(|r| {
        let (x, y, w, h) = (r[0] as f32, r[1] as f32, r[2] as f32, r[3] as f32);
        cx >= x && cx < x + w && cy >= y && cy < y + h
    })
}

/// Decide a part. Defects outside every ROI are removed from `defects`; `counted[i]` tells
/// whether `defects[i]` passed its class's rule (and so counts towards `max_count`).
/// `mm_per_px` is the camera's scale on the inspected surface, for rules in mm.
/// `class_counts` is scratch space (one slot per class) reused between calls.
pub fn decide(
    defects: &mut Vec<Defect>,
    rois: &[[u32; 4]],
    mm_per_px: Option<f32>,
    rules: &Rules,
    counted: &mut Vec<bool>,
    class_counts: &mut Vec<u32>,
) -> Verdict {
    defects.retain(|d| in_roi(d, rois));
    counted.clear();
    class_counts.clear();
    class_counts.resize(rules.per_class.len().max(1), 0);
    let mut ng = false;
    for d in defects.iter() {
        let rule = rules.for_class(d.class);
        let counts = rule.counts(d, mm_per_px);
        counted.push(counts);
        if counts {
            let slot = (d.class as usize).min(class_counts.len() - 1);
            class_counts[slot] += 1;
            if class_counts[slot] > rule.max_count {
                ng = true;
            }
        }
    }
    if ng { Verdict::Ng } else { Verdict::Ok }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defect(class: u16, x: f32, score: f32, area: f32) -> Defect {
        Defect { area_px: area, ..Defect::from_box(class, x, 10.0, 4.0, 4.0, score) }
    }

    fn rule(class: &str, min_score: f32, min_area_px: f32, max_count: u32) -> RuleConfig {
        RuleConfig { class: class.into(), min_score, min_area_px, max_count, ..RuleConfig::default() }
    }

    /// (defects, regions of interest, expected verdict, expected `counted` flags)
    type Case<'a> = (Vec<Defect>, &'a [[u32; 4]], Verdict, Vec<bool>);

    fn classes() -> Vec<String> {
        vec!["scratch".into(), "pit".into()]
    }

    #[test]
    fn decision_table() {
        let rules = Rules::resolve(&[rule("scratch", 0.5, 20.0, 0), rule("pit", 0.3, 0.0, 1)], &classes()).unwrap();
        let none: &[[u32; 4]] = &[];
        // (defects, rois, expected verdict, expected counted flags)
        let cases: Vec<Case> = vec![
            (vec![], none, Verdict::Ok, vec![]),
            (vec![defect(0, 0.0, 0.9, 30.0)], none, Verdict::Ng, vec![true]),
            (vec![defect(0, 0.0, 0.4, 30.0)], none, Verdict::Ok, vec![false]), // score too low
            (vec![defect(0, 0.0, 0.9, 10.0)], none, Verdict::Ok, vec![false]), // too small
            (vec![defect(1, 0.0, 0.9, 1.0)], none, Verdict::Ok, vec![true]),   // one pit tolerated
            (vec![defect(1, 0.0, 0.9, 1.0), defect(1, 50.0, 0.9, 1.0)], none, Verdict::Ng, vec![true, true]),
            (vec![defect(0, 0.0, 0.9, 30.0)], &[[100, 0, 50, 50]], Verdict::Ok, vec![]), // outside ROI
            (vec![defect(0, 100.0, 0.9, 30.0)], &[[100, 0, 50, 50]], Verdict::Ng, vec![true]),
        ];
        for (i, (mut defects, rois, verdict, flags)) in cases.into_iter().enumerate() {
            let mut counted = Vec::new();
            let mut scratch = Vec::new();
            assert_eq!(decide(&mut defects, rois, None, &rules, &mut counted, &mut scratch), verdict, "case {i}");
            assert_eq!(counted, flags, "case {i}");
        }
    }

    #[test]
    fn classes_without_rules_reject_on_any_defect_unless_a_wildcard_says_otherwise() {
        let strict = Rules::resolve(&[], &classes()).unwrap();
        assert_eq!(strict.for_class(1), STRICT);
        let lenient = Rules::resolve(&[rule("*", 0.8, 0.0, 0)], &classes()).unwrap();
        assert_eq!(lenient.for_class(1).min_score, 0.8);
    }

    #[test]
    fn unknown_class_names_are_refused_with_the_known_ones() {
        let err = Rules::resolve(&[rule("dent", 0.5, 0.0, 0)], &classes()).unwrap_err();
        assert!(err.contains("dent") && err.contains("scratch, pit"), "{err}");
    }

    /// A scratch of `length` × `width` pixels.
    fn scratch(length: f32, width: f32) -> Defect {
        Defect { length_px: length, width_px: width, area_px: length * width, ..defect(0, 0.0, 0.9, 0.0) }
    }

    #[test]
    fn millimetre_rules_use_the_camera_scale() {
        // 0.1 mm/px. Scratches count from 2 mm long, or when wider than 0.5 mm; pits from 0.5 mm².
        let scratch_rule =
            RuleConfig { min_length_mm: Some(2.0), max_width_mm: Some(0.5), ..rule("scratch", 0.5, 0.0, 0) };
        let pit_rule = RuleConfig { min_area_mm2: Some(0.5), ..rule("pit", 0.5, 0.0, 0) };
        let rules = Rules::resolve(&[scratch_rule, pit_rule], &classes()).unwrap();
        let s = Some(0.1);
        let pit = |area_px: f32| Defect { area_px, ..defect(1, 0.0, 0.9, 0.0) };
        let cases = [
            (scratch(25.0, 2.0), s, true),    // 2.5 mm long
            (scratch(15.0, 2.0), s, false),   // 1.5 mm long, 0.2 mm wide: tolerated
            (scratch(15.0, 6.0), s, true),    // short but 0.6 mm wide
            (scratch(15.0, 2.0), None, true), // no scale: mm criteria cannot clear it
            (pit(60.0), s, true),             // 0.6 mm²
            (pit(40.0), s, false),            // 0.4 mm²
            (pit(40.0), Some(0.2), true),     // same pixels, coarser scale: 1.6 mm²
        ];
        for (i, (d, scale, want)) in cases.into_iter().enumerate() {
            let (mut ds, mut counted, mut cc) = (vec![d], Vec::new(), Vec::new());
            decide(&mut ds, &[], scale, &rules, &mut counted, &mut cc);
            assert_eq!(counted, [want], "case {i}: {d:?}");
        }
        assert!(rules.for_class(0).uses_mm() && !STRICT.uses_mm());
    }
}
