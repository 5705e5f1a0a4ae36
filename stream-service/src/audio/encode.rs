//! Encoding one chunk of a sound track to Opus packets (libopus): the chunk's sound decoded
//! with a little before it, so the encoder has settled by the chunk's first packet, and shifted
//! by the encoder's lookahead, so packet n decodes to the sound at exactly n × 20 ms.

use super::{CHANNELS, FRAME_SAMPLES, PACKET_SECONDS, SAMPLE_RATE, decode};
use crate::Error;
use bytes::Bytes;
use opus::{Application, Bitrate, Channels, Encoder};
use std::path::Path;

/// Packets encoded before a chunk's first and thrown away (100 ms), so a chunk encoded on its
/// own continues its neighbour without a click.
const PREROLL_PACKETS: usize = 5;
/// Largest Opus packet (RFC 6716 allows 1,275 bytes per frame).
const MAX_PACKET: usize = 1_275;

fn opus_failed(what: &str, e: opus::Error) -> Error {
    Error::Media(format!("Opus encoder: {what}: {e}"))
}

/// Packets `first_packet .. first_packet + packets` of the sound track in `path`, at `bitrate`
/// bits per second (blocking: decodes and encodes).
pub(crate) fn chunk(
    path: &Path,
    first_packet: u64,
    packets: usize,
    bitrate: u32,
) -> Result<Vec<Bytes>, Error> {
    let mut encoder = Encoder::new(SAMPLE_RATE, Channels::Stereo, Application::Audio)
        .map_err(|e| opus_failed("starting", e))?;
    encoder
        .set_bitrate(Bitrate::Bits(bitrate as i32))
        .map_err(|e| opus_failed("setting the bit rate", e))?;
    let lookahead = encoder
        .get_lookahead()
        .map_err(|e| opus_failed("reading the lookahead", e))?
        .max(0) as f64;
    let from = (first_packet as f64 - PREROLL_PACKETS as f64) * PACKET_SECONDS
        + lookahead / f64::from(SAMPLE_RATE);
    let samples = decode::window(path, from, (PREROLL_PACKETS + packets) * FRAME_SAMPLES)?;
    let mut out = Vec::with_capacity(packets);
    let mut buffer = [0u8; MAX_PACKET];
    for (n, frame) in samples.chunks_exact(FRAME_SAMPLES * CHANNELS).enumerate() {
        let length = encoder
            .encode_float(frame, &mut buffer)
            .map_err(|e| opus_failed("encoding", e))?;
        if n >= PREROLL_PACKETS {
            out.push(Bytes::copy_from_slice(&buffer[..length]));
        }
    }
    Ok(out)
}
