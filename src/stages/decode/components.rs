//! Connected components (8-connectivity) of a thresholded score map, with per-component bounding
//! box, pixel count, max and mean score, and second-order moments (orientation-aware length and
//! width).
//!
//! One raster pass with union-find over provisional labels: only the previous and the current row
//! of labels are kept, and statistics are gathered per provisional label and merged into their
//! root at the end. Every buffer lives in a caller-owned [`ComponentScratch`], so once it has seen
//! the largest map it will see, labelling does not allocate.

use crate::pipeline::Defect;

/// One connected component, in the pixel coordinates of the map it was found in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Component {
    /// Inclusive bounding box.
    pub x_min: u32,
    pub y_min: u32,
    pub x_max: u32,
    pub y_max: u32,
    /// Number of pixels in the component.
    pub area_px: u32,
    pub max_score: f32,
    /// Sum of the scores of its pixels (f64 so large components keep their precision).
    pub sum_score: f64,
    /// Sums of x, y, x², y² and x·y over its pixels (pixel centres), for the moments.
    pub sum_x: f64,
    pub sum_y: f64,
    pub sum_xx: f64,
    pub sum_yy: f64,
    pub sum_xy: f64,
}

impl Component {
    fn seed(x: u32, y: u32) -> Self {
        Self {
            x_min: x,
            y_min: y,
            x_max: x,
            y_max: y,
            area_px: 0,
            max_score: f32::NEG_INFINITY,
            sum_score: 0.0,
            sum_x: 0.0,
            sum_y: 0.0,
            sum_xx: 0.0,
            sum_yy: 0.0,
            sum_xy: 0.0,
        }
    }

    fn add_pixel(&mut self, x: u32, y: u32, score: f32) {
        self.x_min = self.x_min.min(x);
        self.x_max = self.x_max.max(x);
        // Rows are scanned in order, so `y` never goes below `y_min`.
        self.y_max = self.y_max.max(y);
        self.area_px += 1;
        self.max_score = self.max_score.max(score);
        self.sum_score += f64::from(score);
        let (x, y) = (f64::from(x), f64::from(y));
        self.sum_x += x;
        self.sum_y += y;
        self.sum_xx += x * x;
        self.sum_yy += y * y;
        self.sum_xy += x * y;
    }

    fn merge(&mut self, other: &Component) {
        self.x_min = self.x_min.min(other.x_min);
        self.y_min = self.y_min.min(other.y_min);
        self.x_max = self.x_max.max(other.x_max);
        self.y_max = self.y_max.max(other.y_max);
        self.area_px += other.area_px;
        self.max_score = self.max_score.max(other.max_score);
        self.sum_score += other.sum_score;
        self.sum_x += other.sum_x;
        self.sum_y += other.sum_y;
        self.sum_xx += other.sum_xx;
        self.sum_yy += other.sum_yy;
        self.sum_xy += other.sum_xy;
    }

    pub fn width(&self) -> u32 {
        self.x_max - self.x_min + 1
    }

    pub fn height(&self) -> u32 {
        self.y_max - self.y_min + 1
    }

    pub fn mean_score(&self) -> f32 {
        (self.sum_score / f64::from(self.area_px.max(1))) as f32
    }

    /// Length and width, in pixels, of the rectangle with the component's area-normalised second
    /// moments, along the component's principal axes; each pixel counts as a unit square.
    ///
    /// A straight band of L × W pixels measures L × W at any angle (a 45° line of n pixels,
    /// n·√2 × 1), unlike a bounding box; a disc of diameter d measures 0.87 d × 0.87 d
    /// (√3/2: the rectangle, not the ellipse, with the same moments).
    pub fn length_width(&self) -> (f32, f32) {
        let n = f64::from(self.area_px.max(1));
        let (mx, my) = (self.sum_x / n, self.sum_y / n);
        // Covariance of the pixel centres, plus 1/12 per axis for each pixel's own extent.
        let cxx = (self.sum_xx / n - mx * mx).max(0.0) + 1.0 / 12.0;
        let cyy = (self.sum_yy / n - my * my).max(0.0) + 1.0 / 12.0;
        let cxy = self.sum_xy / n - mx * my;
        let half_trace = (cxx + cyy) / 2.0;
        let root = (((cxx - cyy) / 2.0).powi(2) + cxy * cxy).sqrt();
        let major = half_trace + root;
        let minor = (half_trace - root).max(1.0 / 12.0);
        ((12.0 * major).sqrt() as f32, (12.0 * minor).sqrt() as f32)
    }

    /// The component as a defect of `class`: top-left corner and size of its bounding box, pixel
    /// count, moment length and width, scores.
    pub fn to_defect(&self, class: u16) -> Defect {
        let (length_px, width_px) = self.length_width();
        Defect {
            class,
            x: self.x_min as f32,
            y: self.y_min as f32,
            w: self.width() as f32,
            h: self.height() as f32,
            area_px: self.area_px as f32,
            length_px,
            width_px,
            max_score: self.max_score,
            mean_score: self.mean_score(),
        }
    }
}

/// Reusable buffers for [`label_components`]. Create once per worker and pass to every call.
#[derive(Debug, Default)]
pub struct ComponentScratch {
    /// Provisional labels of the previous row (`..width`) and the current row (`width..`);
    /// 0 = background.
    rows: Vec<u32>,
    /// Union-find parent of each provisional label; a root is its own parent and is the smallest
    /// label of its set.
    parent: Vec<u32>,
    /// Statistics per provisional label (index 0 unused).
    stats: Vec<Component>,
    /// The result of the last call.
    components: Vec<Component>,
}

impl ComponentScratch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scratch sized up front for maps of `width` columns with up to `labels` provisional labels,
    /// so a long-running pipeline does not grow it on the frame path when a part shows more
    /// regions than any part before it.
    pub fn with_capacity(width: usize, labels: usize) -> Self {
        Self {
            rows: Vec::with_capacity(2 * width),
            parent: Vec::with_capacity(labels + 1),
            stats: Vec::with_capacity(labels + 1),
            components: Vec::with_capacity(labels),
        }
    }

    fn find(&mut self, mut label: u32) -> u32 {
        // Path halving: every visited node skips to its grandparent.
        while self.parent[label as usize] != label {
            let grandparent = self.parent[self.parent[label as usize] as usize];
            self.parent[label as usize] = grandparent;
            label = grandparent;
        }
        label
    }

    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        // Keep the smaller label as root so roots follow raster order.
        let (root, child) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[child as usize] = root;
    }

    fn new_label(&mut self, x: u32, y: u32) -> u32 {
        let label = self.parent.len() as u32;
        self.parent.push(label);
        self.stats.push(Component::seed(x, y));
        label
    }
}

/// Find the 8-connected components of the pixels whose score is `>= threshold` in a row-major
/// `width × height` map. A NaN score is on: a value nobody can compare is never "below threshold"
/// (the pipeline fails such frames safe before decoding; this is the decoder's own guard).
///
/// Components come out in the raster order of their first (top-most, then left-most) pixel. The
/// returned slice borrows `scratch` and is valid until its next use.
///
/// # Panics
/// When `scores.len() != width * height`, or the map has more than `u32::MAX` pixels.
pub fn label_components<'s>(
    scores: &[f32],
    width: usize,
    height: usize,
    threshold: f32,
    scratch: &'s mut ComponentScratch,
) -> &'s [Component] {
    assert_eq!(scores.len(), width * height, "score map is not width × height");
    assert!(u32::try_from(scores.len()).is_ok(), "score map too large for u32 labels");

    scratch.rows.clear();
    scratch.rows.resize(2 * width, 0);
    scratch.parent.clear();
    scratch.parent.push(0);
    scratch.stats.clear();
    scratch.stats.push(Component::seed(0, 0));
    scratch.components.clear();

    // Both halves start at 0, so the first row sees an empty row above it.
    // Whether the row labelled last had any pixel on: most rows of a good part have none, and
    // then the row is skipped with one vectorised pass instead of being labelled pixel by pixel.
    let mut previous_on = false;
    for (y, row) in scores.chunks_exact(width.max(1)).enumerate() {
        if !any_at_or_above(row, threshold) {
            if previous_on {
                scratch.rows.fill(0);
                previous_on = false;
            }
            continue;
        }
        previous_on = true;
        // The row labelled last becomes the previous row.
        scratch.rows.copy_within(width.., 0);
        for (x, &score) in row.iter().enumerate() {
            let label = if super::at_or_above(score, threshold) {
                let label = label_pixel(scratch, width, x, y as u32);
                scratch.stats[label as usize].add_pixel(x as u32, y as u32, score);
                label
            } else {
                0
            };
            scratch.rows[width + x] = label;
        }
    }

    // Merge every provisional label's statistics into its root, then keep the roots in label
    // order (= raster order of each component's first pixel).
    for label in 1..scratch.parent.len() as u32 {
        let root = scratch.find(label);
        if root != label {
            let stats = scratch.stats[label as usize];
            scratch.stats[root as usize].merge(&stats);
        }
    }
    for label in 1..scratch.parent.len() {
        if scratch.parent[label] == label as u32 {
            scratch.components.push(scratch.stats[label]);
        }
    }
    &scratch.components
}

/// Whether any score of `row` is on (`>= threshold`, or NaN), without a branch per pixel.
fn any_at_or_above(row: &[f32], threshold: f32) -> bool {
    // OR-ing whole chunks (no early exit inside one) lets the compiler vectorise the comparisons.
    row.chunks(16).any(|chunk| chunk.iter().fold(false, |on, &v| on | (v >= threshold) | v.is_nan()))
}

/// Label of an "on" pixel at (x, y) given the labels already assigned to its neighbours above and
/// to the left. Neighbours that touch each other need no union.
fn label_pixel(scratch: &mut ComponentScratch, width: usize, x: usize, y: u32) -> u32 {
    let (prev, cur) = scratch.rows.split_at(width);
    let north = prev[x];
    let north_west = if x > 0 { prev[x - 1] } else { 0 };
    let north_east = if x + 1 < width { prev[x + 1] } else { 0 };
    let west = if x > 0 { cur[x - 1] } else { 0 };

    if north != 0 {
        // N touches NW, NE and W: they already share its set.
        north
    } else if north_east != 0 {
        // NE does not touch W or NW (two columns apart): join them.
        let other = if west != 0 { west } else { north_west };
        if other != 0 {
            scratch.union(north_east, other);
        }
        north_east
    } else if north_west != 0 {
        north_west
    } else if west != 0 {
        west
    } else {
        scratch.new_label(x as u32, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(rows: &[&str]) -> (Vec<f32>, usize, usize) {
        // '.' = 0, digits = tenths.
        let width = rows[0].len();
        let scores =
            rows.iter().flat_map(|r| r.chars()).map(|c| c.to_digit(10).map_or(0.0, |d| d as f32 / 10.0)).collect();
        (scores, width, rows.len())
    }

    #[test]
    fn diagonal_pixels_join_and_gaps_split() {
        let (scores, w, h) = map(&[
            "9....", //
            ".8..5", //
            "..7.5", //
            ".....",
        ]);
        let mut scratch = ComponentScratch::new();
        let comps = label_components(&scores, w, h, 0.5, &mut scratch);
        assert_eq!(comps.len(), 2);
        let diag = comps[0];
        assert_eq!((diag.x_min, diag.y_min, diag.x_max, diag.y_max), (0, 0, 2, 2));
        assert_eq!(diag.area_px, 3);
        assert_eq!(diag.max_score, 0.9);
        assert!((diag.mean_score() - 0.8).abs() < 1e-6);
        let bar = comps[1];
        assert_eq!((bar.x_min, bar.y_min, bar.x_max, bar.y_max), (4, 1, 4, 2));
        assert_eq!(bar.area_px, 2);
        assert!((bar.mean_score() - 0.5).abs() < 1e-6);
    }

    #[test]
    fn u_shape_is_one_component_via_union() {
        // The two arms get different labels on row 0 and meet on row 2.
        let (scores, w, h) = map(&[
            "6...6", //
            "6...6", //
            "66666",
        ]);
        let mut scratch = ComponentScratch::new();
        let comps = label_components(&scores, w, h, 0.6, &mut scratch);
        assert_eq!(comps.len(), 1);
        assert_eq!(comps[0].area_px, 9);
        assert_eq!((comps[0].width(), comps[0].height()), (5, 3));
    }

    #[test]
    fn north_east_joins_west_across_a_gap() {
        // Pixel (1,1) sees NE = (2,0) and W = (0,1), which are not neighbours of each other.
        let (scores, w, h) = map(&[
            "..9", //
            "99.",
        ]);
        let mut scratch = ComponentScratch::new();
        let comps = label_components(&scores, w, h, 0.5, &mut scratch);
        assert_eq!(comps.len(), 1);
        assert_eq!(comps[0].area_px, 3);
    }

    #[test]
    fn threshold_is_inclusive_and_nan_is_on() {
        let scores = [0.5, f32::NAN, 0.49, 0.5];
        let mut scratch = ComponentScratch::new();
        let comps = label_components(&scores, 4, 1, 0.5, &mut scratch);
        assert_eq!(comps.len(), 2, "NaN joins its neighbour: never below threshold");
        assert_eq!((comps[0].x_min, comps[0].area_px, comps[1].x_min), (0, 2, 3));
    }

    #[test]
    fn empty_and_degenerate_maps() {
        let mut scratch = ComponentScratch::new();
        assert!(label_components(&[], 0, 0, 0.5, &mut scratch).is_empty());
        assert!(label_components(&[0.0; 6], 3, 2, 0.5, &mut scratch).is_empty());
        let column = label_components(&[1.0; 4], 1, 4, 0.5, &mut scratch);
        assert_eq!(column.len(), 1);
        assert_eq!(column[0].height(), 4);
    }

    #[test]
    fn scratch_is_reused_without_reallocating() {
        let (scores, w, h) = map(&["9.9.9", ".....", "9.9.9"]);
        let mut scratch = ComponentScratch::new();
        label_components(&scores, w, h, 0.5, &mut scratch);
        let caps = |s: &ComponentScratch| {
            (s.rows.capacity(), s.parent.capacity(), s.stats.capacity(), s.components.capacity())
        };
        let before = caps(&scratch);
        assert_eq!(label_components(&scores, w, h, 0.5, &mut scratch).len(), 6);
        assert_eq!(caps(&scratch), before);
    }

    /// Length and width by brute force: the principal axis from an angle search (0.05° steps)
    /// maximising the variance of the pixel centres, then the equivalent-rectangle formula.
    fn brute_length_width(pixels: &[(f64, f64)]) -> (f64, f64) {
        let n = pixels.len() as f64;
        let (mx, my) = (pixels.iter().map(|p| p.0).sum::<f64>() / n, pixels.iter().map(|p| p.1).sum::<f64>() / n);
        let var = |a: f64| {
            let (c, s) = (a.cos(), a.sin());
            pixels.iter().map(|p| ((p.0 - mx) * c + (p.1 - my) * s).powi(2)).sum::<f64>() / n
        };
        let best =
            (0..3600).map(|i| (i as f64 * 0.05).to_radians()).max_by(|a, b| var(*a).total_cmp(&var(*b))).unwrap();
        let across = best + std::f64::consts::FRAC_PI_2;
        ((12.0 * (var(best) + 1.0 / 12.0)).sqrt(), (12.0 * (var(across) + 1.0 / 12.0)).sqrt())
    }

    #[test]
    fn length_and_width_follow_the_defect_not_the_bounding_box() {
        let mut scratch = ComponentScratch::new();
        // A horizontal band 20 × 3: exactly 20 × 3.
        let (w, h) = (30, 10);
        let mut scores = vec![0.0f32; w * h];
        for y in 2..5 {
            for x in 5..25 {
                scores[y * w + x] = 1.0;
            }
        }
        let c = label_components(&scores, w, h, 0.5, &mut scratch)[0];
        let (l, wd) = c.length_width();
        assert!((l - 20.0).abs() < 1e-4 && (wd - 3.0).abs() < 1e-4, "{l} × {wd}");
        // A 45° line of 20 pixels: 20·√2 long, 1 wide; its bounding box is 20 × 20.
        let mut scores = vec![0.0f32; 30 * 30];
        for i in 3..23 {
            scores[i * 30 + i] = 1.0;
        }
        let c = label_components(&scores, 30, 30, 0.5, &mut scratch)[0];
        let (l, wd) = c.length_width();
        let want = (2.0 * (20.0f32 * 20.0 - 1.0) + 1.0).sqrt(); // 12·var along the diagonal + 1
        assert!((l - want).abs() < 1e-3 && (wd - 1.0).abs() < 1e-4, "{l} × {wd}");
        assert_eq!((c.width(), c.height()), (20, 20));
        // One pixel: 1 × 1.
        let c = label_components(&[1.0], 1, 1, 0.5, &mut scratch)[0];
        assert_eq!(c.length_width(), (1.0, 1.0));
    }

    proptest! {
        #[test]
        fn length_and_width_match_a_brute_force_axis_search(
            pixels in prop::collection::btree_set((0u32..12, 0u32..12), 1..40)
        ) {
            // One component per set: the kernel's moments against an angle search.
            let mut c = Component::seed(0, 0);
            for &(x, y) in &pixels {
                c.add_pixel(x, y, 1.0);
            }
            let pts: Vec<(f64, f64)> = pixels.iter().map(|&(x, y)| (f64::from(x), f64::from(y))).collect();
            let (bl, bw) = brute_length_width(&pts);
            let (l, w) = c.length_width();
            prop_assert!((f64::from(l) - bl).abs() < 0.01 * bl.max(1.0), "length {} vs {}", l, bl);
            prop_assert!((f64::from(w) - bw).abs() < 0.02 * bw.max(1.0) + 0.01, "width {} vs {}", w, bw);
        }
    }

    /// Naive reference: flood fill from each unvisited "on" pixel in raster order.
    fn flood_fill(scores: &[f32], w: usize, h: usize, t: f32) -> Vec<Component> {
        let mut seen = vec![false; scores.len()];
        let mut out = Vec::new();
        for start in 0..scores.len() {
            let on = |s: f32| crate::stages::decode::at_or_above(s, t);
            if seen[start] || !on(scores[start]) {
                continue;
            }
            seen[start] = true;
            let mut comp = Component::seed((start % w) as u32, (start / w) as u32);
            let mut stack = vec![start];
            while let Some(i) = stack.pop() {
                let (x, y) = ((i % w) as i64, (i / w) as i64);
                let (fx, fy) = (x as f64, y as f64);
                comp.merge(&Component {
                    area_px: 1,
                    max_score: scores[i],
                    sum_score: f64::from(scores[i]),
                    sum_x: fx,
                    sum_y: fy,
                    sum_xx: fx * fx,
                    sum_yy: fy * fy,
                    sum_xy: fx * fy,
                    ..Component::seed(x as u32, y as u32)
                });
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (nx, ny) = (x + dx, y + dy);
                        if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                            continue;
                        }
                        let j = ny as usize * w + nx as usize;
                        if !seen[j] && on(scores[j]) {
                            seen[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
            out.push(comp);
        }
        out
    }

    proptest! {
        /// Sparse maps, as a good part's are: whole rows off between rows with regions, so the
        /// rows skipped without labelling (and the labels they clear) are exercised.
        #[test]
        fn matches_flood_fill_with_rows_off(
            (w, scores) in (1usize..20, 2usize..20).prop_flat_map(|(w, h)| {
                let cell = prop::sample::select(vec![0.0f32, 0.0, 0.0, 0.2, 0.5, 1.0]);
                (Just(w), prop::collection::vec(cell, w * h), prop::collection::vec(any::<bool>(), h))
            }).prop_map(|(w, mut scores, rows_off)| {
                for (row, off) in scores.chunks_mut(w).zip(rows_off) {
                    if off {
                        row.fill(0.0);
                    }
                }
                (w, scores)
            })
        ) {
            same_as_flood_fill(&scores, w, scores.len() / w)?;
        }

        #[test]
        fn matches_flood_fill(
            (w, h, scores) in (1usize..14, 1usize..14).prop_flat_map(|(w, h)| {
                let cell = prop::sample::select(vec![0.0f32, 0.2, 0.5, 0.7, 1.0]);
                (Just(w), Just(h), prop::collection::vec(cell, w * h))
            })
        ) {
            same_as_flood_fill(&scores, w, h)?;
        }
    }

    /// The labeller's components at threshold 0.5, field by field, against the flood fill's.
    fn same_as_flood_fill(scores: &[f32], w: usize, h: usize) -> Result<(), TestCaseError> {
        let mut scratch = ComponentScratch::new();
        let got = label_components(scores, w, h, 0.5, &mut scratch).to_vec();
        let want = flood_fill(scores, w, h, 0.5);
        prop_assert_eq!(got.len(), want.len());
        for (g, r) in got.iter().zip(&want) {
            prop_assert_eq!(
                (g.x_min, g.y_min, g.x_max, g.y_max, g.area_px, g.max_score),
                (r.x_min, r.y_min, r.x_max, r.y_max, r.area_px, r.max_score)
            );
            prop_assert!((g.sum_score - r.sum_score).abs() < 1e-9);
            prop_assert_eq!(
                (g.sum_x, g.sum_y, g.sum_xx, g.sum_yy, g.sum_xy),
                (r.sum_x, r.sum_y, r.sum_xx, r.sum_yy, r.sum_xy)
            );
        }
        Ok(())
    }
}
