//! The stream service's error type and its one mapping to gRPC status.

use tonic::Status;

/// Why a stream-service operation failed; each variant carries a sentence for the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// A cap that stays until something else changes: RESOURCE_EXHAUSTED without a delay.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Not now: the same call may succeed after `after`.
    #[error("{message}")]
    RetryLater {
        message: String,
        after: std::time::Duration,
    },
    #[error("video: {0}")]
    Media(String),
    #[error("frame cache: {0}")]
    Cache(String),
    #[error("{0}")]
    Startup(String),
    #[error(transparent)]
    Common(#[from] svs_common::Error),
    #[error(transparent)]
    Server(#[from] svs_server::Error),
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::NotFound(m) => Status::not_found(m),
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::OutOfRange(m) => Status::out_of_range(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m),
            Error::RetryLater { message, after } => svs_server::status::retry_later(message, after),
            Error::Common(e) => {
                svs_server::status::caller_error(&e).unwrap_or_else(|| internal(&e))
            }
            other => internal(&other),
        }
    }
}

fn internal(error: &dyn std::fmt::Display) -> Status {
    tracing::error!(error = %error, "internal error");
    Status::internal("internal error in the stream service; its log has the details")
}
