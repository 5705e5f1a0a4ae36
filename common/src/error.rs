//! The one error type of svs-common.

/// Everything that can go wrong in shared code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid name {name:?}: {why}")]
    /// A name that is not a valid svs name; `why` says which rule it breaks.
    InvalidName {
        /// The name as given.
        name: String,
        /// The rule it breaks.
        why: String,
    },
    #[error("invalid key: {0}")]
    /// A public key that cannot be parsed or is not an accepted RSA key.
    InvalidKey(String),
    #[error("malformed {what}: {detail}")]
    /// Bytes that do not parse as the `what` they claim to be.
    Malformed {
        /// What the bytes should have been.
        what: &'static str,
        /// What is wrong with them.
        detail: String,
    },
    #[error("the signature does not verify")]
    /// A signature that does not verify under the key it names.
    BadSignature,
    #[error("the message cannot be decrypted")]
    /// A sealed message this key cannot open (every cause looks the same).
    Undecryptable,
    #[error("invalid session token: {0}")]
    /// A session token that does not verify or parse; says which.
    InvalidToken(&'static str),
    #[error("the session token expired; register again")]
    /// A session token past its expiry.
    ExpiredToken,
    #[error("{path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    /// A secret file that others can read.
    InsecureFile {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    #[error("cryptographic failure: {0}")]
    /// The cryptographic library failed (randomness, key generation).
    Crypto(String),
    #[error("cannot reach {url}: {reason}")]
    /// A service that cannot be reached.
    Connect {
        /// The service's URL.
        url: String,
        /// Why it cannot be reached.
        reason: String,
    },
    #[error("{context}: {source}")]
    /// A file or directory operation failed.
    Io {
        /// What was being done, to which path.
        context: String,
        #[source]
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O failure while doing `context`.
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
