//! The one error type of the request path. Every front end maps it the same
//! way: [`ServeError::grpc`] to a gRPC status, [`ServeError::http_status`]
//! to an HTTP status, and [`ServeError::kind`] names it in the statistics.

use thiserror::Error;

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

impl ServeError {
    /// The gRPC status code name, as the statistics and metrics record failures.
    pub fn kind(&self) -> &'static str {
        match self {
            ServeError::NotFound(_) => "NotFound",
            ServeError::InvalidArgument(_) => "InvalidArgument",
            ServeError::Unavailable(_) => "Unavailable",
            ServeError::QueueFull(_) => "ResourceExhausted",
            ServeError::DeadlineExceeded(_) => "DeadlineExceeded",
            ServeError::FailedPrecondition(_) => "FailedPrecondition",
            ServeError::Internal(_) => "Internal",
        }
    }

    /// The gRPC status for this error.
    pub fn grpc(&self) -> tonic::Status {
        let m = self.to_string();
        match self {
            ServeError::NotFound(_) => tonic::Status::not_found(m),
            ServeError::InvalidArgument(_) => tonic::Status::invalid_argument(m),
            ServeError::Unavailable(_) => tonic::Status::unavailable(m),
            ServeError::QueueFull(_) => tonic::Status::resource_exhausted(m),
            ServeError::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(m),
            ServeError::FailedPrecondition(_) => tonic::Status::failed_precondition(m),
            ServeError::Internal(_) => tonic::Status::internal(m),
        }
    }

    /// The HTTP status for this error (KServe v2 REST): 4xx for what the
    /// client can fix, 5xx for the server's side.
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            ServeError::NotFound(_) => http::StatusCode::NOT_FOUND,
            ServeError::InvalidArgument(_) => http::StatusCode::BAD_REQUEST,
            ServeError::Unavailable(_) => http::StatusCode::SERVICE_UNAVAILABLE,
            ServeError::QueueFull(_) => http::StatusCode::TOO_MANY_REQUESTS,
            ServeError::DeadlineExceeded(_) => http::StatusCode::GATEWAY_TIMEOUT,
            ServeError::FailedPrecondition(_) => http::StatusCode::CONFLICT,
            ServeError::Internal(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
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
    fn both_mappings_agree_on_who_is_at_fault() {
        let all = [
            ServeError::NotFound("m".into()),
            ServeError::InvalidArgument("m".into()),
            ServeError::Unavailable("m".into()),
            ServeError::QueueFull("m".into()),
            ServeError::DeadlineExceeded("m".into()),
            ServeError::FailedPrecondition("m".into()),
            ServeError::Internal("m".into()),
        ];
        for e in all {
            let status = e.grpc();
            assert_eq!(format!("{:?}", status.code()), e.kind());
            assert_eq!(status.message(), "m");
            let client_side = matches!(
                status.code(),
                tonic::Code::NotFound
                    | tonic::Code::InvalidArgument
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::FailedPrecondition
            );
            assert_eq!(e.http_status().is_client_error(), client_side, "{e:?}");
        }
    }
}
