//! The KServe v2 / Triton messages that describe the server and its models:
//! server metadata, model metadata, model configuration, statistics and the
//! repository index. The core answers with these; the REST front end
//! serializes them as they are (their field names are the protocol's JSON
//! names) and the gRPC front end converts them field by field.

use rir_contract::Datatype;
use serde::Serialize;

pub use crate::stats::{InferStatistics, StatisticDuration};

/// Server name reported by ServerMetadata.
pub const SERVER_NAME: &str = "rir";

/// The protocol extensions both front ends implement.
pub const EXTENSIONS: [&str; 4] = [
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
];

/// ServerMetadata.
#[derive(Debug, Clone, Serialize)]
pub struct ServerMetadata {
    /// Server name.
    pub name: &'static str,
    /// Server version.
    pub version: &'static str,
    /// Protocol extensions.
    pub extensions: Vec<&'static str>,
}

/// One tensor in ModelMetadata.
#[derive(Debug, Clone, Serialize)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// KServe datatype.
    pub datatype: Datatype,
    /// Shape, `-1` for the batch.
    pub shape: Vec<i64>,
}

/// ModelMetadata.
#[derive(Debug, Clone, Serialize)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Every version of the model in the repository.
    pub versions: Vec<String>,
    /// Always [`rir_contract::repository::PLATFORM`].
    pub platform: &'static str,
    /// Inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    pub outputs: Vec<TensorMetadata>,
}

/// One input in ModelConfig (Triton's `ModelInput`).
#[derive(Debug, Clone, Serialize)]
pub struct ConfigInput {
    /// Input name.
    pub name: String,
    /// Triton's data type name (`TYPE_FP32`).
    pub data_type: &'static str,
    /// Triton's format name (`FORMAT_NCHW`).
    pub format: &'static str,
    /// Dimensions without the batch.
    pub dims: Vec<i64>,
}

/// One output in ModelConfig (Triton's `ModelOutput`).
#[derive(Debug, Clone, Serialize)]
pub struct ConfigOutput {
    /// Output name.
    pub name: String,
    /// Triton's data type name.
    pub data_type: &'static str,
    /// Dimensions without the batch.
    pub dims: Vec<i64>,
}

/// How a served version batches (Triton's `dynamic_batching`): the batch
/// sizes its engines run at and how long a request may wait for company.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DynamicBatching {
    /// The batch buckets.
    pub preferred_batch_size: Vec<usize>,
    /// The queue delay, microseconds.
    pub max_queue_delay_microseconds: u64,
}

/// The engine instances of a served version (Triton's `instance_group`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceGroup {
    /// How many.
    pub count: usize,
}

/// ModelConfig: the part of Triton's model configuration that describes a
/// served version: what its file declares and what it is served with.
#[derive(Debug, Clone, Serialize)]
pub struct ModelConfig {
    /// Model name.
    pub name: String,
    /// Always [`rir_contract::repository::PLATFORM`].
    pub platform: &'static str,
    /// The engine serving it (`onnxruntime`, `tract`).
    pub backend: &'static str,
    /// Most images per request and per engine call (0 when not ready).
    pub max_batch_size: usize,
    /// Inputs.
    pub input: Vec<ConfigInput>,
    /// Outputs.
    pub output: Vec<ConfigOutput>,
    /// How it batches, when it is ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_batching: Option<DynamicBatching>,
    /// Its engine instances (empty when not ready).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instance_group: Vec<InstanceGroup>,
}

/// Statistics of one batch size (Triton's `InferBatchStatistics`).
#[derive(Debug, Clone, Serialize)]
pub struct BatchStatistics {
    /// Images in the batch.
    pub batch_size: u64,
    /// Not measured per batch: zero.
    pub compute_input: StatisticDuration,
    /// Engine executions at this size and their time.
    pub compute_infer: StatisticDuration,
    /// Not measured per batch: zero.
    pub compute_output: StatisticDuration,
}

/// Statistics of one model version (Triton's `ModelStatistics`).
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatistics {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Last inference, milliseconds since the Unix epoch.
    pub last_inference: u64,
    /// Images inferred.
    pub inference_count: u64,
    /// Engine executions.
    pub execution_count: u64,
    /// Per-request statistics.
    pub inference_stats: InferStatistics,
    /// Per-batch-size statistics.
    pub batch_stats: Vec<BatchStatistics>,
}

/// A model version's state in the repository index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ModelState {
    /// Loaded and serving.
    Ready,
    /// Not serving: failed to load, or not loaded.
    Unavailable,
}

impl ModelState {
    /// The protocol's name (`READY`, `UNAVAILABLE`).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Ready => "READY",
            ModelState::Unavailable => "UNAVAILABLE",
        }
    }
}

/// One entry of the repository index (Triton's `ModelIndex`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version (empty for a model that is not loaded).
    pub version: String,
    /// Ready or not.
    pub state: ModelState,
    /// Why, when something went wrong or the model is not loaded.
    pub reason: String,
}
