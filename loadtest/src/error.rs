//! What can go wrong before or while load is applied, worded for the user.

use std::path::PathBuf;

use rir_client::ClientError;

/// Errors of a load test. Each one stops the run with one clear message
/// instead of a flood of failed requests.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The server could not be reached, or a file the client needs read.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server's REST metadata or a request as a REST body.
    #[error(transparent)]
    Rest(#[from] rir_client::http::RestError),
    /// The request cannot be built for this server or model (wrong model,
    /// shape, input files, options).
    #[error("{0}")]
    Setup(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The probe request sent before the run failed.
    #[error("the server rejected the first request with {code}: {message}")]
    Rejected {
        /// gRPC status code name.
        code: String,
        /// The server's message.
        message: String,
    },
    /// Every request failed during the first part of the run.
    #[error("stopped: the first {count} requests all failed; the last with {code}: {message}")]
    AllFailing {
        /// How many failed.
        count: u64,
        /// gRPC status code name of the last failure.
        code: String,
        /// Its message.
        message: String,
    },
    /// The reports to merge could not be read.
    #[error(transparent)]
    MergeInput(#[from] crate::session::MergeInputError),
    /// The reports could not be merged.
    #[error(transparent)]
    Merge(#[from] crate::merge::MergeError),
    /// The server's figures cannot be read where asked.
    #[error(transparent)]
    Figures(#[from] rir_client::server_counters::CountersError),
    /// rir-bench could not be run.
    #[error("running {}: build it beside rir-loadtest (cargo build -p rir-bench): {source}", bin.display())]
    Bench {
        /// The binary tried.
        bin: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A plot could not be drawn.
    #[error("plot {0}: {1}")]
    Plot(PathBuf, String),
}

impl LoadError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LoadError::Io {
            path: path.into(),
            source,
        }
    }
}
