//! The recipes teach chooses between: how images become model inputs (squashed, resized to an
//! input of their own aspect ratio, or tiled), at what size, on which patch grid, and whether each
//! input's contrast is standardised. Candidates follow from the good images' geometry; options
//! the user gave are kept fixed.

use super::onnx::InputShape;
use crate::config::{InputContrast, InputMode};

/// Input sides teach tries when `--size` is not given (see [`crate::config::TEACH_SIZES`]).
pub const SIZES: [u32; 3] = crate::config::TEACH_SIZES;
/// Tile side when tiling large frames.
pub const TILE: u32 = crate::config::TEACH_TILE;
/// Images whose long side is at least this many times their short side also get inputs of their
/// own aspect ratio (squashing a 2.5:1 frame square distorts its defects).
pub const ASPECT_FOR_RECT: f64 = 1.3;
/// Frames whose short side is at least this many tiles also get a tiled candidate (small defects
/// in large frames shrink away when squashed).
pub const TILES_FOR_TILING: u32 = 2;

/// Patch grid stride teach starts from; the finer [`FINE_GRID`] is tried on the winner.
pub const GRID: usize = 16;
/// The finer patch grid: 4× the patches, so a 4× smaller bank at the same run-time cost, for
/// defects of a few pixels.
pub const FINE_GRID: usize = 8;
/// Contrast handling teach starts from; the other one is tried on the winner. Standardised won
/// on the validation parts of every shared set at 256² (docs/TEACH_RESEARCH.md, round 8); the
/// raw input stays a candidate for products whose whole-part brightness is itself a defect.
pub const CONTRAST: InputContrast = InputContrast::Standardised;

/// One way to feed images to the model, and the grid its patches are scored on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipe {
    pub mode: InputMode,
    pub width: u32,
    pub height: u32,
    /// Input pixels per scored patch.
    pub grid: usize,
    pub contrast: InputContrast,
    /// Model input channels: 1 when every good image is gray and the backbone can fold its colour
    /// input (see `onnx::gray_input_supported`), else 3 (RGB; gray frames repeated).
    pub channels: usize,
    /// Patches scored by their place's Gaussian ([`super::placed`]) instead of the bank.
    pub placed: bool,
}

impl Recipe {
    pub fn describe(&self) -> String {
        let mode = match self.mode {
            InputMode::Resize => "resize",
            InputMode::Tile => "tile",
        };
        let scorer = if self.placed { " placed" } else { "" };
        format!("{mode} {}×{} grid {} {}{scorer}", self.width, self.height, self.grid, self.contrast.name())
    }

    /// The graphs' input for this recipe.
    pub fn shape(&self) -> InputShape {
        InputShape {
            channels: self.channels,
            height: self.height as usize,
            width: self.width as usize,
            contrast: self.contrast,
        }
    }

    /// Rows and columns of the patch grid one input is scored on.
    pub fn patch_grid(&self) -> (usize, usize) {
        (self.height as usize / self.grid, self.width as usize / self.grid)
    }

    /// Whether every input is a whole part, so that a grid place is the same place of every part
    /// (not a tile, which can come from anywhere in the frame).
    pub fn fixed_places(&self) -> bool {
        self.mode != InputMode::Tile
    }

    /// Model input pixels per image of `geometry` (the feature cost).
    pub fn pixels_per_image(&self, geometry: Geometry) -> u64 {
        let per_input = u64::from(self.width) * u64::from(self.height);
        match self.mode {
            InputMode::Resize => per_input,
            InputMode::Tile => {
                let tiles = |side: u32, tile: u32| side.div_ceil(tile.saturating_sub(32).max(1)).max(1);
                per_input * u64::from(tiles(geometry.width, self.width) * tiles(geometry.height, self.height))
            }
        }
    }
}

/// The typical good image: median width and height.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub width: u32,
    pub height: u32,
}

impl Geometry {
    /// Median width and height of the images' sizes (each median taken separately).
    pub fn median(sizes: &[(u32, u32)]) -> Self {
        let median = |mut v: Vec<u32>| {
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(1).max(1)
        };
        Self { width: median(sizes.iter().map(|s| s.0).collect()), height: median(sizes.iter().map(|s| s.1).collect()) }
    }

    fn aspect(&self) -> f64 {
        f64::from(self.width) / f64::from(self.height)
    }
}

/// What the user fixed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fixed {
    pub mode: Option<InputMode>,
    pub size: Option<u32>,
    pub grid: Option<usize>,
    pub contrast: Option<InputContrast>,
    /// `Some(true)`: score by the places' Gaussians; `Some(false)`: by the bank.
    pub scorer: Option<bool>,
}

/// The candidates for images of `geometry`, cheapest first, on `channels` input channels. Input
/// sides are multiples of `multiple_of` (the backbone's).
pub fn candidates(geometry: Geometry, fixed: Fixed, multiple_of: u32, channels: usize) -> Vec<Recipe> {
    let m = multiple_of.max(1);
    let grid = fixed.grid.unwrap_or(GRID);
    let contrast = fixed.contrast.unwrap_or(CONTRAST);
    let round = |v: f64| ((v / f64::from(m)).round() as u32).max(2) * m;
    let sizes: Vec<u32> = fixed.size.map_or_else(|| SIZES.to_vec(), |s| vec![s]);
    let mut out = Vec::new();
    if fixed.mode != Some(InputMode::Tile) {
        let aspect = geometry.aspect();
        let elongated = aspect.max(1.0 / aspect) >= ASPECT_FOR_RECT;
        for &s in &sizes {
            if elongated && fixed.size.is_none() {
                let root = aspect.sqrt();
                out.push(Recipe {
                    mode: InputMode::Resize,
                    width: round(f64::from(s) * root),
                    height: round(f64::from(s) / root),
                    grid,
                    contrast,
                    channels,
                    placed: fixed.scorer == Some(true),
                });
            }
            // Square squash: always when the images are square-ish or the size is fixed, else
            // once, at the middle size, to compare against.
            if !elongated || fixed.size.is_some() || s == SIZES[1] {
                out.push(Recipe {
                    mode: InputMode::Resize,
                    width: s,
                    height: s,
                    grid,
                    contrast,
                    channels,
                    placed: fixed.scorer == Some(true),
                });
            }
        }
    }
    let tile = fixed.size.unwrap_or(TILE);
    let large = geometry.width.min(geometry.height) >= TILES_FOR_TILING * tile;
    if fixed.mode == Some(InputMode::Tile) || (fixed.mode.is_none() && large) {
        out.push(Recipe { mode: InputMode::Tile, width: tile, height: tile, grid, contrast, channels, placed: false });
    }
    out.sort_by_key(|r| r.pixels_per_image(geometry));
    out.dedup();
    out
}

/// The default among `candidates`: the largest input fed whole (squashed, or at the images' own
/// aspect ratio), on the default grid and contrast handling. Round 8 found 256² standardised on
/// grid 16 the best or within noise on the validation parts of every shared set, so the search
/// leaves it only on confident evidence ([`super::selection`]). `None` when every candidate is
/// tiled.
pub fn preferred(candidates: &[Recipe], geometry: Geometry) -> Option<Recipe> {
    candidates
        .iter()
        .filter(|r| r.mode == InputMode::Resize)
        .max_by_key(|r| (r.pixels_per_image(geometry), r.width != r.height))
        .copied()
}

/// The refinements tried on the winner of [`candidates`]: the same input on the finer grid (when
/// the grid was not fixed) and with the other contrast handling (when that was not fixed).
pub fn refinements(winner: Recipe, fixed: Fixed) -> Vec<Recipe> {
    let mut out = Vec::new();
    if fixed.grid.is_none() && winner.grid != FINE_GRID {
        out.push(Recipe { grid: FINE_GRID, ..winner });
    }
    if fixed.contrast.is_none() {
        let other = match winner.contrast {
            InputContrast::Raw => InputContrast::Standardised,
            InputContrast::Standardised => InputContrast::Raw,
        };
        out.push(Recipe { contrast: other, ..winner });
    }
    // A whole part fed the same way every time has places; a tile does not (it can come from
    // anywhere in the frame).
    if fixed.scorer.is_none() && winner.mode == InputMode::Resize && !winner.placed {
        out.push(Recipe { placed: true, ..winner });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(v: &[Recipe]) -> Vec<String> {
        v.iter().map(Recipe::describe).collect()
    }

    #[test]
    fn square_parts_try_the_sizes() {
        let geo = Geometry { width: 300, height: 300 };
        assert_eq!(
            describe(&candidates(geo, Fixed::default(), 16, 3)),
            [
                "resize 160×160 grid 16 standardised",
                "resize 224×224 grid 16 standardised",
                "resize 256×256 grid 16 standardised"
            ]
        );
    }

    #[test]
    fn tall_frames_keep_their_aspect_and_large_ones_are_tiled() {
        let geo = Geometry { width: 400, height: 1000 };
        let c = candidates(geo, Fixed::default(), 16, 3);
        assert!(c.iter().all(|r| r.width % 16 == 0 && r.height % 16 == 0));
        let rect: Vec<&Recipe> = c.iter().filter(|r| r.mode == InputMode::Resize && r.width != r.height).collect();
        assert_eq!(rect.len(), 3);
        for r in rect {
            let aspect = f64::from(r.height) / f64::from(r.width);
            assert!((aspect - 2.5).abs() < 0.35, "{r:?}");
        }
        assert!(describe(&c).contains(&"resize 224×224 grid 16 standardised".to_string()));
        assert!(!c.iter().any(|r| r.mode == InputMode::Tile), "a 400 px side is under two tiles");
        let large = candidates(Geometry { width: 1200, height: 3000 }, Fixed::default(), 16, 3);
        assert_eq!(
            large.last().map(Recipe::describe).as_deref(),
            Some("tile 256×256 grid 16 standardised"),
            "tiling costs most"
        );
    }

    #[test]
    fn fixed_options_are_kept() {
        let geo = Geometry { width: 1200, height: 3000 };
        let fixed = Fixed {
            mode: Some(InputMode::Resize),
            size: Some(192),
            grid: Some(8),
            contrast: Some(InputContrast::Raw),
            scorer: Some(false),
        };
        let only = candidates(geo, fixed, 16, 3);
        assert_eq!(describe(&only), ["resize 192×192 grid 8 raw"]);
        assert_eq!(refinements(only[0], fixed), [], "a fixed grid and contrast are not refined");
        let tile = Fixed { mode: Some(InputMode::Tile), ..Fixed::default() };
        let c = candidates(geo, tile, 16, 3);
        assert_eq!(describe(&c), ["tile 256×256 grid 16 standardised"]);
        assert_eq!(
            describe(&refinements(c[0], tile)),
            ["tile 256×256 grid 8 standardised", "tile 256×256 grid 16 raw"]
        );
        let raw = Fixed { contrast: Some(InputContrast::Raw), ..tile };
        assert_eq!(describe(&refinements(candidates(geo, raw, 16, 3)[0], raw)), ["tile 256×256 grid 8 raw"]);
    }

    #[test]
    fn whole_parts_also_try_the_placed_gaussians() {
        let square = Geometry { width: 300, height: 300 };
        let winner = candidates(square, Fixed::default(), 16, 3)[2];
        assert_eq!(
            describe(&refinements(winner, Fixed::default())),
            [
                "resize 256×256 grid 8 standardised",
                "resize 256×256 grid 16 raw",
                "resize 256×256 grid 16 standardised placed"
            ]
        );
        let placed = Fixed { scorer: Some(true), ..Fixed::default() };
        assert!(candidates(square, placed, 16, 3).iter().all(|r| r.placed));
        let banked = Fixed { scorer: Some(false), ..Fixed::default() };
        assert!(refinements(winner, banked).iter().all(|r| !r.placed));
    }

    #[test]
    fn the_largest_whole_input_is_preferred() {
        let square = Geometry { width: 300, height: 300 };
        let c = candidates(square, Fixed::default(), 16, 3);
        assert_eq!(preferred(&c, square).map(|r| r.describe()).as_deref(), Some("resize 256×256 grid 16 standardised"));
        let tall = Geometry { width: 1200, height: 3000 };
        let c = candidates(tall, Fixed::default(), 16, 3);
        let p = preferred(&c, tall).expect("a resize candidate");
        assert!(p.mode == InputMode::Resize && p.height > p.width, "own aspect ratio, not the tile: {p:?}");
        let tiles = Fixed { mode: Some(InputMode::Tile), ..Fixed::default() };
        assert_eq!(preferred(&candidates(tall, tiles, 16, 3), tall), None);
    }

    #[test]
    fn median_geometry() {
        assert_eq!(Geometry::median(&[(10, 50), (30, 20), (20, 40)]), Geometry { width: 20, height: 40 });
        assert_eq!(Geometry::median(&[]), Geometry { width: 1, height: 1 });
    }
}
