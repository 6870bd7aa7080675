//! What an ONNX file says about itself: its inputs, outputs and metadata,
//! read straight from the protobuf without building a session.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;
use tract_onnx::pb;

use crate::error::InferError;

/// One graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name in the graph.
    pub name: String,
    /// ONNX element type name (`FLOAT`, ...).
    pub dtype: String,
    /// Dimensions; `None` where symbolic (the batch).
    pub dims: Vec<Option<usize>>,
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

fn tensor_info(v: &pb::ValueInfoProto) -> TensorInfo {
    let (dtype, dims) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => {
            let dtype = pb::tensor_proto::DataType::try_from(t.elem_type)
                .map(|d| d.as_str_name().to_string())
                .unwrap_or_else(|_| format!("type {}", t.elem_type));
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
            (dtype, dims)
        }
        None => ("UNDEFINED".to_string(), vec![]),
    };
    TensorInfo {
        name: v.name.clone(),
        dtype,
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
        Self::from_bytes(&bytes).map_err(|detail| InferError::Model {
            path: path.to_path_buf(),
            detail,
        })
    }

    /// Parses serialized ONNX bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let model = pb::ModelProto::decode(bytes).map_err(|e| format!("not an ONNX model: {e}"))?;
        let graph = model.graph.ok_or("the model has no graph")?;
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

    /// How many nodes have operator type `op`.
    pub fn count(&self, op: &str) -> usize {
        self.op_types.iter().filter(|o| *o == op).count()
    }
}
