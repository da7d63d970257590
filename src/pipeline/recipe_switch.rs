//! Which recipe judges each camera's frames, switched while the station runs.
//!
//! The camera thread stamps every frame it captures with its camera's recipe ([`RecipeSwitch::stamp`]),
//! and every later stage judges the frame by that stamp. So a switch takes effect between two
//! frames of a camera: frames captured before it are judged by the old recipe, every frame after
//! it by the new one, none by a mix, and none is lost.

use super::slots::Slots;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU16, AtomicU64};

/// Per camera: the recipe asked for, the one its frames are stamped with, and since which frame.
///
/// Frames are stamped with a *model slot*: each recipe runs in one slot at a time, and a model
/// installed for it while the station runs gets a new slot (the one before stays loaded, for
/// rollback). Recipes `0..R` start in slots `0..R`.
pub struct RecipeSwitch {
    cameras: Vec<CameraRecipe>,
    recipes: usize,
    /// Per recipe: the slot it runs in now, and the one before (`NO_SLOT`: none).
    current: Vec<AtomicU16>,
    previous: Vec<AtomicU16>,
    /// Per slot: its recipe.
    slot_recipe: Slots<u16>,
    /// Recipe names and camera ids, for commands that name them (default: numbers from 1).
    recipe_names: Vec<String>,
    camera_ids: Vec<String>,
}

struct CameraRecipe {
    wanted: AtomicU16,
    stamped: AtomicU16,
    /// Sequence number of the first frame stamped with `stamped`.
    first_seq: AtomicU64,
}

impl RecipeSwitch {
    /// Each camera starts with `starting[camera]`, one of `recipes` recipes.
    pub fn new(starting: &[u16], recipes: usize) -> Self {
        let cameras = starting
            .iter()
            .map(|&r| CameraRecipe {
                wanted: AtomicU16::new(r),
                stamped: AtomicU16::new(r),
                first_seq: AtomicU64::new(0),
            })
            .collect();
        Self {
            current: (0..recipes).map(|r| AtomicU16::new(r as u16)).collect(),
            previous: (0..recipes).map(|_| AtomicU16::new(NO_SLOT)).collect(),
            slot_recipe: Slots::from_vec((0..recipes as u16).collect()),
            recipe_names: (1..=recipes).map(|n| n.to_string()).collect(),
            camera_ids: (1..=starting.len()).map(|n| n.to_string()).collect(),
            cameras,
            recipes,
        }
    }

    /// Name the recipes (in index order) and the cameras (in config order).
    pub fn named(mut self, recipes: Vec<String>, cameras: Vec<String>) -> Self {
        if recipes.len() == self.recipes {
            self.recipe_names = recipes;
        }
        if cameras.len() == self.cameras.len() {
            self.camera_ids = cameras;
        }
        self
    }

    /// The slot the recipe named `name` runs in now.
    pub fn recipe_index(&self, name: &str) -> Option<u16> {
        let recipe = self.recipe_names.iter().position(|n| n == name)?;
        Some(self.current_slot(recipe))
    }

    /// The slot recipe `recipe` runs in now.
    pub fn current_slot(&self, recipe: usize) -> u16 {
        self.current.get(recipe).map_or(NO_SLOT, |s| s.load(Acquire))
    }

    /// The recipe whose model slot `slot` holds.
    pub fn recipe_of(&self, slot: u16) -> Option<u16> {
        self.slot_recipe.get(usize::from(slot)).copied()
    }

    /// Slot `slot` now holds recipe `recipe`'s model (installed while the station runs): the
    /// recipe runs there from now on, the slot before kept for [`Self::rollback`]. The cameras
    /// running the recipe are moved by the caller (see [`Self::move_cameras`]).
    pub fn install(&self, recipe: usize, slot: u16) -> Result<u16, &'static str> {
        let current = self.current.get(recipe).ok_or("no such recipe")?;
        self.slot_recipe.set(usize::from(slot), recipe as u16).map_err(|_| "that model slot is taken")?;
        let old = current.swap(slot, AcqRel);
        self.previous[recipe].store(old, Release);
        Ok(old)
    }

    /// Go back to the model recipe `recipe` ran before: returns (from, to) slots.
    pub fn rollback(&self, recipe: usize) -> Option<(u16, u16)> {
        let previous = self.previous.get(recipe)?.load(Acquire);
        if previous == NO_SLOT {
            return None;
        }
        let from = self.current[recipe].swap(previous, AcqRel);
        self.previous[recipe].store(from, Release);
        Some((from, previous))
    }

    /// The cameras asking for slot `from`: the ones to move when their recipe changes slot.
    pub fn cameras_on(&self, from: u16) -> Vec<usize> {
        (0..self.cameras.len()).filter(|&c| self.wanted(c) == from).collect()
    }

    pub fn recipe_names(&self) -> &[String] {
        &self.recipe_names
    }

    pub fn camera_ids(&self) -> &[String] {
        &self.camera_ids
    }

    /// How many recipes there are (model slots may be more).
    pub fn recipes(&self) -> usize {
        self.recipes
    }

    /// How many cameras there are.
    pub fn cameras(&self) -> usize {
        self.cameras.len()
    }

    /// Ask camera `camera` to judge its frames with `recipe` from its next capture on. Unknown
    /// cameras and recipes are the caller's to refuse; here they are ignored.
    pub fn request(&self, camera: usize, recipe: u16) {
        if self.recipe_of(recipe).is_some()
            && let Some(c) = self.cameras.get(camera)
        {
            c.wanted.store(recipe, Release);
        }
    }

    /// The recipe camera `camera` was last asked for.
    pub fn wanted(&self, camera: usize) -> u16 {
        self.cameras.get(camera).map_or(0, |c| c.wanted.load(Acquire))
    }

    /// The camera thread, for each frame it captures: the recipe that judges frame `seq`.
    pub fn stamp(&self, camera: usize, seq: u64) -> u16 {
        let Some(c) = self.cameras.get(camera) else { return 0 };
        let wanted = c.wanted.load(Acquire);
        if c.stamped.load(Relaxed) != wanted {
            // `first_seq` before `stamped`: whoever sees the new recipe stamped sees its first frame.
            c.first_seq.store(seq, Relaxed);
            c.stamped.store(wanted, Release);
        }
        wanted
    }

    /// Switch `cameras` to `recipe` and wait, up to `limit`, until each has stamped a frame with
    /// it. Returns per camera the first frame under it (`None`: no frame yet; its next one will
    /// be judged by it).
    pub async fn switch_and_wait(
        &self,
        recipe: u16,
        cameras: &[usize],
        limit: std::time::Duration,
    ) -> Vec<Option<u64>> {
        for &c in cameras {
            self.request(c, recipe);
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let firsts = self.first_frames(recipe, cameras);
            if firsts.iter().all(Option::is_some) || tokio::time::Instant::now() >= deadline {
                return firsts;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// [`Self::switch_and_wait`] for a thread outside any async runtime (a teach job): the same
    /// wait, on a runtime of its own for the call.
    pub fn switch_and_wait_blocking(
        &self,
        recipe: u16,
        cameras: &[usize],
        limit: std::time::Duration,
    ) -> Vec<Option<u64>> {
        match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(runtime) => runtime.block_on(self.switch_and_wait(recipe, cameras, limit)),
            Err(e) => {
                // No runtime (out of threads or descriptors): switch without waiting.
                tracing::warn!(error = %e, "recipe switch: not waiting for the cameras' first frames");
                for &c in cameras {
                    self.request(c, recipe);
                }
                self.first_frames(recipe, cameras)
            }
        }
    }

    /// Per camera: the first frame stamped with `recipe`, if its frames are stamped with it now.
    fn first_frames(&self, recipe: u16, cameras: &[usize]) -> Vec<Option<u64>> {
        cameras.iter().map(|&c| self.stamped(c).and_then(|(r, seq)| (r == recipe).then_some(seq))).collect()
    }

    /// The recipe camera `camera`'s frames are stamped with now, and the sequence number of its
    /// first frame under it.
    pub fn stamped(&self, camera: usize) -> Option<(u16, u64)> {
        let c = self.cameras.get(camera)?;
        let recipe = c.stamped.load(Acquire);
        Some((recipe, c.first_seq.load(Relaxed)))
    }
}

/// No slot (a recipe with no previous model).
const NO_SLOT: u16 = u16::MAX;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_takes_effect_at_the_next_frame_and_says_which() {
        let s = RecipeSwitch::new(&[0, 1], 2);
        assert_eq!(s.stamp(0, 0), 0);
        assert_eq!(s.stamp(1, 0), 1);
        s.request(0, 1);
        assert_eq!(s.stamped(0), Some((0, 0)), "not before a frame is captured");
        assert_eq!(s.stamp(0, 7), 1);
        assert_eq!(s.stamp(0, 8), 1);
        assert_eq!(s.stamped(0), Some((1, 7)), "frame 7 was the first under recipe 1");
        s.request(0, 5); // no such recipe
        assert_eq!(s.stamp(0, 9), 1);
        assert_eq!(s.stamped(1), Some((1, 0)));
    }
}
