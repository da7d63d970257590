//! The decision: defects + per-class rules + regions of interest → OK / NG, and which defects
//! caused it. Pure and table-tested; the fail-safe verdicts (inference error, timeout) are set by
//! the pipeline, which knows about time and errors.

use crate::config::RuleConfig;
use crate::stages::decode::Defect;

/// A rule resolved against the model's class list.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    pub min_score: f32,
    pub min_area_px: f32,
    pub max_count: u32,
}

/// A class with no rule (and no `*` rule) rejects on any defect: the safe default.
const STRICT: Rule = Rule { min_score: 0.0, min_area_px: 0.0, max_count: 0 };

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
    Rule { min_score: r.min_score, min_area_px: r.min_area_px, max_count: r.max_count }
}

/// A verdict the pipeline can reach for a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Ng,
    Failsafe(FailsafeCause),
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Ng => "NG",
            Verdict::Failsafe(_) => "FAILSAFE",
        }
    }
}

/// Why the station could not decide a part in time or at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailsafeCause {
    InferenceError,
    Timeout,
}

impl FailsafeCause {
    pub fn as_str(self) -> &'static str {
        match self {
            FailsafeCause::InferenceError => "inference_error",
            FailsafeCause::Timeout => "timeout",
        }
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
/// whether `defects[i]` passed its class's minimums (and so counts towards `max_count`).
/// `class_counts` is scratch space (one slot per class) reused between calls.
pub fn decide(
    defects: &mut Vec<Defect>,
    rois: &[[u32; 4]],
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
        let counts = d.max_score >= rule.min_score && d.area_px >= rule.min_area_px;
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
        Defect { class, x, y: 10.0, w: 4.0, h: 4.0, area_px: area, max_score: score, mean_score: score }
    }

    fn rule(class: &str, min_score: f32, min_area_px: f32, max_count: u32) -> RuleConfig {
        RuleConfig { class: class.into(), min_score, min_area_px, max_count }
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
            assert_eq!(decide(&mut defects, rois, &rules, &mut counted, &mut scratch), verdict, "case {i}");
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
}
