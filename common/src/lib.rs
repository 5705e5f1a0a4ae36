//! svs-common: what the services and the client share — protocol types, identity keys, the
//! registration statement, session tokens, the sealed-message format, TLS setup, the accept
//! loop and the token-checking tower layer.

#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod codec;
pub mod error;
pub mod identity;
pub mod names;
pub mod proto;
pub mod registration;
pub mod sealed;
pub mod serve;
pub mod shutdown;
pub mod time;
pub mod tls;
pub mod token;
mod wire;

pub use error::Error;
pub use rsa;
