//! Each recipe's image-score threshold (anomaly models), changeable while the station runs: the
//! assembler reads it for every frame it decides (one atomic load), so a change takes effect
//! from the next frame decided.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};

/// By recipe index: the threshold in force, or none (a model without an image score).
pub struct LiveThresholds {
    bits: Vec<AtomicU32>,
}

/// Stored for a recipe without a threshold (no finite threshold has these bits).
const NONE: u32 = u32::MAX;

impl LiveThresholds {
    /// Room for every model slot (see `pipeline::slots`); `initial` fills the first ones.
    pub fn new(initial: &[Option<f32>]) -> Self {
        let bits = (0..super::slots::MAX_SLOTS)
            .map(|i| {
                AtomicU32::new(initial.get(i).copied().flatten().filter(|t| t.is_finite()).map_or(NONE, f32::to_bits))
            })
            .collect();
        Self { bits }
    }

    /// A newly installed slot's threshold (none for a model without one).
    pub fn install(&self, slot: usize, threshold: Option<f32>) {
        if let Some(b) = self.bits.get(slot) {
            b.store(threshold.filter(|t| t.is_finite()).map_or(NONE, f32::to_bits), Release);
        }
    }
    /// The threshold of recipe `recipe` now.
    pub fn get(&self, recipe: usize) -> Option<f32> {
        let bits = self.bits.get(recipe)?.load(Acquire);
        (bits != NONE).then(|| f32::from_bits(bits))
    }

    /// Set recipe `recipe`'s threshold; returns the one it replaces. Refused (`Err`) for a recipe
    /// without a threshold, an unknown one, or a value that is not finite (a NaN threshold would
    /// make every comparison fail safe, an infinite one would pass every part).
    pub fn set(&self, recipe: usize, threshold: f32) -> Result<f32, &'static str> {
        self.check(recipe, threshold)?;
        let old = self.bits[recipe].swap(threshold.to_bits(), AcqRel);
        Ok(f32::from_bits(old))
    }

    /// Whether [`Self::set`] would take `threshold` for recipe `recipe`.
    pub fn check(&self, recipe: usize, threshold: f32) -> Result<(), &'static str> {
        if !threshold.is_finite() {
            return Err("the threshold must be a finite number");
        }
        let slot = self.bits.get(recipe).ok_or("no such recipe")?;
        if slot.load(Acquire) == NONE {
            return Err(
                "this recipe's model has no image-score threshold (not an anomaly model): change its rules instead",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_change_only_to_finite_values_where_there_is_one() {
        let t = LiveThresholds::new(&[Some(1.5), None]);
        assert_eq!(t.get(0), Some(1.5));
        assert_eq!(t.set(0, 2.0), Ok(1.5));
        assert_eq!(t.get(0), Some(2.0));
        assert!(t.set(0, f32::NAN).is_err() && t.set(0, f32::INFINITY).is_err());
        assert!(t.set(1, 1.0).is_err(), "no threshold to change");
        assert_eq!(t.get(1), None);
        assert!(t.set(2, 1.0).is_err() && t.get(2).is_none());
        assert!(t.set(super::super::slots::MAX_SLOTS, 1.0).is_err());
    }
}
