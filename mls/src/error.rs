//! The one error type of svs-mls.

/// Everything that can go wrong with a device's MLS state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Shared code failed (keys, files, encodings).
    #[error(transparent)]
    Common(#[from] svs_common::Error),
    /// openmls refused or failed an operation; `what` says which.
    #[error("MLS {what} failed")]
    Mls {
        /// The operation.
        what: &'static str,
        /// openmls's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A commit of pending proposals was asked for, but none is pending (another member's commit
    /// already took them).
    #[error("nothing is pending in group {0}")]
    NothingPending(String),
    /// The device is not in this group (never joined, left, or removed).
    #[error("this device is not in group {0}")]
    UnknownGroup(String),
    /// A device certificate or key package that does not check out.
    #[error("{who}: {why}")]
    Untrusted {
        /// Whose certificate or key package.
        who: String,
        /// What is wrong with it.
        why: String,
    },
    /// The state file exists but cannot be read back.
    #[error(
        "the device state in {path} is damaged ({detail}); move it away to start this device afresh"
    )]
    DamagedState {
        /// The state file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

/// Wraps an openmls error as `Error::Mls` for the operation `what`.
pub(crate) fn mls<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> Error {
    move |source| Error::Mls {
        what,
        source: Box::new(source),
    }
}
