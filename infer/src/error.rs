//! Errors of the inference engines.

use std::path::PathBuf;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
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
    /// The requested execution provider cannot be had.
    #[error("device {device} unavailable: {detail}")]
    Device {
        device: &'static str,
        detail: String,
    },
}
