//! Running exported RiR models.
//!
//! One trait, [`Engine`], with two implementations: ONNX Runtime through
//! `ort` (loaded at run time from the PyPI wheel's `libonnxruntime.so`,
//! CPU or CUDA) and tract (pure Rust). The exporter's `verify` runs both and
//! compares them; the server pools engines per model.
//!
//! # Layout
//! - [`engine`]: the [`Engine`] trait and its output type.
//! - [`ort_engine`]: ONNX Runtime: locating the library, the process-wide
//!   environment, sessions.
//! - [`tract_engine`]: tract with a symbolic batch dimension.
//! - [`model_info`]: inputs, outputs and metadata read from the ONNX file itself.
//! - [`error`]: the crate's error type.

pub mod engine;
pub mod error;
pub mod model_info;
pub mod ort_engine;
pub mod tract_engine;

pub use engine::{Engine, Output};
pub use error::InferError;
pub use model_info::ModelInfo;
pub use ort_engine::{DeviceKind, OrtEngine, OrtOptions};
pub use tract_engine::TractEngine;
