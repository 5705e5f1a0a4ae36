//! svs-common: what every svs program shares — the protocol (names, identity keys and
//! fingerprints, the registration statement, session tokens, the sealed-message format, the
//! canonical byte encoding they are built on) and how a client reaches a service (`client`).
//! Pure code: no unsafe, every decoder of outside bytes property-tested (tests/decoders.rs).
//! Server-only parts live in svs-server; the generated gRPC API in svs-proto.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod error;
pub mod identity;
pub mod names;
pub mod registration;
pub mod safety;
pub mod sealed;
pub mod stats;
pub mod time;
pub mod token;
pub mod wire;

pub use error::Error;
pub use rsa;
/// The generated gRPC API, re-exported so protocol types have one path everywhere.
pub use svs_proto as proto;
