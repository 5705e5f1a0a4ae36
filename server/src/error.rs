//! The one error type of svs-server.

/// What can go wrong while setting a server up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TLS setup: {0}")]
    /// TLS material cannot be made or loaded.
    Tls(String),
    #[error("gRPC reflection setup: {0}")]
    /// The reflection service cannot be built.
    Reflection(String),
    #[error("cannot listen for {0}")]
    /// A listener cannot be bound.
    Listen(String),
    #[error(transparent)]
    /// A shared error (a file, a key).
    Common(#[from] svs_common::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Common(svs_common::Error::io(context, source))
    }
}
