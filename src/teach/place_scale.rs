//! Each place's patch scores divided by what good parts typically score there.
//!
//! On fixtured parts (every part at the same place in the frame: elpv's cells with their busbars
//! and edges) some places of the patch grid score higher than others on every good part, and the
//! image score (the hottest few percent of the map) then reads the places that are always high
//! instead of the part's anomalies. The held-out goods' patch scores, each place pooled with its
//! neighbours, give a typical score per place; a model with the scale divides each place's patch
//! score by its typical one relative to the median place's, before the map is smoothed. Where
//! parts are not fixtured (MTD's tiles, cropped anywhere) the places differ only by chance and
//! the scale buys nothing, so it is left out (research round 14, docs/TEACH_RESEARCH.md).
//!
//! How much the places differ is measured against how much one place varies: the spread of the
//! logarithms of the places' medians over the median of each place's relative deviation
//! ([`PlaceScale::structure`]). Scaling is used from [`MIN_STRUCTURE`] on.

/// The places' differences worth scaling for: on the shared sets' training goods, fixtured cells
/// measured 0.36–0.69 (research folds and teach's own hold-out) and gained, MTD's tiles
/// 0.11–0.22 and gained nothing.
pub const MIN_STRUCTURE: f64 = 0.3;
/// Each place's typical score is pooled over the places within this many cells (a part that
/// sits a cell off is still the same part).
pub const RADIUS: usize = 1;
/// Fewer held-out goods than this give no scale: a per-place median needs a few parts.
pub const MIN_GOODS: usize = 8;

/// What the held-out goods say about the places of one input's patch grid.
#[derive(Clone, Debug, PartialEq)]
pub struct PlaceScale {
    /// How much the places' typical scores differ, against how much one place varies.
    pub structure: f64,
    /// Row-major `[h, w]`: each place's typical score over the median place's (> 0).
    pub scale: Vec<f32>,
}

impl PlaceScale {
    /// Whether the places differ enough to scale for.
    pub fn worth_it(&self) -> bool {
        self.structure >= MIN_STRUCTURE
    }
}

/// The places' scale from the held-out goods' patch scores, each a whole `h × w` grid (one
/// input: whole parts, not tiles). `None` when there are too few goods, a grid of another size,
/// or scores that give no positive finite typical value (a degenerate model).
pub fn measure(goods: &[Vec<f32>], h: usize, w: usize) -> Option<PlaceScale> {
    if goods.len() < MIN_GOODS || h == 0 || w == 0 || goods.iter().any(|g| g.len() != h * w) {
        return None;
    }
    let mut medians = vec![0.0f64; h * w];
    let mut deviations = vec![0.0f64; h * w];
    let mut pooled = Vec::new();
    for i in 0..h {
        for j in 0..w {
            pooled.clear();
            for ii in i.saturating_sub(RADIUS)..(i + RADIUS + 1).min(h) {
                for jj in j.saturating_sub(RADIUS)..(j + RADIUS + 1).min(w) {
                    pooled.extend(goods.iter().map(|g| f64::from(g[ii * w + jj])));
                }
            }
            if pooled.iter().any(|v| !v.is_finite()) {
                return None;
            }
            let m = median(&mut pooled);
            let mut dev: Vec<f64> = pooled.iter().map(|v| (v - m).abs()).collect();
            medians[i * w + j] = m;
            deviations[i * w + j] = median(&mut dev);
        }
    }
    if medians.iter().any(|m| !(m.is_finite() && *m > 0.0)) {
        return None;
    }
    let typical = median(&mut medians.clone());
    let logs: Vec<f64> = medians.iter().map(|m| m.ln()).collect();
    let mean = logs.iter().sum::<f64>() / logs.len() as f64;
    let spread = (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
    let mut relative: Vec<f64> = deviations.iter().zip(&medians).map(|(d, m)| d / m).collect();
    let within = median(&mut relative);
    let structure = if within > 0.0 { spread / within } else { 0.0 };
    Some(PlaceScale { structure, scale: medians.iter().map(|m| (m / typical) as f32).collect() })
}

/// The median of `v` (reordered), the mean of the middle two for an even count.
fn median(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `n` goods on a 6 × 6 grid: noise around 1, and around `edge` on the outer ring.
    fn goods(n: usize, edge: f32, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                (0..36)
                    .map(|k| {
                        let (i, j) = (k / 6, k % 6);
                        let ring = i == 0 || j == 0 || i == 5 || j == 5;
                        (if ring { edge } else { 1.0 }) * rng.random_range(0.8f32..1.2)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn places_that_always_score_high_are_scaled_down_where_parts_are_fixtured() {
        let fixtured = measure(&goods(40, 2.0, 1), 6, 6).unwrap();
        assert!(fixtured.worth_it(), "{fixtured:?}");
        // The corner (three of its four pooled places on the ring) is divided by about twice
        // what the centre (no ring place in its neighbourhood) is.
        let ratio = fixtured.scale[0] / fixtured.scale[2 * 6 + 2];
        assert!((ratio - 2.0).abs() < 0.3, "{ratio} {:?}", fixtured.scale);
        let loose = measure(&goods(40, 1.0, 2), 6, 6).unwrap();
        assert!(!loose.worth_it(), "places that differ by chance only: {loose:?}");
        assert!(loose.scale.iter().all(|s| (s - 1.0).abs() < 0.1), "{:?}", loose.scale);
    }

    #[test]
    fn too_few_or_broken_grids_give_no_scale() {
        assert_eq!(measure(&goods(MIN_GOODS - 1, 2.0, 3), 6, 6), None);
        assert_eq!(measure(&goods(20, 2.0, 3), 6, 5), None, "another grid size");
        let mut nan = goods(20, 2.0, 4);
        nan[3][7] = f32::NAN;
        assert_eq!(measure(&nan, 6, 6), None);
        let zeros = vec![vec![0.0f32; 36]; 20];
        assert_eq!(measure(&zeros, 6, 6), None, "no positive typical score");
    }
}
