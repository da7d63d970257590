//! Defect-free surfaces: a periodic base texture and a Gaussian noise table made once per
//! generator, then per part a random window into the texture, a lighting gradient, a vignette
//! and sensor noise.

use super::Surface;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::TAU;

/// Entries of the noise table a row may start at; rows read `width` entries from there.
const NOISE_LEN: usize = 1 << 16;
/// Largest texture side: bigger images repeat the texture (it tiles seamlessly).
const MAX_TEXTURE: usize = 2048;

/// Per-part appearance ranges of one surface, in grey levels.
struct Look {
    base: (f32, f32),
    texture_gain: (f32, f32),
    noise_sigma: (f32, f32),
    /// Largest brightness change from the centre to an edge along the light gradient.
    gradient: f32,
    /// Largest darkening of the corners.
    vignette: f32,
}

impl Look {
    fn of(surface: Surface) -> Look {
        match surface {
            Surface::BrushedMetal => Look {
                base: (115.0, 165.0),
                texture_gain: (3.0, 5.0),
                noise_sigma: (1.5, 3.0),
                gradient: 12.0,
                vignette: 14.0,
            },
            Surface::CeramicTile => Look {
                base: (160.0, 195.0),
                texture_gain: (3.0, 5.0),
                noise_sigma: (1.5, 3.0),
                gradient: 10.0,
                vignette: 10.0,
            },
        }
    }
}

pub(super) struct SurfaceTexture {
    look: Look,
    width: usize,
    height: usize,
    /// Texture side lengths: powers of two, so a window wraps with a mask.
    tw: usize,
    th: usize,
    /// `tw * th` periodic texture, zero mean, unit standard deviation.
    texture: Vec<f32>,
    /// `NOISE_LEN + width` unit Gaussian samples.
    noise: Vec<f32>,
    /// Per-part column term (gradient and vignette along x), reused between parts.
    column: Vec<f32>,
}

impl SurfaceTexture {
    pub(super) fn new(surface: Surface, width: usize, height: usize, rng: &mut ChaCha8Rng) -> Self {
        let tw = width.next_power_of_two().min(MAX_TEXTURE);
        let th = height.next_power_of_two().min(MAX_TEXTURE);
        let texture = match surface {
            Surface::BrushedMetal => brushed_metal(rng, tw, th),
            Surface::CeramicTile => ceramic_tile(rng, tw, th),
        };
        let mut noise = vec![0.0; NOISE_LEN + width];
        fill_gaussian(rng, &mut noise);
        Self { look: Look::of(surface), width, height, tw, th, texture, noise, column: vec![0.0; width] }
    }

    /// Writes a fresh defect-free surface into `pixels` (`width * height`, Gray8).
    pub(super) fn render(&mut self, rng: &mut ChaCha8Rng, pixels: &mut [u8]) {
        let look = &self.look;
        let base = rng.random_range(look.base.0..look.base.1);
        let gain = rng.random_range(look.texture_gain.0..look.texture_gain.1);
        let sigma = rng.random_range(look.noise_sigma.0..look.noise_sigma.1);
        let angle = rng.random_range(0.0..TAU);
        let gradient = rng.random_range(0.0..look.gradient);
        let vignette = rng.random_range(0.0..look.vignette);
        let ox = rng.random_range(0..self.tw);
        let oy = rng.random_range(0..self.th);

        let (cx, cy) = (self.width as f32 / 2.0, self.height as f32 / 2.0);
        let corner2 = cx * cx + cy * cy;
        let (gx, gy) = (gradient * angle.cos() / cx, gradient * angle.sin() / cy);
        for (x, c) in self.column.iter_mut().enumerate() {
            let dx = x as f32 + 0.5 - cx;
            *c = gx * dx - vignette * dx * dx / corner2;
        }

        let tmask = self.tw - 1;
        for (y, out) in pixels.chunks_exact_mut(self.width).enumerate() {
            let dy = y as f32 + 0.5 - cy;
            let row_level = base + gy * dy - vignette * dy * dy / corner2;
            let ty = (y + oy) & (self.th - 1);
            let trow = &self.texture[ty * self.tw..(ty + 1) * self.tw];
            let n0 = rng.random_range(0..NOISE_LEN);
            let nrow = &self.noise[n0..n0 + self.width];
            // The texture window wraps: walk it in contiguous runs so the inner loop is plain.
            let mut x = 0;
            while x < self.width {
                let tx = (x + ox) & tmask;
                let run = (self.tw - tx).min(self.width - x);
                let span = x..x + run;
                for (((p, &t), &n), &c) in out[span.clone()]
                    .iter_mut()
                    .zip(&trow[tx..tx + run])
                    .zip(&nrow[span.clone()])
                    .zip(&self.column[span])
                {
                    // `as u8` saturates, so this also clamps to 0..=255.
                    *p = (row_level + c + gain * t + sigma * n + 0.5) as u8;
                }
                x += run;
            }
        }
    }
}

/// Streaks along x: white noise smeared by long horizontal boxes, at three lengths.
fn brushed_metal(rng: &mut ChaCha8Rng, tw: usize, th: usize) -> Vec<f32> {
    let mut out = vec![0.0; tw * th];
    let mut layer = vec![0.0; tw * th];
    let mut row = vec![0.0; tw];
    for (len, weight, smooth_y) in [((tw / 4).max(8), 1.0, true), (32, 0.7, false), (5, 0.45, false)] {
        fill_gaussian(rng, &mut layer);
        for r in layer.chunks_exact_mut(tw) {
            row.copy_from_slice(r);
            box_blur_circular(&row, len.min(tw), r);
        }
        if smooth_y {
            smooth_rows_121(&mut layer, tw, th);
        }
        normalize(&mut layer);
        for (o, l) in out.iter_mut().zip(&layer) {
            *o += weight * l;
        }
    }
    normalize(&mut out);
    out
}

/// Mottled speckle: value noise at three scales, fine grain, and sparse one- or two-pixel specks.
fn ceramic_tile(rng: &mut ChaCha8Rng, tw: usize, th: usize) -> Vec<f32> {
    let mut out = vec![0.0; tw * th];
    for (cell, weight) in [(64, 1.0), (16, 0.6), (4, 0.45)] {
        add_value_noise(rng, &mut out, tw, th, cell, weight);
    }
    for o in out.iter_mut() {
        *o += 0.12 * gaussian(rng);
    }
    normalize(&mut out);
    for _ in 0..tw * th / 300 {
        let (x, y) = (rng.random_range(0..tw), rng.random_range(0..th));
        let sign = if rng.random_bool(0.7) { -1.0 } else { 1.0 };
        let amplitude = sign * rng.random_range(1.5..3.5);
        let size = if rng.random_bool(0.25) { 2 } else { 1 };
        for dy in 0..size {
            for dx in 0..size {
                out[((y + dy) % th) * tw + (x + dx) % tw] += amplitude;
            }
        }
    }
    normalize(&mut out);
    out
}

/// Adds `weight` × periodic value noise with lattice spacing `cell` (smoothstep-interpolated).
fn add_value_noise(rng: &mut ChaCha8Rng, out: &mut [f32], tw: usize, th: usize, cell: usize, weight: f32) {
    let cell = cell.min(tw).min(th);
    let (lw, lh) = (tw / cell, th / cell);
    let lattice: Vec<f32> = (0..lw * lh).map(|_| rng.random_range(-1.0..1.0)).collect();
    let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
    for y in 0..th {
        let (j, fy) = (y / cell, smooth((y % cell) as f32 / cell as f32));
        let (j0, j1) = (j * lw, ((j + 1) % lh) * lw);
        for x in 0..tw {
            let (i, fx) = (x / cell, smooth((x % cell) as f32 / cell as f32));
            let i1 = (i + 1) % lw;
            let top = lattice[j0 + i] + fx * (lattice[j0 + i1] - lattice[j0 + i]);
            let bottom = lattice[j1 + i] + fx * (lattice[j1 + i1] - lattice[j1 + i]);
            out[y * tw + x] += weight * (top + fy * (bottom - top));
        }
    }
}

/// Centred box mean of length `len` over a periodic row.
fn box_blur_circular(src: &[f32], len: usize, dst: &mut [f32]) {
    let n = src.len();
    let half = len / 2;
    let at = |i: isize| src[i.rem_euclid(n as isize) as usize];
    let mut acc: f32 = (0..len as isize).map(|k| at(k - half as isize)).sum();
    for (x, d) in dst.iter_mut().enumerate() {
        *d = acc / len as f32;
        let x = x as isize;
        acc += at(x + 1 - half as isize + len as isize - 1) - at(x - half as isize);
    }
}

/// Vertical [1 2 1]/4 smoothing, periodic.
fn smooth_rows_121(data: &mut [f32], tw: usize, th: usize) {
    let original = data.to_vec();
    for y in 0..th {
        let (up, down) = ((y + th - 1) % th, (y + 1) % th);
        for x in 0..tw {
            data[y * tw + x] = 0.25 * (original[up * tw + x] + 2.0 * original[y * tw + x] + original[down * tw + x]);
        }
    }
}

fn normalize(data: &mut [f32]) {
    let n = data.len() as f64;
    let mean = data.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = data.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = if var > 0.0 { 1.0 / var.sqrt() } else { 1.0 };
    for v in data.iter_mut() {
        *v = ((*v as f64 - mean) * inv) as f32;
    }
}

fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    // Box–Muller; 1 - u keeps the logarithm's argument in (0, 1].
    let u1 = 1.0 - rng.random::<f32>();
    let u2 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

fn fill_gaussian(rng: &mut ChaCha8Rng, out: &mut [f32]) {
    for v in out.iter_mut() {
        *v = gaussian(rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circular_box_blur_matches_naive_mean() {
        let src: Vec<f32> = (0..16).map(|i| ((i * 7) % 5) as f32).collect();
        let mut dst = vec![0.0; 16];
        for len in [1, 2, 5, 8] {
            box_blur_circular(&src, len, &mut dst);
            for (x, d) in dst.iter().enumerate() {
                let naive: f32 = (0..len).map(|k| src[(x + 16 * 4 + k - len / 2) % 16]).sum::<f32>() / len as f32;
                assert!((d - naive).abs() < 1e-4, "len {len} x {x}: {d} vs {naive}");
            }
        }
    }
}
