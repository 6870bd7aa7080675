//! The exporter's error type.

use std::path::PathBuf;

/// Why an export or a verification failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The checkpoint is unreadable, truncated, or lacks a tensor.
    #[error(transparent)]
    Checkpoint(#[from] rir_checkpoint::CheckpointError),
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// A model file is unreadable or not ONNX.
    #[error(transparent)]
    ModelFile(#[from] rir_contract::model_file::ModelFileError),
    /// The checkpoint's or the model's metadata is unusable.
    #[error("metadata: {0}")]
    Metadata(String),
    /// An engine failed to load or run the model.
    #[error(transparent)]
    Infer(#[from] rir_infer::InferError),
    /// The model records a precision this exporter does not know.
    #[error("metadata: {0}")]
    Precision(#[from] UnknownPrecision),
    /// An int8 model's float32 source is missing or not the file it was
    /// quantized from.
    #[error(transparent)]
    Source(#[from] crate::verify::SourceError),
    /// The job cannot be done as asked.
    #[error(transparent)]
    Job(#[from] crate::pipeline::JobError),
    /// The data set for the accuracy check could not be read.
    #[error(transparent)]
    Data(#[from] rir_data::DataError),
}

/// A name that is not a precision of the exporter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}` (fp32, fp16, int8)")]
pub struct UnknownPrecision(pub String);
