//! svs-cli: the client library behind the `svs` binary — sessions with the directory, the
//! receiving side, pinned peer keys, and the commands.

mod backoff;
pub mod chat;
pub mod commands;
pub mod error;
pub mod home;
pub mod inbox;
pub mod known_peers;
pub mod picture;
mod picture_size;
pub mod player;
pub mod reconnect;
pub mod rooms;
pub mod session;
pub mod stream_client;
mod text;
mod web;
pub mod window;

pub use error::CliError;
