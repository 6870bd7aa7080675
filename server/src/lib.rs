//! rir-serve: exported RiR models over gRPC and HTTP.
//!
//! It speaks KServe v2 / Triton's `inference.GRPCInferenceService` (so
//! `tritonclient` and `perf_analyzer` work unchanged) and `rir.v1.ImageClassifier`
//! (encoded images in, labels out), the same over REST, runs models on ONNX
//! Runtime or tract, and batches requests dynamically per model.
//!
//! One entry: [`start`] takes a [`Config`] (what [`Args`], the command line,
//! fills) and returns a running [`Server`]; [`run`] is `start` until a
//! signal. `rir-serve` is `run`, and the tests call `start`, so they test
//! the composition that ships: metrics, polling, drain, auth, TLS.
//!
//! # Layout
//! The arrows point one way, from the top of this list down.
//! - [`args`], [`config`]: the flags and the typed configuration.
//! - [`app`]: start, listeners, the lifecycle and graceful stop.
//! - [`grpc`], [`http`]: the front ends (protocol conversion only), TLS,
//!   auth, health, reflection, the metrics endpoint; [`conn`] admits their
//!   connections (a limit, and closing those that stay silent); [`auth`]
//!   checks bearer tokens.
//! - [`core`]: the request path every front end calls: lookup,
//!   validation, batching, statistics; [`protocol`]: the KServe messages it
//!   answers with; [`error`]: the client's and the operator's errors.
//! - [`reload`]: the reload controller (model control modes, load, unload,
//!   polling), which swaps the snapshots of the [`registry`] (the served
//!   models).
//! - [`loader`]: engines, warm-up, batcher and config.pbtxt per version;
//!   [`scan`]: the repository on disk (versions, fingerprints, what each
//!   model file declares, config.pbtxt).
//! - [`batcher`]: the per-model queue and dynamic batching onto engine threads.
//! - [`tensors`]: request tensors and images to float32 NCHW; outputs back.
//! - [`stats`]: Triton statistics and Prometheus metrics; [`trace`]:
//!   OpenTelemetry spans of requests and batches, exported over OTLP;
//!   [`live`]: the web page's charts, sampled from the statistics while
//!   someone watches; `latency`: the fine latency buckets they read.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod app;
mod args;
mod auth;
pub mod batcher;
mod config;
mod conn;
pub mod core;
mod error;
mod grpc;
mod http;
mod latency;
mod limits;
pub mod live;
mod loader;
mod protocol;
mod registry;
mod reload;
pub mod scan;
mod stall;
pub mod stats;
pub mod tensors;
mod trace;

pub use app::{Addresses, Server, Stopped, Stopper, run, start};
pub use args::Args;
pub use config::Config;
pub use error::{ServeError, ServerError};
