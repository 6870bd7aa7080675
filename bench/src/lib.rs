//! rir-bench: the benchmarks of rir's serving side. Each is a command that
//! prints a table, and each compares things measured side by side in one
//! run, because absolute figures drift on shared machines.
//!
//! # Layout
//! - [`ceiling`]: requests per second the load generator sustains against
//!   a server that does no work (`rir_testkit::doubles::stub`).
//! - [`perf_analyzer`]: rir-loadtest's figures next to NVIDIA's perf_analyzer on
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
//!   traffic, against rir-serve's defaults (the requests themselves are
//!   `rir_testkit::attacks`, which rir-server's tests send too).
//! - [`point`]: what every benchmark measures with: a random-input
//!   workload and one closed-loop point.
//! - [`served`]: the rir-serve a benchmark starts and the model it loads
//!   (the child process itself is `rir_testkit::process`, the no-work
//!   server `rir_testkit::doubles::stub`, the trace receiver
//!   `rir_testkit::doubles::otlp_sink`).
//! - [`error`]: what stops a benchmark.

pub mod ceiling;
pub mod error;
pub mod hostile;
pub mod perf_analyzer;
pub mod point;
pub mod served;
pub mod server;
pub mod soak;
pub mod tracing_cost;

pub use error::BenchError;
