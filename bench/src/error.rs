//! What stops a benchmark, worded for the user.

/// Why a benchmark could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A load run failed.
    #[error(transparent)]
    Load(#[from] rir_loadtest::LoadError),
    /// The server could not be reached.
    #[error(transparent)]
    Client(#[from] rir_client::ClientError),
    /// The in-process engine failed.
    #[error(transparent)]
    Engine(#[from] rir_infer::InferError),
    /// The model file could not be read.
    #[error(transparent)]
    ModelFile(#[from] rir_contract::model_file::ModelFileError),
    /// The rir-serve child process could not be started, found or read.
    #[error(transparent)]
    Process(#[from] rir_testkit::process::ProcessError),
    /// The rir-serve child process could not be started or did not get ready.
    #[error("{0}")]
    Server(String),
    /// perf_analyzer could not be run or its figures read.
    #[error("perf_analyzer: {0}")]
    PerfAnalyzer(String),
    /// A file, a process or the machine could not give what was needed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The model or the options cannot be benchmarked as asked.
    #[error("{0}")]
    Setup(String),
    /// A measurement's blocking task died.
    #[error("a measurement task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl BenchError {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }
}
