//! How a taught model's anomaly map is smoothed and its image score read from it, chosen by
//! validation like the input recipe: products differ (research round 11, docs/TEACH_RESEARCH.md:
//! on real defects elpv's mono cells, with thin cracks, do better with a sharp map and the
//! hottest 1%, its poly cells and MTD with the default). The calibration model outputs its patch
//! scores on the grid ([`onnx::GRID_SCORES`]); each candidate post-processing then rescores the
//! same validation images with [`onnx::post_model`], the very subgraph a model taught with it
//! runs, without running the backbone again.
//!
//! Only **labelled defects** judge here: the synthetic ones are small painted marks, which a sharp
//! map always catches better (validation AUROC 0.81 → 0.86 on MTD's training goods), while MTD's
//! real defects lose with it (test image AUROC 0.984 → 0.979 when the synthetic ones chose). So
//! without at least [`MIN_LABELLED`] labelled defects the default (or what the user fixed) stays.

use super::backbone::Backbone;
use super::onnx;
pub use super::operating_point::MIN_LABELLED;
use super::operating_point::Scores;
use super::recipe::Recipe;
use anyhow::{Result, anyhow, bail};
use ort::session::Session;
use ort::value::TensorRef;

/// A map smoothing and image-score rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Post {
    /// Gaussian smoothing of the map, input pixels.
    pub blur_sigma_px: f32,
    /// Image score = mean of this share of the map's highest pixels.
    pub top_fraction: f32,
}

impl Post {
    pub fn describe(&self) -> String {
        // Through f64 and rounded, so 0.03 reads "3%", not "3.0000002%".
        let pct = (f64::from(self.top_fraction) * 1e6).round() / 1e4;
        format!("blur {} px, top {pct}%", self.blur_sigma_px)
    }

    /// Whether a model of `recipe` can use it: the blur kernel (radius 4σ) must fit the map.
    pub fn fits(&self, recipe: Recipe) -> bool {
        onnx::blur_fits(self.blur_sigma_px, recipe.grid, recipe.height as usize, recipe.width as usize)
    }
}

/// The default: research rounds 1–6 on MTD; best or within noise on its poly cells too.
pub const DEFAULT: Post = Post { blur_sigma_px: 16.0, top_fraction: 0.05 };

/// Tried against the default on the winning recipe: a sharp map (the blur within a grid cell)
/// with the score from its hottest 1% or 5%, for defects thinner than a patch (round 11: elpv
/// mono cells +0.006–0.009 validation AUROC in each of three folds).
pub const ALTERNATIVES: [Post; 2] =
    [Post { blur_sigma_px: 4.0, top_fraction: 0.01 }, Post { blur_sigma_px: 4.0, top_fraction: 0.05 }];

/// What the user fixed (`--blur-sigma`, `--top-fraction`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fixed {
    pub blur_sigma_px: Option<f32>,
    pub top_fraction: Option<f32>,
}

impl Fixed {
    fn apply(&self, p: Post) -> Post {
        Post {
            blur_sigma_px: self.blur_sigma_px.unwrap_or(p.blur_sigma_px),
            top_fraction: self.top_fraction.unwrap_or(p.top_fraction),
        }
    }

    /// The post-processing recipes are taught with before the search: the default with what
    /// the user fixed.
    pub fn starting(&self) -> Post {
        self.apply(DEFAULT)
    }

    /// Whether anything is left to choose: not both settings fixed.
    pub fn leaves_choice(&self) -> bool {
        self.blur_sigma_px.is_none() || self.top_fraction.is_none()
    }
}

/// The alternatives to try against [`Fixed::starting`] for a model of `recipe`: none when both
/// settings are fixed; those that fit the input and differ from the start.
pub fn alternatives(fixed: Fixed, recipe: Recipe) -> Vec<Post> {
    if !fixed.leaves_choice() {
        return Vec::new();
    }
    let start = fixed.starting();
    let mut out: Vec<Post> = Vec::new();
    for p in ALTERNATIVES.map(|p| fixed.apply(p)) {
        if p != start && p.fits(recipe) && !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Each validation image's patch scores on the grid: its tiles' `[1, h, w]` grids, concatenated.
#[derive(Clone, Debug, Default)]
pub struct GridScores {
    pub goods: Vec<Vec<f32>>,
    pub synthetic: Vec<Vec<f32>>,
    pub labelled: Vec<Vec<f32>>,
}

/// The validation images' scores under `post`, from their patch scores under a model of `recipe`.
/// With `place_scale`, each place's patch scores are first divided by it
/// ([`super::place_scale`]).
pub fn rescore(
    backbone: &Backbone,
    recipe: Recipe,
    post: Post,
    place_scale: Option<&[f32]>,
    grids: &GridScores,
    threads: usize,
) -> Result<Scores> {
    let shape = recipe.shape();
    let model = onnx::post_model(backbone, shape, recipe.grid, post.blur_sigma_px, post.top_fraction, place_scale)
        .map_err(|e| anyhow!(e))?;
    let mut session = super::learn::session_from_bytes(&model, threads)?;
    let (gh, gw) = recipe.patch_grid();
    let mut score_all = |images: &[Vec<f32>]| -> Result<Vec<f32>> {
        images.iter().map(|grid| image_score(&mut session, grid, gh, gw)).collect()
    };
    Ok(Scores {
        goods: score_all(&grids.goods)?,
        synthetic: score_all(&grids.synthetic)?,
        labelled: score_all(&grids.labelled)?,
    })
}

/// One image's score: the highest of its tiles', as the calibration model's image scores are.
fn image_score(session: &mut Session, grid: &[f32], gh: usize, gw: usize) -> Result<f32> {
    let tiles = grid.len() / (gh * gw);
    if tiles == 0 || tiles * gh * gw != grid.len() {
        bail!("{} patch scores are not whole {gw}×{gh} grids", grid.len());
    }
    let tensor = TensorRef::from_array_view(([tiles, 1, gh, gw], grid))?;
    let outputs = session.run(ort::inputs![onnx::GRID_SCORES => tensor])?;
    let (_, values) = outputs[onnx::SCORE].try_extract_tensor::<f32>()?;
    super::learn::highest_finite_score(values, "the post-processing", "a validation image")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InputContrast, InputMode};

    fn recipe(side: u32) -> Recipe {
        Recipe {
            mode: InputMode::Resize,
            width: side,
            height: side,
            grid: 16,
            contrast: InputContrast::Standardised,
            channels: 3,
            placed: false,
        }
    }

    #[test]
    fn alternatives_respect_what_the_user_fixed_and_the_input() {
        let free = Fixed::default();
        assert_eq!(free.starting(), DEFAULT);
        assert_eq!(alternatives(free, recipe(256)), ALTERNATIVES.to_vec());
        let both = Fixed { blur_sigma_px: Some(8.0), top_fraction: Some(0.02) };
        assert!(alternatives(both, recipe(256)).is_empty(), "both fixed: nothing to choose");
        assert!(!both.leaves_choice() && free.leaves_choice());
        // A fixed share: only the blur is tried, each once.
        let top = Fixed { top_fraction: Some(0.05), ..Fixed::default() };
        assert_eq!(alternatives(top, recipe(256)), vec![Post { blur_sigma_px: 4.0, top_fraction: 0.05 }]);
        // A fixed blur equal to the alternatives': the share alone.
        let blur = Fixed { blur_sigma_px: Some(4.0), ..Fixed::default() };
        assert_eq!(blur.starting(), Post { blur_sigma_px: 4.0, top_fraction: 0.05 });
        assert_eq!(alternatives(blur, recipe(256)), vec![Post { blur_sigma_px: 4.0, top_fraction: 0.01 }]);
        // A blur that does not fit a small input is not tried.
        let wide = Fixed { blur_sigma_px: Some(20.0), ..Fixed::default() };
        assert!(alternatives(wide, recipe(64)).is_empty());
        assert_eq!(alternatives(wide, recipe(256)), vec![Post { blur_sigma_px: 20.0, top_fraction: 0.01 }]);
        assert!(Post { blur_sigma_px: 8.0, top_fraction: 0.05 }.fits(recipe(64)), "radius 32 px, side 64");
        assert!(!Post { blur_sigma_px: 20.0, top_fraction: 0.05 }.fits(recipe(64)), "radius 5 cells, 4 cells");
        assert!(DEFAULT.fits(recipe(128)), "on the 8-cell grid: radius 4 cells");
        assert!(!DEFAULT.fits(recipe(64)), "on the 4-cell grid: radius 4 cells");
        assert_eq!(Post { blur_sigma_px: 4.0, top_fraction: 0.03 }.describe(), "blur 4 px, top 3%");
    }
}
