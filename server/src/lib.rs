//! rir-serve: exported RiR models over gRPC.
//!
//! It speaks KServe v2 / Triton's `inference.GRPCInferenceService` (so
//! `tritonclient` and `perf_analyzer` work unchanged) and `rir.v1.ImageClassifier`
//! (encoded images in, labels out), runs models on ONNX Runtime or tract, and
//! batches requests dynamically per model.
//!
//! # Layout
//! - [`repository`]: finding `<root>/<name>/<version>/model.onnx` and reading
//!   each model's inputs, outputs and class names from the file.
//! - [`models`]: engines, warm-up and readiness per model version.
//! - [`control`]: model control modes, the repository index, load, unload
//!   and polling, swapping model snapshots without downtime.
//! - [`batcher`]: the per-model queue and dynamic batching onto engine threads.
//! - [`tensors`]: request tensors and images to float32 NCHW; outputs back.
//! - [`core`]: the request path every front end calls: lookup, validation,
//!   batching, statistics, responses in protocol-neutral types.
//! - [`error`]: the one error type, mapped once to gRPC and once to HTTP.
//! - [`service`]: the gRPC handlers (protocol conversion only).
//! - [`http`]: the KServe v2 REST front end (protocol conversion only).
//! - [`stats`]: Triton statistics and Prometheus metrics.
//! - [`conn`]: admitting connections for both front ends: a limit, and
//!   closing those that stay silent.
//! - [`server`]: transport, TLS, auth, health, reflection, metrics endpoint,
//!   graceful shutdown.

#![forbid(unsafe_code)]

pub mod batcher;
pub mod conn;
pub mod control;
pub mod core;
pub mod error;
pub mod http;
pub mod models;
pub mod repository;
pub mod server;
pub mod service;
pub mod stats;
pub mod tensors;
