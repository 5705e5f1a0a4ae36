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
    /// A refusal that says "not now" (RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` delay:
    /// too many registrations at once, a rate): the same request may work after a wait.
    /// RESOURCE_EXHAUSTED without one (a session cap, a message too large) is final: `Refused`.
    #[error("the directory refused: {message}")]
    RefusedForNow {
        message: String,
        /// The wait the directory asked for (at most a minute, see `retry_delay`).
        after: std::time::Duration,
    },
    /// The connection or the session was lost (the directory restarted, the network dropped):
    /// reconnecting may help.
    #[error("the connection was lost: {0}")]
    Lost(String),
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
    /// The device's MLS state or a group operation failed.
    #[error("{}", svs_common::error::with_causes(.0))]
    Mls(#[from] svs_mls::Error),
    #[error("not reached: {}", .0.join("; "))]
    NotReached(Vec<String>),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A part of svs itself failed (a worker panicked): a bug to report, not the user's doing.
    #[error("internal error in svs: {0}; please report it")]
    Internal(String),
}

/// Runs `work` on a blocking thread (RSA, file writes, joining a thread); a panic in it is
/// reported as `Internal`, never as the user's mistake.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CliError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        CliError::Internal(if e.is_panic() {
            "a background task panicked".into()
        } else {
            "a background task was cancelled".into()
        })
    })
}

/// A status's message as one printable line: it comes from a server, which may be hostile.
fn status_text(status: &tonic::Status) -> String {
    let message = crate::text::sentence(status.message());
    match status.code() {
        tonic::Code::Unavailable => format!("the service is unavailable: {message}"),
        _ => message.to_string(),
    }
}

impl CliError {
    /// A status from stream-service, named as such (a bare `?` would blame the directory).
    pub fn stream(status: tonic::Status) -> Self {
        if is_lost(&status) {
            CliError::Lost(format!("stream service: {}", status_text(&status)))
        } else {
            CliError::StreamRefused(status_text(&status))
        }
    }
}

impl CliError {
    /// Whether registering and subscribing again may cure this (a lost connection or session,
    /// a directory that is down or restarting) rather than a refusal that would repeat.
    pub fn is_lost_connection(&self) -> bool {
        matches!(
            self,
            CliError::Lost(_) | CliError::Common(svs_common::Error::Connect { .. })
        )
    }

    /// Whether registering again after a wait may work: a lost connection, or a directory too
    /// busy right now (as after a restart, when every client comes back at once).
    pub fn is_worth_retrying(&self) -> bool {
        self.is_lost_connection() || matches!(self, CliError::RefusedForNow { .. })
    }
}

/// Whether a status means the connection (or, for the directory, the session) went away rather
/// than a refusal that would repeat: the service restarted or is down, the network dropped.
pub fn is_lost(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Internal
    )
}

/// How long a "not now" refusal asks the caller to wait (its `google.rpc.RetryInfo`), or `None`
/// for any other status: only RESOURCE_EXHAUSTED that carries the detail is worth retrying. A
/// delay over a minute is read as a minute, so a server cannot park a client forever.
pub fn retry_delay(status: &tonic::Status) -> Option<std::time::Duration> {
    use tonic_types::StatusExt;
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    let info = status.get_details_retry_info()?;
    Some(
        info.retry_delay
            .unwrap_or_default()
            .min(std::time::Duration::from_secs(60)),
    )
}

/// Statuses from the directory (the default: most calls go there). Codes that mean the
/// connection or session went away become `Lost`.
impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        if is_lost(&status) || status.code() == tonic::Code::Unauthenticated {
            CliError::Lost(status_text(&status))
        } else if let Some(after) = retry_delay(&status) {
            CliError::RefusedForNow {
                message: status_text(&status),
                after,
            }
        } else {
            CliError::Refused(status_text(&status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_blocking_work_is_an_internal_error_not_a_usage_error() {
        let failed = blocking(|| -> u32 { panic!("a bug") }).await.unwrap_err();
        assert!(matches!(&failed, CliError::Internal(why) if why.contains("panicked")));
        assert!(failed.to_string().contains("please report it"), "{failed}");
        assert_eq!(blocking(|| 7).await.unwrap(), 7);
    }
}
