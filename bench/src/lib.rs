//! rir-bench: the benchmarks of rir's serving side. Each is a command that
//! prints a table, and each compares things measured side by side in one
//! run, because absolute figures drift on shared machines.
//!
//! # Layout
//! - [`ceiling`]: requests per second the load generator sustains against
//!   a server that does no work (the [`stub`]).
//! - [`compare`]: rir-loadtest's figures next to NVIDIA's perf_analyzer on
//!   the same rir-serve, model and load.
//! - [`server`]: rir-serve against the same model run in-process on ONNX
//!   Runtime: latency added, throughput with batching off and on, memory
//!   growth under sustained load.
//! - [`soak`]: a long open-loop run at a share of the measured capacity
//!   with bad requests mixed in, judged on crashes, memory, tail latency
//!   over time and the bad requests' statuses.
//! - [`tracing_cost`]: rir-serve with OpenTelemetry traces off and on,
//!   side by side.
//! - [`hostile`]: every hostile request class at once beside good
//!   traffic, against rir-serve's defaults; [`attacks`]: those requests
//!   as wire bytes, which rir-server's tests send too.
//! - [`point`]: what every benchmark measures with: a random-input
//!   workload and one closed-loop point.
//! - [`serve_process`]: rir-serve as a child process on free ports (its
//!   readiness, signals, memory), which the tests use too.
//! - [`stub`]: a KServe server with scripted latency and errors.
//! - [`otlp_sink`]: an OTLP trace receiver that keeps the spans it gets.
//! - [`error`]: what stops a benchmark.

pub mod attacks;
pub mod ceiling;
pub mod compare;
pub mod error;
pub mod hostile;
pub mod otlp_sink;
pub mod point;
pub mod serve_process;
pub mod server;
pub mod soak;
pub mod stub;
pub mod tracing_cost;

pub use error::BenchError;
