//! The server's errors, by who reads them.
//!
//! - [`ServeError`]: why a request was not answered, for the client. Every
//!   front end maps it the same way: [`ServeError::grpc`] to a gRPC status,
//!   [`ServeError::http_status`] to an HTTP status, and [`ServeError::kind`]
//!   names it in the statistics. [`InvalidRequest`] holds the reasons of an
//!   INVALID_ARGUMENT beyond the tensors' and the images' own.
//! - [`ServerError`]: why the server could not start or stopped serving,
//!   for the operator.

use thiserror::Error;

use crate::tensors::{ImageError, TensorError};

/// `text` cut to at most `max` bytes at a character boundary, with `…`
/// where it was cut: client strings echoed in errors, spans and logs
/// never cost more than this.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Longest message a client gets back, bytes.
pub(crate) const MAX_MESSAGE: usize = 1024;

/// Why a request was not answered with outputs. The message is written for
/// the client: it says what was wrong and, where it can, what is expected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ServeError {
    /// No such model or version.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong: shape, datatype, image, parameter.
    #[error("{0}")]
    InvalidArgument(String),
    /// The model (or the server) cannot serve now: not loaded, not ready,
    /// shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// The model's queue is full; the client should retry later.
    #[error("{0}")]
    QueueFull(String),
    /// The server holds as much request memory as it may (its budget of
    /// bytes in flight); the client should retry later.
    #[error("{0}")]
    Overloaded(String),
    /// The client's deadline passed before the request ran.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The call is not allowed in the server's state or configuration
    /// (loading a model by request without explicit model control).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The engine failed.
    #[error("{0}")]
    Internal(String),
}

/// What is wrong with a request to a served model, beyond its tensors and
/// images (which have their own errors, wrapped here): the reason an
/// INVALID_ARGUMENT carries.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum InvalidRequest {
    /// No input tensor.
    #[error("the request has no inputs; the model takes `{expected}`")]
    NoInputs {
        /// The model's input.
        expected: String,
    },
    /// More than one input tensor.
    #[error("the model takes one input (`{expected}`), the request has {got}")]
    Inputs {
        /// The model's input.
        expected: String,
        /// How many the request has.
        got: usize,
    },
    /// An input of another name than the model's.
    #[error("unknown input `{got}`; the model takes `{expected}`")]
    UnknownInput {
        /// The name sent.
        got: String,
        /// The model's input.
        expected: String,
    },
    /// An output the model does not have.
    #[error("unknown output `{got}`; the model has {}", outputs.join(", "))]
    UnknownOutput {
        /// The name asked for.
        got: String,
        /// The model's outputs.
        outputs: Vec<String>,
    },
    /// A classification call without images.
    #[error("the request has no images")]
    NoImages,
    /// More images than the model takes at once.
    #[error("{n} images exceed the model's max batch size {max}")]
    TooManyImages {
        /// Images in the request.
        n: usize,
        /// The model's max batch size.
        max: usize,
    },
    /// One image of a classification call.
    #[error("image {index}: {source}")]
    Image {
        /// Its place in the request, from 0.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: ImageError,
    },
    /// The input tensor.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// A request parameter of the wrong type or value.
    #[error("parameter `{key}` must be {expected}, got {got}")]
    Parameter {
        /// The parameter.
        key: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it was.
        got: String,
    },
    /// An input with both raw and typed contents.
    #[error("input `{0}` has both raw_input_contents and typed contents")]
    BothContents(String),
    /// Raw contents for some inputs and not others.
    #[error("{raw} raw_input_contents for {inputs} inputs")]
    RawContents {
        /// Raw contents sent.
        raw: usize,
        /// Inputs sent.
        inputs: usize,
    },
}

impl ServeError {
    /// The gRPC status code name, as the statistics and metrics record failures.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ServeError::NotFound(_) => "NotFound",
            ServeError::InvalidArgument(_) => "InvalidArgument",
            ServeError::Unavailable(_) => "Unavailable",
            ServeError::QueueFull(_) | ServeError::Overloaded(_) => "ResourceExhausted",
            ServeError::DeadlineExceeded(_) => "DeadlineExceeded",
            ServeError::FailedPrecondition(_) => "FailedPrecondition",
            ServeError::Internal(_) => "Internal",
        }
    }

    /// The same error with its message rewritten by `f` (paths made
    /// relative, client strings cut).
    pub(crate) fn map_message(self, f: impl FnOnce(String) -> String) -> ServeError {
        match self {
            ServeError::NotFound(m) => ServeError::NotFound(f(m)),
            ServeError::InvalidArgument(m) => ServeError::InvalidArgument(f(m)),
            ServeError::Unavailable(m) => ServeError::Unavailable(f(m)),
            ServeError::QueueFull(m) => ServeError::QueueFull(f(m)),
            ServeError::Overloaded(m) => ServeError::Overloaded(f(m)),
            ServeError::DeadlineExceeded(m) => ServeError::DeadlineExceeded(f(m)),
            ServeError::FailedPrecondition(m) => ServeError::FailedPrecondition(f(m)),
            ServeError::Internal(m) => ServeError::Internal(f(m)),
        }
    }

    /// The message as a client gets it: at most [`MAX_MESSAGE`] bytes.
    pub(crate) fn message(&self) -> String {
        clip(&self.to_string(), MAX_MESSAGE)
    }

    /// The gRPC status for this error.
    pub(crate) fn grpc(&self) -> tonic::Status {
        let m = self.message();
        match self {
            ServeError::NotFound(_) => tonic::Status::not_found(m),
            ServeError::InvalidArgument(_) => tonic::Status::invalid_argument(m),
            ServeError::Unavailable(_) => tonic::Status::unavailable(m),
            ServeError::QueueFull(_) | ServeError::Overloaded(_) => {
                tonic::Status::resource_exhausted(m)
            }
            ServeError::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(m),
            ServeError::FailedPrecondition(_) => tonic::Status::failed_precondition(m),
            ServeError::Internal(_) => tonic::Status::internal(m),
        }
    }

    /// The HTTP status for this error (KServe v2 REST): 4xx for what the
    /// client can fix, 5xx for the server's side.
    pub(crate) fn http_status(&self) -> http::StatusCode {
        match self {
            ServeError::NotFound(_) => http::StatusCode::NOT_FOUND,
            ServeError::InvalidArgument(_) => http::StatusCode::BAD_REQUEST,
            ServeError::Unavailable(_) => http::StatusCode::SERVICE_UNAVAILABLE,
            ServeError::QueueFull(_) => http::StatusCode::TOO_MANY_REQUESTS,
            ServeError::Overloaded(_) => http::StatusCode::SERVICE_UNAVAILABLE,
            ServeError::DeadlineExceeded(_) => http::StatusCode::GATEWAY_TIMEOUT,
            ServeError::FailedPrecondition(_) => http::StatusCode::CONFLICT,
            ServeError::Internal(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Why the server could not start, or stopped serving: what the operator
/// sees on stderr before the process exits 1.
#[derive(Debug, Error)]
pub enum ServerError {
    /// A listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address as given.
        addr: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The model repository cannot be read.
    #[error(transparent)]
    Repository(#[from] crate::scan::RepositoryError),
    /// No model to serve where every model is loaded at start.
    #[error("no models in {} (expected <name>/<version>/model.onnx)", .0.display())]
    NoModels(std::path::PathBuf),
    /// `--load-model` names a model the repository does not have.
    #[error("--load-model {name}: no such model in {}", root.display())]
    UnknownModel {
        /// The name given.
        name: String,
        /// The repository.
        root: std::path::PathBuf,
    },
    /// CUDA was demanded and ONNX Runtime cannot give it.
    #[error(transparent)]
    Device(#[from] rir_infer::CudaRequired),
    /// ONNX Runtime could not be loaded.
    #[error(transparent)]
    Engine(#[from] rir_infer::InferError),
    /// The metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The trace exporter could not start.
    #[error(transparent)]
    Tracing(#[from] crate::trace::TraceError),
    /// A TLS file cannot be read.
    #[error("TLS {what} {}: {source}", path.display())]
    TlsFile {
        /// Which file (`certificate`, `key`, `client CA`).
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// What the system said.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// The TLS files do not make a TLS configuration.
    #[error("TLS: {0}")]
    Tls(String),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(String),
    /// A front end failed while serving.
    #[error("{front} server: {detail}")]
    Serve {
        /// `gRPC`, `HTTP` or `metrics`.
        front: &'static str,
        /// What failed.
        detail: String,
    },
}

impl From<ServeError> for tonic::Status {
    fn from(e: ServeError) -> Self {
        e.grpc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_strings_come_back_cut_at_a_character_boundary() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        // 'é' is two bytes: a cut inside it moves back to its start.
        assert_eq!(clip("aé", 2), "a…");
        let long = ServeError::NotFound(format!("unknown model `{}`", "m".repeat(1 << 20)));
        let status = long.grpc();
        assert!(
            status.message().len() <= MAX_MESSAGE + 3,
            "{}",
            status.message().len()
        );
        assert!(status.message().starts_with("unknown model `mmm"));
    }

    #[test]
    fn both_mappings_agree_on_who_is_at_fault() {
        let all = [
            ServeError::NotFound("m".into()),
            ServeError::InvalidArgument("m".into()),
            ServeError::Unavailable("m".into()),
            ServeError::QueueFull("m".into()),
            ServeError::Overloaded("m".into()),
            ServeError::DeadlineExceeded("m".into()),
            ServeError::FailedPrecondition("m".into()),
            ServeError::Internal("m".into()),
        ];
        for e in all {
            let status = e.grpc();
            assert_eq!(format!("{:?}", status.code()), e.kind());
            assert_eq!(status.message(), "m");
            // A spent memory budget is RESOURCE_EXHAUSTED as a full queue
            // is, but the server's state, not the request: 503, as for a
            // model not ready.
            let client_side = matches!(
                status.code(),
                tonic::Code::NotFound
                    | tonic::Code::InvalidArgument
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::FailedPrecondition
            ) && !matches!(e, ServeError::Overloaded(_));
            assert_eq!(e.http_status().is_client_error(), client_side, "{e:?}");
        }
    }
}
