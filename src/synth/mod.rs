//! Synthetic parts: procedural grayscale images of manufactured surfaces with defects drawn on
//! them and a ground-truth mask, for the demo station, tests and benchmarks.
//!
//! Part `i` of seed `s` is always the same image, whichever other parts were rendered: each part
//! draws from its own ChaCha stream, keyed by `(seed, index)`. Rendering does not allocate once
//! the caller's buffers are sized; [`Generator::new`] precomputes the textures and noise tables.

mod dataset;
mod defects;
mod texture;

pub use dataset::{DatasetSummary, write_dataset};
pub(crate) use defects::smoothstep;

use arrayvec::ArrayVec;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The kind of surface a part shows when it has no defect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Surface {
    /// Fine horizontal streaks, a slight gradient and vignette, sensor noise.
    BrushedMetal,
    /// Mottled speckle with low-frequency variation, sensor noise.
    CeramicTile,
}

impl Surface {
    pub const ALL: [Surface; 2] = [Surface::BrushedMetal, Surface::CeramicTile];

    /// The name used in configuration files: `brushed_metal` or `ceramic_tile`.
    pub fn name(&self) -> &'static str {
        match self {
            Surface::BrushedMetal => "brushed_metal",
            Surface::CeramicTile => "ceramic_tile",
        }
    }
}

impl FromStr for Surface {
    type Err = SynthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Surface::ALL
            .into_iter()
            .find(|surface| surface.name() == s)
            .ok_or_else(|| SynthError::UnknownSurface(s.to_string()))
    }
}

impl fmt::Display for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kinds of defect the generator draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefectClass {
    /// A thin, long, straight line, darker or brighter than the surface.
    Scratch,
    /// A small dark round spot with a soft edge.
    Pit,
    /// A thin dark jagged polyline, sometimes branched.
    Crack,
    /// A larger soft blob of lower contrast, usually darker.
    Stain,
}

impl DefectClass {
    pub const ALL: [DefectClass; 4] = [DefectClass::Scratch, DefectClass::Pit, DefectClass::Crack, DefectClass::Stain];

    pub fn name(&self) -> &'static str {
        match self {
            DefectClass::Scratch => "scratch",
            DefectClass::Pit => "pit",
            DefectClass::Crack => "crack",
            DefectClass::Stain => "stain",
        }
    }

    /// Position in [`DefectClass::ALL`].
    pub fn index(&self) -> usize {
        *self as usize
    }
}

impl fmt::Display for DefectClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Invalid generator parameters.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SynthError {
    #[error(
        "synth: image size {width}x{height} is outside {min}..={max} pixels a side",
        min = MIN_SIDE,
        max = MAX_SIDE
    )]
    Size { width: u32, height: u32 },
    #[error("synth: defect_probability {0} is not within 0..=1")]
    DefectProbability(f64),
    #[error("synth: unknown surface {0:?} (expected brushed_metal or ceramic_tile)")]
    UnknownSurface(String),
}

/// Smallest and largest image side the generator accepts, in pixels.
pub const MIN_SIDE: u32 = 64;
pub const MAX_SIDE: u32 = 8192;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthParams {
    pub width: u32,
    pub height: u32,
    pub surface: Surface,
    /// Probability that a part has defects (then it has 1 to 3), 0..=1.
    pub defect_probability: f64,
    pub seed: u64,
}

impl SynthParams {
    pub fn validate(&self) -> Result<(), SynthError> {
        let side_ok = |s: u32| (MIN_SIDE..=MAX_SIDE).contains(&s);
        if !side_ok(self.width) || !side_ok(self.height) {
            return Err(SynthError::Size { width: self.width, height: self.height });
        }
        if !(0.0..=1.0).contains(&self.defect_probability) {
            return Err(SynthError::DefectProbability(self.defect_probability));
        }
        Ok(())
    }

    /// Pixels in one image (and one mask).
    pub fn pixel_count(&self) -> usize {
        self.width as usize * self.height as usize
    }
}

/// One defect drawn on a part. The box is the bounding box of its mask pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TruthDefect {
    pub class: DefectClass,
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    /// Mask pixels this defect covers (overlapping defects each count the shared pixels).
    pub area_px: u32,
}

/// Ground truth of one part: empty for a good part.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SynthTruth {
    pub defects: ArrayVec<TruthDefect, 4>,
}

impl SynthTruth {
    pub fn is_defective(&self) -> bool {
        !self.defects.is_empty()
    }
}

/// Value written to the mask for defect pixels (background is 0).
pub const MASK_DEFECT: u8 = 255;

/// Draws one defect of `class` at a random place on a Gray8 image (`pixels`, rows packed, `width`
/// × `height`) and marks its pixels in `mask` with [`MASK_DEFECT`]; `None` when it marked none.
/// Teach mode paints these on real good parts to validate its recipes.
///
/// # Panics
/// When either buffer does not hold exactly `width * height` bytes.
pub fn draw_defect(
    class: DefectClass,
    rng: &mut ChaCha8Rng,
    pixels: &mut [u8],
    mask: &mut [u8],
    width: usize,
    height: usize,
) -> Option<TruthDefect> {
    assert!(
        pixels.len() == width * height && mask.len() == width * height,
        "draw_defect: buffers must hold width*height bytes"
    );
    defects::draw(class, rng, &mut defects::Canvas { pixels, mask, width, height })
}

/// Renders parts for one [`SynthParams`]; holds the precomputed textures and noise tables.
pub struct Generator {
    params: SynthParams,
    part_seed: [u8; 32],
    surface: texture::SurfaceTexture,
}

impl Generator {
    /// Checks the parameters and precomputes the surface texture (a few milliseconds).
    pub fn new(params: SynthParams) -> Result<Self, SynthError> {
        params.validate()?;
        // Textures and parts use unrelated keys derived from the seed and the surface, so two
        // surfaces with one seed do not share their defect layouts.
        let key = params.seed ^ (params.surface as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let part_seed = ChaCha8Rng::seed_from_u64(key).get_seed();
        let mut texture_rng = ChaCha8Rng::seed_from_u64(key ^ 0x5eed_7e87_04e5);
        let surface = texture::SurfaceTexture::new(
            params.surface,
            params.width as usize,
            params.height as usize,
            &mut texture_rng,
        );
        Ok(Self { params, part_seed, surface })
    }

    pub fn params(&self) -> &SynthParams {
        &self.params
    }

    /// Renders part `index` into `pixels` (Gray8, rows packed) and its defect mask into `mask`
    /// (0 = background, [`MASK_DEFECT`] = defect), and returns its ground truth.
    ///
    /// # Panics
    /// When either buffer does not hold exactly `width * height` bytes.
    pub fn render(&mut self, index: u64, pixels: &mut [u8], mask: &mut [u8]) -> SynthTruth {
        let n = self.params.pixel_count();
        assert_eq!(pixels.len(), n, "synth: pixel buffer must hold width*height bytes");
        assert_eq!(mask.len(), n, "synth: mask buffer must hold width*height bytes");
        let mut rng = ChaCha8Rng::from_seed(self.part_seed);
        rng.set_stream(index);

        // Always one draw, whatever the probability: part i shows the same surface at any p.
        let defective = rng.random::<f64>() < self.params.defect_probability;
        self.surface.render(&mut rng, pixels);
        mask.fill(0);

        let mut truth = SynthTruth::default();
        if defective {
            let mut canvas = defects::Canvas {
                pixels,
                mask,
                width: self.params.width as usize,
                height: self.params.height as usize,
            };
            for _ in 0..rng.random_range(1..=3) {
                let class = DefectClass::ALL[rng.random_range(0..DefectClass::ALL.len())];
                if let Some(defect) = defects::draw(class, &mut rng, &mut canvas) {
                    truth.defects.push(defect);
                }
            }
        }
        truth
    }
}

#[cfg(test)]
mod tests;
