//! Which recipe judges each camera's frames, switched while the station runs.
//!
//! The camera thread stamps every frame it captures with its camera's recipe ([`RecipeSwitch::stamp`]),
//! and every later stage judges the frame by that stamp. So a switch takes effect between two
//! frames of a camera: frames captured before it are judged by the old recipe, every frame after
//! it by the new one, none by a mix, and none is lost.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU16, AtomicU64};

/// Per camera: the recipe asked for, the one its frames are stamped with, and since which frame.
pub struct RecipeSwitch {
    cameras: Vec<CameraRecipe>,
    recipes: usize,
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

    /// The index of the recipe named `name`.
    pub fn recipe_index(&self, name: &str) -> Option<u16> {
        self.recipe_names.iter().position(|n| n == name).map(|i| i as u16)
    }

    pub fn recipe_names(&self) -> &[String] {
        &self.recipe_names
    }

    pub fn camera_ids(&self) -> &[String] {
        &self.camera_ids
    }

    /// How many recipes there are.
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
        if usize::from(recipe) < self.recipes
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
            let firsts: Vec<Option<u64>> =
                cameras.iter().map(|&c| self.stamped(c).and_then(|(r, seq)| (r == recipe).then_some(seq))).collect();
            if firsts.iter().all(Option::is_some) || tokio::time::Instant::now() >= deadline {
                return firsts;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// The recipe camera `camera`'s frames are stamped with now, and the sequence number of its
    /// first frame under it.
    pub fn stamped(&self, camera: usize) -> Option<(u16, u64)> {
        let c = self.cameras.get(camera)?;
        let recipe = c.stamped.load(Acquire);
        Some((recipe, c.first_seq.load(Relaxed)))
    }
}

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
