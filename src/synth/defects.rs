//! Defects drawn over a rendered surface: each adds a soft-edged intensity change to the pixels,
//! marks its pixels in the mask and reports its class, box and area.
//!
//! Sizes are given for a 480-pixel image and scale with the image's smaller side; contrasts are
//! in grey levels, chosen so that a careful inspector still sees the faintest one.

use super::{DefectClass, MASK_DEFECT, TruthDefect};
use arrayvec::ArrayVec;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::{PI, TAU};

/// Image side the size ranges below are written for.
const REFERENCE_SIDE: f32 = 480.0;
/// Pixels kept free between a defect's extent and the image border.
const MARGIN: f32 = 3.0;

/// The part being drawn on.
pub(super) struct Canvas<'a> {
    pub pixels: &'a mut [u8],
    pub mask: &'a mut [u8],
    pub width: usize,
    pub height: usize,
}

/// Draws one defect of `class` at a random place; `None` only if it marked no mask pixel.
pub(super) fn draw(class: DefectClass, rng: &mut ChaCha8Rng, canvas: &mut Canvas) -> Option<TruthDefect> {
    let scale = (canvas.width.min(canvas.height) as f32 / REFERENCE_SIDE).clamp(0.25, 4.0);
    let footprint = match class {
        DefectClass::Scratch => scratch(rng, canvas, scale),
        DefectClass::Pit => pit(rng, canvas, scale),
        DefectClass::Crack => crack(rng, canvas, scale),
        DefectClass::Stain => stain(rng, canvas, scale),
    };
    footprint.into_truth(class)
}

fn scratch(rng: &mut ChaCha8Rng, canvas: &mut Canvas, scale: f32) -> Footprint {
    let max_len = 0.8 * canvas.width.min(canvas.height) as f32;
    let len = (rng.random_range(40.0..180.0) * scale).min(max_len);
    let angle = rng.random_range(0.0..PI);
    let half_width = rng.random_range(0.6..1.4);
    let contrast = signed(rng, 0.65, 22.0..55.0);
    // Pressure varies along a scratch: a slow ripple in its strength, fading at both ends.
    let cycles = rng.random_range(0.5..3.0);
    let phase = rng.random_range(0.0..TAU);
    let (hx, hy) = (0.5 * len * angle.cos(), 0.5 * len * angle.sin());
    let pad = half_width + 2.0;
    let extent = [-hx.abs() - pad, -hy.abs() - pad, hx.abs() + pad, hy.abs() + pad];
    let (tx, ty) = place(rng, canvas, extent);
    let segment = Segment::new((tx - hx, ty - hy), (tx + hx, ty + hy));
    let rect = translate(extent, tx, ty);
    paint(canvas, rect, contrast, |x, y| {
        let (distance, t) = segment.project(x, y);
        let taper = smoothstep(0.0, 0.08, t) * smoothstep(1.0, 0.92, t);
        let ripple = 0.85 + 0.15 * (TAU * cycles * t + phase).sin();
        coverage(distance, half_width) * taper * ripple
    })
}

fn pit(rng: &mut ChaCha8Rng, canvas: &mut Canvas, scale: f32) -> Footprint {
    let radius = (rng.random_range(2.5..7.0) * scale).max(2.0);
    let soft = rng.random_range(1.0..2.0);
    let aspect = rng.random_range(1.0..1.3);
    let angle = rng.random_range(0.0..PI);
    let contrast = -rng.random_range(45.0..100.0);
    let (c, s) = (angle.cos(), angle.sin());
    let pad = radius * aspect + soft + 1.0;
    let extent = [-pad, -pad, pad, pad];
    let (tx, ty) = place(rng, canvas, extent);
    paint(canvas, translate(extent, tx, ty), contrast, |x, y| {
        let (dx, dy) = (x - tx, y - ty);
        let (u, v) = (c * dx + s * dy, aspect * (c * dy - s * dx));
        let distance = (u * u + v * v).sqrt();
        smoothstep(0.0, 1.0, (radius - distance) / soft + 0.5)
    })
}

fn crack(rng: &mut ChaCha8Rng, canvas: &mut Canvas, scale: f32) -> Footprint {
    let half_width = rng.random_range(0.55..1.1);
    let contrast = -rng.random_range(35.0..80.0);
    let heading = rng.random_range(0.0..TAU);
    let mut segments = ArrayVec::<Segment, 24>::new();
    let mut points = ArrayVec::<(f32, f32), 16>::new();
    points.push((0.0, 0.0));
    let steps = rng.random_range(6..=14);
    random_walk(rng, &mut segments, &mut points, heading, steps, scale);
    if rng.random_bool(0.4) {
        // A side branch from an interior vertex, leaving at a sharp angle.
        let from = points[rng.random_range(1..points.len() - 1)];
        let turn = signed(rng, 0.5, 0.5..1.2);
        let mut branch = ArrayVec::<(f32, f32), 16>::new();
        branch.push(from);
        let steps = rng.random_range(2..=5);
        random_walk(rng, &mut segments, &mut branch, heading + turn, steps, scale);
    }
    let pad = half_width + 2.0;
    let mut extent = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
    for s in &segments {
        for (x, y) in [s.a, s.b] {
            extent = [extent[0].min(x), extent[1].min(y), extent[2].max(x), extent[3].max(y)];
        }
    }
    let extent = [extent[0] - pad, extent[1] - pad, extent[2] + pad, extent[3] + pad];
    let (tx, ty) = place(rng, canvas, extent);
    let rect = translate(extent, tx, ty);
    paint(canvas, rect, contrast, |x, y| {
        let (x, y) = (x - tx, y - ty);
        let mut nearest = f32::MAX;
        for s in &segments {
            // Cheap rejection before the exact distance.
            if x < s.min.0 - pad || x > s.max.0 + pad || y < s.min.1 - pad || y > s.max.1 + pad {
                continue;
            }
            nearest = nearest.min(s.project(x, y).0);
        }
        coverage(nearest, half_width)
    })
}

/// Extends `points` by `steps` jagged segments that wander around `heading`.
fn random_walk(
    rng: &mut ChaCha8Rng,
    segments: &mut ArrayVec<Segment, 24>,
    points: &mut ArrayVec<(f32, f32), 16>,
    heading: f32,
    steps: usize,
    scale: f32,
) {
    let mut direction = heading;
    let mut at = points[points.len() - 1];
    for _ in 0..steps {
        if points.is_full() || segments.is_full() {
            break;
        }
        direction += rng.random_range(-0.7..0.7) + 0.3 * (heading - direction);
        let step = rng.random_range(5.0..13.0) * scale;
        let next = (at.0 + step * direction.cos(), at.1 + step * direction.sin());
        segments.push(Segment::new(at, next));
        points.push(next);
        at = next;
    }
}

fn stain(rng: &mut ChaCha8Rng, canvas: &mut Canvas, scale: f32) -> Footprint {
    let a = rng.random_range(14.0..34.0) * scale;
    let b = a * rng.random_range(0.55..1.0);
    let angle = rng.random_range(0.0..PI);
    let contrast = signed(rng, 0.75, 14.0..30.0);
    // An irregular outline: the radius wobbles with the angle.
    let (w3, p3) = (rng.random_range(0.0..0.15), rng.random_range(0.0..TAU));
    let (w5, p5) = (rng.random_range(0.0..0.1), rng.random_range(0.0..TAU));
    let (c, s) = (angle.cos(), angle.sin());
    let pad = a * 1.25 * (1.0 + w3 + w5) + 1.0;
    let extent = [-pad, -pad, pad, pad];
    let (tx, ty) = place(rng, canvas, extent);
    paint(canvas, translate(extent, tx, ty), contrast, |x, y| {
        let (dx, dy) = (x - tx, y - ty);
        let (u, v) = ((c * dx + s * dy) / a, (c * dy - s * dx) / b);
        let theta = v.atan2(u);
        let outline = 1.0 + w3 * (3.0 * theta + p3).sin() + w5 * (5.0 * theta + p5).sin();
        1.0 - smoothstep(0.55, 1.25, (u * u + v * v).sqrt() / outline)
    })
}

/// A line segment with what distance queries need precomputed.
struct Segment {
    a: (f32, f32),
    b: (f32, f32),
    min: (f32, f32),
    max: (f32, f32),
    inv_len2: f32,
}

impl Segment {
    fn new(a: (f32, f32), b: (f32, f32)) -> Self {
        let len2 = (b.0 - a.0).powi(2) + (b.1 - a.1).powi(2);
        Segment {
            a,
            b,
            min: (a.0.min(b.0), a.1.min(b.1)),
            max: (a.0.max(b.0), a.1.max(b.1)),
            inv_len2: if len2 > 0.0 { 1.0 / len2 } else { 0.0 },
        }
    }

    /// Distance from (x, y) to the segment, and the position (0..=1) of the nearest point on it.
    fn project(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = (self.b.0 - self.a.0, self.b.1 - self.a.1);
        let t = (((x - self.a.0) * dx + (y - self.a.1) * dy) * self.inv_len2).clamp(0.0, 1.0);
        let (px, py) = (self.a.0 + t * dx - x, self.a.1 + t * dy - y);
        ((px * px + py * py).sqrt(), t)
    }
}

/// Mask pixels marked by one defect.
struct Footprint {
    min: (usize, usize),
    max: (usize, usize),
    area: u32,
}

impl Footprint {
    fn into_truth(self, class: DefectClass) -> Option<TruthDefect> {
        (self.area > 0).then(|| TruthDefect {
            class,
            x: self.min.0 as u32,
            y: self.min.1 as u32,
            w: (self.max.0 - self.min.0 + 1) as u32,
            h: (self.max.1 - self.min.1 + 1) as u32,
            area_px: self.area,
        })
    }
}

/// Adds `contrast × weight(x, y)` to every pixel of `rect` (pixel centres at integer
/// coordinates) and marks the pixels whose weight is at least one half.
fn paint(canvas: &mut Canvas, rect: [f32; 4], contrast: f32, weight: impl Fn(f32, f32) -> f32) -> Footprint {
    let clamp = |v: f32, n: usize| (v.max(0.0) as usize).min(n - 1);
    let (x0, y0) = (clamp(rect[0].floor(), canvas.width), clamp(rect[1].floor(), canvas.height));
    let (x1, y1) = (clamp(rect[2].ceil(), canvas.width), clamp(rect[3].ceil(), canvas.height));
    let mut footprint = Footprint { min: (usize::MAX, usize::MAX), max: (0, 0), area: 0 };
    for y in y0..=y1 {
        let row = y * canvas.width;
        for x in x0..=x1 {
            let w = weight(x as f32, y as f32);
            if w <= 0.0 {
                continue;
            }
            let p = &mut canvas.pixels[row + x];
            // `as u8` saturates: this clamps to 0..=255 and rounds.
            *p = (*p as f32 + contrast * w + 0.5) as u8;
            if w >= 0.5 {
                canvas.mask[row + x] = MASK_DEFECT;
                footprint.min = (footprint.min.0.min(x), footprint.min.1.min(y));
                footprint.max = (footprint.max.0.max(x), footprint.max.1.max(y));
                footprint.area += 1;
            }
        }
    }
    footprint
}

/// A translation that puts `extent` (min x, min y, max x, max y around the origin) inside the
/// image, uniformly at random where it fits, centred where it does not.
fn place(rng: &mut ChaCha8Rng, canvas: &Canvas, extent: [f32; 4]) -> (f32, f32) {
    let mut axis = |lo: f32, hi: f32, side: usize| {
        let (from, to) = (MARGIN - lo, side as f32 - 1.0 - MARGIN - hi);
        if to > from { rng.random_range(from..to) } else { 0.5 * (from + to) }
    };
    let tx = axis(extent[0], extent[2], canvas.width);
    let ty = axis(extent[1], extent[3], canvas.height);
    (tx, ty)
}

fn translate(extent: [f32; 4], tx: f32, ty: f32) -> [f32; 4] {
    [extent[0] + tx, extent[1] + ty, extent[2] + tx, extent[3] + ty]
}

/// Fraction of a pixel covered by a band of half-width `half_width` at `distance` from its centre
/// line: 1 well inside, 0 well outside, one half on the edge.
fn coverage(distance: f32, half_width: f32) -> f32 {
    (half_width + 0.5 - distance).clamp(0.0, 1.0)
}

/// Hermite step from 0 at `edge0` to 1 at `edge1` (either order): soft defect edges.
pub(crate) fn smoothstep(edge0: f32, edge1: f32, v: f32) -> f32 {
    let t = ((v - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A magnitude from `range`, negative (darker) with probability `p_dark`.
fn signed(rng: &mut ChaCha8Rng, p_dark: f64, range: std::ops::Range<f32>) -> f32 {
    let magnitude = rng.random_range(range);
    if rng.random_bool(p_dark) { -magnitude } else { magnitude }
}
