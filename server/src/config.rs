//! Everything a server is started with, typed: what the command line
//! ([`crate::args`]) fills and [`crate::start`] takes. Tests build it from
//! the same flags, so they start what ships.

use std::path::PathBuf;
use std::time::Duration;

use crate::batcher::BatchConfig;
use crate::conn::ConnLimits;
use crate::core::RequestPolicy;
use crate::grpc::GrpcConfig;
use crate::loader::ServingEngines;
use crate::reload::ControlMode;
use crate::trace::TraceConfig;

/// A server's whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where models come from and how the served set follows it.
    pub(crate) repository: RepositoryConfig,
    /// How each model's engines are made (before its config.pbtxt).
    pub(crate) engines: ServingEngines,
    /// How each model's requests are batched (before its config.pbtxt).
    pub(crate) batching: BatchConfig,
    /// How requests are handled, whatever their protocol.
    pub(crate) requests: RequestPolicy,
    /// The addresses to listen on.
    pub(crate) listen: Listen,
    /// The gRPC front end (message limit, TLS, token, HTTP/2); the HTTP
    /// front end takes the same token and body timeouts, and its limit is
    /// resolved with the gRPC one ([`crate::limits`]).
    pub(crate) grpc: GrpcConfig,
    /// Admission of connections, per front end.
    pub(crate) connections: ConnLimits,
    /// The metrics endpoint's own token, if it has one.
    pub(crate) metrics_token: Option<crate::auth::Token>,
    /// How long calls in flight may take to finish once a stop is asked for.
    pub(crate) shutdown_timeout: Duration,
    /// OpenTelemetry traces of requests (off without an endpoint).
    pub(crate) tracing: TraceConfig,
}

/// The model repository and how the served set follows it.
#[derive(Debug, Clone)]
pub(crate) struct RepositoryConfig {
    /// `<root>/<name>/<version>/model.onnx`.
    pub(crate) root: PathBuf,
    /// Triton's model control mode.
    pub(crate) mode: ControlMode,
    /// Between scans in poll mode.
    pub(crate) poll_interval: Duration,
    /// In explicit mode, the models loaded at start.
    pub(crate) load_models: Vec<String>,
}

/// Where the server listens.
#[derive(Debug, Clone)]
pub(crate) struct Listen {
    /// gRPC, `host:port` (port 0: any free one).
    pub(crate) grpc: String,
    /// HTTP/REST, or None for no HTTP front end.
    pub(crate) http: Option<String>,
    /// The Prometheus endpoint.
    pub(crate) metrics: String,
}
