//! What an ONNX file says about itself: its inputs, outputs, operators and
//! metadata, read straight from the protobuf without building a session.
//!
//! The reader lives here, not beside the engines, so that crates that link
//! no inference engine (the clients, the load tester) can describe a model
//! file. It decodes only the fields it reports ([`schema`]); prost skips
//! the rest (weights included) without copying them.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::Datatype;
use crate::onnx::{self, RecordedMetrics};

pub mod schema;

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
        schema::elem_type_name(self.elem_type)
            .map_or_else(|| format!("type {}", self.elem_type), str::to_string)
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

/// Why a model file could not be described.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// The file could not be read.
    #[error("model {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model.
    #[error("model {path}: {source}")]
    NotOnnx {
        path: PathBuf,
        #[source]
        source: NotOnnx,
    },
}

impl ModelFileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ModelFileError::Read { path, .. } | ModelFileError::NotOnnx { path, .. } => path,
        }
    }
}

fn tensor_info(v: &schema::ValueInfo) -> TensorInfo {
    let Some(t) = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()) else {
        return TensorInfo {
            name: v.name.clone(),
            elem_type: 0,
            dims: vec![],
        };
    };
    let dims = t
        .shape
        .as_ref()
        .map(|s| s.dim.iter().map(schema::Dimension::fixed).collect())
        .unwrap_or_default();
    TensorInfo {
        name: v.name.clone(),
        elem_type: t.elem_type,
        dims,
    }
}

impl ModelInfo {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, ModelFileError> {
        let bytes = std::fs::read(path).map_err(|source| ModelFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|source| ModelFileError::NotOnnx {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses serialized ONNX bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NotOnnx> {
        let model = schema::Model::decode(bytes).map_err(NotOnnx::Decode)?;
        let graph = model.graph.ok_or(NotOnnx::NoGraph)?;
        let init: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
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
                .into_iter()
                .map(|p| (p.key, p.value))
                .collect(),
            op_types: graph.node.into_iter().map(|n| n.op_type).collect(),
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
