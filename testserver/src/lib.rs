//! A rir-serve for black-box tests, over repositories of real exports: the
//! test support that compiles the exporter and the server (and so their
//! engines), kept apart from `rir-testkit` so that crates whose tests need
//! only data, doubles or child processes link no engine.
//!
//! # Layout
//! - [`models`]: model repositories of exported random RiR networks.
//! - [`server`]: a rir-serve started through the library's own entry
//!   (`rir_server::start`) from the same flags the binary takes, on
//!   loopback ports, and the clients to talk to it.
//!
//! rir-server's own tests use it too, so it and rir-server depend on each
//! other at the dev level (Cargo builds the library, then this crate,
//! then the tests): the one such pair in the workspace.

pub mod models;
pub mod server;
