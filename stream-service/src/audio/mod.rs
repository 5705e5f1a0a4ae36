//! Sound: where a video's sound track is (`find`), reading it (`decode`), encoding it to Opus a
//! chunk at a time (`encode`), keeping recent chunks in memory (`cache`), and handing a playback
//! the packets up to a time (`cursor`), and the demos' beeps (`demo`). Chunks are cheap to make again (about 10 ms of CPU for
//! ten seconds of sound), so unlike the frame cache they are never written to disk.

mod cache;
mod cursor;
mod decode;
pub(crate) mod demo;
mod encode;
mod find;

pub(crate) use cache::SoundCache;
pub(crate) use cursor::Cursor;
pub(crate) use demo::keep_sound;
pub(crate) use find::{SIDECAR_EXTENSIONS, SoundProbes, SoundTrack, find};

/// Samples per second per channel of everything svs sends.
pub(crate) const SAMPLE_RATE: u32 = 48_000;
/// Channels sent (interleaved left, right).
pub(crate) const CHANNELS: usize = 2;
/// Samples per channel in one Opus packet: 20 ms.
pub(crate) const FRAME_SAMPLES: usize = 960;
/// Seconds of sound in one packet.
pub(crate) const PACKET_SECONDS: f64 = FRAME_SAMPLES as f64 / SAMPLE_RATE as f64;
/// Packets encoded together and cached as one (10 s).
pub(crate) const CHUNK_PACKETS: u64 = 500;
/// Default Opus bit rate: transparent stereo for film sound.
pub(crate) const DEFAULT_BITRATE: u32 = 96_000;
