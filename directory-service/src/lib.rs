//! directory-service: registration of clients, the directory of who is online, and the relay of
//! end-to-end encrypted envelopes. `main.rs` only parses flags and calls `run`; the modules are
//! private, and what other crates need is re-exported here. docs/architecture.md has the map.
#![warn(missing_docs)]

mod admin;
mod bindings;
mod challenges;
mod cluster;
mod config;
mod db;
mod directory;
mod error;
mod groups;
mod lifecycle;
mod mailbox;
mod registration;
mod registry;
mod relay;
mod service;
mod subscriber;

pub use admin::{new_token_key, release_name, release_name_in_cluster};
pub use cluster::ClusterOptions;
pub use config::{Config, Limits};
pub use error::{Error, Refusal};
pub use lifecycle::run;
