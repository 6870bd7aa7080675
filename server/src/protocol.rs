//! The KServe v2 / Triton messages that describe the server and its models:
//! server metadata, model metadata, model configuration, statistics and the
//! repository index. The core answers with these; the REST front end
//! serializes them as they are (their field names are the protocol's JSON
//! names) and the gRPC front end converts them field by field.

use rir_contract::Datatype;
use serde::Serialize;

pub(crate) use crate::stats::{InferStatistics, StatisticDuration};

/// Server name reported by ServerMetadata.
pub(crate) const SERVER_NAME: &str = "rir";

/// The protocol extensions both front ends implement.
pub(crate) const EXTENSIONS: [&str; 4] = [
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
];

/// ServerMetadata.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ServerMetadata {
    /// Server name.
    pub(crate) name: &'static str,
    /// Server version.
    pub(crate) version: &'static str,
    /// Protocol extensions.
    pub(crate) extensions: Vec<&'static str>,
}

/// One tensor in ModelMetadata.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TensorMetadata {
    /// Tensor name.
    pub(crate) name: String,
    /// KServe datatype.
    pub(crate) datatype: Datatype,
    /// Shape, `-1` for the batch.
    pub(crate) shape: Vec<i64>,
}

/// ModelMetadata.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModelMetadata {
    /// Model name.
    pub(crate) name: String,
    /// Every version of the model in the repository.
    pub(crate) versions: Vec<String>,
    /// Always [`rir_contract::repository::PLATFORM`].
    pub(crate) platform: &'static str,
    /// Inputs.
    pub(crate) inputs: Vec<TensorMetadata>,
    /// Outputs.
    pub(crate) outputs: Vec<TensorMetadata>,
}

/// One input in ModelConfig (Triton's `ModelInput`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConfigInput {
    /// Input name.
    pub(crate) name: String,
    /// Triton's data type name (`TYPE_FP32`).
    pub(crate) data_type: &'static str,
    /// Triton's format name (`FORMAT_NCHW`).
    pub(crate) format: &'static str,
    /// Dimensions without the batch.
    pub(crate) dims: Vec<i64>,
}

/// One output in ModelConfig (Triton's `ModelOutput`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConfigOutput {
    /// Output name.
    pub(crate) name: String,
    /// Triton's data type name.
    pub(crate) data_type: &'static str,
    /// Dimensions without the batch.
    pub(crate) dims: Vec<i64>,
}

/// How a served version batches (Triton's `dynamic_batching`): the batch
/// sizes its engines run at and how long a request may wait for company.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct DynamicBatching {
    /// The batch buckets.
    pub(crate) preferred_batch_size: Vec<usize>,
    /// The queue delay, microseconds.
    pub(crate) max_queue_delay_microseconds: u64,
}

/// The engine instances of a served version (Triton's `instance_group`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct InstanceGroup {
    /// How many.
    pub(crate) count: usize,
}

/// ModelConfig: the part of Triton's model configuration that describes a
/// served version: what its file declares and what it is served with.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModelConfig {
    /// Model name.
    pub(crate) name: String,
    /// Always [`rir_contract::repository::PLATFORM`].
    pub(crate) platform: &'static str,
    /// The engine serving it (`onnxruntime`, `tract`).
    pub(crate) backend: &'static str,
    /// Most images per request and per engine call (0 when not ready).
    pub(crate) max_batch_size: usize,
    /// Inputs.
    pub(crate) input: Vec<ConfigInput>,
    /// Outputs.
    pub(crate) output: Vec<ConfigOutput>,
    /// How it batches, when it is ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dynamic_batching: Option<DynamicBatching>,
    /// Its engine instances (empty when not ready).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) instance_group: Vec<InstanceGroup>,
}

/// Statistics of one batch size (Triton's `InferBatchStatistics`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BatchStatistics {
    /// Images in the batch.
    pub(crate) batch_size: u64,
    /// Not measured per batch: zero.
    pub(crate) compute_input: StatisticDuration,
    /// Engine executions at this size and their time.
    pub(crate) compute_infer: StatisticDuration,
    /// Not measured per batch: zero.
    pub(crate) compute_output: StatisticDuration,
}

/// Statistics of one model version (Triton's `ModelStatistics`).
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatistics {
    /// Model name.
    pub(crate) name: String,
    /// Version.
    pub(crate) version: String,
    /// Last inference, milliseconds since the Unix epoch.
    pub(crate) last_inference: u64,
    /// Images inferred.
    pub inference_count: u64,
    /// Engine executions.
    pub(crate) execution_count: u64,
    /// Per-request statistics.
    pub(crate) inference_stats: InferStatistics,
    /// Per-batch-size statistics.
    pub(crate) batch_stats: Vec<BatchStatistics>,
}

/// A model version's state in the repository index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ModelState {
    /// Loaded and serving.
    Ready,
    /// Not serving: failed to load, or not loaded.
    Unavailable,
}

impl ModelState {
    /// The protocol's name (`READY`, `UNAVAILABLE`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ModelState::Ready => "READY",
            ModelState::Unavailable => "UNAVAILABLE",
        }
    }
}

/// One entry of the repository index (Triton's `ModelIndex`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct IndexEntry {
    /// Model name.
    pub(crate) name: String,
    /// Version (empty for a model that is not loaded).
    pub(crate) version: String,
    /// Ready or not.
    pub(crate) state: ModelState,
    /// Why, when something went wrong or the model is not loaded.
    pub(crate) reason: String,
}
