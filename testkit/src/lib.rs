//! Test support shared by the crates of rir, written once.
//!
//! A dev-dependency of every crate's tests, and a dependency of rir-bench,
//! whose benchmarks drive the same child processes and doubles. The crates
//! it drives (the server, the exporter) are the real ones.
//!
//! Without its `serve` feature it links no inference engine: data, images,
//! requests, doubles and child processes only. `serve` adds [`models`] and
//! [`server`], which compile the exporter and the server.
//!
//! # Layout
//! - [`data`]: CIFAR and Fashion-MNIST files in the official formats.
//! - [`models`]: model repositories of exported random RiR networks.
//! - [`images`]: PNG files to send; [`requests`]: ModelInfer requests.
//! - [`server`]: a rir-serve started through the library's own entry
//!   (`rir_server::start`) from the same flags the binary takes, on
//!   loopback ports, and the clients to talk to it.
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
#[cfg(feature = "serve")]
pub mod models;
pub mod process;
pub mod python;
pub mod requests;
#[cfg(feature = "serve")]
pub mod server;
pub mod tls;
pub mod web;
