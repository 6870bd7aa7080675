//! The part of ONNX's `onnx.proto` that [`super::ModelInfo`] reports, as
//! prost messages with ONNX's field numbers. Fields not declared here
//! (weights, attributes, documentation) are skipped by the decoder.

/// `ModelProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Model {
    /// `graph = 7`.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<Graph>,
    /// `opset_import = 8`.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetId>,
    /// `metadata_props = 14`.
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntry>,
}

/// `OperatorSetIdProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetId {
    /// `domain = 1`; empty for the default domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// `version = 2`.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `StringStringEntryProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntry {
    /// `key = 1`.
    #[prost(string, tag = "1")]
    pub key: String,
    /// `value = 2`.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `GraphProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Graph {
    /// `node = 1`.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<Node>,
    /// `initializer = 5` (their names only).
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<Named>,
    /// `input = 11`.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfo>,
    /// `output = 12`.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfo>,
}

/// `NodeProto`, its operator type only.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Node {
    /// `op_type = 4`.
    #[prost(string, tag = "4")]
    pub op_type: String,
}

/// `TensorProto`, its name only (`name = 8`); the data is skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Named {
    /// `name = 8`.
    #[prost(string, tag = "8")]
    pub name: String,
}

/// `ValueInfoProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfo {
    /// `name = 1`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `type = 2`.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<Type>,
}

/// `TypeProto`, its tensor case only (`tensor_type = 1` of the oneof).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Type {
    /// `tensor_type = 1`.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorType>,
}

/// `TypeProto.Tensor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorType {
    /// `elem_type = 1`.
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    /// `shape = 2`.
    #[prost(message, optional, tag = "2")]
    pub shape: Option<Shape>,
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Shape {
    /// `dim = 1`.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: `dim_value = 1` or `dim_param = 2`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dimension {
    /// `dim_value = 1`.
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    /// `dim_param = 2`: a symbolic dimension.
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

impl Dimension {
    /// The size when the dimension is fixed; `None` when symbolic, absent
    /// or negative.
    pub fn fixed(&self) -> Option<usize> {
        match (self.dim_value, &self.dim_param) {
            (Some(v), None) => usize::try_from(v).ok(),
            _ => None,
        }
    }
}

/// ONNX's name of a `TensorProto.DataType` value.
pub fn elem_type_name(elem_type: i32) -> Option<&'static str> {
    const NAMES: [&str; 24] = [
        "UNDEFINED",
        "FLOAT",
        "UINT8",
        "INT8",
        "UINT16",
        "INT16",
        "INT32",
        "INT64",
        "STRING",
        "BOOL",
        "FLOAT16",
        "DOUBLE",
        "UINT32",
        "UINT64",
        "COMPLEX64",
        "COMPLEX128",
        "BFLOAT16",
        "FLOAT8E4M3FN",
        "FLOAT8E4M3FNUZ",
        "FLOAT8E5M2",
        "FLOAT8E5M2FNUZ",
        "UINT4",
        "INT4",
        "FLOAT4E2M1",
    ];
    NAMES.get(usize::try_from(elem_type).ok()?).copied()
}
