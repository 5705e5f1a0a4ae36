//! How protocol errors read as gRPC statuses, for both services' error mappings: what a caller
//! sent wrong is INVALID_ARGUMENT, a bad token UNAUTHENTICATED. Anything else is the service's
//! own business to map.

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
