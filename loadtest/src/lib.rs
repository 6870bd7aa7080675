//! rir-loadtest: load tests of KServe v2 / Triton inference servers over
//! gRPC or HTTP/REST (rir-serve, Triton, MLServer) and of rir's `Classify`
//! call.
//!
//! Closed loop at a fixed concurrency (or a sweep of them), or open loop at a
//! fixed rate with constant or Poisson arrivals; in open loop latency counts
//! from the *intended* send time, so a server that stalls shows the stall
//! instead of hiding it (no coordinated omission). Latencies go into HDR
//! histograms; reports are a table, JSON, CSV and a sweep plot.
//!
//! # Layout
//! - [`connect`]: channels, TLS and the bearer token; a server's replicas
//!   from several addresses or a name that resolves to several.
//! - [`balance`]: round-robin over replicas, a retry elsewhere when one does
//!   not answer, counts per replica.
//! - [`http`]: the KServe v2 REST client (binary tensors, `{"error"}` answers).
//! - [`workload`]: what is sent: checking the model, building requests from
//!   random tensors, raw tensor files or images, and the probe request.
//! - [`hostile`]: the classes of bad request mixed into a run, each with
//!   the status it is owed.
//! - [`recorder`]: latencies and errors of one measurement window.
//! - [`run`]: the closed- and open-loop drivers, warm-up, duration or count,
//!   stability windows.
//! - [`report`]: the figures of a run, as a table, JSON and CSV.
//! - [`plot`]: latency against throughput for a sweep.
//! - [`stub`]: a KServe server with scripted latency and errors: the test
//!   target, and the "trivial model" of the tool's own ceiling benchmark.
//! - [`accuracy`]: a test split through ModelInfer, for the served accuracy.
//! - [`soak`]: a long open-loop run with bad requests mixed in, judged on
//!   crashes, memory, tail latency over time and the bad requests' statuses.
//! - [`bench`]: the benchmarks (the tool's ceiling, its figures next to
//!   perf_analyzer's, and rir-serve against in-process ONNX Runtime).

pub mod accuracy;
pub mod balance;
pub mod bench;
pub mod connect;
pub mod error;
pub mod hostile;
pub mod http;
pub mod plot;
pub mod recorder;
pub mod report;
pub mod run;
pub mod soak;
pub mod stub;
pub mod workload;

pub use error::LoadError;
