//! Stitching: tile outputs back into frame coordinates.
//!
//! A tile's map output (`channels × mh × mw`) covers a frame region (`x0, y0, w, h`); it is
//! pasted with nearest-neighbour sampling (identity when the map has the region's size), but only
//! inside the tile's stitch window (see `TileGrid::window`): overlaps are split at their middle so
//! each frame pixel comes from the tile that saw it with the most context around it, and border
//! effects of one tile never leak into its neighbour's area. Values are max-combined with what is
//! already there, which is the identity on a freshly reset map.

/// A frame region a tile output covers, and the part of it the tile writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub x0: u32,
    pub y0: u32,
    /// Width and height of the region in frame pixels (may extend past the frame: clipped).
    pub w: u32,
    pub h: u32,
    /// Stitch window `(x0, y0, x1, y1)`, end-exclusive, in frame pixels.
    pub window: (u32, u32, u32, u32),
}

impl Region {
    /// A region written in full (resize mode, single tiles).
    pub fn whole(x0: u32, y0: u32, w: u32, h: u32) -> Self {
        Self { x0, y0, w, h, window: (x0, y0, x0 + w, y0 + h) }
    }
}

/// Max-combine `src` (`channels × mh × mw`) into `dst` (`channels × fh × fw`) over `region`.
/// Buffers smaller than their stated shapes are an error (nothing written), never a panic.
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
) -> Result<(), String> {
    if mh == 0 || mw == 0 || src.len() < channels * mh * mw || dst.len() < channels * fw * fh {
        return Err(format!(
            "a {channels} × {mh} × {mw} map ({} values) cannot be pasted into a {channels} × {fh} × {fw} frame map ({} values)",
            src.len(),
            dst.len()
        ));
    }
    let (rx0, ry0) = (region.x0 as usize, region.y0 as usize);
    let (wx0, wy0, wx1, wy1) = region.window;
    let x0 = (wx0 as usize).max(rx0);
    let y0 = (wy0 as usize).max(ry0);
    let x_end = (wx1 as usize).min(rx0 + region.w as usize).min(fw);
    let y_end = (wy1 as usize).min(ry0 + region.h as usize).min(fh);
    if x0 >= x_end || y0 >= y_end {
        return Ok(());
    }
    let identity = mh == region.h as usize && mw == region.w as usize;
    thread_local! {
        /// [`source_columns`]' table, kept per (assembler) thread so pasting does not allocate.
        static COLUMNS: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    COLUMNS.with_borrow_mut(|columns| {
        if !identity {
            source_columns(columns, x0, x_end, rx0, region.w as usize, mw);
        }
        for c in 0..channels {
            let s_plane = &src[c * mh * mw..(c + 1) * mh * mw];
            let d_plane = &mut dst[c * fw * fh..(c + 1) * fw * fh];
            for y in y0..y_end {
                let ry = y - ry0;
                let sy = if identity { ry } else { (ry * mh / region.h as usize).min(mh - 1) };
                let s_row = &s_plane[sy * mw..(sy + 1) * mw];
                let d_row = &mut d_plane[y * fw + x0..y * fw + x_end];
                if identity {
                    for (d, &s) in d_row.iter_mut().zip(&s_row[x0 - rx0..]) {
                        *d = d.max(s);
                    }
                } else {
                    for (d, &sx) in d_row.iter_mut().zip(columns.iter()) {
                        *d = d.max(s_row[sx]);
                    }
                }
            }
        }
    });
    Ok(())
}

/// The map column each frame column `x0..x_end` reads: sx = ⌊(x − rx0) · mw / w⌋, stepped along
/// the row without a division per pixel ((x − rx0) · mw = sx · w + rem throughout). Worked out
/// once per paste, not once per row.
fn source_columns(columns: &mut Vec<usize>, x0: usize, x_end: usize, rx0: usize, w: usize, mw: usize) {
    columns.clear();
    let k0 = x0 - rx0;
    let (mut sx, mut rem) = (k0 * mw / w, k0 * mw % w);
    for _ in x0..x_end {
        columns.push(sx.min(mw - 1));
        rem += mw;
        while rem >= w {
            rem -= w;
            sx += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_with_more_channels_than_the_frame_map_is_an_error() {
        // A segmentation output with 2 channels for 1 listed class.
        let mut dst = vec![0.0f32; 4];
        assert!(paste_max(&[0.5; 8], 2, 2, 2, &mut dst, 2, 2, Region::whole(0, 0, 2, 2)).is_err());
        assert_eq!(dst, vec![0.0; 4], "nothing written");
    }

    #[test]
    fn overlapping_tiles_each_write_their_window() {
        let mut dst = vec![0.0f32; 4 * 2];
        // Two 3×2 tiles on a 4×2 frame overlapping in columns 1..3, split at column 2.
        let left = Region { x0: 0, y0: 0, w: 3, h: 2, window: (0, 0, 2, 2) };
        let right = Region { x0: 1, y0: 0, w: 3, h: 2, window: (2, 0, 4, 2) };
        paste_max(&[0.1, 0.2, 0.9, 0.3, 0.4, 0.9], 1, 2, 3, &mut dst, 4, 2, left).unwrap();
        paste_max(&[0.9, 0.5, 0.6, 0.9, 0.7, 0.8], 1, 2, 3, &mut dst, 4, 2, right).unwrap();
        // The left tile's 0.9 border values (column 2) and the right tile's (column 1) are
        // outside their windows and never reach the frame.
        assert_eq!(dst, vec![0.1, 0.2, 0.5, 0.6, 0.3, 0.4, 0.7, 0.8]);
    }

    #[test]
    fn padded_tiles_are_clipped_to_the_frame() {
        let mut dst = vec![0.0f32; 2 * 2];
        let src: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        paste_max(&src, 1, 3, 3, &mut dst, 2, 2, Region::whole(0, 0, 3, 3)).unwrap();
        assert_eq!(dst, vec![1.0, 2.0, 4.0, 5.0]);
    }

    #[test]
    fn smaller_maps_are_upsampled_nearest() {
        let mut dst = vec![0.0f32; 4 * 4];
        paste_max(&[1.0, 2.0, 3.0, 4.0], 1, 2, 2, &mut dst, 4, 4, Region::whole(0, 0, 4, 4)).unwrap();
        assert_eq!(&dst[..4], &[1.0, 1.0, 2.0, 2.0]);
        assert_eq!(&dst[12..], &[3.0, 3.0, 4.0, 4.0]);
    }

    #[test]
    fn resampled_columns_are_those_of_the_exact_division() {
        // Up- and downsampling, windows that start inside the region: each pixel takes the map
        // value at ⌊(x - x0) · mw / w⌋, ⌊(y - y0) · mh / h⌋.
        for (mw, mh, w, h, window) in
            [(16, 16, 37, 23, (0, 0, 37, 23)), (7, 5, 3, 2, (1, 0, 3, 2)), (5, 9, 13, 11, (4, 3, 12, 10))]
        {
            let src: Vec<f32> = (0..mw * mh).map(|v| v as f32).collect();
            let mut dst = vec![-1.0f32; w * h];
            let region = Region { x0: 0, y0: 0, w: w as u32, h: h as u32, window };
            paste_max(&src, 1, mh, mw, &mut dst, w, h, region).unwrap();
            let (wx0, wy0, wx1, wy1) = window;
            for y in 0..h {
                for x in 0..w {
                    let inside = (wx0..wx1).contains(&(x as u32)) && (wy0..wy1).contains(&(y as u32));
                    let want =
                        if inside { src[(y * mh / h).min(mh - 1) * mw + (x * mw / w).min(mw - 1)] } else { -1.0 };
                    assert_eq!(dst[y * w + x], want, "{mw}×{mh} map into {w}×{h} at ({x}, {y})");
                }
            }
        }
    }
}
