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
    /// The server cannot be load-tested as asked.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The requests cannot be built for this model from these options.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// The run cannot be made as asked.
    #[error(transparent)]
    Run(#[from] RunError),
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

/// What the server said before any load: it is not a KServe v2 server,
/// wants a token, or lacks the model.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// ServerLive answered false.
    #[error("the server says it is not live")]
    NotLive,
    /// UNAUTHENTICATED.
    #[error("the server wants a bearer token (--token or RIR_AUTH_TOKEN): {0}")]
    NeedsToken(String),
    /// ServerLive is UNIMPLEMENTED.
    #[error("the server does not speak the KServe v2 protocol (ServerLive is unimplemented)")]
    NotKserve,
    /// ServerLive failed otherwise.
    #[error("the server did not answer ServerLive: {code}: {message}")]
    NoAnswer { code: String, message: String },
    /// The model (or version) is not there.
    #[error("{what} is not on the server: {message}")]
    NotFound { what: String, message: String },
    /// The model is there but not ready.
    #[error("{what} is not available on the server: {message}")]
    Unavailable { what: String, message: String },
    /// Asking about the model failed otherwise.
    #[error("asking the server about {what} failed with {code}: {message}")]
    AskFailed {
        what: String,
        code: String,
        message: String,
    },
    /// A REST call before the run failed.
    #[error("{what} at {base}: {message}")]
    Rest {
        what: &'static str,
        base: String,
        message: String,
    },
    /// One replica of several refused.
    #[error("replica {address}: {source}")]
    Replica {
        address: String,
        #[source]
        source: Box<ServerError>,
    },
    /// No connection to a server was made.
    #[error("no connection")]
    NoConnection,
}

/// Why the requests of a run cannot be built from the options and the
/// model's metadata.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// `--batch 0`.
    #[error("--batch must be at least 1")]
    NoBatch,
    /// A share of bad requests outside 0 to 1.
    #[error("--bad-fraction is a share between 0 and 1, not {0}")]
    BadFraction(f64),
    /// Bad requests over REST.
    #[error("--bad-fraction works over gRPC (-i grpc)")]
    BadFractionOverRest,
    /// No class of bad request can be built from these requests.
    #[error("no class of bad request fits this workload")]
    NoBadClass,
    /// REST classify with several images.
    #[error("REST classify takes one image per request: use -b 1 (or -i grpc)")]
    RestClassifyBatch,
    /// REST classify without a model.
    #[error("REST classify needs a model name (-m)")]
    RestClassifyModel,
    /// A fixed shape without a batch dimension and a batch over 1.
    #[error(
        "input `{input}` has the fixed shape {shape:?} with no batch dimension, so --batch {batch} cannot fit"
    )]
    NoBatchDimension {
        input: String,
        shape: Vec<i64>,
        batch: usize,
    },
    /// A variable dimension besides the batch.
    #[error(
        "input `{input}` has a variable dimension ({dim}) besides the batch: {shape:?}; rir-loadtest needs a fixed item shape"
    )]
    VariableDimension {
        input: String,
        dim: i64,
        shape: Vec<i64>,
    },
    /// A datatype random data cannot fill.
    #[error(
        "random data for {0} inputs is not supported; give raw tensor files with --input-data DIR"
    )]
    NoRandomData(String),
    /// A model that declares no inputs and none given.
    #[error("model `{0}` declares no inputs; give them with --shape NAME:DIMS[:DATATYPE]")]
    NoInputs(String),
    /// Images given to ModelInfer.
    #[error(
        "{} holds images; ModelInfer takes tensors: use --api classify for images, or give raw tensor files",
        .0.display()
    )]
    ImagesForInfer(PathBuf),
    /// Raw files for a model of several inputs.
    #[error(
        "model `{model}` has {inputs} inputs; raw tensor files work for single-input models (use random data)"
    )]
    SeveralInputs { model: String, inputs: usize },
    /// A datatype raw files cannot fill.
    #[error("input `{input}` is {datatype}, which raw files cannot fill")]
    NoRawData { input: String, datatype: String },
    /// A raw file of the wrong size.
    #[error(
        "{} has {bytes} bytes; input `{input}` ({datatype} {shape:?}) needs {item_bytes} bytes per item{}",
        file.display(),
        match batch {
            1 => String::new(),
            b => format!(" or {} for a batch of {b}", item_bytes * b),
        }
    )]
    FileSize {
        file: PathBuf,
        bytes: usize,
        input: String,
        datatype: String,
        shape: Vec<i64>,
        item_bytes: usize,
        batch: usize,
    },
    /// Classify without image files.
    #[error("--api classify sends encoded images: give --input-data DIR with PNG or JPEG files")]
    ClassifyWithoutImages,
    /// A folder without images.
    #[error("{} has no .png, .jpg or .jpeg files", .0.display())]
    NoImages(PathBuf),
    /// An empty folder.
    #[error("{} has no files", .0.display())]
    NoFiles(PathBuf),
}

/// Why a run cannot be made as asked.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Concurrency 0.
    #[error("concurrency must be at least 1")]
    NoConcurrency,
    /// A rate that is not positive.
    #[error("the rate must be a positive number, not {0}")]
    BadRate(f64),
    /// A schedule with stability windows.
    #[error("a rate schedule measures its own length: --stability does not apply")]
    ScheduleStability,
    /// A schedule with a request count.
    #[error("a rate schedule measures its own length: --requests does not apply")]
    ScheduleRequests,
    /// The open loop's thread could not start.
    #[error("starting the open-loop thread: {0}")]
    Thread(#[source] std::io::Error),
}
