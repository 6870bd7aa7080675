//! Test support shared by the crates of rir, written once.
//!
//! A dev-dependency of every crate's tests, and a dependency of rir-bench,
//! whose benchmarks drive the same child processes and doubles. The
//! binaries it drives are the real ones.
//!
//! It links no inference engine: a rir-serve over exported models, which
//! compiles the exporter and the server, is `rir-testserver`'s.
//!
//! # Layout
//! - [`data`]: CIFAR and Fashion-MNIST files in the official formats.
//! - [`images`]: PNG files to send; [`requests`]: ModelInfer requests.
//! - [`binary`]: rir-serve started as a user starts it, its log captured.
//! - [`process`]: rir-serve as a child process on free ports (readiness,
//!   SIGTERM, SIGKILL, memory), the supervision the benchmarks use too.
//! - [`doubles`]: servers that stand in for others: a KServe server with
//!   scripted latency and errors, an OTLP receiver that keeps its spans.
//! - [`attacks`]: hostile requests as the bytes that travel.
//! - [`web`]: one HTTP exchange that hands back 4xx and 5xx as they are.
//! - [`python`]: the Python packages the set-up installs, and NVIDIA's
//!   stock client run against a server.
//! - [`tls`]: a self-signed certificate.

pub mod attacks;
pub mod binary;
pub mod data;
pub mod doubles;
pub mod images;
pub mod process;
pub mod python;
pub mod requests;
pub mod tls;
pub mod web;
