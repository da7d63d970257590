//! A float backbone graph rewritten into an INT8 one in ONNX's QDQ form (static quantization):
//! every quantized tensor passes through `QuantizeLinear → DequantizeLinear`, and ONNX Runtime
//! fuses each `DQ → Conv → Q` (and `DQ, DQ → Add → Q`) into one integer kernel (QLinearConv,
//! QLinearAdd), which CPUs with VNNI-class instructions run as 8-bit dot products.
//!
//! The same scheme as ONNX Runtime's own quantizer with the options `scripts/quantize-backbone.py`
//! passes it, so that a copy made either way runs the same kernels:
//! - **weights** int8, symmetric, one scale per output channel, in 8 bits (`[-127, 127]`) or 7
//!   (`[-64, 64]`, ONNX Runtime's `reduce_range`) — see [`WeightBits`]; biases int32 at the input's scale times the weight's;
//! - **activations** uint8, asymmetric, one range per tensor measured on good images (the
//!   calibration, `teach::int8`), zero kept exactly representable (so zero padding stays zero);
//! - a `Clip`/`Relu` right after a quantized convolution is dropped: the convolution's output is
//!   quantized over the activation's measured range (never below 0, never above the clip), which
//!   clips as the activation did;
//! - the **float prefix** stays float: the input's normalisation, the stem convolution and a first
//!   depthwise convolution. Too few channels for the integer kernels (they ran slower in INT8 than
//!   in float), and teach folds gray input into a float stem (`gray`).
//!
//! Anything else (another op type, a convolution whose weights are not constants) stays float and
//! reads the dequantized tensors, so an unfamiliar backbone is quantized in part, never broken.

use std::collections::{HashMap, HashSet};

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{AttributeProto, GraphProto, NodeProto};
use protobuf::EnumOrUnknown;

use super::tensor::{float_tensor, floats, initializer, raw, scalar};

/// How many bits the weights use.
///
/// CPUs with VNNI-class instructions add 8-bit products straight into 32 bits; older x86 CPUs
/// (AVX2, AVX-512 without VNNI) run ONNX Runtime's uint8 × int8 kernels on `vpmaddubsw`, which
/// adds each pair of products into 16 bits and saturates: 2 · 255 · 127 does not fit, 2 · 255 ·
/// 64 does. Seven bits are safe everywhere but coarser: on the Lite2 backbone they left about
/// twice the feature error of eight (patch features after teach's pooling and normalisation, the
/// INT8 graph against the float one on MTD training goods).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightBits {
    /// `[-127, 127]`: for models that run on CPUs with VNNI-class instructions.
    Eight,
    /// `[-64, 64]`: for any x86 CPU.
    Seven,
}

impl WeightBits {
    fn limit(self) -> f32 {
        match self {
            Self::Eight => 127.0,
            Self::Seven => 64.0,
        }
    }

    pub fn count(self) -> u8 {
        match self {
            Self::Eight => 8,
            Self::Seven => 7,
        }
    }
}

/// Which nodes become integer kernels, and the tensors whose ranges the calibration must measure.
#[derive(Debug)]
pub struct Plan {
    /// Indices of the convolutions and additions to quantize.
    quantized: Vec<usize>,
    /// Convolutions (by index) whose activation node is dropped, each with that node: the
    /// convolution takes over the activation's output.
    dropped: HashMap<usize, usize>,
    /// The activation tensors to quantize, as named in the float graph, in graph order.
    pub tensors: Vec<String>,
}

/// A tensor's measured range, `min ≤ max` (finite).
pub type Range = (f32, f32);

/// What to quantize in `graph` (a float backbone, constants folded: `teach::int8` runs ONNX
/// Runtime's basic optimisations first, which also fold each explicit `Pad` into its `Conv`).
pub fn plan(graph: &GraphProto) -> Plan {
    let producer: HashMap<&str, usize> =
        graph.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect();
    let consumers = |name: &str| -> Vec<usize> {
        (0..graph.node.len()).filter(|&i| graph.node[i].input.iter().any(|x| x == name)).collect()
    };
    let is_output = |name: &str| graph.output.iter().any(|o| o.name == name);
    let constant = |name: &str| initializer(graph, name).is_some();
    let shared = |name: &str| consumers(name).len() > 1;

    let prefix = float_prefix(graph);
    let mut quantized = Vec::new();
    for (i, node) in graph.node.iter().enumerate() {
        if prefix.contains(&i) {
            continue;
        }
        // Every activation input must come from a node (a graph input has no place for its Q/DQ).
        let produced = |name: &String| producer.contains_key(name.as_str());
        let takes = match node.op_type.as_str() {
            "Conv" => {
                node.input.len() >= 2
                    && produced(&node.input[0])
                    && initializer(graph, &node.input[1]).and_then(floats).is_some()
                    && !shared(&node.input[1])
                    && node.input.get(2).is_none_or(|b| {
                        b.is_empty() || (initializer(graph, b).and_then(floats).is_some() && !shared(b))
                    })
            }
            "Add" => node.input.len() == 2 && node.input.iter().all(|x| produced(x) && !constant(x)),
            _ => false,
        };
        if takes {
            quantized.push(i);
        }
    }
    let mut dropped = HashMap::new();
    for &i in &quantized {
        let node = &graph.node[i];
        let out = &node.output[0];
        if node.op_type != "Conv" || is_output(out) {
            continue;
        }
        if let [next] = consumers(out)[..]
            && clips_at_zero(graph, &graph.node[next])
        {
            dropped.insert(i, next);
        }
    }
    let output_of = |i: usize| graph.node[dropped.get(&i).copied().unwrap_or(i)].output[0].clone();
    let mut tensors = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |name: String, tensors: &mut Vec<String>| {
        if seen.insert(name.clone()) {
            tensors.push(name);
        }
    };
    for &i in &quantized {
        let node = &graph.node[i];
        let activations = if node.op_type == "Conv" { &node.input[..1] } else { &node.input[..] };
        for x in activations {
            add(x.clone(), &mut tensors);
        }
        add(output_of(i), &mut tensors);
    }
    // Graph order, so the calibration's outputs and the rewrite read alike.
    let position: HashMap<&str, usize> = producer.iter().map(|(name, &i)| (*name, i)).collect();
    tensors.sort_by_key(|t| position.get(t.as_str()).copied().unwrap_or(usize::MAX));
    Plan { quantized, dropped, tensors }
}

/// The input's normalisation (`Sub`, `Mul` before the first convolution), the stem convolution
/// and the second convolution when it is depthwise.
fn float_prefix(graph: &GraphProto) -> Vec<usize> {
    let convs: Vec<usize> = (0..graph.node.len()).filter(|&i| graph.node[i].op_type == "Conv").collect();
    let Some(&stem) = convs.first() else { return Vec::new() };
    let mut prefix: Vec<usize> =
        (0..stem).filter(|&i| matches!(graph.node[i].op_type.as_str(), "Sub" | "Mul")).collect();
    prefix.push(stem);
    if let Some(&second) = convs.get(1)
        && graph.node[second].attribute.iter().any(|a| a.name == "group" && a.i > 1)
    {
        prefix.push(second);
    }
    prefix
}

/// A `Relu`, or a `Clip` whose lower bound is 0: quantizing its input over its output's range
/// (which starts at 0) does what it does.
fn clips_at_zero(graph: &GraphProto, node: &NodeProto) -> bool {
    match node.op_type.as_str() {
        "Relu" => true,
        "Clip" => node.input.get(1).is_some_and(|m| !m.is_empty() && scalar(graph, m) == Some(0.0)),
        _ => false,
    }
}

/// Rewrite `graph` per `plan`, with each of `plan.tensors`' measured range and weights in `bits`. A tensor without a
/// range is an error (the calibration missed it) and leaves the graph unchanged.
pub fn apply(
    graph: &mut GraphProto,
    plan: &Plan,
    ranges: &HashMap<String, Range>,
    bits: WeightBits,
) -> Result<(), String> {
    let limit = bits.limit();
    let activation: HashMap<&str, (f32, u8)> = plan
        .tensors
        .iter()
        .map(|t| {
            let range = ranges.get(t).ok_or_else(|| format!("no calibrated range for {t}"))?;
            Ok((t.as_str(), activation_params(*range)))
        })
        .collect::<Result<_, String>>()?;
    let mut weights_dq: Vec<NodeProto> = Vec::new();
    let mut new_initializers = Vec::new();
    let mut retired: HashSet<String> = HashSet::new();
    for &i in &plan.quantized {
        let node = &graph.node[i];
        if node.op_type != "Conv" {
            continue;
        }
        let (x_scale, _) = activation[node.input[0].as_str()];
        let w = initializer(graph, &node.input[1]).expect("planned weights are constants");
        let values = floats(w).expect("planned weights are floats");
        let dims = w.dims.clone();
        let channels = dims[0] as usize;
        let per = values.len() / channels.max(1);
        let scales: Vec<f32> = values
            .chunks(per)
            .map(|c| {
                let m = c.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                if m > 0.0 { m / limit } else { 1.0 }
            })
            .collect();
        let q: Vec<u8> = values
            .iter()
            .enumerate()
            .map(|(k, v)| (v / scales[k / per]).round_ties_even().clamp(-limit, limit) as i8 as u8)
            .collect();
        let name = node.input[1].clone();
        new_initializers.push(raw(&format!("{name}/int8"), &dims, DataType::INT8, q));
        new_initializers.push(float_tensor(&format!("{name}/scale"), &[channels as i64], &scales));
        new_initializers.push(raw(
            &format!("{name}/zero_point"),
            &[channels as i64],
            DataType::INT8,
            vec![0; channels],
        ));
        weights_dq.push(dequantize(&name, "int8", Some(0)));
        retired.insert(name);
        if let Some(b) = node.input.get(2).filter(|b| !b.is_empty()) {
            let bias = floats(initializer(graph, b).expect("planned bias is a constant")).expect("float bias");
            let bias_scales: Vec<f32> = scales.iter().map(|s| s * x_scale).collect();
            let q: Vec<u8> = bias
                .iter()
                .zip(&bias_scales)
                .flat_map(|(v, s)| {
                    ((v / s).round_ties_even().clamp(i32::MIN as f32, i32::MAX as f32) as i32).to_le_bytes()
                })
                .collect();
            new_initializers.push(raw(&format!("{b}/int32"), &[channels as i64], DataType::INT32, q));
            new_initializers.push(float_tensor(&format!("{b}/scale"), &[channels as i64], &bias_scales));
            new_initializers.push(raw(
                &format!("{b}/zero_point"),
                &[channels as i64],
                DataType::INT32,
                vec![0; channels * 4],
            ));
            weights_dq.push(dequantize(b, "int32", Some(0)));
            retired.insert(b.clone());
        }
    }
    // In the plan's order (not the map's), so one teach writes the same bytes every time.
    for t in &plan.tensors {
        let (scale, zero) = activation[t.as_str()];
        new_initializers.push(float_tensor(&format!("{t}/scale"), &[], &[scale]));
        new_initializers.push(raw(&format!("{t}/zero_point"), &[], DataType::UINT8, vec![zero]));
    }

    // A convolution whose activation is dropped takes over the activation's output.
    let takes_over: HashMap<usize, String> =
        plan.dropped.iter().map(|(&conv, &act)| (conv, graph.node[act].output[0].clone())).collect();
    let gone: HashSet<usize> = plan.dropped.values().copied().collect();
    let old = std::mem::take(&mut graph.node);
    let mut nodes = weights_dq;
    for (i, mut node) in old.into_iter().enumerate() {
        if gone.contains(&i) {
            continue;
        }
        if let Some(name) = takes_over.get(&i) {
            node.output[0] = name.clone();
        }
        let mut after = Vec::new();
        for out in &mut node.output {
            if activation.contains_key(out.as_str()) {
                let name = out.clone();
                *out = format!("{name}/float");
                after.push(quantize_node(&name));
                after.push(dequantize(&name, "quantized", None));
            }
        }
        nodes.push(node);
        nodes.extend(after);
    }
    graph.node = nodes;
    graph.initializer.retain(|t| !retired.contains(&t.name));
    graph.initializer.extend(new_initializers);
    Ok(())
}

/// uint8 scale and zero point for a measured range: the range widened to include 0 (exactly
/// representable, so zero padding and a clip at 0 stay exact), over 255 steps.
fn activation_params((min, max): Range) -> (f32, u8) {
    let (min, max) = (min.min(0.0), max.max(0.0));
    if max - min <= f32::EPSILON {
        return (1.0, 0);
    }
    let scale = (max - min) / 255.0;
    (scale, (-min / scale).round_ties_even().clamp(0.0, 255.0) as u8)
}

/// `name/<stored>` (with `name/scale`, `name/zero_point`) dequantized back to `name`.
fn dequantize(name: &str, stored: &str, axis: Option<i64>) -> NodeProto {
    NodeProto {
        op_type: "DequantizeLinear".into(),
        name: format!("{name}/dequantize"),
        input: vec![format!("{name}/{stored}"), format!("{name}/scale"), format!("{name}/zero_point")],
        output: vec![name.into()],
        attribute: axis
            .map(|a| AttributeProto {
                name: "axis".into(),
                type_: EnumOrUnknown::new(AttributeType::INT),
                i: a,
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// `name/float` quantized to `name/quantized`.
fn quantize_node(name: &str) -> NodeProto {
    NodeProto {
        op_type: "QuantizeLinear".into(),
        name: format!("{name}/quantize"),
        input: vec![format!("{name}/float"), format!("{name}/scale"), format!("{name}/zero_point")],
        output: vec![format!("{name}/quantized")],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::teach::onnx::tensor::push_floats;

    fn node(op: &str, inputs: &[&str], output: &str, group: Option<i64>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: group
                .map(|g| AttributeProto {
                    name: "group".into(),
                    type_: EnumOrUnknown::new(AttributeType::INT),
                    i: g,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    /// A backbone in miniature: normalisation, stem, depthwise, an expanding and a projecting
    /// 1×1 convolution, a residual addition, and the sum as the graph's output (a tap).
    fn backbone() -> GraphProto {
        let mut g = GraphProto {
            node: vec![
                node("Sub", &["input", "mean"], "centred", None),
                node("Mul", &["centred", "inv_std"], "normalised", None),
                node("Conv", &["normalised", "w_stem", "b_stem"], "stem", None),
                node("Clip", &["stem", "zero", "six"], "stem_act", None),
                node("Conv", &["stem_act", "w_dw", "b_dw"], "dw", Some(2)),
                node("Clip", &["dw", "zero", "six"], "dw_act", None),
                node("Conv", &["dw_act", "w_expand", "b_expand"], "expand", None),
                node("Clip", &["expand", "zero", "six"], "expand_act", None),
                node("Conv", &["expand_act", "w_project", "b_project"], "project", None),
                node("Add", &["project", "dw_act"], "feat", None),
            ],
            output: vec![onnx_protobuf::ValueInfoProto { name: "feat".into(), ..Default::default() }],
            ..Default::default()
        };
        push_floats(&mut g, "mean", &[1, 3, 1, 1], &[0.4, 0.5, 0.6]);
        push_floats(&mut g, "inv_std", &[1, 3, 1, 1], &[2.0, 4.0, 4.0]);
        push_floats(&mut g, "zero", &[], &[0.0]);
        push_floats(&mut g, "six", &[], &[6.0]);
        push_floats(&mut g, "w_stem", &[2, 3, 1, 1], &[1.0, 2.0, 3.0, -1.0, 0.0, 1.0]);
        push_floats(&mut g, "b_stem", &[2], &[0.5, -0.5]);
        push_floats(&mut g, "w_dw", &[2, 1, 1, 1], &[0.5, 2.0]);
        push_floats(&mut g, "b_dw", &[2], &[0.0, 0.1]);
        push_floats(&mut g, "w_expand", &[4, 2, 1, 1], &[0.3, -0.2, 1.0, 0.0, 0.0, 0.0, -2.0, 4.0]);
        push_floats(&mut g, "b_expand", &[4], &[0.1, 0.2, 0.0, -0.3]);
        push_floats(&mut g, "w_project", &[2, 4, 1, 1], &[0.5, 0.25, -1.0, 0.125, 2.0, -0.5, 0.0, 1.0]);
        push_floats(&mut g, "b_project", &[2], &[0.25, -0.75]);
        g
    }

    fn ranges() -> HashMap<String, Range> {
        [("dw_act", (0.0, 6.0)), ("expand_act", (0.0, 5.1)), ("project", (-3.0, 2.0)), ("feat", (-2.5, 7.0))]
            .into_iter()
            .map(|(n, r)| (n.to_string(), r))
            .collect()
    }

    fn values(g: &GraphProto, name: &str) -> Vec<u8> {
        initializer(g, name).unwrap_or_else(|| panic!("no {name}")).raw_data.clone()
    }

    fn f32s(g: &GraphProto, name: &str) -> Vec<f32> {
        floats(initializer(g, name).unwrap_or_else(|| panic!("no {name}"))).unwrap()
    }

    #[test]
    fn the_plan_keeps_the_prefix_in_float_and_quantizes_what_follows() {
        let g = backbone();
        let p = plan(&g);
        let prefix: Vec<&str> = float_prefix(&g).into_iter().map(|i| g.node[i].name.as_str()).collect();
        assert_eq!(prefix, ["centred", "normalised", "stem", "dw"]);
        // The expanding and projecting convolutions and the addition; the Clip after the
        // expansion is dropped (its input's only reader), the stem's and depthwise's stay.
        assert_eq!(p.quantized, [6, 8, 9]);
        assert_eq!(p.dropped, HashMap::from([(6, 7)]));
        assert_eq!(p.tensors, ["dw_act", "expand_act", "project", "feat"]);
    }

    #[test]
    fn the_rewrite_puts_each_tensor_through_quantize_dequantize_and_keeps_every_name() {
        let mut g = backbone();
        let p = plan(&g);
        apply(&mut g, &p, &ranges(), WeightBits::Seven).unwrap();
        let producer = |name: &str| g.node.iter().find(|n| n.output.iter().any(|o| o == name)).unwrap();
        // Every quantized tensor is now a DequantizeLinear output under its old name, so every
        // reader (the graph output too) is unchanged.
        for t in ["dw_act", "expand_act", "project", "feat"] {
            let dq = producer(t);
            assert_eq!(dq.op_type, "DequantizeLinear", "{t}");
            assert_eq!(producer(&dq.input[0]).op_type, "QuantizeLinear", "{t}");
        }
        assert_eq!(g.output[0].name, "feat");
        // The expansion writes its quantized output straight (the Clip is gone), the float
        // prefix is untouched.
        assert!(!g.node.iter().any(|n| n.name == "expand_act"));
        assert_eq!(producer("expand_act/float").name, "expand");
        assert_eq!(producer("stem_act").op_type, "Clip");
        assert_eq!(f32s(&g, "w_stem"), [1.0, 2.0, 3.0, -1.0, 0.0, 1.0]);
        // Activations: uint8 with 0 exactly representable; a range above 0 starts at 0.
        assert_eq!(values(&g, "expand_act/zero_point"), [0]);
        assert!((f32s(&g, "expand_act/scale")[0] - 5.1 / 255.0).abs() < 1e-7);
        assert_eq!(values(&g, "project/zero_point"), [153]); // 3 / (5 / 255)
        // The topological order holds: every input is produced before it is read.
        let mut known: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
        known.insert("input".into());
        for n in &g.node {
            for i in &n.input {
                assert!(known.contains(i), "{} reads {i} before it exists", n.name);
            }
            known.extend(n.output.iter().cloned());
        }
    }

    #[test]
    fn eight_bit_weights_map_each_channels_largest_magnitude_to_127() {
        let mut g = backbone();
        let p = plan(&g);
        apply(&mut g, &p, &ranges(), WeightBits::Eight).unwrap();
        let q: Vec<i8> = values(&g, "w_project/int8").into_iter().map(|b| b as i8).collect();
        let scales = f32s(&g, "w_project/scale");
        assert_eq!(scales, [1.0 / 127.0, 2.0 / 127.0]);
        assert_eq!((q[2], q[4]), (-127, 127), "{q:?}");
        let float = [0.5f32, 0.25, -1.0, 0.125, 2.0, -0.5, 0.0, 1.0];
        for (k, (q, w)) in q.iter().zip(float).enumerate() {
            let s = scales[k / 4];
            assert!((*q as f32 * s - w).abs() <= s / 2.0 + 1e-6, "{w} → {q} × {s}");
        }
    }

    #[test]
    fn weights_are_seven_bit_per_channel_and_biases_at_the_inputs_scale_times_the_weights() {
        let mut g = backbone();
        let p = plan(&g);
        apply(&mut g, &p, &ranges(), WeightBits::Seven).unwrap();
        assert!(initializer(&g, "w_expand").is_none(), "the float weights are replaced");
        let q: Vec<i8> = values(&g, "w_expand/int8").into_iter().map(|b| b as i8).collect();
        let scales = f32s(&g, "w_expand/scale");
        // Each output channel's largest magnitude maps to 64.
        assert_eq!(q, [64, -43, 64, 0, 0, 0, -32, 64]);
        // An all-zero channel keeps scale 1 (nothing to resolve).
        assert_eq!(scales, [0.3 / 64.0, 1.0 / 64.0, 1.0, 4.0 / 64.0]);
        let x_scale = 6.0 / 255.0; // dw_act's
        let bias_scales = f32s(&g, "b_expand/scale");
        for (s, w) in bias_scales.iter().zip(&scales) {
            assert!((s - x_scale * w).abs() < 1e-9);
        }
        let bias: Vec<i32> =
            values(&g, "b_expand/int32").chunks(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        for ((q, s), b) in bias.iter().zip(&bias_scales).zip([0.1f32, 0.2, 0.0, -0.3]) {
            assert!((*q as f32 * s - b).abs() <= s / 2.0 + 1e-7, "bias {b} → {q} × {s}");
        }
        let dq = g.node.iter().find(|n| n.output == ["w_expand"]).unwrap();
        assert_eq!((dq.op_type.as_str(), dq.attribute[0].i), ("DequantizeLinear", 0));
    }

    #[test]
    fn a_tensor_without_a_range_is_named_and_the_graph_left_as_it_was() {
        let mut g = backbone();
        let p = plan(&g);
        let mut partial = ranges();
        partial.remove("project");
        let e = apply(&mut g, &p, &partial, WeightBits::Eight).unwrap_err();
        assert!(e.contains("project"), "{e}");
        assert_eq!(g, backbone());
    }

    #[test]
    fn one_plan_writes_the_same_graph_every_time() {
        use protobuf::Message;
        let rewrite = || {
            let mut g = backbone();
            let p = plan(&g);
            apply(&mut g, &p, &ranges(), WeightBits::Eight).unwrap();
            g.write_to_bytes().unwrap()
        };
        let first = rewrite();
        for _ in 0..8 {
            assert_eq!(rewrite(), first, "the rewrite depends on a map's order");
        }
    }

    #[test]
    fn unfamiliar_nodes_stay_float() {
        let mut g = backbone();
        // A Sigmoid between the projection and the addition: the addition now reads a float
        // node's output, which is quantized for it; the Sigmoid itself stays float.
        g.node.insert(9, node("Sigmoid", &["project"], "gate", None));
        g.node[10].input[0] = "gate".into();
        let p = plan(&g);
        assert_eq!(p.tensors, ["dw_act", "expand_act", "project", "gate", "feat"]);
        assert!(!p.quantized.contains(&9));
    }
}
