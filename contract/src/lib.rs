//! What the crates of rir must agree on, defined once.
//!
//! The exporter writes an ONNX file and a model repository; the server reads
//! them; the clients call the server by the names the file declares. Each
//! name, key, path and limit that two of them must spell the same way is a
//! constant or a type here, so that a change is made in one place and the
//! compiler finds every reader.
//!
//! # Layout
//! - [`onnx`]: the exported graph's tensor names, its `metadata_props` keys
//!   and the training figures one of them holds.
//! - [`repository`]: `<root>/<name>/<version>/model.onnx` and
//!   `<root>/<name>/config.pbtxt`, the platform name, the default max batch.
//! - [`datatype`]: the KServe v2 tensor datatypes, their sizes and their
//!   names in Triton's model configuration and in ONNX.
//! - [`metrics`]: the `nv_inference_*` series rir-serve exports and the
//!   load tester scrapes.
//! - [`device`]: `--device auto|cpu|cuda`, one meaning for every binary.
//! - [`model_file`]: what an ONNX file declares (inputs, outputs,
//!   operators, metadata), read without an inference engine.

#![forbid(unsafe_code)]

pub mod datatype;
pub mod device;
pub mod metrics;
pub mod model_file;
pub mod onnx;
pub mod repository;

pub use datatype::Datatype;
pub use device::Device;
pub use model_file::ModelInfo;
