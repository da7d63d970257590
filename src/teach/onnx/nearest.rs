//! The scoring graph's nearest-neighbour step: each patch's squared distance to its nearest
//! memory-bank row, and that row's local scale when the model has them.
//!
//! The [patches × bank rows] matrix is far larger than the caches (256 × 8,192 for one 256² input
//! at grid 16), so it is read once more after it is written, not twice: the rows are cut into
//! blocks, the matrix is reduced to each block's best ([patches × blocks], a plain vectorised
//! reduction), and only the winning block of each patch is searched for the index. Same answer as
//! one TopK over the whole matrix (the lowest index among equals), for a fraction of TopK's time.
//!
//! [`NearestSearch::Int8`] runs the search in 8-bit integers (ONNX Runtime's `MatMulInteger`,
//! VNNI on CPUs that have it) and then measures the distance to the row it found in float. The
//! search may find a row a little farther than the nearest; the distance reported is that row's
//! true distance, so without local scales a patch can only score higher than with the exact
//! search, never lower (with them, the row found brings its own scale). A NaN or infinite
//! feature still reaches the distance through the float step, so the station's checks on the
//! outputs still see it.

use super::{Builder, int, ints};
use onnx_protobuf::tensor_proto::DataType;

/// How the scoring graph finds each patch's nearest bank row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestSearch {
    /// Float distances to every row.
    Exact,
    /// The search in 8-bit integers, the distance to the row found in float (models on an INT8
    /// backbone, where the float search would be half the run).
    Int8,
}

impl NearestSearch {
    /// The name `model.toml` records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Int8 => "int8",
        }
    }
}

/// Bank rows per block of the two-step search.
const BLOCK: usize = 128;

/// The step's outputs (graph value names).
pub(super) struct Found {
    /// `[P]` squared distance to the row found, ≥ 0.
    pub d2: String,
    /// `[P]` that row's local scale, when scales were given.
    pub scale: Option<String>,
}

/// `z` `[P, D]` (the projected patches) against `bank` (row-major `[M, D]`), with each row's
/// local scale if given (`M` values).
pub(super) fn nearest(
    b: &mut Builder,
    z: &str,
    bank: &[f32],
    dims: usize,
    scales: Option<&[f32]>,
    search: NearestSearch,
) -> Found {
    let rows = bank.len() / dims;
    if search == NearestSearch::Exact && scales.is_none() {
        // The distance alone: one reduction, no index.
        let cross = exact_cross(b, z, bank, dims, rows);
        let dmin = b.node("ReduceMin", &[&cross], vec![ints("axes", &[1]), int("keepdims", 0)]);
        return Found { d2: plus_own_norm(b, &dmin, z), scale: None };
    }
    let (block, padded) = blocks(rows);
    // Padding with copies of row 0 keeps every block full; a copy found is row 0's twin.
    let pad = |values: &[f32], width: usize| -> Vec<f32> {
        let mut v = values.to_vec();
        while v.len() < padded * width {
            v.extend_from_slice(&values[..width]);
        }
        v
    };
    let bank = pad(bank, dims);
    let (index, d2) = match search {
        NearestSearch::Exact => {
            let cross = exact_cross(b, z, &bank, dims, padded);
            let (best, index) = blocked_best(b, &cross, padded / block, block, false);
            (index, plus_own_norm(b, &best, z))
        }
        NearestSearch::Int8 => {
            let score = int8_score(b, z, &bank, dims);
            let (_, index) = blocked_best(b, &score, padded / block, block, true);
            let table = b.f32s(&[padded, dims], &bank);
            let row = b.node("Gather", &[&table, &index], vec![int("axis", 0)]);
            let diff = b.node("Sub", &[z, &row], vec![]);
            (index, b.node("ReduceSumSquare", &[&diff], vec![ints("axes", &[1]), int("keepdims", 0)]))
        }
    };
    let scale = scales.map(|s| {
        let table = b.f32s(&[padded], &pad(s, 1));
        b.node("Gather", &[&table, &index], vec![int("axis", 0)])
    });
    Found { d2, scale }
}

/// Block size and padded row count for `rows` bank rows.
fn blocks(rows: usize) -> (usize, usize) {
    if rows <= BLOCK { (rows, rows) } else { (BLOCK, rows.div_ceil(BLOCK) * BLOCK) }
}

/// `[P, M]`: |b|² − 2 z·b for every row (the patch's own |z|² is added after the search).
fn exact_cross(b: &mut Builder, z: &str, bank: &[f32], dims: usize, rows: usize) -> String {
    // The bank as the Gemm's B = −2·bankᵀ [D, M] and C = |b|² [M].
    let mut bank_t = vec![0.0f32; dims * rows];
    let mut bank_sq = vec![0.0f32; rows];
    for (r, row) in bank.chunks_exact(dims).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            bank_t[k * rows + r] = -2.0 * v;
        }
        bank_sq[r] = crate::teach::sq_norm(row);
    }
    let bt = b.f32s(&[dims, rows], &bank_t);
    let bsq = b.f32s(&[rows], &bank_sq);
    b.node("Gemm", &[z, &bt, &bsq], vec![])
}

/// max(a + |z|², 0) as `[P]`, the squared distance from [`exact_cross`]'s best: rounding can take
/// it a hair below zero. A NaN or infinite feature reaches it through |z|² whatever row was best.
fn plus_own_norm(b: &mut Builder, a: &str, z: &str) -> String {
    let zz = b.node("ReduceSumSquare", &[z], vec![ints("axes", &[1]), int("keepdims", 0)]);
    let flat = b.i64s(&[-1]);
    let a = b.node("Reshape", &[a, &flat], vec![]);
    let sum = b.node("Add", &[&a, &zz], vec![]);
    let zero = b.f32s(&[], &[0.0]);
    b.node("Max", &[&sum, &zero], vec![])
}

/// Each patch's best entry of `matrix` `[P, blocks·block]` (smallest, or largest), and its
/// column as `[P]` int64: the best of each block first, then the winning block searched.
fn blocked_best(b: &mut Builder, matrix: &str, blocks: usize, block: usize, largest: bool) -> (String, String) {
    let k = b.i64s(&[1]);
    let order = || vec![int("axis", 1), int("largest", largest as i64), int("sorted", 1)];
    let as_float = |b: &mut Builder, v: &str| -> String {
        // TopK on the int8 search's int32 scores: exact in float (|score| < 2²⁴).
        if largest { b.node("Cast", &[v], vec![int("to", DataType::FLOAT as i64)]) } else { v.to_string() }
    };
    let flat = b.i64s(&[-1]);
    if blocks == 1 {
        let m = as_float(b, matrix);
        let [best, index] = b.node2("TopK", &[&m, &k], order());
        let index = b.node("Reshape", &[&index, &flat], vec![]);
        return (best, index);
    }
    let shape = b.i64s(&[-1, blocks as i64, block as i64]);
    let cube = b.node("Reshape", &[matrix, &shape], vec![]);
    let reduce = if largest { "ReduceMax" } else { "ReduceMin" };
    let per_block = b.node(reduce, &[&cube], vec![ints("axes", &[2]), int("keepdims", 0)]);
    let per_block = as_float(b, &per_block);
    let [best, which] = b.node2("TopK", &[&per_block, &k], order());
    let one = b.i64s(&[-1, 1, 1]);
    let which3 = b.node("Reshape", &[&which, &one], vec![]);
    let across = b.i64s(&[1, 1, block as i64]);
    let gather_at = b.node("Expand", &[&which3, &across], vec![]);
    let winner = b.node("GatherElements", &[&cube, &gather_at], vec![int("axis", 1)]);
    let rows = b.i64s(&[-1, block as i64]);
    let winner = b.node("Reshape", &[&winner, &rows], vec![]);
    let winner = as_float(b, &winner);
    let [_, within] = b.node2("TopK", &[&winner, &k], order());
    let width = b.i64s(&[block as i64]);
    let base = b.node("Mul", &[&which, &width], vec![]);
    let index = b.node("Add", &[&base, &within], vec![]);
    let index = b.node("Reshape", &[&index, &flat], vec![]);
    (best, index)
}

/// Largest magnitude of the int8 bank's values and digits: 7 bits, not 8. On x86 CPUs without
/// VNNI, ONNX Runtime multiplies uint8 by int8 with `vpmaddubsw`, which adds each pair of
/// products in 16 bits and saturates: 2 · 255 · 127 overflows, 2 · 255 · 63 = 32,130 does not.
/// (VNNI's `vpdpbusd` sums in 32 bits; the quantized backbone's `reduce_range` is the same guard.)
const BANK_MAX: i64 = 63;

/// The int8 search's `[P, M]` int32 scores, largest for the nearest row.
///
/// With z ≈ s·(z_q − 128) and b ≈ s·b_q (one scale s for both, from the bank's largest value
/// over [`BANK_MAX`]), the nearest row maximises z·b − |b|²/2 ≈ s²·(Σ (z_q − 128)·b_q − C) with
/// C = round(|b|² / 2s²). C is folded into the integer product: the quantized patches get extra
/// columns that quantize to 127 and to 1 above the zero point, the bank extra rows holding C's
/// digits in base 127 (each at most [`BANK_MAX`]), so one `MatMulInteger` gives the whole score.
fn int8_score(b: &mut Builder, z: &str, bank: &[f32], dims: usize) -> String {
    let folded = Int8Bank::quantize(bank, dims);
    let s = folded.scale;
    let coarse_pads = b.i64s(&[0, 0, 0, folded.coarse_digits as i64]);
    let coarse_value = b.f32s(&[], &[127.0 * s]);
    let z = b.node("Pad", &[z, &coarse_pads, &coarse_value], vec![]);
    let fine_pads = b.i64s(&[0, 0, 0, 1]);
    let fine_value = b.f32s(&[], &[s]);
    let z = b.node("Pad", &[&z, &fine_pads, &fine_value], vec![]);
    let scale = b.f32s(&[], &[s]);
    let zero_point = b.raw(&[], DataType::UINT8, vec![128]);
    let zq = b.node("QuantizeLinear", &[&z, &scale, &zero_point], vec![]);
    let k = folded.columns.len() / folded.rows;
    let bq = b.raw(&[k, folded.rows], DataType::INT8, folded.columns.iter().map(|&v| v as u8).collect());
    let bank_zero = b.raw(&[], DataType::INT8, vec![0]);
    b.node("MatMulInteger", &[&zq, &bq, &zero_point, &bank_zero], vec![])
}

/// The bank for the int8 search: `[D + digits + 1, M]` int8, column-major per bank row as
/// `MatMulInteger`'s B wants it.
struct Int8Bank {
    scale: f32,
    rows: usize,
    coarse_digits: usize,
    columns: Vec<i8>,
}

impl Int8Bank {
    fn quantize(bank: &[f32], dims: usize) -> Self {
        let rows = bank.len() / dims;
        let largest = bank.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if largest > 0.0 && largest.is_finite() { largest / BANK_MAX as f32 } else { 1.0 };
        let bias: Vec<i64> = bank
            .chunks_exact(dims)
            .map(|row| {
                let sq: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
                -(sq / (2.0 * (scale as f64) * (scale as f64))).round() as i64
            })
            .collect();
        // |C| ≤ D·BANK_MAX²/2, so the digits are bounded by the dimension.
        let largest_bias = bias.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
        let coarse_digits = largest_bias.div_ceil(127 * BANK_MAX as u64) as usize + 1;
        let k = dims + coarse_digits + 1;
        let mut columns = vec![0i8; k * rows];
        for (r, row) in bank.chunks_exact(dims).enumerate() {
            for (d, &v) in row.iter().enumerate() {
                let limit = BANK_MAX as f32;
                columns[d * rows + r] = (v / scale).round().clamp(-limit, limit) as i8;
            }
            let mut rest = bias[r];
            for digit in 0..coarse_digits {
                let step = ((rest as f64) / 127.0).round().clamp(-(BANK_MAX as f64), BANK_MAX as f64) as i64;
                columns[(dims + digit) * rows + r] = step as i8;
                rest -= 127 * step;
            }
            debug_assert!(rest.abs() <= BANK_MAX, "bias digits: {rest} left");
            columns[(dims + coarse_digits) * rows + r] = rest as i8;
        }
        Self { scale, rows, coarse_digits, columns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bias_digits_add_up_to_each_rows_bias() {
        let dims = 64;
        // Rows from tiny to the largest possible norm (every value at the bank's maximum).
        let mut bank: Vec<f32> = (0..dims * 300).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 3.0).collect();
        bank.extend(std::iter::repeat_n(6.0, dims));
        bank.extend(std::iter::repeat_n(0.0, dims));
        let q = Int8Bank::quantize(&bank, dims);
        let k = dims + q.coarse_digits + 1;
        assert_eq!(q.columns.len(), k * q.rows);
        for (r, row) in bank.chunks_exact(dims).enumerate() {
            let col = |i: usize| q.columns[i * q.rows + r] as i64;
            let folded: i64 = (0..q.coarse_digits).map(|d| 127 * col(dims + d)).sum::<i64>() + col(k - 1);
            let sq: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum();
            let want = -(sq / (2.0 * (q.scale as f64).powi(2))).round() as i64;
            assert_eq!(folded, want, "row {r}");
            for (d, &v) in row.iter().enumerate() {
                assert!((col(d) as f32 * q.scale - v).abs() <= q.scale / 2.0 + 1e-6, "row {r} dim {d}");
            }
        }
    }

    /// What `vpmaddubsw` (uint8 × int8, each pair of products summed in 16 bits, saturating)
    /// computes, as ONNX Runtime's kernels on CPUs without VNNI use it.
    fn pairwise_saturating_dot(a: &[u8], b: &[i8]) -> i64 {
        a.chunks(2)
            .zip(b.chunks(2))
            .map(|(a, b)| {
                let pair: i32 = a.iter().zip(b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
                i64::from(pair.clamp(i32::from(i16::MIN), i32::from(i16::MAX)))
            })
            .sum()
    }

    #[test]
    fn the_int8_score_is_exact_without_vnni_too() {
        let dims = 64;
        // Rows at the bank's largest values, of both signs, and a patch far outside the bank:
        // the pairs of products are as large as they can get.
        let mut bank: Vec<f32> = (0..dims * 50).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 3.0).collect();
        bank.extend(std::iter::repeat_n(3.0, dims));
        bank.extend(std::iter::repeat_n(-3.0, dims));
        let q = Int8Bank::quantize(&bank, dims);
        let k = dims + q.coarse_digits + 1;
        // Quantized patches as the graph makes them: uint8 around 128, then the constant columns
        // at 127 and 1 above it.
        for patch in [vec![255u8; dims], vec![0u8; dims], (0..dims).map(|d| (d * 37 % 256) as u8).collect()] {
            let mut a = patch;
            a.extend(std::iter::repeat_n(255, q.coarse_digits));
            a.push(129);
            assert_eq!(a.len(), k);
            for r in 0..q.rows {
                let b: Vec<i8> = (0..k).map(|i| q.columns[i * q.rows + r]).collect();
                let exact: i64 = a.iter().zip(&b).map(|(&x, &y)| i64::from(x) * i64::from(y)).sum();
                assert_eq!(pairwise_saturating_dot(&a, &b), exact, "row {r}: a 16-bit pair sum saturated");
            }
        }
    }

    #[test]
    fn blocks_cover_the_bank_with_whole_blocks() {
        assert_eq!(blocks(1), (1, 1));
        assert_eq!(blocks(BLOCK), (BLOCK, BLOCK));
        assert_eq!(blocks(BLOCK + 1), (BLOCK, 2 * BLOCK));
        assert_eq!(blocks(8192), (BLOCK, 8192));
    }
}
