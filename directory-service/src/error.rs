//! The directory's error type: a refusal for the caller (`Refused`, mapped by svs-server's
//! `status` module), or a failure of the directory itself that keeps its cause for the log.

pub use svs_server::status::Refusal;
use tonic::Status;

/// What the caller is told where the log has the rest.
const SERVICE: &str = "directory service";

/// Why a directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The call is refused; the sentence says why.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The database refused a transaction.
    #[error("name database")]
    Storage(#[from] redb::Error),
    /// The database file cannot be opened.
    #[error("cannot open {path} (is another directory-service using this data dir?)")]
    OpenDatabase {
        /// The database file.
        path: std::path::PathBuf,
        #[source]
        /// Why redb could not open it.
        source: redb::DatabaseError,
    },
    /// NATS did not do what was asked (cluster mode): UNAVAILABLE for the caller.
    #[error("{what}: NATS did not answer; try again shortly")]
    Nats {
        /// What the directory was doing.
        what: String,
        #[source]
        /// What the NATS client said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Something that cannot happen did: a bug, said as such.
    #[error("{0}")]
    Internal(String),
    /// Work sent to a blocking thread did not finish: it panicked, or the runtime is stopping.
    #[error("{}", task_failure(.0))]
    Task(#[source] tokio::task::JoinError),
    #[error(transparent)]
    /// A protocol error from shared code (a malformed envelope, a bad token).
    Common(#[from] svs_common::Error),
    #[error(transparent)]
    /// The server could not be set up (TLS, metrics, the listener).
    Server(#[from] svs_server::Error),
    #[error("serving")]
    /// Serving failed.
    Transport(#[from] tonic::transport::Error),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        use svs_server::status;
        match error {
            Error::Refused(refusal) => refusal.into(),
            Error::Common(e) => status::from_common(e, SERVICE),
            Error::Nats { .. } => {
                tracing::warn!(error = %svs_common::error::with_causes(&error), "NATS did not answer");
                Status::unavailable(error.to_string())
            }
            other => status::internal(&other, SERVICE),
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
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(Error::Task)?
}
