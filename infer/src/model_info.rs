//! What an ONNX file says about itself: its inputs, outputs and metadata,
//! read straight from the protobuf without building a session.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;
use tract_onnx::pb;

use rir_contract::Datatype;
use rir_contract::onnx::{self, RecordedMetrics};

use crate::error::InferError;

/// One graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name in the graph.
    pub name: String,
    /// ONNX element type (`TensorProto.DataType`: 1 is FLOAT); 0 when the
    /// value has no tensor type.
    pub elem_type: i32,
    /// Dimensions; `None` where symbolic (the batch).
    pub dims: Vec<Option<usize>>,
}

impl TensorInfo {
    /// The KServe datatype of the elements, when KServe has one for them.
    pub fn datatype(&self) -> Option<Datatype> {
        Datatype::from_onnx(self.elem_type)
    }

    /// The ONNX name of the element type (`FLOAT`), for messages.
    pub fn type_name(&self) -> String {
        pb::tensor_proto::DataType::try_from(self.elem_type)
            .map(|d| d.as_str_name().to_string())
            .unwrap_or_else(|_| format!("type {}", self.elem_type))
    }
}

/// Inputs, outputs and `metadata_props` of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Graph inputs that are not initializers.
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs.
    pub outputs: Vec<TensorInfo>,
    /// `metadata_props`, by key.
    pub metadata: BTreeMap<String, String>,
    /// Operator types of the graph's nodes, in order.
    pub op_types: Vec<String>,
    /// The default-domain opset the model imports.
    pub opset: i64,
}

/// Why bytes are not an ONNX model this crate can describe.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotOnnx {
    /// The protobuf does not decode as a `ModelProto`.
    #[error("not an ONNX model: {0}")]
    Decode(prost::DecodeError),
    /// A `ModelProto` without a graph.
    #[error("the model has no graph")]
    NoGraph,
}

fn tensor_info(v: &pb::ValueInfoProto) -> TensorInfo {
    let (elem_type, dims) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => {
            let dims = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v))
                                if v >= 0 =>
                            {
                                Some(v as usize)
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            (t.elem_type, dims)
        }
        None => (0, vec![]),
    };
    TensorInfo {
        name: v.name.clone(),
        elem_type,
        dims,
    }
}

impl ModelInfo {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, InferError> {
        let bytes = std::fs::read(path).map_err(|e| InferError::Model {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        Self::from_bytes(&bytes).map_err(|e| InferError::Model {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    }

    /// Parses serialized ONNX bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NotOnnx> {
        let model = pb::ModelProto::decode(bytes).map_err(NotOnnx::Decode)?;
        let graph = model.graph.ok_or(NotOnnx::NoGraph)?;
        let init: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        Ok(ModelInfo {
            inputs: graph
                .input
                .iter()
                .filter(|i| !init.contains(i.name.as_str()))
                .map(tensor_info)
                .collect(),
            outputs: graph.output.iter().map(tensor_info).collect(),
            metadata: model
                .metadata_props
                .iter()
                .map(|p| (p.key.clone(), p.value.clone()))
                .collect(),
            op_types: graph.node.iter().map(|n| n.op_type.clone()).collect(),
            opset: model
                .opset_import
                .iter()
                .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
                .map_or(0, |o| o.version),
        })
    }

    /// A metadata value parsed as JSON.
    pub fn metadata_json(&self, key: &str) -> Option<serde_json::Value> {
        self.metadata
            .get(key)
            .and_then(|v| serde_json::from_str(v).ok())
    }

    /// The training figures the exporter recorded ([`onnx::keys::METRICS`]), if any.
    pub fn recorded_metrics(&self) -> Option<RecordedMetrics> {
        RecordedMetrics::parse(self.metadata.get(onnx::keys::METRICS)?)
    }

    /// How an int8 model was quantized ([`onnx::keys::QUANTIZATION`]), if it was.
    pub fn quantization(&self) -> Option<onnx::Quantization> {
        onnx::Quantization::parse(self.metadata.get(onnx::keys::QUANTIZATION)?)
    }

    /// How many nodes have operator type `op`.
    pub fn count(&self, op: &str) -> usize {
        self.op_types.iter().filter(|o| *o == op).count()
    }
}
