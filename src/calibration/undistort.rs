//! Lens undistortion on the frame path.
//!
//! At start, OpenCV's `initUndistortRectifyMap` gives, for every pixel of the undistorted frame,
//! where it comes from in the camera's (distorted) frame. [`Undistorter::new`] turns those maps
//! into a table of taps: the offset of the top-left source pixel and the bilinear weights in
//! 1/256 px. Per frame, [`Undistorter::apply`] is one pass over the table into a caller-owned
//! buffer: no allocation, no FFI, no OpenCV worker threads on the camera's core.
//!
//! The undistorted frame keeps the camera matrix and the image size, so the frame's centre and
//! scale stay where they were; corners that no camera pixel reaches (barrel distortion) are black.

use super::CalibrationError;
use super::file::Calibration;
use opencv::calib3d;
use opencv::core::{self, Mat, Size};
use opencv::prelude::*;

/// Marks a destination pixel that no source pixel reaches.
const OUTSIDE: u32 = u32::MAX;

/// One destination pixel: the source pixel `offset` (top-left of the 2 × 2 neighbourhood, in
/// pixels) and the weights of its right and lower neighbours in 1/256.
#[derive(Clone, Copy, Debug)]
struct Tap {
    offset: u32,
    fx: u16,
    fy: u16,
}

/// Precomputed undistortion for one camera and frame size.
#[derive(Clone, Debug)]
pub struct Undistorter {
    width: u32,
    height: u32,
    taps: Vec<Tap>,
}

impl Undistorter {
    /// Build the tables for the calibration's image size (once, at station start).
    pub fn new(cal: &Calibration) -> Result<Self, CalibrationError> {
        let (k, d) = cal.opencv_matrices()?;
        let size = Size::new(cal.image_width as i32, cal.image_height as i32);
        let (mut map_x, mut map_y) = (Mat::default(), Mat::default());
        calib3d::init_undistort_rectify_map(
            &k,
            &d,
            &core::no_array(),
            &k,
            size,
            core::CV_32FC1,
            &mut map_x,
            &mut map_y,
        )?;
        let (mx, my) = (map_x.data_typed::<f32>()?, map_y.data_typed::<f32>()?);
        Ok(Self::from_maps(cal.image_width, cal.image_height, mx, my))
    }

    /// Build the tables from float maps: destination pixel i takes source (`map_x[i]`, `map_y[i]`).
    ///
    /// # Panics
    /// When the maps are not `width × height`, or the frame is smaller than 2 × 2.
    pub fn from_maps(width: u32, height: u32, map_x: &[f32], map_y: &[f32]) -> Self {
        let (w, h) = (width as usize, height as usize);
        assert!(w >= 2 && h >= 2, "frames of at least 2 × 2 pixels");
        assert!(map_x.len() == w * h && map_y.len() == w * h, "maps are not {width} × {height}");
        let taps = map_x
            .iter()
            .zip(map_y)
            .map(|(&x, &y)| {
                // Half a pixel beyond the edge still replicates the edge pixel; further is outside.
                let inside = (-0.5..=w as f32 - 0.5).contains(&x) && (-0.5..=h as f32 - 0.5).contains(&y);
                if !inside {
                    return Tap { offset: OUTSIDE, fx: 0, fy: 0 };
                }
                let (x0, fx) = split(x, w);
                let (y0, fy) = split(y, h);
                Tap { offset: (y0 * w + x0) as u32, fx, fy }
            })
            .collect();
        Self { width, height, taps }
    }

    /// The frame size these tables are for.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Undistort `src` (packed rows, `channels` bytes per pixel) into `dst`, bilinear.
    ///
    /// # Panics
    /// When either buffer is not `width × height × channels` bytes, or `channels` is not 1 or 3.
    pub fn apply(&self, src: &[u8], dst: &mut [u8], channels: usize) {
        let len = self.taps.len() * channels;
        assert!(src.len() == len && dst.len() == len, "buffers are not {}×{}×{channels}", self.width, self.height);
        let row = self.width as usize;
        match channels {
            1 => remap::<1>(&self.taps, src, dst, row),
            3 => remap::<3>(&self.taps, src, dst, row),
            _ => panic!("undistortion handles 1- or 3-channel frames, not {channels}"),
        }
    }
}

/// Integer part (so that the right/lower neighbour exists) and fraction in 1/256 of a source
/// coordinate clamped to `[0, n − 1]`.
fn split(v: f32, n: usize) -> (usize, u16) {
    let v = v.clamp(0.0, (n - 1) as f32);
    let i = (v.floor() as usize).min(n - 2);
    let f = ((v - i as f32) * 256.0).round() as u16;
    (i, f.min(256))
}

fn remap<const C: usize>(taps: &[Tap], src: &[u8], dst: &mut [u8], width: usize) {
    let row = width * C;
    for (tap, out) in taps.iter().zip(dst.chunks_exact_mut(C)) {
        if tap.offset == OUTSIDE {
            out.fill(0);
            continue;
        }
        let p = tap.offset as usize * C;
        let (fx, fy) = (u32::from(tap.fx), u32::from(tap.fy));
        let (gx, gy) = (256 - fx, 256 - fy);
        // One bounds check for the 2 × 2 neighbourhood.
        let quad = &src[p..p + row + 2 * C];
        for c in 0..C {
            let t = u32::from(quad[c]) * gx + u32::from(quad[C + c]) * fx;
            let b = u32::from(quad[row + c]) * gx + u32::from(quad[row + C + c]) * fx;
            out[c] = ((t * gy + b * fy + 32_768) >> 16) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_maps_copy_the_frame() {
        let (w, h) = (5usize, 4usize);
        let mx: Vec<f32> = (0..w * h).map(|i| (i % w) as f32).collect();
        let my: Vec<f32> = (0..w * h).map(|i| (i / w) as f32).collect();
        let u = Undistorter::from_maps(w as u32, h as u32, &mx, &my);
        let src: Vec<u8> = (0..(w * h) as u8).map(|v| v * 10).collect();
        let mut dst = vec![0; w * h];
        u.apply(&src, &mut dst, 1);
        assert_eq!(dst, src);
        let rgb: Vec<u8> = (0..(w * h * 3) as u8).collect();
        let mut out = vec![0; rgb.len()];
        u.apply(&rgb, &mut out, 3);
        assert_eq!(out, rgb);
    }

    #[test]
    fn half_pixel_shifts_interpolate_and_far_sources_are_black() {
        // Row [0, 100, 200]: sampling at x = 0.5 and 1.5 gives 50 and 150; x = 7 is outside.
        let mx = [0.5, 1.5, 7.0, 0.5, 1.5, 7.0];
        let my = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let u = Undistorter::from_maps(3, 2, &mx, &my);
        let src = [0, 100, 200, 0, 100, 200];
        let mut dst = [9; 6];
        u.apply(&src, &mut dst, 1);
        assert_eq!(dst, [50, 150, 0, 50, 150, 0]);
    }
}
