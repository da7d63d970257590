//! Images to model input tensors for teach mode, exactly as the runtime's preprocessing feeds
//! frames: squashed to the input (`resize`) or cut into overlapping tiles (`tile`), with the
//! runtime's own functions.

use super::onnx::{self, InputShape};
use super::recipe::Recipe;
use super::synthetic::Image;
use crate::config::InputMode;
use crate::frame::{Frame, FrameMeta, PixelFormat};
use crate::model::manifest::{InputSpec, Layout, Normalization};
use crate::pool::BufferPool;
use crate::sources::folder::ImageHeader;
use crate::stages::preprocess::{Normalizer, resize_to_tensor, tile_to_tensor};
use crate::stages::tiling::TileGrid;
use anyhow::Result;
use std::path::Path;
use std::time::{Instant, SystemTime};

impl InputShape {
    pub(crate) fn item_len(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Turns images into model input tensors exactly as the runtime's preprocessing does.
pub(crate) struct Feeder {
    mode: InputMode,
    pub(crate) shape: InputShape,
    overlap: u32,
    pub(crate) grid: usize,
    norm: Normalizer,
}

impl Feeder {
    pub(crate) fn new(recipe: Recipe, tile_overlap_px: u32) -> Self {
        let shape = recipe.shape();
        Self {
            mode: recipe.mode,
            shape,
            overlap: tile_overlap_px,
            grid: recipe.grid,
            norm: Normalizer::new(&input_spec(shape)),
        }
    }

    /// Patch rows per tile.
    pub(crate) fn cells(&self) -> usize {
        (self.shape.height / self.grid) * (self.shape.width / self.grid)
    }

    /// Tiles the runtime will cut from this image (1 when squashing). Reads only the header.
    pub(crate) fn tile_count(&self, path: &Path) -> Result<usize> {
        if self.mode == InputMode::Resize {
            return Ok(1);
        }
        let (w, h) = header_size(path)?;
        let mut grid = TileGrid::default();
        grid.plan(w, h, self.shape.width as u32, self.shape.height as u32, self.overlap);
        Ok(grid.len())
    }

    /// Append the image file's tensors (one per tile) to `out`.
    pub(crate) fn tensors(&self, path: &Path, out: &mut Vec<f32>) -> Result<(), String> {
        self.image_tensors(&decode(path)?, out);
        Ok(())
    }

    /// Append a decoded image's tensors (one per tile) to `out`.
    pub(crate) fn image_tensors(&self, image: &Image, out: &mut Vec<f32>) {
        let frame = frame_of(&image.pixels, image.width, image.height, image.format);
        let (tw, th) = (self.shape.width as u32, self.shape.height as u32);
        let item = self.shape.item_len();
        match self.mode {
            InputMode::Resize => {
                let start = out.len();
                out.resize(start + item, 0.0);
                resize_to_tensor(&frame, tw, th, &self.norm, &mut out[start..]);
            }
            InputMode::Tile => {
                let mut grid = TileGrid::default();
                grid.plan(image.width, image.height, tw, th, self.overlap);
                for i in 0..grid.len() {
                    let (x0, y0) = grid.origin(i);
                    let start = out.len();
                    out.resize(start + item, 0.0);
                    tile_to_tensor(&frame, x0, y0, tw, th, &self.norm, &mut out[start..]);
                }
            }
        }
    }
}

fn frame_of(pixels: &[u8], width: u32, height: u32, format: PixelFormat) -> Frame {
    let pool = BufferPool::<u8>::new(1);
    let mut buf = pool.take(pixels.len());
    buf.copy_from_slice(pixels);
    let meta = FrameMeta {
        camera: 0,
        seq: 0,
        part_id: None,
        captured_at: Instant::now(),
        captured_wall: SystemTime::now(),
        recipe: 0,
    };
    Frame { meta, format, width, height, pixels: buf }
}

/// The taught model's input: RGB in [0, 1] (the backbone applies the ImageNet normalisation);
/// gray frames are repeated on the three channels by the runtime's preprocessing.
pub(crate) fn input_spec(shape: InputShape) -> InputSpec {
    InputSpec {
        name: onnx::INPUT.into(),
        width: shape.width as u32,
        height: shape.height as u32,
        channels: shape.channels as u32,
        layout: Layout::Nchw,
        batch: 0,
        normalization: Normalization { mean: vec![0.0], std: vec![1.0] },
        mode: None,
        min_width: None,
        min_height: None,
    }
}

/// Width, height and gray-or-colour from the file's header.
pub(crate) fn header(path: &Path) -> Result<ImageHeader> {
    crate::sources::folder::read_header(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the image header ({e}); remove or replace it", path.display()))
}

/// Width and height from the file's header.
pub(crate) fn header_size(path: &Path) -> Result<(u32, u32)> {
    header(path).map(|h| (h.width, h.height))
}

pub(crate) fn decode(path: &Path) -> Result<Image, String> {
    let mut pixels = Vec::new();
    let (width, height, format) = crate::sources::folder::decode_into(path, &mut pixels)?;
    Ok(Image { pixels, width, height, format })
}
