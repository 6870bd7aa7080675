//! Clients of a KServe v2 / Triton inference server (rir-serve, Triton,
//! MLServer): what the load tester, the benchmarks, `rir-classify` and
//! `rir-health` use to reach one, written once.
//!
//! # Layout
//! - [`connect`]: channels, TLS and the bearer token; a server's replicas
//!   from several addresses or a name that resolves to several.
//! - [`balance`]: round-robin over replicas, a retry elsewhere when one does
//!   not answer, counts per replica.
//! - [`http`]: the KServe v2 REST client (binary tensors, `{"error"}` answers).
//! - [`server_counters`]: a model's cumulative counters as a server reports
//!   them (KServe statistics, or Triton's series on a metrics page).
//! - [`accuracy`]: a test split through ModelInfer, for the served accuracy.
//! - [`error`]: what can go wrong reaching or asking a server, and the names
//!   of gRPC status codes as users see them.

pub mod accuracy;
pub mod balance;
pub mod connect;
pub mod error;
pub mod http;
pub mod server_counters;

pub use error::ClientError;
