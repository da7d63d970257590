//! The ONNX graphs teach mode writes, built on the committed backbone graph with the ONNX
//! protobuf messages (`onnx-protobuf`):
//!
//! - the **feature graph** (teach time only, kept in memory): image → backbone → patch features,
//!   one row per feature-grid cell;
//! - the **taught model** (`model.onnx` of the package): the same, then the scoring step — PCA
//!   projection, nearest-neighbour distance to the memory bank, the anomaly map upsampled to the
//!   input and smoothed, and the image score — with the bank and the PCA baked in as initializers.
//!
//! Scoring is graph nodes rather than Rust code so that it runs on the backbone's execution
//! provider (CUDA, TensorRT) instead of pulling every feature map back to the CPU, and so that a
//! taught model is an ordinary `anomaly` package (`pred_score`, `anomaly_map`) that `run`, `check`
//! and `eval` load like any other. Opset 17, as the backbone (reductions take `axes` as an
//! attribute there).

use super::backbone::{Backbone, Tap};
use super::placed::PlacedGaussians;
use crate::config::InputContrast;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::type_proto;
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use protobuf::{EnumOrUnknown, Message, MessageField};

mod gray;
mod nearest;
pub(crate) mod qdq;
mod tensor;
pub use nearest::NearestSearch;

/// Name of the taught model's (and the feature graph's) image input.
pub const INPUT: &str = "input";
/// Feature graph output: `[N·h·w, C]` patch features, rows image-major then y, then x.
pub const PATCHES: &str = "patches";
/// Taught model outputs (the runtime's anomaly task defaults).
pub const SCORE: &str = "pred_score";
pub const MAP: &str = "anomaly_map";

/// What the scoring graph needs besides the backbone: the taught constants and the post-processing.
pub struct Scoring<'a> {
    /// Mean of the teach patches, `[C]` (subtracted before projecting).
    pub mean: &'a [f32],
    /// Projection onto the principal components, row-major `[C, D]`.
    pub projection: &'a [f32],
    /// The memory bank in the projected space, row-major `[M, D]`.
    pub bank: &'a [f32],
    /// Pixels per patch-grid cell (one of the backbone's tap strides): patches are scored on
    /// this grid and the map is upsampled by this.
    pub grid_stride: usize,
    /// Gaussian smoothing of the upsampled map, in input pixels.
    pub blur_sigma_px: f32,
    /// The image score is the mean of this fraction of the map's highest pixels.
    pub top_fraction: f32,
    /// Each bank row's local scale ([`super::knn::Bank::local_scales`]); with it a patch's
    /// distance is divided by its nearest row's scale. `None`: plain distances.
    pub local_scale: Option<&'a [f32]>,
    /// The learned correction c `[D]` ([`super::head`]): each patch's distance plus c·z. `None`:
    /// goods-only scoring.
    pub correction: Option<&'a [f32]>,
    /// How each patch's nearest bank row is found.
    pub search: NearestSearch,
    /// Score each patch by its place's Gaussian ([`super::placed`]) instead of the bank (then
    /// `bank`, `local_scale`, `correction` and `search` are not used).
    pub placed: Option<&'a PlacedGaussians>,
    /// Each place's typical good score over the median place's, row-major `[h, w]`
    /// ([`super::place_scale`]): patch scores are divided by it before the map is smoothed.
    /// `None`: every place alike.
    pub place_scale: Option<&'a [f32]>,
    /// Also output the patch scores on the grid before the post-processing ([`GRID_SCORES`]):
    /// for teach's calibration models, whose post-processing teach may then choose again
    /// ([`post_model`]). Shipped models leave it out.
    pub grid_scores: bool,
}

/// Calibration models' extra output: each input's patch scores on the grid, `[N, 1, h, w]`,
/// before smoothing.
pub const GRID_SCORES: &str = "teach_grid_scores";

/// The graphs' input: fixed height and width (the manifest's tile size), dynamic batch, and what
/// the graph does to each input's contrast before the backbone.
#[derive(Clone, Copy, Debug)]
pub struct InputShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub contrast: InputContrast,
}

/// Mean and standard deviation every input has after [`InputContrast::Standardised`]: the
/// middle of the backbone's [0, 1] input range, and a spread that keeps nearly all of a
/// Gaussian's mass inside it.
pub const STANDARD_MEAN: f32 = 0.5;
pub const STANDARD_STD: f32 = 0.2;
/// Added to an input's standard deviation before dividing by it, so a flat input (a blank
/// frame) stays flat at [`STANDARD_MEAN`] instead of becoming NaN or amplified noise.
pub const STANDARD_STD_FLOOR: f32 = 1e-3;

/// A graph under construction on top of the backbone's nodes and weights.
struct Builder {
    graph: GraphProto,
    next_id: usize,
}

impl Builder {
    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.next_id += 1;
        let out = format!("teach/{}_{}", op.to_lowercase(), self.next_id);
        self.graph.node.push(NodeProto {
            op_type: op.into(),
            name: out.clone(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// A node with two outputs (TopK's values and indices).
    fn node2(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> [String; 2] {
        let first = self.node(op, inputs, attrs);
        let second = format!("{first}_1");
        self.graph.node.last_mut().expect("node just pushed").output.push(second.clone());
        [first, second]
    }

    /// A node whose output gets a fixed name (a graph output).
    fn named(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, name: &str) {
        let tmp = self.node(op, inputs, attrs);
        let last = self.graph.node.last_mut().expect("node just pushed");
        last.output = vec![name.to_string()];
        last.name = format!("{tmp}->{name}");
    }

    fn f32s(&mut self, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        self.next_id += 1;
        let name = format!("teach/const_{}", self.next_id);
        self.graph.initializer.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::FLOAT as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    fn i64s(&mut self, data: &[i64]) -> String {
        self.raw(&[data.len()], DataType::INT64, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// A constant of any element type from its little-endian bytes.
    fn raw(&mut self, dims: &[usize], data_type: DataType, raw_data: Vec<u8>) -> String {
        self.next_id += 1;
        let name = format!("teach/const_{}", self.next_id);
        self.graph.initializer.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            raw_data,
            ..Default::default()
        });
        name
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: EnumOrUnknown::new(AttributeType::INTS),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), type_: EnumOrUnknown::new(AttributeType::INT), i: v, ..Default::default() }
}

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: EnumOrUnknown::new(AttributeType::STRING),
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A float tensor value-info; `None` dimensions are symbolic (`N`).
fn tensor_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = |d: &Option<usize>| Dimension {
        value: Some(match d {
            Some(v) => dimension::Value::DimValue(*v as i64),
            None => dimension::Value::DimParam("N".into()),
        }),
        ..Default::default()
    };
    float_info(name, MessageField::some(TensorShapeProto { dim: dims.iter().map(dim).collect(), ..Default::default() }))
}

/// A float tensor value-info of unstated shape.
fn shapeless_info(name: &str) -> ValueInfoProto {
    float_info(name, MessageField::none())
}

fn float_info(name: &str, shape: MessageField<TensorShapeProto>) -> ValueInfoProto {
    let tensor = type_proto::Tensor { elem_type: DataType::FLOAT as i32, shape, ..Default::default() };
    ValueInfoProto {
        name: name.into(),
        type_: MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Start from the backbone: its nodes and weights, the image input with a fixed height and width,
/// and no outputs yet.
fn start(backbone: &Backbone, shape: InputShape) -> Result<(ModelProto, Builder), String> {
    let mut model = ModelProto::parse_from_bytes(&backbone.onnx_bytes)
        .map_err(|e| format!("backbone {}: not an ONNX model: {e}", backbone.onnx_path.display()))?;
    let mut graph = model.graph.take().ok_or_else(|| format!("backbone {}: no graph", backbone.onnx_path.display()))?;
    if !graph.input.iter().any(|i| i.name == backbone.input) {
        return Err(format!("backbone {}: no input named {:?}", backbone.onnx_path.display(), backbone.input));
    }
    if shape.channels == 1 {
        gray::fold_gray_input(&mut graph, &backbone.input).map_err(|e| {
            format!("backbone {}: cannot take gray input on one channel: {e}", backbone.onnx_path.display())
        })?;
    }
    graph.input = vec![tensor_info(INPUT, &[None, Some(shape.channels), Some(shape.height), Some(shape.width)])];
    let backbone_input = match shape.contrast {
        InputContrast::Raw => INPUT,
        InputContrast::Standardised => STANDARDISED,
    };
    if backbone.input != backbone_input {
        for node in &mut graph.node {
            for i in &mut node.input {
                if *i == backbone.input {
                    *i = backbone_input.into();
                }
            }
        }
    }
    graph.output.clear();
    graph.value_info.clear();
    graph.name = "linesight-teach".into();
    let mut b = Builder { graph, next_id: 0 };
    if shape.contrast == InputContrast::Standardised {
        let backbone_nodes = b.graph.node.len();
        standardise(&mut b);
        // The new nodes feed the backbone's: they go first (ONNX wants nodes in topological order).
        b.graph.node.rotate_left(backbone_nodes);
    }
    Ok((model, b))
}

/// The backbone fed as the feature graph feeds it (gray folding, contrast), with `tensors` — names
/// of tensors inside the backbone — as its outputs: what INT8 calibration measures.
pub fn calibration_graph(backbone: &Backbone, shape: InputShape, tensors: &[String]) -> Result<Vec<u8>, String> {
    let (mut model, b) = start(backbone, shape)?;
    let mut graph = b.graph;
    graph.output = tensors.iter().map(|t| shapeless_info(t)).collect();
    model.graph = MessageField::some(graph);
    model.write_to_bytes().map_err(|e| format!("cannot serialise the calibration graph: {e}"))
}

/// Whether models on this backbone can take gray images on one input channel (see `gray`): the
/// float backbones can, and INT8 copies whose stem stayed in float.
pub fn gray_input_supported(backbone: &Backbone) -> bool {
    ModelProto::parse_from_bytes(&backbone.onnx_bytes)
        .ok()
        .and_then(|m| m.graph.into_option())
        .is_some_and(|g| gray::gray_foldable(&g, &backbone.input))
}

/// The standardised input the backbone reads under [`InputContrast::Standardised`].
const STANDARDISED: &str = "teach/standardised_input";

/// `input` → [`STANDARDISED`]: each batch item, all channels together, shifted and scaled to
/// mean [`STANDARD_MEAN`] and standard deviation [`STANDARD_STD`].
fn standardise(b: &mut Builder) {
    let axes = || vec![ints("axes", &[1, 2, 3]), int("keepdims", 1)];
    let mean = b.node("ReduceMean", &[INPUT], axes());
    let centred = b.node("Sub", &[INPUT, &mean], vec![]);
    let squared = b.node("Mul", &[&centred, &centred], vec![]);
    let variance = b.node("ReduceMean", &[&squared], axes());
    let std = b.node("Sqrt", &[&variance], vec![]);
    let floor = b.f32s(&[], &[STANDARD_STD_FLOOR]);
    let std = b.node("Add", &[&std, &floor], vec![]);
    let target = b.f32s(&[], &[STANDARD_STD]);
    let gain = b.node("Div", &[&target, &std], vec![]);
    let scaled = b.node("Mul", &[&centred, &gain], vec![]);
    let offset = b.f32s(&[], &[STANDARD_MEAN]);
    b.named("Add", &[&scaled, &offset], vec![], STANDARDISED);
}

/// Backbone taps → `[N·h·w, C]` patch features on the grid of stride `grid` (a tap's stride):
/// each tap averaged over 3×3 neighbourhoods (PatchCore's local aggregation), then brought to the
/// grid — finer taps average-pooled over grid/stride cells, coarser taps upsampled bilinearly —
/// each tap's patch vector scaled to unit L2 norm (so no tap dominates the distance), then
/// concatenated on channels.
fn patch_features(b: &mut Builder, taps: &[Tap], grid: usize) -> String {
    let mut parts = Vec::new();
    for tap in taps {
        let pooled = b.node(
            "AveragePool",
            &[&tap.name],
            vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1]), int("count_include_pad", 0)],
        );
        let on_grid = if tap.stride == grid {
            pooled
        } else if tap.stride < grid {
            let k = (grid / tap.stride) as i64;
            b.node("AveragePool", &[&pooled], vec![ints("kernel_shape", &[k, k]), ints("strides", &[k, k])])
        } else {
            let f = (tap.stride / grid) as f32;
            let scales = b.f32s(&[4], &[1.0, 1.0, f, f]);
            b.node(
                "Resize",
                &[&pooled, "", &scales],
                vec![string("mode", "linear"), string("coordinate_transformation_mode", "half_pixel")],
            )
        };
        let norm = b.node("ReduceL2", &[&on_grid], vec![ints("axes", &[1]), int("keepdims", 1)]);
        let eps = b.f32s(&[], &[1e-6]);
        let norm = b.node("Add", &[&norm, &eps], vec![]);
        parts.push(b.node("Div", &[&on_grid, &norm], vec![]));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let concat = b.node("Concat", &refs, vec![int("axis", 1)]);
    let channels: i64 = taps.iter().map(|t| t.channels as i64).sum();
    // [N, C, h, w] → [N, C, h·w] → [N, h·w, C] → [N·h·w, C]
    let s1 = b.i64s(&[0, channels, -1]);
    let flat = b.node("Reshape", &[&concat, &s1], vec![]);
    let t = b.node("Transpose", &[&flat], vec![ints("perm", &[0, 2, 1])]);
    let s2 = b.i64s(&[-1, channels]);
    b.node("Reshape", &[&t, &s2], vec![])
}

/// Check that `grid` is one of the backbone's tap strides and divides the input.
fn check_grid(backbone: &Backbone, shape: InputShape, grid: usize) -> Result<(), String> {
    if !backbone.taps.iter().any(|t| t.stride == grid) {
        let strides: Vec<String> = backbone.taps.iter().map(|t| t.stride.to_string()).collect();
        return Err(format!(
            "patch grid stride {grid} is not one of the backbone's tap strides ({})",
            strides.join(", ")
        ));
    }
    if !shape.height.is_multiple_of(grid) || !shape.width.is_multiple_of(grid) {
        return Err(format!(
            "input {}×{} is not a multiple of the patch grid stride {grid}",
            shape.width, shape.height
        ));
    }
    Ok(())
}

/// The teach-time feature graph: image `[N, C, H, W]` → `patches` `[N·h·w, C]` on the grid of
/// stride `grid`.
pub fn feature_graph(backbone: &Backbone, shape: InputShape, grid: usize) -> Result<Vec<u8>, String> {
    check_grid(backbone, shape, grid)?;
    let (mut model, mut b) = start(backbone, shape)?;
    let patches = patch_features(&mut b, &backbone.taps, grid);
    b.named("Identity", &[&patches], vec![], PATCHES);
    b.graph.output = vec![tensor_info(PATCHES, &[None, Some(backbone.feature_dim())])];
    model.graph = MessageField::some(b.graph);
    model.write_to_bytes().map_err(|e| format!("cannot serialise the feature graph: {e}"))
}

/// 1-D Gaussian kernel of standard deviation `sigma` (radius ⌈4σ⌉, normalised to sum 1).
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (4.0 * sigma).ceil().max(1.0) as i64;
    let k: Vec<f64> = (-radius..=radius).map(|x| (-0.5 * (x as f64 / sigma as f64).powi(2)).exp()).collect();
    let sum: f64 = k.iter().sum();
    k.iter().map(|v| (v / sum) as f32).collect()
}

/// Whether a blur of `sigma_px` is applied on the patch grid of stride `grid` (before
/// upsampling) rather than at input resolution: when it spans at least one cell, so that the
/// Gaussian sampled at cell spacing is still a Gaussian. Smaller blurs (tiny defects) stay at
/// input resolution, where they are cheap anyway.
pub fn blurs_on_grid(sigma_px: f32, grid: usize) -> bool {
    sigma_px >= grid as f32
}

/// Whether a blur of `sigma_px` fits an input of `height` × `width` on the grid of stride `grid`:
/// its kernel's radius (reflect padding) must be smaller than the map it blurs, the patch grid
/// or the input (see [`blurs_on_grid`]).
pub fn blur_fits(sigma_px: f32, grid: usize, height: usize, width: usize) -> bool {
    let (sigma, side) = if blurs_on_grid(sigma_px, grid) {
        (sigma_px / grid as f32, height.min(width) / grid.max(1))
    } else {
        (sigma_px, height.min(width))
    };
    gaussian_kernel(sigma).len() / 2 < side
}

/// Separable Gaussian blur of a `[N, 1, h, w]` map with reflect padding.
fn blur(b: &mut Builder, map: &str, sigma: f32, h: usize, w: usize, what: &str) -> Result<String, String> {
    let kernel = gaussian_kernel(sigma);
    let r = (kernel.len() / 2) as i64;
    if r as usize >= h.min(w) {
        return Err(format!(
            "scoring: blur radius {r} px must be smaller than the {what} ({w}×{h}); lower the blur sigma"
        ));
    }
    let pads = b.i64s(&[0, 0, r, r, 0, 0, r, r]);
    let padded = b.node("Pad", &[map, &pads], vec![string("mode", "reflect")]);
    let gx = b.f32s(&[1, 1, 1, kernel.len()], &kernel);
    let bx = b.node("Conv", &[&padded, &gx], vec![]);
    let gy = b.f32s(&[1, 1, kernel.len(), 1], &kernel);
    Ok(b.node("Conv", &[&bx, &gy], vec![]))
}

/// `map` `[N, 1, h, w]` upsampled `factor` times, bilinear with half-pixel centres and clamped
/// edges (ONNX Resize `linear`, `half_pixel`), as two MatMuls with the interpolation matrices:
/// `U_h · map · U_wᵀ`. ONNX Runtime's CPU Resize kernel is slower at this than two small products
/// (a few hundred thousand multiply-adds for 16² → 256²), and the results agree to rounding.
fn upsample(b: &mut Builder, map: &str, h: usize, w: usize, factor: usize) -> String {
    let along_w = interpolation(w, factor);
    let (wo, hi) = (w * factor, h * factor);
    let mut w_t = vec![0.0f32; w * wo];
    for (o, row) in along_w.chunks_exact(w).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            w_t[i * wo + o] = v;
        }
    }
    let w_t = b.f32s(&[w, wo], &w_t);
    let u_h = b.f32s(&[hi, h], &interpolation(h, factor));
    let rows = b.node("MatMul", &[map, &w_t], vec![]);
    b.node("MatMul", &[&u_h, &rows], vec![])
}

/// Row-major `[n·factor, n]`: each output sample's weights on the `n` input samples.
fn interpolation(n: usize, factor: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; n * factor * n];
    for o in 0..n * factor {
        let x = ((o as f32 + 0.5) / factor as f32 - 0.5).clamp(0.0, (n - 1) as f32);
        let i = x.floor() as usize;
        let t = x - i as f32;
        m[o * n + i] += 1.0 - t;
        m[o * n + (i + 1).min(n - 1)] += t;
    }
    m
}

/// The taught model: image `[N, C, H, W]` → `pred_score` `[N]` and `anomaly_map` `[N, 1, H, W]`.
///
/// Scoring, per patch row q (C-d): z = (q − mean)·P (D-d); d² = min over bank rows b of
/// |z|² − 2 z·b + |b|² (one Gemm against the bank stored as −2·bankᵀ with |b|² as its bias, then a
/// row minimum, then + |z|²; [`nearest`] has the blocked search and the int8 one), clamped at 0
/// (cancellation), square root → the patch's distance
/// (divided by its nearest bank row's local scale when the model has them) →
/// map on the feature grid → Gaussian blur (reflect padding) and bilinear upsample to the input
/// (blur first when it spans a grid cell, see [`blurs_on_grid`]) → image score = mean of the top `top_fraction` of the map.
pub fn scoring_model(backbone: &Backbone, shape: InputShape, s: &Scoring) -> Result<Vec<u8>, String> {
    let c = backbone.feature_dim();
    if s.mean.len() != c || s.projection.is_empty() || !s.projection.len().is_multiple_of(c) {
        return Err(format!(
            "scoring: mean has {} values and projection {}; both must match the feature dimension {c}",
            s.mean.len(),
            s.projection.len()
        ));
    }
    let dims = s.projection.len() / c;
    let grid = s.grid_stride;
    check_grid(backbone, shape, grid).map_err(|e| format!("scoring: {e}"))?;
    let (gh, gw) = (shape.height / grid, shape.width / grid);

    let (mut model, mut b) = start(backbone, shape)?;
    let patches = patch_features(&mut b, &backbone.taps, grid);
    let mean = b.f32s(&[c], s.mean);
    let centred = b.node("Sub", &[&patches, &mean], vec![]);
    let proj = b.f32s(&[c, dims], s.projection);
    let z = b.node("MatMul", &[&centred, &proj], vec![]);
    let dist = match s.placed {
        Some(placed) => placed_distances(&mut b, &z, placed, gh * gw, dims)?,
        None => bank_distances(&mut b, &z, s, dims)?,
    };
    let grid_shape = b.i64s(&[-1, 1, gh as i64, gw as i64]);
    let dist_map = b.node("Reshape", &[&dist, &grid_shape], vec![]);
    let scaled = scale_places(&mut b, &dist_map, s.place_scale, gh, gw)?;
    post_process(&mut b, &scaled, shape, grid, s.blur_sigma_px, s.top_fraction)?;
    // The patch scores before the places' scale: what teach measures the scale on.
    if s.grid_scores {
        b.named("Identity", &[&dist_map], vec![], GRID_SCORES);
        b.graph.output.push(tensor_info(GRID_SCORES, &[None, Some(1), Some(gh), Some(gw)]));
    }
    model.graph = MessageField::some(b.graph);
    model.producer_name = "linesight teach".into();
    model.producer_version = env!("CARGO_PKG_VERSION").into();
    model.write_to_bytes().map_err(|e| format!("cannot serialise the taught model: {e}"))
}

/// Each patch's distance to its nearest bank row (÷ its local scale, + the correction): `z`
/// `[N·P, D]` → `[N·P]`.
fn bank_distances(b: &mut Builder, z: &str, s: &Scoring, dims: usize) -> Result<String, String> {
    if s.bank.is_empty() || !s.bank.len().is_multiple_of(dims) {
        return Err(format!("scoring: the bank ({} values) is not a whole number of {dims}-d rows", s.bank.len()));
    }
    let rows = s.bank.len() / dims;
    if let Some(scales) = s.local_scale
        && (scales.len() != rows || scales.iter().any(|v| !(v.is_finite() && *v > 0.0)))
    {
        return Err(format!(
            "scoring: {} local scales for {rows} bank rows; each must be finite and > 0",
            scales.len()
        ));
    }
    let found = nearest::nearest(b, z, s.bank, dims, s.local_scale, s.search);
    let mut dist = b.node("Sqrt", &[&found.d2], vec![]);
    if let Some(scale) = found.scale {
        dist = b.node("Div", &[&dist, &scale], vec![]);
    }
    if let Some(c) = s.correction {
        if c.len() != dims || c.iter().any(|v| !v.is_finite()) {
            return Err(format!(
                "scoring: the correction has {} weights for {dims} dimensions, or non-finite ones",
                c.len()
            ));
        }
        let weights = b.f32s(&[dims, 1], c);
        let corr = b.node("MatMul", &[z, &weights], vec![]);
        let flat = b.i64s(&[-1]);
        let corr = b.node("Reshape", &[&corr, &flat], vec![]);
        dist = b.node("Add", &[&dist, &corr], vec![]);
    }
    Ok(dist)
}

/// Each patch's Mahalanobis distance to its place's Gaussian: `z` `[N·P, D]` → `[N, P, 1, D]`,
/// less the places' means `[P, 1, D]`, times their whiteners `[P, D, D]` (MatMul broadcasts over
/// the images), the norm of what is left, `[N, P]`.
fn placed_distances(
    b: &mut Builder,
    z: &str,
    placed: &PlacedGaussians,
    places: usize,
    dims: usize,
) -> Result<String, String> {
    if placed.gh * placed.gw != places
        || placed.dims != dims
        || placed.means.len() != places * dims
        || placed.whiteners.len() != places * dims * dims
    {
        return Err(format!(
            "scoring: Gaussians fitted for a {}×{} grid of {}-d patches; this input has {places} patches of {dims} dims",
            placed.gh, placed.gw, placed.dims
        ));
    }
    if placed.means.iter().chain(&placed.whiteners).any(|v| !v.is_finite()) {
        return Err("scoring: the places' Gaussians hold non-finite values".into());
    }
    let per_place = b.i64s(&[-1, places as i64, 1, dims as i64]);
    let z = b.node("Reshape", &[z, &per_place], vec![]);
    let means = b.f32s(&[places, 1, dims], &placed.means);
    let d = b.node("Sub", &[&z, &means], vec![]);
    let whiteners = b.f32s(&[places, dims, dims], &placed.whiteners);
    let y = b.node("MatMul", &[&d, &whiteners], vec![]);
    let sq = b.node("ReduceSumSquare", &[&y], vec![ints("axes", &[2, 3]), int("keepdims", 0)]);
    Ok(b.node("Sqrt", &[&sq], vec![]))
}

/// The post-processing alone: [`GRID_SCORES`] `[N, 1, h, w]` in, [`SCORE`] and [`MAP`] out, as
/// the scoring model with the same shape, grid, blur and image-score share computes them from
/// the same patch scores. Teach scores its validation set under other post-processings with it.
pub fn post_model(
    backbone: &Backbone,
    shape: InputShape,
    grid: usize,
    blur_sigma_px: f32,
    top_fraction: f32,
    place_scale: Option<&[f32]>,
) -> Result<Vec<u8>, String> {
    check_grid(backbone, shape, grid).map_err(|e| format!("post-processing: {e}"))?;
    let mut model = ModelProto::parse_from_bytes(&backbone.onnx_bytes)
        .map_err(|e| format!("backbone {}: not an ONNX model: {e}", backbone.onnx_path.display()))?;
    let (gh, gw) = (shape.height / grid, shape.width / grid);
    let graph = GraphProto {
        name: "linesight-post".into(),
        input: vec![tensor_info(GRID_SCORES, &[None, Some(1), Some(gh), Some(gw)])],
        ..Default::default()
    };
    let mut b = Builder { graph, next_id: 0 };
    let scaled = scale_places(&mut b, GRID_SCORES, place_scale, gh, gw)?;
    post_process(&mut b, &scaled, shape, grid, blur_sigma_px, top_fraction)?;
    model.graph = MessageField::some(b.graph);
    model.write_to_bytes().map_err(|e| format!("cannot serialise the post-processing graph: {e}"))
}

/// Patch scores on the grid `[N, 1, h, w]` divided place by place by `scale` (`[h, w]`, each
/// finite and > 0), or as they are without one.
fn scale_places(b: &mut Builder, map: &str, scale: Option<&[f32]>, h: usize, w: usize) -> Result<String, String> {
    let Some(scale) = scale else { return Ok(map.to_string()) };
    if scale.len() != h * w || scale.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(format!(
            "scoring: {} place scales for a {w}×{h} patch grid; each must be finite and > 0",
            scale.len()
        ));
    }
    let inverse: Vec<f32> = scale.iter().map(|v| 1.0 / v).collect();
    let inverse = b.f32s(&[1, 1, h, w], &inverse);
    Ok(b.node("Mul", &[map, &inverse], vec![]))
}

/// Patch scores on the grid `[N, 1, h, w]` → [`MAP`] (Gaussian blur with reflect padding and
/// bilinear upsampling to the input; blur first when it spans a grid cell, see
/// [`blurs_on_grid`]) → [`SCORE`] = mean of the top `top_fraction` of the map; both become the
/// graph's outputs.
fn post_process(
    b: &mut Builder,
    grid_scores: &str,
    shape: InputShape,
    grid: usize,
    blur_sigma_px: f32,
    top_fraction: f32,
) -> Result<(), String> {
    let (gh, gw) = (shape.height / grid, shape.width / grid);
    if blurs_on_grid(blur_sigma_px, grid) {
        // Blur the patch grid (σ in cells), then upsample: convolutions commute, so this is the
        // input-resolution blur up to sampling the Gaussian at cell spacing, for a
        // grid²-times-smaller convolution (about 2 ms less per 256² input on one CPU thread).
        let blurred = blur(b, grid_scores, blur_sigma_px / grid as f32, gh, gw, "patch grid")?;
        let up = upsample(b, &blurred, gh, gw, grid);
        b.named("Identity", &[&up], vec![], MAP);
    } else {
        let up = upsample(b, grid_scores, gh, gw, grid);
        let blurred = blur(b, &up, blur_sigma_px, shape.height, shape.width, "input")?;
        b.named("Identity", &[&blurred], vec![], MAP);
    }
    let pixels = shape.height * shape.width;
    let flat_shape = b.i64s(&[-1, pixels as i64]);
    let flat = b.node("Reshape", &[MAP, &flat_shape], vec![]);
    let k = ((top_fraction as f64 * pixels as f64).round() as i64).clamp(1, pixels as i64);
    let kk = b.i64s(&[k]);
    let [top, _] = b.node2("TopK", &[&flat, &kk], vec![int("axis", 1), int("largest", 1), int("sorted", 0)]);
    b.named("ReduceMean", &[&top], vec![ints("axes", &[1]), int("keepdims", 0)], SCORE);
    b.graph.output =
        vec![tensor_info(SCORE, &[None]), tensor_info(MAP, &[None, Some(1), Some(shape.height), Some(shape.width)])];
    Ok(())
}
