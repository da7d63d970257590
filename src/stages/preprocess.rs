//! Preprocessing: one frame region → one model input tensor (CHW float32), normalised per the
//! manifest, with grayscale/RGB conversion and zero padding where the region leaves the frame.
//!
//! Writes into a caller-provided (pooled) buffer; no allocation.

use crate::frame::{Frame, PixelFormat};
use crate::model::manifest::InputSpec;

/// Per-channel affine map from a byte to a tensor value: `v = byte * scale[c] + offset[c]`,
/// precomputed from the manifest's `(x/255 − mean)/std` so the inner loop is one multiply-add.
#[derive(Clone, Debug)]
pub struct Normalizer {
    pub channels: usize,
    scale: [f32; 3],
    offset: [f32; 3],
    /// Lookup table per channel: 256 precomputed values (faster than the multiply-add).
    lut: Vec<[f32; 256]>,
}

impl Normalizer {
    pub fn new(input: &InputSpec) -> Self {
        let channels = input.channels as usize;
        let mut scale = [0.0; 3];
        let mut offset = [0.0; 3];
        let mut lut = vec![[0.0f32; 256]; channels];
        for c in 0..channels {
            // A single mean/std applies to every channel.
            let mean = *input.normalization.mean.get(c).or(input.normalization.mean.first()).unwrap_or(&0.0);
            let std = *input.normalization.std.get(c).or(input.normalization.std.first()).unwrap_or(&1.0);
            scale[c] = 1.0 / (255.0 * std);
            offset[c] = -mean / std;
            for (b, v) in lut[c].iter_mut().enumerate() {
                *v = b as f32 * scale[c] + offset[c];
            }
        }
        Self { channels, scale, offset, lut }
    }

    /// Tensor value of a zero-padding pixel (black) in channel `c`.
    pub fn pad_value(&self, c: usize) -> f32 {
        self.offset[c] + 0.0 * self.scale[c]
    }
}

/// Copy the `tw × th` region at `(x0, y0)` of `frame` into `out` (CHW, `channels × th × tw`).
/// Pixels outside the frame are padding (black).
pub fn tile_to_tensor(frame: &Frame, x0: u32, y0: u32, tw: u32, th: u32, norm: &Normalizer, out: &mut [f32]) {
    let (tw, th) = (tw as usize, th as usize);
    let plane = tw * th;
    debug_assert_eq!(out.len(), plane * norm.channels);
    let fw = frame.width as usize;
    let fh = frame.height as usize;
    let (x0, y0) = (x0 as usize, y0 as usize);
    let valid_w = fw.saturating_sub(x0).min(tw);
    let valid_h = fh.saturating_sub(y0).min(th);
    let src_ch = frame.format.channels();
    let stride = frame.stride();
    for c in 0..norm.channels {
        let lut = &norm.lut[c];
        let dst_plane = &mut out[c * plane..(c + 1) * plane];
        for y in 0..th {
            let dst = &mut dst_plane[y * tw..(y + 1) * tw];
            if y >= valid_h {
                dst.fill(norm.pad_value(c));
                continue;
            }
            let row = &frame.pixels[(y0 + y) * stride + x0 * src_ch..];
            match (frame.format, norm.channels) {
                (PixelFormat::Gray8, _) => {
                    for (d, &s) in dst[..valid_w].iter_mut().zip(row) {
                        *d = lut[s as usize];
                    }
                }
                (PixelFormat::Rgb8, 1) => {
                    for (x, d) in dst[..valid_w].iter_mut().enumerate() {
                        let p = &row[x * 3..x * 3 + 3];
                        // ITU-R BT.601 luma, the same weights OpenCV uses for RGB→GRAY.
                        let l = (p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114 + 500) / 1000;
                        *d = lut[l as usize];
                    }
                }
                (PixelFormat::Rgb8, _) => {
                    for (x, d) in dst[..valid_w].iter_mut().enumerate() {
                        *d = lut[row[x * 3 + c] as usize];
                    }
                }
            }
            dst[valid_w..].fill(norm.pad_value(c));
        }
    }
}

/// Squash the whole frame to `tw × th` (bilinear) into `out` (CHW).
pub fn resize_to_tensor(frame: &Frame, tw: u32, th: u32, norm: &Normalizer, out: &mut [f32]) {
    let (tw, th) = (tw as usize, th as usize);
    let plane = tw * th;
    let fw = frame.width as usize;
    let fh = frame.height as usize;
    let src_ch = frame.format.channels();
    let stride = frame.stride();
    let sx = fw as f32 / tw as f32;
    let sy = fh as f32 / th as f32;
    let sample = |x: usize, y: usize, c: usize| -> f32 {
        let p = &frame.pixels[y * stride + x * src_ch..];
        match (frame.format, norm.channels) {
            (PixelFormat::Gray8, _) => p[0] as f32,
            (PixelFormat::Rgb8, 1) => p[0] as f32 * 0.299 + p[1] as f32 * 0.587 + p[2] as f32 * 0.114,
            (PixelFormat::Rgb8, _) => p[c] as f32,
        }
    };
    for c in 0..norm.channels {
        for y in 0..th {
            // Pixel-centre alignment, as OpenCV's INTER_LINEAR.
            let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (fh - 1) as f32);
            let y0 = fy as usize;
            let y1 = (y0 + 1).min(fh - 1);
            let wy = fy - y0 as f32;
            for x in 0..tw {
                let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (fw - 1) as f32);
                let x0 = fx as usize;
                let x1 = (x0 + 1).min(fw - 1);
                let wx = fx - x0 as f32;
                let top = sample(x0, y0, c) * (1.0 - wx) + sample(x1, y0, c) * wx;
                let bottom = sample(x0, y1, c) * (1.0 - wx) + sample(x1, y1, c) * wx;
                let v = top * (1.0 - wy) + bottom * wy;
                out[c * plane + y * tw + x] = v * norm.scale[c] + norm.offset[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameMeta;
    use crate::model::manifest::{Layout, Normalization};
    use crate::pool::BufferPool;
    use std::time::{Instant, SystemTime};

    fn spec(channels: u32, mean: f32, std: f32) -> InputSpec {
        InputSpec {
            name: "x".into(),
            width: 4,
            height: 4,
            channels,
            layout: Layout::Nchw,
            batch: 0,
            normalization: Normalization { mean: vec![mean], std: vec![std] },
            mode: None,
        }
    }

    fn frame(format: PixelFormat, w: u32, h: u32, fill: impl Fn(usize) -> u8) -> Frame {
        let pool = BufferPool::new(1);
        let n = (w * h) as usize * format.channels();
        let mut pixels = pool.take(n);
        for (i, p) in pixels.iter_mut().enumerate() {
            *p = fill(i);
        }
        let meta = FrameMeta {
            camera: 0,
            seq: 0,
            part_id: None,
            captured_at: Instant::now(),
            captured_wall: SystemTime::now(),
        };
        Frame { meta, format, width: w, height: h, pixels }
    }

    #[test]
    fn gray_tile_is_normalised_and_padded() {
        let f = frame(PixelFormat::Gray8, 3, 3, |i| (i * 10) as u8);
        let norm = Normalizer::new(&spec(1, 0.5, 0.5));
        let mut out = vec![9.0; 16];
        tile_to_tensor(&f, 1, 1, 4, 4, &norm, &mut out);
        // (x/255 − 0.5)/0.5 for pixel (1,1)=40, (2,1)=50, (1,2)=70, (2,2)=80; padding is black = −1.
        let v = |b: f32| (b / 255.0 - 0.5) / 0.5;
        let expect = [v(40.), v(50.), -1., -1., v(70.), v(80.), -1., -1., -1., -1., -1., -1., -1., -1., -1., -1.];
        for (a, b) in out.iter().zip(expect) {
            assert!((a - b).abs() < 1e-5, "{out:?}");
        }
    }

    #[test]
    fn rgb_frames_feed_gray_models_through_luma() {
        let f = frame(PixelFormat::Rgb8, 1, 1, |i| [255, 0, 0][i]);
        let norm = Normalizer::new(&spec(1, 0.0, 1.0));
        let mut out = vec![0.0; 16];
        tile_to_tensor(&f, 0, 0, 4, 4, &norm, &mut out);
        assert!((out[0] - 76.0 / 255.0).abs() < 1e-5, "0.299*255 rounds to 76: {}", out[0]);
    }

    #[test]
    fn resize_of_a_uniform_frame_is_uniform() {
        let f = frame(PixelFormat::Gray8, 10, 7, |_| 51);
        let norm = Normalizer::new(&spec(1, 0.0, 1.0));
        let mut out = vec![0.0; 16];
        resize_to_tensor(&f, 4, 4, &norm, &mut out);
        assert!(out.iter().all(|&v| (v - 0.2).abs() < 1e-5));
    }
}
