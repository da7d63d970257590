//! Tile geometry: where model-size tiles are cut from a frame so they cover it with at least the
//! configured overlap, spread evenly so no tile hangs over the frame edge (unless the frame is
//! smaller than a tile, in which case the one tile is padded).

/// Top-left corners of the tiles along one axis.
///
/// `n = ceil((len - overlap) / (tile - overlap))` tiles, the first at 0 and the last flush with
/// the end, the rest evenly between them (so the real overlap is ≥ the requested one).
pub fn axis_origins(len: u32, tile: u32, overlap: u32, out: &mut Vec<u32>) {
    out.clear();
    if len <= tile {
        out.push(0);
        return;
    }
    let overlap = overlap.min(tile.saturating_sub(1));
    let step = tile - overlap;
    let n = (len - overlap).div_ceil(step).max(2);
    let span = (len - tile) as u64;
    for i in 0..n as u64 {
        out.push((span * i / (n as u64 - 1)) as u32);
    }
}

/// How many tiles along one axis [`axis_origins`] cuts (without building them).
pub fn axis_count(len: u32, tile: u32, overlap: u32) -> usize {
    if len <= tile {
        return 1;
    }
    let overlap = overlap.min(tile.saturating_sub(1));
    (len - overlap).div_ceil(tile - overlap).max(2) as usize
}

/// How many tiles cover a `width × height` frame (what [`TileGrid::plan`] would give).
pub fn tile_count(width: u32, height: u32, tile_w: u32, tile_h: u32, overlap: u32) -> usize {
    axis_count(width, tile_w, overlap) * axis_count(height, tile_h, overlap)
}

/// The tiles covering a `width × height` frame, row-major, as `(x0, y0)` corners.
#[derive(Clone, Debug, Default)]
pub struct TileGrid {
    pub xs: Vec<u32>,
    pub ys: Vec<u32>,
}

impl TileGrid {
    /// Recompute for a frame size (reuses the vectors).
    pub fn plan(&mut self, width: u32, height: u32, tile_w: u32, tile_h: u32, overlap: u32) {
        axis_origins(width, tile_w, overlap, &mut self.xs);
        axis_origins(height, tile_h, overlap, &mut self.ys);
    }

    pub fn len(&self) -> usize {
        self.xs.len() * self.ys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Corner of tile `i` (row-major).
    pub fn origin(&self, i: usize) -> (u32, u32) {
        (self.xs[i % self.xs.len()], self.ys[i / self.xs.len()])
    }

    /// The part of the frame tile `i` is responsible for when outputs are stitched: each overlap
    /// is split at its middle, so every frame pixel comes from exactly one tile, and from the one
    /// in which it lies farthest from the tile border (where models see the least context).
    /// Returned as `(x0, y0, x1, y1)`, end-exclusive, clipped to the `width × height` frame.
    pub fn window(&self, i: usize, tile_w: u32, tile_h: u32, width: u32, height: u32) -> (u32, u32, u32, u32) {
        let (x0, x1) = axis_window(&self.xs, i % self.xs.len(), tile_w, width);
        let (y0, y1) = axis_window(&self.ys, i / self.xs.len(), tile_h, height);
        (x0, y0, x1, y1)
    }
}

fn axis_window(origins: &[u32], k: usize, tile: u32, len: u32) -> (u32, u32) {
    let start = if k == 0 { 0 } else { (origins[k - 1] + tile + origins[k]) / 2 };
    let end = if k + 1 == origins.len() { len } else { (origins[k] + tile + origins[k + 1]) / 2 };
    (start, end.min(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_count_matches_the_grid() {
        let mut grid = TileGrid::default();
        for (w, h, t, o) in [(10, 10, 4, 1), (4, 4, 4, 0), (3, 9, 4, 2), (1000, 37, 64, 16), (65, 65, 64, 63)] {
            grid.plan(w, h, t, t, o);
            assert_eq!(tile_count(w, h, t, t, o), grid.len(), "{w}×{h} tile {t} overlap {o}");
        }
    }
    use proptest::prelude::*;

    fn origins(len: u32, tile: u32, overlap: u32) -> Vec<u32> {
        let mut v = Vec::new();
        axis_origins(len, tile, overlap, &mut v);
        v
    }

    #[test]
    fn hand_worked_layouts() {
        assert_eq!(origins(480, 256, 32), vec![0, 224]);
        assert_eq!(origins(256, 256, 32), vec![0]);
        assert_eq!(origins(100, 256, 32), vec![0], "small frames get one padded tile");
        assert_eq!(origins(640, 256, 32), vec![0, 192, 384]);
    }

    #[test]
    fn stitch_windows_split_overlaps_in_the_middle() {
        let mut g = TileGrid::default();
        g.plan(480, 256, 256, 256, 32);
        assert_eq!(g.xs, vec![0, 224]);
        // Overlap [224, 256) splits at 240.
        assert_eq!(g.window(0, 256, 256, 480, 256), (0, 0, 240, 256));
        assert_eq!(g.window(1, 256, 256, 480, 256), (240, 0, 480, 256));
    }

    proptest! {
        #[test]
        fn stitch_windows_partition_the_frame(w in 1u32..3000, h in 1u32..1000, tile in 16u32..400, overlap in 0u32..15) {
            let mut g = TileGrid::default();
            g.plan(w, h, tile, tile, overlap);
            let mut covered = 0u64;
            for i in 0..g.len() {
                let (x0, y0, x1, y1) = g.window(i, tile, tile, w, h);
                let (ox, oy) = g.origin(i);
                prop_assert!(x0 >= ox && y0 >= oy && x1 <= ox + tile && y1 <= oy + tile, "window inside its tile");
                covered += (x1 - x0) as u64 * (y1 - y0) as u64;
            }
            prop_assert_eq!(covered, w as u64 * h as u64, "windows tile the frame exactly once");
        }

        #[test]
        fn tiles_cover_the_axis_with_the_requested_overlap(len in 1u32..5000, tile in 8u32..600, overlap in 0u32..64) {
            prop_assume!(overlap < tile);
            let o = origins(len, tile, overlap);
            prop_assert_eq!(o[0], 0);
            if len > tile {
                prop_assert_eq!(*o.last().unwrap() + tile, len, "last tile is flush with the end");
                for w in o.windows(2) {
                    prop_assert!(w[1] > w[0]);
                    prop_assert!(w[0] + tile >= w[1] + overlap, "overlap at least as asked");
                }
            }
        }
    }
}
