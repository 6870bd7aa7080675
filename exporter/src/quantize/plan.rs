//! Which tensors of a float32 graph go onto the 8-bit grid.
//!
//! The int8 region is the body between the stem and the head: every tensor
//! computed from a Relu's output by convolutions, Adds, Slices and Pads.
//! The stem stays float: its input is the normalized image, which is
//! signed, and its single input channel makes it a sliver of the work (on
//! AVX2 its 9-tap products over that input also saturate the 16-bit pair
//! sums of the uint8 x int8 kernels). The head stays float after the
//! average pooling, and so do the normalization and the softmax.
//!
//! A Relu right after a quantized Conv or Add (its only consumer) is not
//! kept: the output is quantized on a grid that starts at 0, and
//! `QuantizeLinear` saturating at the zero point is the Relu.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::GraphProto;

use crate::error::{ExportError, GraphError};

/// Where a quantized tensor's grid comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grid {
    /// Its own range, calibrated on images; `non_negative` when it is a
    /// Relu's output (a grid from 0).
    Calibrated {
        /// Whether the tensor is a Relu's output.
        non_negative: bool,
    },
    /// The grid of this tensor (the input of a Slice or Pad, which move
    /// codes without changing them).
    SameAs(String),
}

/// What [`plan`] decided for a graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Indices of the Conv nodes that become integer convolutions.
    pub convs: Vec<usize>,
    /// Indices of the Relu nodes dropped, with the producer that takes over
    /// their output name.
    pub fused_relus: HashMap<usize, usize>,
    /// Every quantized tensor in graph order, with its grid (names as in
    /// the float graph, where a fused Relu's output is its producer's).
    pub tensors: Vec<(String, Grid)>,
}

impl Plan {
    /// The tensors whose ranges calibration must measure.
    pub fn calibrated(&self) -> impl Iterator<Item = (&str, bool)> {
        self.tensors.iter().filter_map(|(n, g)| match g {
            Grid::Calibrated { non_negative } => Some((n.as_str(), *non_negative)),
            Grid::SameAs(_) => None,
        })
    }
}

/// Plans the quantization of `graph` (nodes in topological order, as
/// rir-export writes them).
pub fn plan(graph: &GraphProto) -> Result<Plan, ExportError> {
    let weights: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut consumers: HashMap<&str, usize> = HashMap::new();
    for n in &graph.node {
        for i in &n.input {
            *consumers.entry(i.as_str()).or_default() += 1;
        }
    }
    let mut plan = Plan::default();
    // Tensor name -> index in plan.tensors; producer of each quantized tensor.
    let mut quantized: HashMap<String, usize> = HashMap::new();
    let mut producer: HashMap<String, usize> = HashMap::new();
    let mut int8_nodes: HashSet<usize> = HashSet::new();
    for (k, n) in graph.node.iter().enumerate() {
        let input = |i: usize| n.input.get(i).map(String::as_str).unwrap_or("");
        let output = n.output.first().cloned().unwrap_or_default();
        let in_int8 = |name: &str| quantized.contains_key(name);
        let signed = Grid::Calibrated {
            non_negative: false,
        };
        let new = match n.op_type.as_str() {
            "Conv" if in_int8(input(0)) && weights.contains(input(1)) => {
                plan.convs.push(k);
                int8_nodes.insert(k);
                Some(signed)
            }
            "Add" if in_int8(input(0)) && in_int8(input(1)) => {
                int8_nodes.insert(k);
                Some(signed)
            }
            "Slice" | "Pad" if in_int8(input(0)) => {
                Some(Grid::SameAs(match &plan.tensors[quantized[input(0)]].1 {
                    Grid::SameAs(r) => r.clone(),
                    Grid::Calibrated { .. } => input(0).to_string(),
                }))
            }
            "Relu" => {
                let x = input(0);
                let from_int8 = producer.get(x).filter(|p| int8_nodes.contains(p)).copied();
                match from_int8 {
                    Some(p) if consumers.get(x) == Some(&1) => {
                        // The producer writes the Relu's output, on a grid from 0.
                        let at = quantized.remove(x).unwrap_or_default();
                        plan.fused_relus.insert(k, p);
                        plan.tensors[at] =
                            (output.clone(), Grid::Calibrated { non_negative: true });
                        quantized.insert(output.clone(), at);
                        producer.insert(output.clone(), p);
                        None
                    }
                    _ => Some(Grid::Calibrated { non_negative: true }),
                }
            }
            _ => None,
        };
        if let Some(grid) = new {
            quantized.insert(output.clone(), plan.tensors.len());
            producer.insert(output.clone(), k);
            plan.tensors.push((output, grid));
        }
    }
    if plan.convs.is_empty() {
        return Err(GraphError::NothingToQuantize.into());
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::{NodeProto, TensorProto};

    use super::*;

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..NodeProto::default()
        }
    }

    fn graph(nodes: Vec<NodeProto>) -> GraphProto {
        GraphProto {
            node: nodes,
            initializer: ["w0", "w1", "w2", "w3"]
                .map(|n| TensorProto {
                    name: n.into(),
                    ..TensorProto::default()
                })
                .to_vec(),
            ..GraphProto::default()
        }
    }

    fn calibrated(non_negative: bool) -> Grid {
        Grid::Calibrated { non_negative }
    }

    #[test]
    fn the_body_from_the_first_relu_is_quantized_and_sole_relus_fold_into_their_producer() {
        let g = graph(vec![
            node("Conv", &["x", "w0"], "a"), // 0: the stem, on the float image
            node("Relu", &["a"], "b"),       // 1: the int8 region starts here
            node("Conv", &["b", "w1"], "c"), // 2
            node("Relu", &["c"], "d"),       // 3: c's only consumer: folded into 2
            node("Pad", &["d"], "e"),        // 4: d's codes, moved
            node("Slice", &["e"], "f"),      // 5: still d's
            node("Conv", &["f", "w2"], "g"), // 6
            node("Add", &["g", "d"], "h"),   // 7
            node("Relu", &["h"], "i"),       // 8: folded into 7
            node("Conv", &["i", "w3"], "k"), // 9
            node("Relu", &["k"], "l"),       // 10: k has two consumers: kept
            node("Add", &["k", "l"], "m"),   // 11
            node("Conv", &["m", "x"], "n"),  // 12: a kernel that is no weight
            node("GlobalAveragePool", &["m"], "p"),
            node("Add", &["m", "a"], "q"), // a is float (the stem's): stays float
            node("Pad", &["a"], "s"),      // so does a Pad of it
        ]);
        let p = plan(&g).unwrap();
        assert_eq!(p.convs, [2, 6, 9]);
        assert_eq!(p.fused_relus, HashMap::from([(3, 2), (8, 7)]));
        let want = [
            ("b", calibrated(true)),
            ("d", calibrated(true)),
            ("e", Grid::SameAs("d".into())),
            ("f", Grid::SameAs("d".into())),
            ("g", calibrated(false)),
            ("i", calibrated(true)),
            ("k", calibrated(false)),
            ("l", calibrated(true)),
            ("m", calibrated(false)),
        ]
        .map(|(n, g)| (n.to_string(), g));
        assert_eq!(p.tensors, want);
        let measured: Vec<(&str, bool)> = p.calibrated().collect();
        assert_eq!(
            measured,
            [
                ("b", true),
                ("d", true),
                ("g", false),
                ("i", true),
                ("k", false),
                ("l", true),
                ("m", false)
            ]
        );
    }

    #[test]
    fn a_graph_with_no_convolution_after_a_relu_has_nothing_to_quantize() {
        let g = graph(vec![
            node("Conv", &["x", "w0"], "a"),
            node("Relu", &["a"], "b"),
            node("GlobalAveragePool", &["b"], "c"),
        ]);
        assert!(matches!(
            plan(&g),
            Err(ExportError::Graph(GraphError::NothingToQuantize))
        ));
    }
}
