//! The directory's error type and its one mapping to gRPC status.

use tonic::Status;

/// Why a directory operation failed. Every variant carries a sentence for the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// A cap that stays until something else changes (a message too large, every session slot
    /// taken): RESOURCE_EXHAUSTED without a retry delay.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Not now: the same call may succeed after `after` (a rate, a moment's load).
    #[error("{message}")]
    RetryLater {
        message: String,
        after: std::time::Duration,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// Work sent to a blocking thread did not finish: it panicked, or the runtime is stopping.
    #[error("{}", task_failure(.0))]
    Task(#[source] tokio::task::JoinError),
    #[error("name database: {0}")]
    Storage(String),
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
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m),
            Error::RetryLater { message, after } => svs_server::status::retry_later(message, after),
            Error::NotFound(m) => Status::not_found(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Common(e) => {
                svs_server::status::caller_error(&e).unwrap_or_else(|| internal(&e))
            }
            other => internal(&other),
        }
    }
}

fn task_failure(error: &tokio::task::JoinError) -> &'static str {
    if error.is_panic() {
        "a blocking task panicked (a bug: its log line has the panic message)"
    } else {
        "a blocking task was cancelled (the service is stopping)"
    }
}

/// Runs `work` (disk, or RSA) on a blocking thread; a panic there is reported as one.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(Error::Task)?
}

fn internal(error: &dyn std::fmt::Display) -> Status {
    tracing::error!(error = %error, "internal error");
    Status::internal("internal error in the directory service; its log has the details")
}
