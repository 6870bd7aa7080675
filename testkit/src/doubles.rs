//! Servers that stand in for others, so a client's figures can be checked
//! against what was injected.
//!
//! - [`stub`]: a KServe v2 server with scripted latency, errors and stalls.
//! - [`otlp_sink`]: an OTLP trace receiver that keeps the spans it gets.

pub mod otlp_sink;
pub mod stub;
