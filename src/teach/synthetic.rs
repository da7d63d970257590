//! Synthetic defects painted on real good images, so that teach can judge its candidate recipes
//! and estimate the escape at its threshold when nobody has given it a defective part.
//!
//! Five kinds, sized to the image (the synthetic parts' size ranges scale with its smaller side):
//! the demo's scratch, pit, crack and stain ([`crate::synth::draw_defect`]), and a DRAEM /
//! CutPaste-style **patch**: an irregular region (an ellipse whose edge follows low-frequency value
//! noise) filled with texture taken from another good image at another place, possibly mirrored,
//! blended over the part. The first four are local intensity changes; the patch is a change of
//! texture at constant brightness, which the intensity kinds do not cover. They are deliberately
//! of mixed difficulty: a recipe is judged by how well it ranks the faint ones.

use crate::frame::PixelFormat;
use crate::synth::{DefectClass, draw_defect, smoothstep};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// A decoded image: Gray8 or Rgb8, rows packed.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub pixels: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
}

impl Image {
    fn side(&self) -> usize {
        self.width.min(self.height) as usize
    }

    /// Luminance (Gray8) of every pixel.
    fn luma(&self) -> Vec<u8> {
        match self.format {
            PixelFormat::Gray8 => self.pixels.clone(),
            PixelFormat::Rgb8 => self
                .pixels
                .chunks_exact(3)
                .map(|p| ((299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32 + 500) / 1000) as u8)
                .collect(),
        }
    }
}

/// The kinds of synthetic defect, painted in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Scratch,
    Pit,
    Crack,
    Stain,
    Patch,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Scratch, Kind::Pit, Kind::Crack, Kind::Stain, Kind::Patch];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Scratch => "scratch",
            Kind::Pit => "pit",
            Kind::Crack => "crack",
            Kind::Stain => "stain",
            Kind::Patch => "patch",
        }
    }
}

/// Paints one defect of `kind` on `image`; `donor` (another good image, or the same one) lends
/// the texture of a patch. Returns the number of pixels the defect changed (0: none, e.g. a patch
/// whose donor texture equals the part there).
pub fn paint(image: &mut Image, donor: &Image, kind: Kind, rng: &mut ChaCha8Rng) -> usize {
    let class = match kind {
        Kind::Scratch => DefectClass::Scratch,
        Kind::Pit => DefectClass::Pit,
        Kind::Crack => DefectClass::Crack,
        Kind::Stain => DefectClass::Stain,
        Kind::Patch => return patch(image, donor, rng),
    };
    let (w, h) = (image.width as usize, image.height as usize);
    let before = image.luma();
    let mut after = before.clone();
    let mut mask = vec![0u8; w * h];
    if draw_defect(class, rng, &mut after, &mut mask, w, h).is_none() {
        return 0;
    }
    let channels = image.format.channels();
    let mut changed = 0;
    for (i, (&b, &a)) in before.iter().zip(&after).enumerate() {
        if a == b {
            continue;
        }
        changed += 1;
        let delta = a as i32 - b as i32;
        for v in &mut image.pixels[i * channels..(i + 1) * channels] {
            *v = (*v as i32 + delta).clamp(0, 255) as u8;
        }
    }
    changed
}

/// The texture patch: see the module docs.
fn patch(image: &mut Image, donor: &Image, rng: &mut ChaCha8Rng) -> usize {
    let side = image.side() as f32;
    let (w, h) = (image.width as usize, image.height as usize);
    let a = side * rng.random_range(0.04..0.16);
    let b = a * rng.random_range(0.4..1.0);
    let angle = rng.random_range(0.0..std::f32::consts::PI);
    let (cx, cy) = (rng.random_range(a..(w as f32 - a).max(a + 1.0)), rng.random_range(a..(h as f32 - a).max(a + 1.0)));
    let blend = rng.random_range(0.5..1.0f32);
    let (mirror_x, mirror_y) = (rng.random_bool(0.5), rng.random_bool(0.5));
    // Where in the donor the texture comes from: a random offset, wrapping around its edges.
    let (dw, dh) = (donor.width as usize, donor.height as usize);
    let (ox, oy) = (rng.random_range(0..dw), rng.random_range(0..dh));
    let noise = ValueNoise::new(rng, (a / 2.0).max(2.0));
    let (c, s) = (angle.cos(), angle.sin());
    let channels = image.format.channels();
    let donor_luma = (donor.format != image.format).then(|| donor.luma());
    let mut changed = 0;
    let (x0, x1) = (((cx - a - 1.0).max(0.0)) as usize, ((cx + a + 1.0) as usize).min(w - 1));
    let (y0, y1) = (((cy - a - 1.0).max(0.0)) as usize, ((cy + a + 1.0) as usize).min(h - 1));
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            let (u, v) = ((c * dx + s * dy) / a, (c * dy - s * dx) / b);
            // The ellipse's edge wobbles with the noise: an irregular, DRAEM-like outline.
            let r = (u * u + v * v).sqrt() - 0.35 * (noise.at(x as f32, y as f32) - 0.5);
            let weight = blend * (1.0 - smoothstep(0.8, 1.0, r));
            if weight <= 0.0 {
                continue;
            }
            let sx = if mirror_x { x1 - (x - x0) } else { x };
            let sy = if mirror_y { y1 - (y - y0) } else { y };
            let (tx, ty) = ((sx + ox) % dw, (sy + oy) % dh);
            let mut any = false;
            for ch in 0..channels {
                let src = match &donor_luma {
                    Some(l) => l[ty * dw + tx],
                    None => donor.pixels[(ty * dw + tx) * channels + ch],
                };
                let p = &mut image.pixels[(y * w + x) * channels + ch];
                let new = (*p as f32 * (1.0 - weight) + src as f32 * weight + 0.5) as u8;
                any |= new != *p;
                *p = new;
            }
            changed += usize::from(any);
        }
    }
    changed
}

/// Smooth random values on a lattice of `cell` pixels, bilinearly interpolated, in [0, 1].
struct ValueNoise {
    cell: f32,
    lattice: [[f32; 16]; 16],
}

impl ValueNoise {
    fn new(rng: &mut ChaCha8Rng, cell: f32) -> Self {
        let mut lattice = [[0.0; 16]; 16];
        for row in &mut lattice {
            for v in row.iter_mut() {
                *v = rng.random_range(0.0..1.0);
            }
        }
        Self { cell, lattice }
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x / self.cell, y / self.cell);
        let (ix, iy) = (fx.floor(), fy.floor());
        let (tx, ty) = (fx - ix, fy - iy);
        let (tx, ty) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
        let at = |i: f32, j: f32| self.lattice[(j as usize) % 16][(i as usize) % 16];
        let top = at(ix, iy) * (1.0 - tx) + at(ix + 1.0, iy) * tx;
        let bottom = at(ix, iy + 1.0) * (1.0 - tx) + at(ix + 1.0, iy + 1.0) * tx;
        top * (1.0 - ty) + bottom * ty
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn striped(width: u32, height: u32, format: PixelFormat) -> Image {
        let c = format.channels();
        let mut pixels = vec![0u8; (width * height) as usize * c];
        for (i, p) in pixels.chunks_exact_mut(c).enumerate() {
            let (x, y) = (i % width as usize, i / width as usize);
            p.fill((100 + 20 * ((x / 3 + y / 5) % 3)) as u8);
        }
        Image { pixels, width, height, format }
    }

    #[test]
    fn every_kind_changes_the_part_and_is_seeded() {
        for format in [PixelFormat::Gray8, PixelFormat::Rgb8] {
            let base = striped(120, 90, format);
            let donor = {
                let mut d = striped(70, 50, format);
                d.pixels.iter_mut().for_each(|p| *p = 255 - *p);
                d
            };
            for kind in Kind::ALL {
                let paint_with = |seed| {
                    let mut img = base.clone();
                    let n = paint(&mut img, &donor, kind, &mut ChaCha8Rng::seed_from_u64(seed));
                    (img, n)
                };
                let (a, n) = paint_with(7);
                assert!(n > 0 && a != base, "{kind:?} on {format:?} changed nothing");
                assert!(n < (120 * 90) / 2, "{kind:?} changed {n} pixels: a defect, not a new part");
                assert_eq!(paint_with(7).0, a, "{kind:?}: same seed, same defect");
                assert_ne!(paint_with(8).0, a, "{kind:?}: another seed, another defect");
            }
        }
    }

    #[test]
    fn tiny_images_do_not_panic() {
        for kind in Kind::ALL {
            let mut img = striped(8, 5, PixelFormat::Gray8);
            let donor = striped(3, 2, PixelFormat::Rgb8);
            paint(&mut img, &donor, kind, &mut ChaCha8Rng::seed_from_u64(1));
        }
    }
}
