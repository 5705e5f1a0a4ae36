//! stream-service: the video library served as JPEG frames at 240p, 720p and 1440p, paced in
//! real time, with switching, pausing and seeking while playing. `main.rs` only parses flags.

pub mod cache;
pub mod config;
pub mod encoder;
pub mod error;
pub mod library;
pub mod media;
pub mod playback;
pub mod progress;
pub mod resolution;
pub mod server;
pub mod service;

pub use config::Config;
pub use error::Error;
