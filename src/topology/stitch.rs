//! Stitching: tile outputs back into frame coordinates.
//!
//! A tile's map output (`channels × mh × mw`) covers a frame region (`x0, y0, rw, rh`); it is
//! pasted with nearest-neighbour sampling (identity when the map has the region's size) and
//! combined with what neighbouring tiles already wrote by taking the maximum, so a defect in an
//! overlap is seen at its strongest.

/// A frame region a tile output covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub x0: u32,
    pub y0: u32,
    /// Width and height of the region in frame pixels (may extend past the frame: clipped).
    pub w: u32,
    pub h: u32,
}

/// Max-combine `src` (`channels × mh × mw`) into `dst` (`channels × fh × fw`) over `region`.
#[allow(clippy::too_many_arguments)]
pub fn paste_max(
    src: &[f32],
    channels: usize,
    mh: usize,
    mw: usize,
    dst: &mut [f32],
    fw: usize,
    fh: usize,
    region: Region,
) {
    let x_end = (region.x0 as usize + region.w as usize).min(fw);
    let y_end = (region.y0 as usize + region.h as usize).min(fh);
    let (x0, y0) = (region.x0 as usize, region.y0 as usize);
    if x0 >= x_end || y0 >= y_end {
        return;
    }
    let identity = mh == region.h as usize && mw == region.w as usize;
    for c in 0..channels {
        let s_plane = &src[c * mh * mw..(c + 1) * mh * mw];
        let d_plane = &mut dst[c * fw * fh..(c + 1) * fw * fh];
        for y in y0..y_end {
            let ry = y - y0;
            let sy = if identity { ry } else { (ry * mh / region.h as usize).min(mh - 1) };
            let s_row = &s_plane[sy * mw..(sy + 1) * mw];
            let d_row = &mut d_plane[y * fw + x0..y * fw + x_end];
            if identity {
                for (d, &s) in d_row.iter_mut().zip(s_row) {
                    *d = d.max(s);
                }
            } else {
                for (rx, d) in d_row.iter_mut().enumerate() {
                    let sx = (rx * mw / region.w as usize).min(mw - 1);
                    *d = d.max(s_row[sx]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_tiles_keep_the_maximum() {
        let mut dst = vec![0.0f32; 3 * 2];
        // Two 2×2 tiles on a 3×2 frame, overlapping in column 1.
        paste_max(&[0.1, 0.9, 0.1, 0.2], 1, 2, 2, &mut dst, 3, 2, Region { x0: 0, y0: 0, w: 2, h: 2 });
        paste_max(&[0.5, 0.3, 0.6, 0.7], 1, 2, 2, &mut dst, 3, 2, Region { x0: 1, y0: 0, w: 2, h: 2 });
        assert_eq!(dst, vec![0.1, 0.9, 0.3, 0.1, 0.6, 0.7]);
    }

    #[test]
    fn padded_tiles_are_clipped_to_the_frame() {
        let mut dst = vec![0.0f32; 2 * 2];
        let src: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        paste_max(&src, 1, 3, 3, &mut dst, 2, 2, Region { x0: 0, y0: 0, w: 3, h: 3 });
        assert_eq!(dst, vec![1.0, 2.0, 4.0, 5.0]);
    }

    #[test]
    fn smaller_maps_are_upsampled_nearest() {
        let mut dst = vec![0.0f32; 4 * 4];
        paste_max(&[1.0, 2.0, 3.0, 4.0], 1, 2, 2, &mut dst, 4, 4, Region { x0: 0, y0: 0, w: 4, h: 4 });
        assert_eq!(&dst[..4], &[1.0, 1.0, 2.0, 2.0]);
        assert_eq!(&dst[12..], &[3.0, 3.0, 4.0, 4.0]);
    }
}
