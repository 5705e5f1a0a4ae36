//! stream-service: the video library served at 240p, 720p and 1440p (H.264, with JPEG frames
//! for clients that ask for them), encoded once into a segment cache, paced in real time, with
//! switching, pausing, seeking and AUTO while playing. `main.rs` only parses flags and calls
//! `run`; `media` is public for the tools (make-demo, ingest) and tests, the other modules are
//! private and what other crates need is re-exported here. docs/architecture.md has the map.
#![warn(missing_docs)]

mod audio;
mod cache;
mod config;
mod encoder;
mod error;
mod library;
mod lifecycle;
pub mod media;
mod playback;
mod progress;
mod resolution;
mod service;

pub use config::{Config, Limits};
pub use encoder::{Encoding, RunEncoder};
pub use error::{Error, Refusal};
pub use lifecycle::{Handle, run};
pub use progress::Progress;
pub use resolution::Rendition;
