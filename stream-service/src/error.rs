//! The stream service's error type: a refusal for the caller (`Refused`, mapped by svs-server's
//! `status` module), or a failure of the service itself that keeps its cause for the log.

pub use svs_server::status::Refusal;
use tonic::Status;

/// What the caller is told where the log has the rest.
const SERVICE: &str = "stream service";

/// Why a stream-service operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The call is refused; the sentence says why.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// OpenCV could not do what the video needed.
    #[error("video: {context}")]
    OpenCv {
        /// What was being done.
        context: String,
        #[source]
        /// What OpenCV said.
        source: opencv::Error,
    },
    /// The H.264 encoder failed.
    #[error("H.264 encoder: {context}")]
    H264 {
        /// What was being done.
        context: &'static str,
        #[source]
        /// What openh264 said.
        source: openh264::Error,
    },
    /// A video that cannot be served as it is; the sentence says what is wrong with it.
    #[error("video: {0}")]
    Media(String),
    /// A segment could not be encoded; everyone waiting for it gets the same sentence.
    #[error("frame cache: {0}")]
    Cache(String),
    /// The service cannot start as configured; the sentence says what to change.
    #[error("{0}")]
    Startup(String),
    /// Work sent to a blocking thread did not finish: it panicked, or the runtime is stopping.
    #[error("{}", if .0.is_panic() { "a blocking task panicked (a bug: its log line has the panic message)" } else { "a blocking task was cancelled (the service is stopping)" })]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    /// A shared error (a file, a token).
    Common(#[from] svs_common::Error),
    #[error(transparent)]
    /// The server could not be set up (TLS, metrics, the listener).
    Server(#[from] svs_server::Error),
    #[error("serving")]
    /// Serving failed.
    Transport(#[from] tonic::transport::Error),
}

impl Error {
    /// A file or directory operation that failed, with what was being done to which path.
    pub fn io(what: &str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Common(svs_common::Error::io(
            format!("{what} {}", path.display()),
            source,
        ))
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        use svs_server::status;
        match error {
            Error::Refused(refusal) => refusal.into(),
            Error::Common(e) => status::from_common(e, SERVICE),
            other => status::internal(&other, SERVICE),
        }
    }
}
