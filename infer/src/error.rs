//! Errors of the inference engines.

use std::path::PathBuf;

/// Why a model could not be loaded or run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferError {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error("ONNX Runtime library: {0}")]
    Library(String),
    /// The model file could not be read or parsed.
    #[error("model {path}: {detail}")]
    Model { path: PathBuf, detail: String },
    /// The engine refused to run (bad shape, unavailable device, ...).
    #[error("{engine}: {detail}")]
    Run {
        engine: &'static str,
        detail: String,
    },
    /// A warm-up run failed.
    #[error("warm-up at batch {batch}: {source}")]
    WarmUp {
        batch: usize,
        #[source]
        source: Box<InferError>,
    },
    /// A warm-up run produced NaN or infinite outputs.
    #[error("warm-up at batch {batch} produced NaN or infinite outputs")]
    NonFinite { batch: usize },
    /// The requested execution provider cannot be had.
    #[error("device {device} unavailable: {detail}")]
    Device {
        device: &'static str,
        detail: String,
    },
}

impl From<rir_contract::model_file::ModelFileError> for InferError {
    fn from(e: rir_contract::model_file::ModelFileError) -> Self {
        InferError::Model {
            path: e.path().to_path_buf(),
            detail: match e {
                rir_contract::model_file::ModelFileError::Read { source, .. } => source.to_string(),
                rir_contract::model_file::ModelFileError::NotOnnx { source, .. } => {
                    source.to_string()
                }
            },
        }
    }
}
