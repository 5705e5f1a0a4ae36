//! How protocol errors read as gRPC statuses, for both services' error mappings: what a caller
//! sent wrong is INVALID_ARGUMENT, a bad token UNAUTHENTICATED, and a refusal that may succeed
//! later RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` detail. Anything else is the
//! service's own business to map.

use svs_common::Error as C;
use tonic::Status;

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
