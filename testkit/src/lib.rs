//! Test support shared by the crates of rir, written once.
//!
//! A dev-dependency only: no production crate depends on it, so none ships
//! fixtures. The crates it drives (the server, the exporter, the bench's
//! process supervision) are the real ones; nothing here stands in for them.
//!
//! # Layout
//! - [`data`]: CIFAR and Fashion-MNIST files in the official formats.
//! - [`models`]: model repositories of exported random RiR networks.
//! - [`images`]: PNG files to send; [`requests`]: ModelInfer requests.
//! - [`server`]: a rir-serve started through the library's own entry
//!   (`rir_server::start`) from the same flags the binary takes, on
//!   loopback ports, and the clients to talk to it.
//! - [`binary`]: rir-serve started as a user starts it, its log captured.
//! - [`process`]: rir-serve as a child process (SIGTERM, SIGKILL), the
//!   supervision the benchmarks use.
//! - [`web`]: one HTTP exchange that hands back 4xx and 5xx as they are.
//! - [`python`]: the Python packages the set-up installs, and NVIDIA's
//!   stock client run against a server.
//! - [`tls`]: a self-signed certificate.

pub mod binary;
pub mod data;
pub mod images;
pub mod models;
pub mod python;
pub mod requests;
pub mod server;
pub mod tls;
pub mod web;

/// rir-serve as a child process on loopback ports, and what to do to it.
pub mod process {
    pub use rir_bench::serve_process::{ServerProcess, serve_binary, spawn, spawn_on};
}
