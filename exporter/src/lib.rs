//! Exporting trained RiR networks to ONNX, folded to one convolution per unit.
//!
//! # Layout
//! - [`fold`]: the algebra: mask, shortcut into the centre tap, BN into
//!   weight and bias ([`fold::fold`]).
//! - [`graph`]: a small ONNX graph builder over tract-onnx's protobuf types.
//! - [`export`]: the folded and the literal (`--no-fold`) graphs, metadata,
//!   atomic writing ([`export::export_file`]).
//! - [`precision`]: float32 or float16 bodies, and the float32 twin of a
//!   half-precision export that `verify` measures it against.
//! - [`quantize`]: static int8 quantization of a float32 export (QDQ),
//!   calibrated on images of the model's data set.
//! - [`recorded`]: the data set a model's metadata names.
//! - [`measure`]: input shapes, pixels, logits in batches, accuracy: how
//!   verification and quantization measure a model; [`digest`]: the sha256
//!   an export records of its source.
//! - [`verify`]: runs an export in ONNX Runtime and tract, on random inputs
//!   and real test images, and compares.
//! - [`verdict`]: the bounds a verification is judged against and the
//!   typed verdict.
//! - [`pipeline`]: export, quantize and verify as `rir-export` runs them,
//!   with verified models put in place only once they pass.
//! - [`show`]: the typed results worded for a person.
//! - [`bench`]: folded vs literal latency and throughput in ONNX Runtime.
//! - [`triton`]: the `config.pbtxt` written beside an export in a model
//!   repository, so the repository also serves in Triton.
//! - [`error`]: every error type of the crate, so that no module imports
//!   another for its errors. The modules form an acyclic graph: error;
//!   fold, digest, measure, recorded; precision; graph; export; verify and
//!   quantize; bench, verdict, triton; pipeline; show.
//!
//! The crate reads checkpoints in pure Rust; it does not link libtorch.

#![forbid(unsafe_code)]

pub mod bench;
pub mod digest;
pub mod error;
pub mod export;
pub mod fold;
pub mod graph;
pub mod measure;
pub mod pipeline;
pub mod precision;
pub mod quantize;
pub mod recorded;
pub mod show;
pub mod triton;
pub mod verdict;
pub mod verify;

pub use error::ExportError;
pub use export::{Form, build_model, export_file};
pub use precision::Precision;
