//! Rewriting a float32 graph into QDQ form: a `QuantizeLinear` and a
//! `DequantizeLinear` on every quantized tensor, kernels stored as int8 and
//! biases as int32, each read through a `DequantizeLinear`.
//!
//! The graph still computes in float between the pairs, so every ONNX
//! consumer runs it as it is; ONNX Runtime's optimizer fuses each
//! `DequantizeLinear -> Conv -> QuantizeLinear` into an integer
//! convolution (and the Adds likewise).

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{GraphProto, NodeProto, TensorProto, tensor_proto::DataType};

use super::grid::{ActivationGrid, WeightGrid, WeightScheme, quantize_bias, quantize_weights};
use super::plan::{Grid, Plan};
use crate::error::ExportError;
use crate::graph::int;

/// The name of a quantized tensor's dequantized copy, which its consumers read.
fn dequantized(name: &str) -> String {
    format!("{name}_dq")
}

fn scalar(name: String, data_type: DataType, raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        name,
        dims: vec![],
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

fn vector(name: String, data_type: DataType, len: usize, raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: vec![len as i64],
        ..scalar(name, data_type, raw_data)
    }
}

fn qdq_node(op: &str, inputs: [&str; 3], output: &str, axis: Option<i64>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: format!("{op}_{output}"),
        op_type: op.into(),
        attribute: axis.map(|a| vec![int("axis", a)]).unwrap_or_default(),
        ..Default::default()
    }
}

/// The float values of an initializer.
pub fn floats(t: &TensorProto) -> Result<Vec<f32>, ExportError> {
    if t.data_type != DataType::Float as i32 {
        return Err(ExportError::Metadata(format!(
            "initializer `{}` is not float32 (quantize a float32 export)",
            t.name
        )));
    }
    if !t.float_data.is_empty() {
        return Ok(t.float_data.clone());
    }
    Ok(t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Rewrites `graph` as `plan` says, with the activation grids `grids`
/// (one per calibrated tensor of the plan, in its order).
pub fn rewrite(
    graph: &GraphProto,
    plan: &Plan,
    grids: &HashMap<String, ActivationGrid>,
    scheme: WeightScheme,
) -> Result<GraphProto, ExportError> {
    let init: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let grid_of = |name: &str| -> Result<ActivationGrid, ExportError> {
        let root = grid_root(plan, name);
        grids
            .get(root)
            .copied()
            .ok_or_else(|| ExportError::Metadata(format!("no calibrated range for `{root}`")))
    };
    let quantized: HashSet<&str> = plan.tensors.iter().map(|(n, _)| n.as_str()).collect();
    let convs: HashSet<usize> = plan.convs.iter().copied().collect();
    let mut out = GraphProto {
        node: vec![],
        initializer: vec![],
        ..graph.clone()
    };
    let mut replaced: HashSet<String> = HashSet::new();
    // One scale and zero point per grid root, shared by the tensors on it.
    let mut params_added: HashSet<String> = HashSet::new();
    for (k, node) in graph.node.iter().enumerate() {
        if plan.fused_relus.contains_key(&k) {
            continue;
        }
        let mut n = node.clone();
        // A producer whose Relu was fused writes the Relu's output.
        if let Some((&relu, _)) = plan.fused_relus.iter().find(|(_, p)| **p == k) {
            n.output = graph.node[relu].output.clone();
        }
        for i in &mut n.input {
            if quantized.contains(i.as_str()) {
                *i = dequantized(i);
            }
        }
        if convs.contains(&k) {
            let x = node.input[0].as_str();
            let x_grid = grid_of(x)?;
            let (qw, bias) = quantize_conv(&mut out, &init, node, x_grid, scheme)?;
            n.input[1] = qw;
            if let Some(b) = bias {
                n.input[2] = b;
            }
            replaced.extend(node.input[1..].iter().cloned());
        }
        let produced = n.output.first().cloned().unwrap_or_default();
        out.node.push(n);
        if quantized.contains(produced.as_str()) {
            let g = grid_of(&produced)?;
            let root = format!("{}_grid", grid_root(plan, &produced));
            let (scale, zp) = (format!("{root}_scale"), format!("{root}_zero_point"));
            if params_added.insert(root.clone()) {
                out.initializer.push(scalar(
                    scale.clone(),
                    DataType::Float,
                    g.scale.to_le_bytes().to_vec(),
                ));
                out.initializer
                    .push(scalar(zp.clone(), DataType::Uint8, vec![g.zero_point]));
            }
            let q = format!("{produced}_q");
            out.node.push(qdq_node(
                "QuantizeLinear",
                [&produced, &scale, &zp],
                &q,
                None,
            ));
            out.node.push(qdq_node(
                "DequantizeLinear",
                [&q, &scale, &zp],
                &dequantized(&produced),
                None,
            ));
        }
    }
    // Float initializers no node reads any more are dropped.
    let still_read: HashSet<&str> = out
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let kept: Vec<TensorProto> = graph
        .initializer
        .iter()
        .filter(|t| !replaced.contains(&t.name) || still_read.contains(t.name.as_str()))
        .cloned()
        .collect();
    out.initializer.splice(0..0, kept);
    Ok(out)
}

/// The tensor whose calibrated grid `name` is on: itself, or the input its
/// Slice or Pad passes codes on from.
fn grid_root<'a>(plan: &'a Plan, name: &'a str) -> &'a str {
    match plan.tensors.iter().find(|(n, _)| n == name).map(|t| &t.1) {
        Some(Grid::SameAs(r)) => r,
        _ => name,
    }
}

/// Adds the int8 kernel and int32 bias of the Conv `node` (with their
/// `DequantizeLinear`s) to `out`; returns the names the Conv reads instead.
fn quantize_conv(
    out: &mut GraphProto,
    init: &HashMap<&str, &TensorProto>,
    node: &NodeProto,
    x_grid: ActivationGrid,
    scheme: WeightScheme,
) -> Result<(String, Option<String>), ExportError> {
    let w_name = &node.input[1];
    let w = init
        .get(w_name.as_str())
        .ok_or_else(|| ExportError::Metadata(format!("kernel `{w_name}` is not an initializer")))?;
    let out_ch = w.dims.first().copied().unwrap_or(1).max(1) as usize;
    let wg: WeightGrid = quantize_weights(&floats(w)?, out_ch, scheme);
    let groups = wg.scales.len();
    let (codes, scale, zp, deq) = (
        format!("{w_name}_int8"),
        format!("{w_name}_scale"),
        format!("{w_name}_zero_point"),
        format!("{w_name}_dq"),
    );
    out.initializer.push(TensorProto {
        name: codes.clone(),
        dims: w.dims.clone(),
        data_type: DataType::Int8 as i32,
        raw_data: wg.codes.iter().map(|&c| c as u8).collect(),
        ..Default::default()
    });
    let scales: Vec<u8> = wg.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    let axis = scheme.per_channel.then_some(0);
    if scheme.per_channel {
        out.initializer
            .push(vector(scale.clone(), DataType::Float, groups, scales));
        out.initializer
            .push(vector(zp.clone(), DataType::Int8, groups, vec![0; groups]));
    } else {
        out.initializer
            .push(scalar(scale.clone(), DataType::Float, scales));
        out.initializer
            .push(scalar(zp.clone(), DataType::Int8, vec![0]));
    }
    out.node.push(qdq_node(
        "DequantizeLinear",
        [&codes, &scale, &zp],
        &deq,
        axis,
    ));
    let Some(b_name) = node.input.get(2).filter(|b| !b.is_empty()) else {
        return Ok((deq, None));
    };
    let b = init
        .get(b_name.as_str())
        .ok_or_else(|| ExportError::Metadata(format!("bias `{b_name}` is not an initializer")))?;
    let (bcodes, bscales) = quantize_bias(&floats(b)?, x_grid.scale, &wg);
    let c = bcodes.len();
    let (bq, bs, bz, bd) = (
        format!("{b_name}_int32"),
        format!("{b_name}_scale"),
        format!("{b_name}_zero_point"),
        format!("{b_name}_dq"),
    );
    out.initializer.push(vector(
        bq.clone(),
        DataType::Int32,
        c,
        bcodes.iter().flat_map(|v| v.to_le_bytes()).collect(),
    ));
    out.initializer.push(vector(
        bs.clone(),
        DataType::Float,
        c,
        bscales.iter().flat_map(|v| v.to_le_bytes()).collect(),
    ));
    out.initializer
        .push(vector(bz.clone(), DataType::Int32, c, vec![0; 4 * c]));
    out.node
        .push(qdq_node("DequantizeLinear", [&bq, &bs, &bz], &bd, Some(0)));
    Ok((deq, Some(bd)))
}
