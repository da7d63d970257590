//! Readiness: the station is ready when its model is loaded and warmed up, its pipeline runs, and
//! every camera delivers frames. Each part releases its own latch; `/readyz` reads them all.
//!
//! All state is atomics: the pipeline threads release latches, the admin listener reads them, and
//! neither ever waits for the other.

use crate::topology::accounting::Accounting;
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
}

impl Readiness {
    /// Watch these cameras (the station's accounting); set once, at station build.
    pub fn watch_cameras(&self, accounting: Arc<Accounting>) {
        let _ = self.cameras.set(accounting);
    }

    /// Every reason the station is not ready, in a fixed order; empty = ready.
    pub fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
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
                        reasons.push(format!("camera {} is down", cam.id));
                    }
                }
            }
        }
        reasons
    }

    pub fn is_ready(&self) -> bool {
        self.model.is_released()
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
        assert_eq!(r.not_ready(), ["camera a is down", "camera b is down"]);
        accounting.cameras[0].up.store(true, Relaxed);
        accounting.cameras[1].up.store(true, Relaxed);
        assert!(r.is_ready() && r.not_ready().is_empty());
        r.pipeline.reset();
        assert!(!r.is_ready());
    }
}
