//! Running exported RiR models.
//!
//! One trait, [`Engine`], with two implementations: ONNX Runtime through
//! `ort` (loaded at run time from the PyPI wheel's `libonnxruntime.so`,
//! CPU or CUDA) and tract (pure Rust). The exporter's `verify` runs both and
//! compares them; the server pools engines per model.
//!
//! # Layout
//! - `bound`: runs through an IoBinding whose buffers never move (what
//!   CUDA graphs need).
//! - [`device`]: the CUDA execution provider's settings ([`Device`] itself
//!   is `rir-contract`'s).
//! - [`engine`]: the [`Engine`] trait and its output type.
//! - [`load`]: building engines from options, batch buckets, the
//!   CUDA-to-CPU fallback.
//! - [`ort_engine`]: ONNX Runtime: locating the library, the process-wide
//!   environment, sessions.
//! - [`tract_engine`]: tract with a symbolic batch dimension.
//! - [`error`]: the crate's error type.

#![forbid(unsafe_code)]

mod bound;
pub mod device;
pub mod engine;
pub mod error;
pub mod load;
pub mod ort_engine;
pub mod tract_engine;

pub use device::{ConvSearch, CudaOptions, CudaRequired, Device, NoCuda};
pub use engine::{Engine, Output};
pub use error::InferError;
pub use load::{
    Backend, BucketError, Buckets, EngineOptions, PerBucket, load_bucketed, load_engine, warm_up,
};
pub use ort_engine::{OrtEngine, OrtOptions};
pub use tract_engine::TractEngine;
