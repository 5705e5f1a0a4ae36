//! The one mapping from the services' errors to gRPC statuses. A `Refusal` is a decision with a
//! sentence for the caller and becomes its status code; what a caller sent wrong is
//! INVALID_ARGUMENT, a bad token UNAUTHENTICATED; a refusal that may succeed later is
//! RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` detail. Anything else is the service's own
//! failure: INTERNAL to the caller, the error and its causes in the service's log.

use svs_common::Error as C;
use tonic::Status;

/// A call the service refuses, with the sentence the caller reads. Both services' error types
/// carry one (`Error::Refused`); `From<Refusal> for Status` is the mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    /// INVALID_ARGUMENT: the caller sent something wrong.
    InvalidArgument(String),
    #[error("{0}")]
    /// ALREADY_EXISTS.
    AlreadyExists(String),
    #[error("{0}")]
    /// PERMISSION_DENIED: allowed to no one with this key or name.
    PermissionDenied(String),
    #[error("{0}")]
    /// UNAUTHENTICATED: no valid session.
    Unauthenticated(String),
    #[error("{0}")]
    /// NOT_FOUND.
    NotFound(String),
    #[error("{0}")]
    /// OUT_OF_RANGE (a seek past the end, say).
    OutOfRange(String),
    #[error("{0}")]
    /// FAILED_PRECONDITION: the call was made against a state that has moved on (an MLS
    /// commit for an epoch another commit already took); the caller catches up and retries.
    FailedPrecondition(String),
    /// A cap that stays until something else changes (a message too large, every slot taken):
    /// RESOURCE_EXHAUSTED without a retry delay.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Not now: the same call may succeed after `after` (a rate, a moment's load).
    #[error("{message}")]
    RetryLater {
        /// What to tell the caller.
        message: String,
        /// When trying again may work.
        after: std::time::Duration,
    },
    /// The service cannot serve this now (its store is away); the caller may retry.
    #[error("{0}")]
    Unavailable(String),
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::InvalidArgument(m) => Status::invalid_argument(m),
            Refusal::AlreadyExists(m) => Status::already_exists(m),
            Refusal::PermissionDenied(m) => Status::permission_denied(m),
            Refusal::Unauthenticated(m) => Status::unauthenticated(m),
            Refusal::NotFound(m) => Status::not_found(m),
            Refusal::OutOfRange(m) => Status::out_of_range(m),
            Refusal::FailedPrecondition(m) => Status::failed_precondition(m),
            Refusal::ResourceExhausted(m) => Status::resource_exhausted(m),
            Refusal::RetryLater { message, after } => retry_later(message, after),
            Refusal::Unavailable(m) => Status::unavailable(m),
        }
    }
}

/// The status for a protocol error from svs-common: the caller's fault as its code, anything
/// else (randomness, a file) as the `service`'s internal failure.
pub fn from_common(error: C, service: &str) -> Status {
    caller_error(&error).unwrap_or_else(|| internal(&error, service))
}

/// INTERNAL for the caller, who learns only where to look; the error and every cause under it
/// go to the service's log.
pub fn internal(error: &(dyn std::error::Error + 'static), service: &str) -> Status {
    tracing::error!(error = %svs_common::error::with_causes(error), "internal error");
    Status::internal(format!(
        "internal error in the {service}; its log has the details"
    ))
}

/// The status for a protocol error the caller caused, or `None` for the service to decide.
pub fn caller_error(error: &C) -> Option<Status> {
    match error {
        C::InvalidName { .. } | C::InvalidKey(_) | C::Malformed { .. } | C::BadSignature => {
            Some(Status::invalid_argument(error.to_string()))
        }
        C::InvalidToken(_) | C::ExpiredToken => Some(Status::unauthenticated(error.to_string())),
        _ => None,
    }
}

/// RESOURCE_EXHAUSTED that says "not now": the same call may succeed after `after`. The delay
/// travels as a standard `google.rpc.RetryInfo` detail (in `grpc-status-details-bin`), which is
/// how a program tells these from final refusals (RESOURCE_EXHAUSTED without it: a message too
/// large, a cap that stays until something else changes).
pub fn retry_later(message: impl Into<String>, after: std::time::Duration) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    Status::with_error_details(
        tonic::Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(after)),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_refusal_has_its_code_and_internal_errors_keep_their_causes_out_of_the_reply() {
        use super::Refusal;
        use tonic::Code;
        let cases = [
            (Refusal::InvalidArgument("a".into()), Code::InvalidArgument),
            (Refusal::AlreadyExists("a".into()), Code::AlreadyExists),
            (
                Refusal::PermissionDenied("a".into()),
                Code::PermissionDenied,
            ),
            (Refusal::Unauthenticated("a".into()), Code::Unauthenticated),
            (Refusal::NotFound("a".into()), Code::NotFound),
            (Refusal::OutOfRange("a".into()), Code::OutOfRange),
            (
                Refusal::FailedPrecondition("a".into()),
                Code::FailedPrecondition,
            ),
            (
                Refusal::ResourceExhausted("a".into()),
                Code::ResourceExhausted,
            ),
            (Refusal::Unavailable("a".into()), Code::Unavailable),
        ];
        for (refusal, code) in cases {
            let status = tonic::Status::from(refusal);
            assert_eq!((status.code(), status.message()), (code, "a"));
        }
        let io = std::io::Error::other("disk on fire");
        let wrapped = svs_common::Error::io("writing /data/x", io);
        assert!(svs_common::error::with_causes(&wrapped).contains("disk on fire"));
        let status = super::internal(&wrapped, "test service");
        assert_eq!(status.code(), Code::Internal);
        assert!(
            !status.message().contains("disk on fire"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_retryable_refusal_carries_its_delay() {
        use tonic_types::StatusExt;
        let status = super::retry_later("wait", std::time::Duration::from_millis(250));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let info = status.get_details_retry_info().unwrap();
        assert_eq!(
            info.retry_delay,
            Some(std::time::Duration::from_millis(250))
        );
        assert!(
            tonic::Status::resource_exhausted("final")
                .get_details_retry_info()
                .is_none()
        );
    }
}
