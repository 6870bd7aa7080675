//! rir-loadtest: load tests of KServe v2 / Triton inference servers over
//! gRPC or HTTP/REST (rir-serve, Triton, MLServer) and of rir's `Classify`
//! call.
//!
//! Closed loop at a fixed concurrency (or a sweep of them), or open loop at a
//! fixed rate with constant or Poisson arrivals; in open loop latency counts
//! from the *intended* send time, so a server that stalls shows the stall
//! instead of hiding it (no coordinated omission). Latencies go into HDR
//! histograms; reports are a table, JSON, CSV and a sweep plot. Reaching
//! the server (channels, TLS, tokens, replicas) is `rir-client`'s; the
//! benchmarks built on this are `rir-bench`'s.
//!
//! # Layout
//! The arrows point down this list.
//! - [`args`]: the command line (clap), in the library as rir-serve's is;
//!   [`plan`]: the flags checked into a typed [`plan::TestPlan`];
//!   [`session`]: a plan carried out, to an [`session::Outcome`] with its
//!   exit status, and the merge of several generators' files.
//! - [`run`]: one run: its driver and controller on shared state, then its
//!   report. Inside it, `run::control` runs warm-up, duration or count,
//!   stability windows, intervals and the fail-fast stop, feeding
//!   `run::progress`, the bar; `run::drivers` holds the closed- and
//!   open-loop drivers; `run::shared`, the state requests, drivers and
//!   controller share. [`load`] is how much is offered; [`workload`], what
//!   each request sends.
//! - [`workload`]: what is sent: checking the model, building requests from
//!   random tensors, raw tensor files or images, and the probe request;
//!   [`hostile`]: the classes of bad request mixed into a run, each with the
//!   status it is owed.
//! - [`search`]: the highest load whose latency percentile stays under a
//!   bound, by doubling then halving.
//! - [`thresholds`]: bounds a report must meet (latency percentiles, error
//!   rate, throughput), for CI.
//! - [`merge`]: the reports of several generator hosts made into one, by
//!   adding their histograms.
//! - [`report`]: the figures of a run, as a table, JSON and CSV; [`plot`]:
//!   latency against throughput for a sweep; [`html`]: the whole run as
//!   one self-contained HTML report with its charts.
//! - [`breakdown`]: the server's account of a measurement (its queue and
//!   compute per request, from its statistics or metrics) beside the
//!   client's latency.
//! - [`recorder`]: latencies and errors of one measurement window.
//! - [`load`]: what a run offers and how long it measures.
//! - [`error`]: what stops a load test.

pub mod args;
pub mod breakdown;
pub mod error;
pub mod hostile;
pub mod html;
pub mod load;
pub mod merge;
pub mod plan;
pub mod plot;
pub mod recorder;
pub mod report;
pub mod run;
pub mod search;
pub mod session;
pub mod thresholds;
pub mod workload;

pub use error::LoadError;
