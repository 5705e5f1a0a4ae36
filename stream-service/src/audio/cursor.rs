//! One playback's place in a sound track: which packet goes out next, up to where the video
//! ends, and the messages that carry them. The next chunk is encoded in the background once the
//! playback is half way through the current one.

use super::{CHUNK_PACKETS, DEFAULT_BITRATE, FRAME_SAMPLES, PACKET_SECONDS, SAMPLE_RATE};
use super::{SoundCache, SoundTrack};
use crate::Error;
use std::sync::Arc;
use svs_common::proto::stream::{Audio, AudioCodec, AudioTrack};

/// A playback's sound.
#[derive(Debug)]
pub(crate) struct Cursor {
    track: SoundTrack,
    cache: Arc<SoundCache>,
    /// The packet that goes out next.
    next: u64,
    /// One past the last packet (the video's end).
    end: u64,
    /// The chunk number last asked for ahead of time.
    prefetched: Option<u64>,
}

fn packet_at(seconds: f64) -> u64 {
    (seconds.max(0.0) / PACKET_SECONDS).floor() as u64
}

impl Cursor {
    /// Sound from `at` seconds to the end of a video `video_seconds` long.
    pub(crate) fn new(
        track: SoundTrack,
        cache: Arc<SoundCache>,
        at: f64,
        video_seconds: f64,
    ) -> Self {
        Self {
            track,
            cache,
            next: packet_at(at),
            end: (video_seconds / PACKET_SECONDS).ceil() as u64,
            prefetched: None,
        }
    }

    /// What the header says about the sound.
    pub(crate) fn header(&self) -> AudioTrack {
        AudioTrack {
            codec: AudioCodec::Opus as i32,
            sample_rate: SAMPLE_RATE,
            channels: super::CHANNELS as u32,
            frame_samples: FRAME_SAMPLES as u32,
            bitrate: if self.cache.bitrate() == 0 {
                DEFAULT_BITRATE
            } else {
                self.cache.bitrate()
            },
        }
    }

    /// Continues from `at` seconds (a seek).
    pub(crate) fn seek(&mut self, at: f64) {
        self.next = packet_at(at).min(self.end);
    }

    /// Whether every packet to the video's end is out.
    pub(crate) fn finished(&self) -> bool {
        self.next >= self.end
    }

    /// Seconds of sound sent so far, measured from the start of the video.
    pub(crate) fn sent_until(&self) -> f64 {
        self.next as f64 * PACKET_SECONDS
    }

    /// The packets from the next one up to the one holding `until` seconds (at most to the
    /// end), or `None` when they are already out.
    pub(crate) async fn until(&mut self, until: f64) -> Result<Option<Audio>, Error> {
        let last = (packet_at(until) + 1).min(self.end);
        if self.next >= last {
            return Ok(None);
        }
        let first = self.next;
        let mut packets = Vec::with_capacity((last - first) as usize);
        while self.next < last {
            let number = self.next / CHUNK_PACKETS;
            let chunk = self.cache.chunk(&self.track, number).await?;
            let from = (self.next - chunk.first_packet) as usize;
            let to = ((last - chunk.first_packet) as usize).min(chunk.packets.len());
            if from >= to {
                return Err(Error::Cache(format!(
                    "sound chunk {number} has {} packets",
                    chunk.packets.len()
                )));
            }
            packets.extend_from_slice(&chunk.packets[from..to]);
            self.next = chunk.first_packet + to as u64;
        }
        self.prefetch();
        Ok(Some(Audio {
            first_packet: first,
            pts_seconds: first as f64 * PACKET_SECONDS,
            packets,
        }))
    }

    /// Past the middle of a chunk: has the next one encoded in the background.
    fn prefetch(&mut self) {
        let number = self.next / CHUNK_PACKETS;
        let next_chunk = number + 1;
        if self.next % CHUNK_PACKETS < CHUNK_PACKETS / 2
            || next_chunk * CHUNK_PACKETS >= self.end
            || self.prefetched == Some(next_chunk)
        {
            return;
        }
        self.prefetched = Some(next_chunk);
        let (cache, track) = (self.cache.clone(), self.track.clone());
        tokio::spawn(async move {
            if let Err(e) = cache.chunk(&track, next_chunk).await {
                tracing::warn!(file = %track.path.display(), error = %e, "cannot encode sound ahead");
            }
        });
    }
}
