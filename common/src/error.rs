//! The one error type of svs-common.

/// Everything that can go wrong in shared code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid name {name:?}: {why}")]
    InvalidName { name: String, why: String },
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the message cannot be decrypted")]
    Undecryptable,
    #[error("invalid session token: {0}")]
    InvalidToken(&'static str),
    #[error("the session token expired; register again")]
    ExpiredToken,
    #[error("{path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    InsecureFile { path: String, mode: u32 },
    #[error("cryptographic failure: {0}")]
    Crypto(String),
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// An error and its chain of sources in one line: "reading x: permission denied: …".
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // thiserror's `transparent` and "{0}" messages repeat their source; say each once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
