//! A small builder for ONNX graphs over the protobuf types that tract-onnx
//! generates from `onnx.proto` (prost), so the exporter writes standard
//! ONNX without a hand-written schema.

use tract_onnx::pb::{
    self, AttributeProto, GraphProto, NodeProto, TensorProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
};

use crate::fold::ConvBias;
use crate::precision::Precision;

/// Collects nodes and initializers; every value gets a unique name.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    /// Nodes in topological order (the order they were added).
    pub nodes: Vec<NodeProto>,
    /// Constant tensors.
    pub initializers: Vec<TensorProto>,
    /// Precision of the parameters added by [`GraphBuilder::param`] (kernels,
    /// biases, BatchNorm), and so of the values computed from them.
    pub precision: Precision,
    counter: usize,
}

/// An integer-list attribute.
pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

/// A float attribute.
pub fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

impl GraphBuilder {
    /// An empty graph whose body parameters are stored in `precision`.
    pub fn new(precision: Precision) -> Self {
        GraphBuilder {
            precision,
            ..GraphBuilder::default()
        }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Adds a float32 initializer and returns its name.
    pub fn f32(&mut self, hint: &str, dims: &[usize], data: &[f32]) -> String {
        self.float_initializer(hint, dims, data, Precision::Fp32)
    }

    /// Adds a parameter of the network's body, in the builder's precision,
    /// and returns its name.
    pub fn param(&mut self, hint: &str, dims: &[usize], data: &[f32]) -> String {
        self.float_initializer(hint, dims, data, self.precision)
    }

    fn float_initializer(
        &mut self,
        hint: &str,
        dims: &[usize],
        data: &[f32],
        precision: Precision,
    ) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: precision.data_type() as i32,
            raw_data: precision.encode(data),
            ..Default::default()
        });
        name
    }

    /// Converts `x` to `to` (a `Cast` node) and returns the result's name, or
    /// `output` when given.
    pub fn cast(&mut self, x: &str, to: Precision, output: Option<&str>) -> String {
        self.node("Cast", &[x], vec![int("to", to.data_type() as i64)], output)
    }

    /// Adds an int64 initializer and returns its name.
    pub fn i64(&mut self, hint: &str, data: &[i64]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: vec![data.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Adds a node with one output and returns the output's name (or
    /// `output` when given).
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        output: Option<&str>,
    ) -> String {
        let out = output.map_or_else(|| self.fresh(&op.to_lowercase()), str::to_string);
        let name = self.fresh(op);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name,
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// A convolution with its kernel (and bias, when non-empty) as initializers.
    pub fn conv(&mut self, x: &str, hint: &str, c: &ConvBias) -> String {
        let w = self.param(&format!("{hint}.weight"), &c.shape, &c.weight);
        let mut inputs = vec![x.to_string(), w];
        if !c.bias.is_empty() {
            inputs.push(self.param(&format!("{hint}.bias"), &[c.shape[0]], &c.bias));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let (k, s, p) = (c.shape[2] as i64, c.stride as i64, c.pad as i64);
        self.node(
            "Conv",
            &refs,
            vec![
                ints("kernel_shape", &[k, k]),
                ints("strides", &[s, s]),
                ints("pads", &[p, p, p, p]),
                ints("dilations", &[1, 1]),
                int("group", 1),
            ],
            None,
        )
    }

    /// Channels `from..to` of an NCHW tensor, every `stride`-th pixel.
    pub fn slice_channels(&mut self, x: &str, from: usize, to: usize, stride: usize) -> String {
        let starts = self.i64("starts", &[from as i64, 0, 0]);
        let ends = self.i64("ends", &[to as i64, i64::MAX, i64::MAX]);
        let axes = self.i64("axes", &[1, 2, 3]);
        let steps = self.i64("steps", &[1, stride as i64, stride as i64]);
        self.node("Slice", &[x, &starts, &ends, &axes, &steps], vec![], None)
    }

    /// Appends `extra` zero channels to an NCHW tensor.
    pub fn pad_channels(&mut self, x: &str, extra: usize) -> String {
        if extra == 0 {
            return x.to_string();
        }
        let pads = self.i64("pads", &[0, 0, 0, 0, 0, extra as i64, 0, 0]);
        self.node("Pad", &[x, &pads], vec![], None)
    }
}

/// A float32 NCHW value description with a symbolic batch named `batch`.
pub fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| pb::tensor_shape_proto::Dimension {
            denotation: String::new(),
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v as i64),
                None => dimension::Value::DimParam("batch".into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

impl GraphBuilder {
    /// Finishes the graph with its inputs and outputs.
    pub fn finish(
        self,
        name: &str,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
    ) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: name.into(),
            initializer: self.initializers,
            input: inputs,
            output: outputs,
            ..Default::default()
        }
    }
}
