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
use crate::error::{ExportError, GraphError, QuantizeError};
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
        return Err(GraphError::NotFloat32(t.name.clone()).into());
    }
    if !t.float_data.is_empty() {
        return Ok(t.float_data.clone());
    }
    Ok(t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// The graph being rewritten, as the passes hand it on: its nodes (each
/// with its index in the float graph, or `None` for a node a pass added),
/// the initializers added, and the float ones a quantized copy replaced.
struct Rewrite<'a> {
    source: &'a GraphProto,
    plan: &'a Plan,
    grids: &'a HashMap<String, ActivationGrid>,
    scheme: WeightScheme,
    nodes: Vec<(Option<usize>, NodeProto)>,
    kept: Vec<TensorProto>,
    added: Vec<TensorProto>,
    replaced: HashSet<String>,
}

/// One step of the rewrite.
type Pass = fn(&mut Rewrite) -> Result<(), ExportError>;

/// The rewrite's passes, in order, by name: each is small, runs once over
/// the graph, and names itself when it fails.
const PASSES: [(&str, Pass); 5] = [
    ("fuse-relus", fuse_relus),
    ("read-dequantized", read_dequantized),
    ("quantize-kernels", quantize_kernels),
    ("insert-qdq", insert_qdq),
    ("drop-dead-initializers", drop_dead_initializers),
];

/// Rewrites `graph` as `plan` says, with the activation grids `grids`
/// (one per calibrated tensor of the plan, in its order).
pub fn rewrite(
    graph: &GraphProto,
    plan: &Plan,
    grids: &HashMap<String, ActivationGrid>,
    scheme: WeightScheme,
) -> Result<GraphProto, ExportError> {
    let mut r = Rewrite::new(graph, plan, grids, scheme);
    for (name, pass) in PASSES {
        pass(&mut r).map_err(|e| ExportError::Pass {
            pass: name,
            source: Box::new(e),
        })?;
    }
    Ok(r.finish())
}

impl<'a> Rewrite<'a> {
    fn new(
        source: &'a GraphProto,
        plan: &'a Plan,
        grids: &'a HashMap<String, ActivationGrid>,
        scheme: WeightScheme,
    ) -> Self {
        Rewrite {
            source,
            plan,
            grids,
            scheme,
            nodes: source
                .node
                .iter()
                .cloned()
                .enumerate()
                .map(|(k, n)| (Some(k), n))
                .collect(),
            kept: source.initializer.clone(),
            added: vec![],
            replaced: HashSet::new(),
        }
    }

    /// The float graph with the rewritten nodes and initializers.
    fn finish(self) -> GraphProto {
        let mut initializer = self.kept;
        initializer.extend(self.added);
        GraphProto {
            node: self.nodes.into_iter().map(|(_, n)| n).collect(),
            initializer,
            ..self.source.clone()
        }
    }

    /// The calibrated grid `name` is on.
    fn grid_of(&self, name: &str) -> Result<ActivationGrid, ExportError> {
        let root = grid_root(self.plan, name);
        self.grids
            .get(root)
            .copied()
            .ok_or_else(|| QuantizeError::NoRange(root.to_string()).into())
    }

    fn is_quantized(&self, name: &str) -> bool {
        self.plan.tensors.iter().any(|(n, _)| n == name)
    }
}

/// Drops each Relu the plan fuses; its producer writes the Relu's output
/// (the integer convolution clamps at its zero point instead).
fn fuse_relus(r: &mut Rewrite) -> Result<(), ExportError> {
    let fused = &r.plan.fused_relus;
    for (k, n) in &mut r.nodes {
        if let Some((&relu, _)) = fused.iter().find(|(_, p)| Some(**p) == *k) {
            n.output = r.source.node[relu].output.clone();
        }
    }
    r.nodes
        .retain(|(k, _)| !k.is_some_and(|k| fused.contains_key(&k)));
    Ok(())
}

/// Every consumer of a quantized tensor reads its dequantized copy.
fn read_dequantized(r: &mut Rewrite) -> Result<(), ExportError> {
    let quantized: HashSet<&str> = r.plan.tensors.iter().map(|(n, _)| n.as_str()).collect();
    for (_, n) in &mut r.nodes {
        for i in &mut n.input {
            if quantized.contains(i.as_str()) {
                *i = dequantized(i);
            }
        }
    }
    Ok(())
}

/// Each planned Conv reads an int8 kernel and an int32 bias, each through a
/// `DequantizeLinear` placed before it.
fn quantize_kernels(r: &mut Rewrite) -> Result<(), ExportError> {
    let init: HashMap<&str, &TensorProto> = r
        .source
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut out = Vec::with_capacity(r.nodes.len());
    for (k, mut n) in std::mem::take(&mut r.nodes) {
        let Some(k) = k.filter(|k| r.plan.convs.contains(k)) else {
            out.push((k, n));
            continue;
        };
        let node = &r.source.node[k];
        let x_grid = r.grid_of(&node.input[0])?;
        let mut added = GraphProto::default();
        let (qw, bias) = quantize_conv(&mut added, &init, node, x_grid, r.scheme)?;
        n.input[1] = qw;
        if let Some(b) = bias {
            n.input[2] = b;
        }
        r.replaced.extend(node.input[1..].iter().cloned());
        r.added.extend(added.initializer);
        out.extend(added.node.into_iter().map(|d| (None, d)));
        out.push((Some(k), n));
    }
    r.nodes = out;
    Ok(())
}

/// A `QuantizeLinear` and a `DequantizeLinear` after each node that
/// produces a quantized tensor; one scale and zero point per grid root,
/// shared by the tensors on it.
fn insert_qdq(r: &mut Rewrite) -> Result<(), ExportError> {
    let mut params_added: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(r.nodes.len());
    for (k, n) in std::mem::take(&mut r.nodes) {
        let produced = n.output.first().cloned().unwrap_or_default();
        out.push((k, n));
        if k.is_none() || !r.is_quantized(&produced) {
            continue;
        }
        let g = r.grid_of(&produced)?;
        let root = format!("{}_grid", grid_root(r.plan, &produced));
        let (scale, zp) = (format!("{root}_scale"), format!("{root}_zero_point"));
        if params_added.insert(root.clone()) {
            let s = g.scale.to_le_bytes().to_vec();
            r.added.push(scalar(scale.clone(), DataType::Float, s));
            r.added
                .push(scalar(zp.clone(), DataType::Uint8, vec![g.zero_point]));
        }
        let q = format!("{produced}_q");
        let quantize = qdq_node("QuantizeLinear", [&produced, &scale, &zp], &q, None);
        let deq = dequantized(&produced);
        let dequantize = qdq_node("DequantizeLinear", [&q, &scale, &zp], &deq, None);
        out.extend([(None, quantize), (None, dequantize)]);
    }
    r.nodes = out;
    Ok(())
}

/// Float initializers a quantized copy replaced, and no node reads any
/// more, are dropped.
fn drop_dead_initializers(r: &mut Rewrite) -> Result<(), ExportError> {
    let still_read: HashSet<String> = r
        .nodes
        .iter()
        .flat_map(|(_, n)| n.input.iter().cloned())
        .collect();
    let replaced = std::mem::take(&mut r.replaced);
    r.kept
        .retain(|t| !replaced.contains(&t.name) || still_read.contains(&t.name));
    Ok(())
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
        .ok_or_else(|| GraphError::NotInitializer {
            what: "kernel",
            name: w_name.to_string(),
        })?;
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
        .ok_or_else(|| GraphError::NotInitializer {
            what: "bias",
            name: b_name.to_string(),
        })?;
    let bd = quantize_conv_bias(out, b, x_grid.scale, &wg)?;
    Ok((deq, Some(bd)))
}

/// Adds the int32 bias `b` on the grid of the input's and the kernel's
/// scales (with its `DequantizeLinear`) to `out`; returns its name.
fn quantize_conv_bias(
    out: &mut GraphProto,
    b: &TensorProto,
    input_scale: f32,
    wg: &WeightGrid,
) -> Result<String, ExportError> {
    let b_name = &b.name;
    let (bcodes, bscales) = quantize_bias(&floats(b)?, input_scale, wg);
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
    Ok(bd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::plan::Grid;

    fn f32s(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    /// `x -> Conv(w, b) -> c -> Relu -> r -> Conv(w2, b2) -> y`; the second
    /// Conv becomes integer, the Relu is fused into the first, `r` is on a
    /// grid of step 0.5 from 0.
    fn fixture() -> (GraphProto, Plan, HashMap<String, ActivationGrid>) {
        let graph = GraphProto {
            node: vec![
                node("Conv", &["x", "w", "b"], "c"),
                node("Relu", &["c"], "r"),
                node("Conv", &["r", "w2", "b2"], "y"),
            ],
            initializer: vec![
                f32s("w", &[1, 1, 1, 1], &[2.0]),
                f32s("b", &[1], &[0.0]),
                f32s("w2", &[1, 1, 1, 2], &[1.0, -0.25]),
                f32s("b2", &[1], &[0.5]),
            ],
            ..Default::default()
        };
        let plan = Plan {
            convs: vec![2],
            fused_relus: HashMap::from([(1, 0)]),
            tensors: vec![("r".into(), Grid::Calibrated { non_negative: true })],
        };
        let grid = ActivationGrid {
            scale: 0.5,
            zero_point: 0,
        };
        (graph, plan, HashMap::from([("r".to_string(), grid)]))
    }

    const SCHEME: WeightScheme = WeightScheme {
        per_channel: true,
        max_code: 127,
    };

    /// Runs the passes up to and including `last`.
    fn through<'a>(
        g: &'a GraphProto,
        p: &'a Plan,
        grids: &'a HashMap<String, ActivationGrid>,
        last: &str,
    ) -> Rewrite<'a> {
        let mut r = Rewrite::new(g, p, grids, SCHEME);
        for (name, pass) in PASSES {
            pass(&mut r).unwrap();
            if name == last {
                break;
            }
        }
        r
    }

    fn ops(r: &Rewrite) -> Vec<String> {
        r.nodes
            .iter()
            .map(|(_, n)| format!("{}>{}", n.op_type, n.output[0]))
            .collect()
    }

    #[test]
    fn fuse_relus_drops_the_relu_and_its_producer_writes_its_output() {
        let (g, p, grids) = fixture();
        let r = through(&g, &p, &grids, "fuse-relus");
        assert_eq!(ops(&r), ["Conv>r", "Conv>y"]);
    }

    #[test]
    fn read_dequantized_points_consumers_at_the_copy() {
        let (g, p, grids) = fixture();
        let r = through(&g, &p, &grids, "read-dequantized");
        assert_eq!(r.nodes[1].1.input, ["r_dq", "w2", "b2"]);
        assert_eq!(r.nodes[0].1.input, ["x", "w", "b"]);
    }

    #[test]
    fn quantize_kernels_stores_int8_and_int32_codes_by_hand() {
        let (g, p, grids) = fixture();
        let r = through(&g, &p, &grids, "quantize-kernels");
        assert_eq!(
            ops(&r),
            [
                "Conv>r",
                "DequantizeLinear>w2_dq",
                "DequantizeLinear>b2_dq",
                "Conv>y"
            ]
        );
        assert_eq!(r.nodes[3].1.input, ["r_dq", "w2_dq", "b2_dq"]);
        // Per channel: the kernel's dequantization runs along axis 0.
        let axis: Vec<(&str, i64)> = r.nodes[1]
            .1
            .attribute
            .iter()
            .map(|a| (a.name.as_str(), a.i))
            .collect();
        assert_eq!(axis, [("axis", 0)]);
        let find = |n: &str| r.added.iter().find(|t| t.name == n).unwrap();
        // Scale 1/127: 1.0 is 127, -0.25 is -31.75, rounded to -32.
        assert_eq!(find("w2_int8").raw_data, [127, (-32i8) as u8]);
        assert_eq!(find("w2_int8").data_type, DataType::Int8 as i32);
        assert_eq!(find("w2_int8").dims, [1, 1, 1, 2], "the kernel's shape");
        // Per channel: one scale and zero point per output channel (1 here).
        assert_eq!(find("w2_scale").dims, [1]);
        assert_eq!(find("w2_zero_point").dims, [1]);
        // The bias scale is 0.5 x 1/127: 0.5 is 127.
        assert_eq!(find("b2_int32").raw_data, 127i32.to_le_bytes());
        assert_eq!(r.replaced, HashSet::from(["w2".into(), "b2".into()]));
    }

    #[test]
    fn insert_qdq_quantizes_after_the_producer_on_its_grid() {
        let (g, p, grids) = fixture();
        let r = through(&g, &p, &grids, "insert-qdq");
        assert_eq!(
            ops(&r)[..3],
            ["Conv>r", "QuantizeLinear>r_q", "DequantizeLinear>r_dq"]
        );
        let scale = r.added.iter().find(|t| t.name == "r_grid_scale").unwrap();
        assert_eq!(scale.raw_data, 0.5f32.to_le_bytes());
        // A scalar float scale and a scalar uint8 zero point, as ONNX's
        // per-tensor QuantizeLinear takes them.
        assert!(scale.dims.is_empty());
        assert_eq!(scale.data_type, DataType::Float as i32);
        let zero = r
            .added
            .iter()
            .find(|t| t.name == "r_grid_zero_point")
            .unwrap();
        assert_eq!(zero.data_type, DataType::Uint8 as i32);
        let q = &r.nodes[1].1;
        assert_eq!(q.input, ["r", "r_grid_scale", "r_grid_zero_point"]);
        assert_eq!(q.name, "QuantizeLinear_r_q");
        assert_eq!(
            r.nodes[2].1.input,
            ["r_q", "r_grid_scale", "r_grid_zero_point"]
        );
    }

    #[test]
    fn drop_dead_initializers_keeps_only_what_is_still_read() {
        let (mut g, p, grids) = fixture();
        // An initializer nothing reads and nothing replaced: not this
        // pass's to drop.
        g.initializer.push(f32s("spare", &[1], &[1.0]));
        let r = through(&g, &p, &grids, "drop-dead-initializers");
        let kept: Vec<&str> = r.kept.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(kept, ["w", "b", "spare"]);
    }

    #[test]
    fn the_whole_rewrite_returns_the_rewritten_nodes_and_initializers() {
        let (g, p, grids) = fixture();
        let out = rewrite(&g, &p, &grids, SCHEME).unwrap();
        let ops: Vec<String> = out
            .node
            .iter()
            .map(|n| format!("{}>{}", n.op_type, n.output[0]))
            .collect();
        assert_eq!(ops.len(), 6, "{ops:?}");
        assert_eq!(
            ops[..3],
            ["Conv>r", "QuantizeLinear>r_q", "DequantizeLinear>r_dq"]
        );
        assert_eq!(ops[5], "Conv>y");
        let names: HashSet<&str> = out.initializer.iter().map(|t| t.name.as_str()).collect();
        for n in [
            "w",
            "b",
            "w2_int8",
            "b2_int32",
            "r_grid_scale",
            "r_grid_zero_point",
        ] {
            assert!(names.contains(n), "{n}: {names:?}");
        }
        assert!(!names.contains("w2") && !names.contains("b2"), "{names:?}");
    }

    #[test]
    fn a_pad_passes_its_input_s_grid_on() {
        // Conv > Relu (folded) > Pad > Conv: the Pad's output is quantized
        // on r's grid, with r's scale and zero point, no grid of its own.
        let (mut g, _, grids) = fixture();
        g.node = vec![
            node("Conv", &["x", "w", "b"], "c"),
            node("Relu", &["c"], "r"),
            node("Pad", &["r"], "p"),
            node("Conv", &["p", "w2", "b2"], "y"),
        ];
        let plan = Plan {
            convs: vec![3],
            fused_relus: HashMap::from([(1, 0)]),
            tensors: vec![
                ("r".into(), Grid::Calibrated { non_negative: true }),
                ("p".into(), Grid::SameAs("r".into())),
            ],
        };
        let r = through(&g, &plan, &grids, "insert-qdq");
        let q = r.nodes.iter().find(|(_, n)| n.output[0] == "p_q").unwrap();
        assert_eq!(q.1.input, ["p", "r_grid_scale", "r_grid_zero_point"]);
        assert!(!r.added.iter().any(|t| t.name.starts_with("p_grid")));
    }

    #[test]
    fn a_failing_pass_is_named() {
        let (g, p, _) = fixture();
        let err = rewrite(&g, &p, &HashMap::new(), SCHEME).unwrap_err();
        assert_eq!(
            err.to_string(),
            "int8 rewrite, pass quantize-kernels: no calibrated range for `r`"
        );
    }
}
