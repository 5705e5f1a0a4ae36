//! directory-service: registration of clients, the directory of who is online, and the relay of
//! end-to-end encrypted envelopes. `main.rs` only parses flags and calls `server::run`.

pub mod bindings;
pub mod challenges;
pub mod cluster;
pub mod config;
pub mod db;
pub mod directory;
pub mod error;
pub mod mailbox;
pub mod registration;
pub mod registry;
pub mod relay;
pub mod server;
pub mod service;
pub mod subscriber;

pub use config::Config;
pub use error::Error;
