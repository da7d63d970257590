//! Grayscale parts through one input channel: the backbone's colour normalisation and stem
//! convolution folded into a one-channel stem.
//!
//! A backbone reads RGB; a gray frame fed as three equal channels makes the stem convolution do
//! three times the work for one channel's information, and on the INT8 copy a three-channel stem
//! is among the slowest layers (too few channels for the integer kernels). With equal channels
//! `g`, the stem sees `(g − mean_c) / std_c` on channel c, so
//! `Σ_c W_c ∗ (g − mean_c) / std_c = W' ∗ (g − P) + Σ_c W_c ∗ (P − mean_c) / std_c`
//! with `W' = Σ_c W_c / std_c`: one channel shifted by `P`, and the constant folded into the bias.
//! Inside the image this is the same convolution. Where the stem's zero padding is reached (TF
//! "SAME" padding: the last row and column), the three-channel graph pads each channel with its own
//! mean and the folded one with `P`, so features near the bottom and right edges differ slightly;
//! a taught model is always composed and run with the same graph, so this changes nothing
//! between teach and run.

use onnx_protobuf::{GraphProto, NodeProto};

use super::tensor::{floats, initializer, push_floats, scalar};

/// Folds the colour normalisation into the stem so that `input` takes one channel. The graph must
/// start `input → Sub(mean) → Mul(1/std) → [Pad with zeros] → Conv` with the three means, inverse
/// deviations and the stem's weights as float initializers (the committed backbones, and INT8
/// copies that keep the stem in float); anything else is named in the error and left unchanged.
pub fn fold_gray_input(graph: &mut GraphProto, input: &str) -> Result<(), String> {
    let plan = Plan::find(graph, input)?;
    plan.apply(graph);
    Ok(())
}

/// Whether [`fold_gray_input`] applies to this graph (the graph is not changed).
pub fn gray_foldable(graph: &GraphProto, input: &str) -> bool {
    Plan::find(graph, input).is_ok()
}

struct Plan {
    sub: usize,
    mul: usize,
    conv: usize,
    /// The value gray input is shifted by: the channels' means weighted by their inverse spreads.
    shift: f32,
    weight: Vec<f32>,
    bias: Vec<f32>,
    out_channels: usize,
    kernel: [i64; 2],
}

impl Plan {
    fn find(graph: &GraphProto, input: &str) -> Result<Plan, String> {
        let only_consumer = |name: &str, what: &str| -> Result<usize, String> {
            let users: Vec<usize> =
                (0..graph.node.len()).filter(|&i| graph.node[i].input.iter().any(|x| x == name)).collect();
            match users[..] {
                [one] => Ok(one),
                _ => Err(format!("{what} feeds {} nodes, not one", users.len())),
            }
        };
        let sub = only_consumer(input, "the input")?;
        let sub_node = &graph.node[sub];
        if sub_node.op_type != "Sub" || sub_node.input.first().map(String::as_str) != Some(input) {
            return Err(format!("the input's first node is {}, not the mean's Sub", sub_node.op_type));
        }
        let mean = three_floats(graph, &sub_node.input[1], "the mean")?;
        let mul = only_consumer(&sub_node.output[0], "the mean's Sub")?;
        let mul_node = &graph.node[mul];
        if mul_node.op_type != "Mul" || mul_node.input[0] != sub_node.output[0] {
            return Err(format!("the mean's Sub feeds {}, not the deviation's Mul", mul_node.op_type));
        }
        let inv_std = three_floats(graph, &mul_node.input[1], "the inverse deviation")?;
        let mut next = only_consumer(&mul_node.output[0], "the deviation's Mul")?;
        if graph.node[next].op_type == "Pad" {
            let pad = &graph.node[next];
            let constant = pad.attribute.iter().all(|a| a.name != "mode" || a.s == b"constant");
            let zero = match pad.input.get(2).map(String::as_str) {
                None | Some("") => true,
                Some(value) => scalar(graph, value) == Some(0.0),
            };
            if pad.input[0] != mul_node.output[0] || !constant || !zero {
                return Err("the stem's padding is not zeros".into());
            }
            next = only_consumer(&pad.output[0], "the stem's padding")?;
        }
        let conv = &graph.node[next];
        let group = conv.attribute.iter().find(|a| a.name == "group").map_or(1, |a| a.i);
        if conv.op_type != "Conv" || group != 1 {
            return Err(format!("the stem is {} (group {group}), not a convolution", conv.op_type));
        }
        let w = initializer(graph, &conv.input[1]).ok_or("the stem's weights are not a float constant")?;
        let dims = w.dims.clone();
        if dims.len() != 4 || dims[1] != 3 || dims.iter().any(|&d| d <= 0) {
            return Err(format!("the stem's weights are {dims:?}, not [out, 3, h, w]"));
        }
        let out_channels = dims[0] as usize;
        let taps = (dims[2] * dims[3]) as usize;
        let weight = floats(w)
            .filter(|v| v.len() == out_channels * 3 * taps)
            .ok_or_else(|| format!("the stem's weights are not {dims:?} floats"))?;
        let bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => {
                let t = initializer(graph, b).ok_or("the stem's bias is not a float constant")?;
                floats(t).filter(|v| v.len() == out_channels).ok_or("the stem's bias does not match its weights")?
            }
            None => vec![0.0; out_channels],
        };
        let shift = mean.iter().zip(&inv_std).map(|(m, s)| m * s).sum::<f32>() / inv_std.iter().sum::<f32>();
        let mut folded_w = vec![0.0f32; out_channels * taps];
        let mut folded_b = bias;
        for o in 0..out_channels {
            for c in 0..3 {
                for k in 0..taps {
                    let v = weight[(o * 3 + c) * taps + k];
                    folded_w[o * taps + k] += v * inv_std[c];
                    folded_b[o] += v * inv_std[c] * (shift - mean[c]);
                }
            }
        }
        Ok(Plan {
            sub,
            mul,
            conv: next,
            shift,
            weight: folded_w,
            bias: folded_b,
            out_channels,
            kernel: [dims[2], dims[3]],
        })
    }

    fn apply(self, graph: &mut GraphProto) {
        let shift = push_floats(graph, "teach/gray_shift", &[1, 1, 1, 1], &[self.shift]);
        let [kh, kw] = self.kernel;
        let weight = push_floats(graph, "teach/gray_stem_weight", &[self.out_channels as i64, 1, kh, kw], &self.weight);
        let bias = push_floats(graph, "teach/gray_stem_bias", &[self.out_channels as i64], &self.bias);
        graph.node[self.sub].input[1] = shift;
        let conv: &mut NodeProto = &mut graph.node[self.conv];
        conv.input.truncate(1);
        conv.input.extend([weight, bias]);
        // The Mul by 1/std is in the weights now: its consumer reads the Sub directly.
        let (mul_out, sub_out) = (graph.node[self.mul].output[0].clone(), graph.node[self.sub].output[0].clone());
        for node in &mut graph.node {
            for i in &mut node.input {
                if *i == mul_out {
                    *i = sub_out.clone();
                }
            }
        }
        graph.node.remove(self.mul);
        // Initializers nothing reads any more (the three-channel constants) go.
        let used: std::collections::HashSet<String> = graph.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
        graph.initializer.retain(|t| used.contains(&t.name));
    }
}

fn three_floats(graph: &GraphProto, name: &str, what: &str) -> Result<[f32; 3], String> {
    initializer(graph, name)
        .and_then(floats)
        .and_then(|v| <[f32; 3]>::try_from(v).ok())
        .ok_or_else(|| format!("{what} is not a constant of three floats"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    /// input → Sub(mean) → Mul(1/std) → Conv(2 outputs, 3 channels, 1×1) → out.
    fn stem() -> GraphProto {
        let mut g = GraphProto {
            node: vec![
                node("Sub", &["input", "mean"], "centred"),
                node("Mul", &["centred", "inv_std"], "normalised"),
                node("Conv", &["normalised", "w", "b"], "out"),
            ],
            ..Default::default()
        };
        push_floats(&mut g, "mean", &[1, 3, 1, 1], &[0.4, 0.5, 0.6]);
        push_floats(&mut g, "inv_std", &[1, 3, 1, 1], &[2.0, 4.0, 4.0]);
        push_floats(&mut g, "w", &[2, 3, 1, 1], &[1.0, 2.0, 3.0, -1.0, 0.0, 1.0]);
        push_floats(&mut g, "b", &[2], &[0.5, -0.5]);
        g
    }

    fn values(g: &GraphProto, name: &str) -> Vec<f32> {
        floats(initializer(g, name).unwrap()).unwrap()
    }

    #[test]
    fn the_fold_gives_the_stem_of_three_equal_channels() {
        let mut g = stem();
        fold_gray_input(&mut g, "input").unwrap();
        assert_eq!(g.node.len(), 2, "the Mul is gone");
        assert_eq!(g.node[1].input[0], "centred", "the stem reads the shifted input");
        let shift = values(&g, &g.node[0].input[1])[0];
        let (w, b) = (values(&g, &g.node[1].input[1]), values(&g, &g.node[1].input[2]));
        // For any gray value x, the folded stem equals the three-channel one.
        for x in [0.0f32, 0.3, 1.0] {
            let original = |o: usize| -> f32 {
                let (mean, inv, weights) = ([0.4, 0.5, 0.6], [2.0, 4.0, 4.0], [[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]]);
                [0.5, -0.5][o] + (0..3).map(|c| weights[o][c] * (x - mean[c]) * inv[c]).sum::<f32>()
            };
            for o in 0..2 {
                let folded = w[o] * (x - shift) + b[o];
                assert!((folded - original(o)).abs() < 1e-5, "x {x}, output {o}: {folded} vs {}", original(o));
            }
        }
        assert!(initializer(&g, "inv_std").is_none() && initializer(&g, "w").is_none(), "unused constants go");
    }

    #[test]
    fn graphs_it_cannot_fold_are_named_and_left_alone() {
        // The stem's weights dequantized at run time (an INT8 copy that quantized its stem).
        let mut g = stem();
        g.node.insert(0, node("DequantizeLinear", &["w_int8", "w_scale"], "w_float"));
        g.node[3].input[1] = "w_float".into();
        let before = g.clone();
        let err = fold_gray_input(&mut g, "input").unwrap_err();
        assert!(err.contains("weights are not a float constant"), "{err}");
        assert_eq!(g, before);
        // The input read by a second node besides the normalisation.
        let mut g = stem();
        g.node.push(node("Identity", &["input"], "copy"));
        assert!(!gray_foldable(&g, "input"));
        assert!(fold_gray_input(&mut g, "input").unwrap_err().contains("the input feeds 2 nodes"));
        // Weights shorter than their declared shape: refused, not read past their end.
        let mut g = stem();
        push_floats(&mut g, "short", &[2, 3, 1, 1], &[1.0, 2.0]);
        g.node[2].input[1] = "short".into();
        assert!(fold_gray_input(&mut g, "input").unwrap_err().contains("not [2, 3, 1, 1] floats"));
        assert!(gray_foldable(&stem(), "input"));
    }
}
