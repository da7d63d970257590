//! Synthetic views for the calibration tests: a pinhole camera with OpenCV's distortion model
//! (k1 k2 p1 p2 k3) looking at a plane, rendered by casting 4 × 4 rays per pixel through the
//! lens (inverse distortion by fixed-point iteration) onto the plane, where the scene is defined
//! analytically in millimetres. Independent of OpenCV, so the tests compare OpenCV's estimates
//! with a ground truth it did not make.

/// A camera: intrinsics, distortion, image size.
#[derive(Clone, Copy, Debug)]
pub struct Lens {
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
    /// k1, k2, p1, p2, k3.
    pub dist: [f64; 5],
    pub width: u32,
    pub height: u32,
}

/// Rays per pixel side.
pub const SS: usize = 4;

impl Lens {
    /// OpenCV's model: normalised ideal → normalised distorted.
    pub fn distort(&self, x: f64, y: f64) -> [f64; 2] {
        let [k1, k2, p1, p2, k3] = self.dist;
        let r2 = x * x + y * y;
        let radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3));
        [
            x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x),
            y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y,
        ]
    }

    /// A camera-frame point → distorted pixel.
    pub fn project(&self, p: [f64; 3]) -> [f64; 2] {
        let [xd, yd] = self.distort(p[0] / p[2], p[1] / p[2]);
        [self.fx * xd + self.cx, self.fy * yd + self.cy]
    }

    /// A distorted pixel → normalised ideal ray (x, y, 1).
    pub fn ray(&self, u: f64, v: f64) -> [f64; 2] {
        let (xd, yd) = ((u - self.cx) / self.fx, (v - self.cy) / self.fy);
        let (mut x, mut y) = (xd, yd);
        for _ in 0..100 {
            let [dx, dy] = self.distort(x, y);
            let (ex, ey) = (xd - dx, yd - dy);
            x += ex;
            y += ey;
            if ex.abs().max(ey.abs()) < 1e-13 {
                break;
            }
        }
        let [dx, dy] = self.distort(x, y);
        assert!(
            (dx - xd).abs() < 1e-10 && (dy - yd).abs() < 1e-10,
            "inverse distortion did not converge at ({u}, {v})"
        );
        [x, y]
    }

    /// Every sample ray of the image, row by row, `SS × SS` per pixel (pixel centres at integer
    /// coordinates, as OpenCV).
    pub fn rays(&self) -> Vec<[f64; 2]> {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut out = Vec::with_capacity(w * h * SS * SS);
        for v in 0..h {
            for u in 0..w {
                for sy in 0..SS {
                    for sx in 0..SS {
                        let off = |s: usize| (s as f64 + 0.5) / SS as f64 - 0.5;
                        out.push(self.ray(u as f64 + off(sx), v as f64 + off(sy)));
                    }
                }
            }
        }
        out
    }

    /// The plane point a distorted pixel sees.
    pub fn plane_point(&self, pose: &Pose, u: f64, v: f64) -> [f64; 2] {
        let [x, y] = self.ray(u, v);
        let h = pose.image_to_plane();
        let q = [0, 1, 2].map(|r| h[r][0] * x + h[r][1] * y + h[r][2]);
        [q[0] / q[2], q[1] / q[2]]
    }
}

/// Where a plane sits: plane point (X, Y, 0) in mm → camera frame `R · p + t`.
#[derive(Clone, Copy, Debug)]
pub struct Pose {
    pub r: [[f64; 3]; 3],
    pub t: [f64; 3],
}

impl Pose {
    /// Rotations about x, then y, then z (degrees), with plane point `anchor` at camera point
    /// `at`.
    pub fn new(rx: f64, ry: f64, rz: f64, anchor: [f64; 2], at: [f64; 3]) -> Self {
        let (a, b, c) = (rx.to_radians(), ry.to_radians(), rz.to_radians());
        let rx = [[1.0, 0.0, 0.0], [0.0, a.cos(), -a.sin()], [0.0, a.sin(), a.cos()]];
        let ry = [[b.cos(), 0.0, b.sin()], [0.0, 1.0, 0.0], [-b.sin(), 0.0, b.cos()]];
        let rz = [[c.cos(), -c.sin(), 0.0], [c.sin(), c.cos(), 0.0], [0.0, 0.0, 1.0]];
        let r = mul(rz, mul(ry, rx));
        let ra = [0, 1, 2].map(|i| r[i][0] * anchor[0] + r[i][1] * anchor[1]);
        Self { r, t: [at[0] - ra[0], at[1] - ra[1], at[2] - ra[2]] }
    }

    pub fn camera_point(&self, x: f64, y: f64) -> [f64; 3] {
        [0, 1, 2].map(|i| self.r[i][0] * x + self.r[i][1] * y + self.t[i])
    }

    /// Inverse of the plane → normalised-image homography `[r1 r2 t]`.
    pub fn image_to_plane(&self) -> [[f64; 3]; 3] {
        let h = [0, 1, 2].map(|i| [self.r[i][0], self.r[i][1], self.t[i]]);
        invert(h)
    }
}

fn mul(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
}

fn invert(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let c = |i: usize, j: usize| m[(i + 1) % 3][(j + 1) % 3] * m[(i + 2) % 3][(j + 2) % 3];
    let cof = |i: usize, j: usize| c(i, j) - m[(i + 1) % 3][(j + 2) % 3] * m[(i + 2) % 3][(j + 1) % 3];
    let det: f64 = (0..3).map(|j| m[0][j] * cof(0, j)).sum();
    std::array::from_fn(|i| std::array::from_fn(|j| cof(j, i) / det))
}

/// Render the plane at `pose` through `lens`: `shade(X, Y)` gives the grey level (0..=255) at
/// plane point (X, Y) mm; rays that miss the plane see `background`. Deterministic noise of
/// ±`noise` grey levels is added.
pub fn render(
    lens: &Lens,
    rays: &[[f64; 2]],
    pose: &Pose,
    shade: impl Fn(f64, f64) -> f64,
    background: f64,
    noise: f64,
) -> Vec<u8> {
    let hinv = pose.image_to_plane();
    let n = SS * SS;
    rays.chunks_exact(n)
        .enumerate()
        .map(|(i, samples)| {
            let sum: f64 = samples
                .iter()
                .map(|&[x, y]| {
                    let q = [0, 1, 2].map(|r| hinv[r][0] * x + hinv[r][1] * y + hinv[r][2]);
                    if q[2] <= 0.0 { background } else { shade(q[0] / q[2], q[1] / q[2]) }
                })
                .sum();
            let v = sum / n as f64 + noise * (hash(i as u64) * 2.0 - 1.0);
            debug_assert!(i < (lens.width * lens.height) as usize);
            v.round().clamp(0.0, 255.0) as u8
        })
        .collect()
}

/// A uniform number in [0, 1) from an integer (splitmix64).
fn hash(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

pub const BLACK: f64 = 30.0;
pub const WHITE: f64 = 220.0;
pub const GREY: f64 = 120.0;

/// A chessboard with `cols × rows` inner corners, squares of `s` mm, the first inner corner at
/// (0, 0), a one-square white border, grey beyond.
pub fn chessboard(cols: u32, rows: u32, s: f64) -> impl Fn(f64, f64) -> f64 {
    move |x, y| {
        let (i, j) = ((x / s).floor() as i64, (y / s).floor() as i64);
        let (c, r) = (i64::from(cols), i64::from(rows));
        if (-1..c).contains(&i) && (-1..r).contains(&j) {
            if (i + j).rem_euclid(2) == 0 { BLACK } else { WHITE }
        } else if (-2..=c).contains(&i) && (-2..=r).contains(&j) {
            WHITE
        } else {
            GREY
        }
    }
}

/// A symmetric grid of `cols × rows` black circles of radius `radius`, centres `s` mm apart from
/// (0, 0), on a white card reaching `s` beyond the outer centres, grey beyond.
pub fn circle_grid(cols: u32, rows: u32, s: f64, radius: f64) -> impl Fn(f64, f64) -> f64 {
    move |x, y| {
        let (c, r) = (f64::from(cols - 1) * s, f64::from(rows - 1) * s);
        if x < -s || y < -s || x > c + s || y > r + s {
            return GREY;
        }
        let (i, j) = ((x / s).round().clamp(0.0, f64::from(cols - 1)), (y / s).round().clamp(0.0, f64::from(rows - 1)));
        if (x - i * s).hypot(y - j * s) <= radius { BLACK } else { WHITE }
    }
}

/// Whether every point of the plane rectangle `[x0, x1] × [y0, y1]` (edges sampled) projects
/// inside the image with `margin` pixels to spare.
pub fn visible(lens: &Lens, pose: &Pose, (x0, x1): (f64, f64), (y0, y1): (f64, f64), margin: f64) -> bool {
    (0..=20).all(|k| {
        let f = f64::from(k) / 20.0;
        let edge =
            [(x0 + f * (x1 - x0), y0), (x0 + f * (x1 - x0), y1), (x0, y0 + f * (y1 - y0)), (x1, y0 + f * (y1 - y0))];
        edge.iter().all(|&(x, y)| {
            let p = pose.camera_point(x, y);
            let [u, v] = lens.project(p);
            p[2] > 0.0
                && u >= margin
                && v >= margin
                && u <= f64::from(lens.width) - 1.0 - margin
                && v <= f64::from(lens.height) - 1.0 - margin
        })
    })
}

/// Write an 8-bit grey image as PNG.
pub fn save_png(path: &std::path::Path, lens: &Lens, pixels: Vec<u8>) {
    image::GrayImage::from_raw(lens.width, lens.height, pixels).expect("image size").save(path).expect("writing PNG");
}
