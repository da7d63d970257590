//! Readiness: the station is ready when its model is loaded and warmed up, its pipeline runs, every
//! camera delivers frames, no stage has died, and the model's outputs are finite. Each part
//! releases its own latch; `/readyz` reads them all.
//!
//! All state is atomics: the pipeline threads release latches, the admin listener reads them, and
//! neither ever waits for the other.

use crate::pipeline::accounting::Accounting;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// One condition of readiness, set by the part it belongs to.
#[derive(Debug, Default)]
pub struct Latch(AtomicBool);

impl Latch {
    pub fn release(&self) {
        self.0.store(true, Relaxed);
    }
    /// Back to not ready (e.g. the pipeline is draining for shutdown).
    pub fn reset(&self) {
        self.0.store(false, Relaxed);
    }
    pub fn is_released(&self) -> bool {
        self.0.load(Relaxed)
    }
}

/// What `/readyz` checks.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Released by the station build once every inference session is checked and warmed up.
    pub model: Latch,
    /// Released when the pipeline threads start; reset once capture stops.
    pub pipeline: Latch,
    /// The station's counters, whose per-camera `up` flags tell which cameras deliver frames.
    cameras: OnceLock<Arc<Accounting>>,
    /// The first stage that ended unexpectedly, with why: the station cannot judge parts any
    /// more and never becomes ready again (the process exits and is restarted).
    failed_stage: OnceLock<String>,
}

/// Batches in a row whose outputs were not finite before the station stops reporting ready: one
/// bad batch is a bad frame, a run of them is a model or device that cannot judge any part.
pub const INVALID_OUTPUT_BATCHES_UNREADY: u64 = 3;

impl Readiness {
    /// Watch these cameras (the station's accounting); set once, at station build.
    pub fn watch_cameras(&self, accounting: Arc<Accounting>) {
        let _ = self.cameras.set(accounting);
    }

    /// A stage ended unexpectedly: readiness drops for good. Only the first failure is kept.
    pub fn stage_failed(&self, stage: &str, cause: &str) {
        let _ = self.failed_stage.set(format!("stage {stage} failed: {cause}"));
    }

    /// The first stage failure, if any (see [`Self::stage_failed`]).
    pub fn stage_failure(&self) -> Option<&str> {
        self.failed_stage.get().map(String::as_str)
    }

    /// The model has produced non-finite outputs for [`INVALID_OUTPUT_BATCHES_UNREADY`] batches in
    /// a row (and no clean batch since).
    pub fn outputs_invalid(&self) -> bool {
        self.cameras.get().is_some_and(|a| a.invalid_output_streak.load(Relaxed) >= INVALID_OUTPUT_BATCHES_UNREADY)
    }

    /// Every reason the station is not ready, in a fixed order; empty = ready.
    pub fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some(failure) = self.stage_failure() {
            reasons.push(failure.to_string());
        }
        if !self.model.is_released() {
            reasons.push("model not loaded and warmed up yet".to_string());
        }
        if !self.pipeline.is_released() {
            reasons.push("pipeline not running".to_string());
        }
        match self.cameras.get() {
            None => reasons.push("cameras not opened yet".to_string()),
            Some(accounting) => {
                for cam in &accounting.cameras {
                    if !cam.up.load(Relaxed) {
                        let why = cam.down_reason();
                        if why.is_empty() {
                            reasons.push(format!("camera {} is down", cam.id));
                        } else {
                            reasons.push(format!("camera {} is down: {why}", cam.id));
                        }
                    }
                }
                let streak = accounting.invalid_output_streak.load(Relaxed);
                if streak >= INVALID_OUTPUT_BATCHES_UNREADY {
                    reasons.push(format!(
                        "model outputs are not finite (NaN or infinity) in the last {streak} batches: every part fails safe"
                    ));
                }
            }
        }
        reasons
    }

    pub fn is_ready(&self) -> bool {
        self.failed_stage.get().is_none()
            && !self.outputs_invalid()
            && self.model.is_released()
            && self.pipeline.is_released()
            && self.cameras.get().is_some_and(|a| a.cameras.iter().all(|c| c.up.load(Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_part_has_released_its_latch() {
        let r = Readiness::default();
        assert_eq!(r.not_ready().len(), 3);
        r.model.release();
        r.pipeline.release();
        let accounting = Arc::new(Accounting::new(&["a".into(), "b".into()]));
        r.watch_cameras(Arc::clone(&accounting));
        assert_eq!(r.not_ready(), ["camera a is down: not opened yet", "camera b is down: not opened yet"]);
        accounting.cameras[0].up.store(true, Relaxed);
        accounting.cameras[1].up.store(true, Relaxed);
        assert!(r.is_ready() && r.not_ready().is_empty());
        r.pipeline.reset();
        assert!(!r.is_ready());
    }

    #[test]
    fn a_failed_stage_or_a_run_of_non_finite_outputs_is_not_ready() {
        let r = Readiness::default();
        r.model.release();
        r.pipeline.release();
        let accounting = Arc::new(Accounting::new(&["a".into()]));
        accounting.cameras[0].up.store(true, Relaxed);
        r.watch_cameras(Arc::clone(&accounting));
        assert!(r.is_ready());
        accounting.invalid_output_streak.store(INVALID_OUTPUT_BATCHES_UNREADY - 1, Relaxed);
        assert!(r.is_ready(), "a bad batch or two is a bad frame, not a bad model");
        accounting.invalid_output_streak.store(INVALID_OUTPUT_BATCHES_UNREADY, Relaxed);
        assert!(!r.is_ready() && r.not_ready()[0].contains("not finite"), "{:?}", r.not_ready());
        accounting.invalid_output_streak.store(0, Relaxed);
        assert!(r.is_ready(), "a clean batch makes it ready again");
        r.stage_failed("assemble", "panicked: boom");
        r.stage_failed("infer-0", "panicked: later");
        assert_eq!(r.not_ready(), ["stage assemble failed: panicked: boom"]);
        assert!(!r.is_ready());
    }
}
