//! The client's error type: every variant reads as a sentence a user can act on.

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Common(#[from] svs_common::Error),
    #[error("{0}")]
    Usage(String),
    #[error("the directory refused: {0}")]
    Refused(String),
    #[error("the stream service refused: {0}")]
    StreamRefused(String),
    #[error(
        "WARNING: the key of {name} has CHANGED since you first saw it (pinned {pinned}, now {now}). Messages to {name} are refused until you check the new fingerprint with them and run `svs trust {name}`"
    )]
    KeyChanged {
        name: String,
        pinned: String,
        now: String,
    },
    #[error("not reached: {}", .0.join("; "))]
    NotReached(Vec<String>),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn status_text(status: &tonic::Status) -> String {
    let message = status.message();
    match status.code() {
        tonic::Code::Unavailable => format!("the service is unavailable: {message}"),
        _ => message.to_string(),
    }
}

impl CliError {
    /// A status from stream-service, named as such (a bare `?` would blame the directory).
    pub fn stream(status: tonic::Status) -> Self {
        CliError::StreamRefused(status_text(&status))
    }
}

/// Statuses from the directory (the default: most calls go there).
impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError::Refused(status_text(&status))
    }
}
