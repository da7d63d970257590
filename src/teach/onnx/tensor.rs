//! Reading and writing the constant tensors (initializers) of an ONNX graph.

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{GraphProto, TensorProto};

pub(super) fn initializer<'g>(graph: &'g GraphProto, name: &str) -> Option<&'g TensorProto> {
    graph.initializer.iter().find(|t| t.name == name)
}

/// A float tensor's values, whichever field holds them; `None` for other element types.
pub(super) fn floats(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != DataType::FLOAT as i32 {
        return None;
    }
    if !t.float_data.is_empty() {
        return Some(t.float_data.clone());
    }
    t.raw_data
        .len()
        .is_multiple_of(4)
        .then(|| t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// A scalar from an initializer or a Constant node's value (the Pad's fill value).
pub(super) fn scalar(graph: &GraphProto, name: &str) -> Option<f32> {
    let tensor = initializer(graph, name).or_else(|| {
        let node = graph.node.iter().find(|n| n.op_type == "Constant" && n.output.iter().any(|o| o == name))?;
        node.attribute.iter().find(|a| a.name == "value").and_then(|a| a.t.as_ref())
    })?;
    match floats(tensor)?.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

/// A constant of any element type from its little-endian bytes.
pub(super) fn raw(name: &str, dims: &[i64], data_type: DataType, raw_data: Vec<u8>) -> TensorProto {
    TensorProto { name: name.into(), dims: dims.to_vec(), data_type: data_type as i32, raw_data, ..Default::default() }
}

pub(super) fn float_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    raw(name, dims, DataType::FLOAT, data.iter().flat_map(|v| v.to_le_bytes()).collect())
}

pub(super) fn push_floats(graph: &mut GraphProto, name: &str, dims: &[i64], data: &[f32]) -> String {
    graph.initializer.push(float_tensor(name, dims, data));
    name.into()
}
