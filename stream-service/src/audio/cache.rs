//! Encoded chunks of sound kept in memory, least recently used dropped past a byte cap. A chunk
//! is encoded once however many playbacks ask for it at the same moment, on a blocking thread,
//! with at most `builders` encodes running at once.

use super::{CHUNK_PACKETS, SoundTrack, encode};
use crate::Error;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{OnceCell, Semaphore};

/// Packets `first_packet ..` of one track, encoded.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// Number of the first packet.
    pub(crate) first_packet: u64,
    /// Consecutive Opus packets.
    pub(crate) packets: Vec<Bytes>,
}

impl Chunk {
    fn bytes(&self) -> u64 {
        self.packets
            .iter()
            .map(|p| p.len() as u64 + 32)
            .sum::<u64>()
            + 64
    }
}

type Key = (String, u64);

#[derive(Debug)]
struct Slot {
    cell: Arc<OnceCell<Arc<Chunk>>>,
    last_used: u64,
    bytes: u64,
}

#[derive(Debug, Default)]
struct Slots {
    map: HashMap<Key, Slot>,
    clock: u64,
    bytes: u64,
}

/// The sound cache.
#[derive(Debug)]
pub(crate) struct SoundCache {
    bitrate: u32,
    max_bytes: u64,
    builders: Semaphore,
    slots: Mutex<Slots>,
}

fn lock(slots: &Mutex<Slots>) -> MutexGuard<'_, Slots> {
    slots.lock().unwrap_or_else(|p| p.into_inner())
}

impl SoundCache {
    /// A cache encoding at `bitrate` bits per second, keeping up to `max_bytes`, running at most
    /// `builders` encodes at once.
    pub(crate) fn new(bitrate: u32, max_bytes: u64, builders: usize) -> Arc<Self> {
        Arc::new(Self {
            bitrate,
            max_bytes,
            builders: Semaphore::new(builders.max(1)),
            slots: Mutex::new(Slots::default()),
        })
    }

    /// The Opus bit rate of every chunk.
    pub(crate) fn bitrate(&self) -> u32 {
        self.bitrate
    }

    /// Chunk `number` (packets `number × CHUNK_PACKETS ..`) of `track`, encoding it if no one
    /// has.
    pub(crate) async fn chunk(&self, track: &SoundTrack, number: u64) -> Result<Arc<Chunk>, Error> {
        let key = (track.cache_key(), number);
        let cell = {
            let mut slots = lock(&self.slots);
            slots.clock += 1;
            let clock = slots.clock;
            let slot = slots.map.entry(key.clone()).or_insert_with(|| Slot {
                cell: Arc::new(OnceCell::new()),
                last_used: clock,
                bytes: 0,
            });
            slot.last_used = clock;
            slot.cell.clone()
        };
        let chunk = cell
            .get_or_try_init(|| async {
                let _permit = self
                    .builders
                    .acquire()
                    .await
                    .map_err(|_| Error::Cache("the sound encoder is stopping".into()))?;
                let path = track.path.clone();
                let bitrate = self.bitrate;
                let first = number * CHUNK_PACKETS;
                let started = std::time::Instant::now();
                let packets = tokio::task::spawn_blocking(move || {
                    encode::chunk(&path, first, CHUNK_PACKETS as usize, bitrate)
                })
                .await??;
                metrics::counter!("svs_stream_sound_chunks_encoded_total").increment(1);
                tracing::debug!(file = %track.path.display(), chunk = number, ms = started.elapsed().as_millis() as u64, "sound chunk encoded");
                Ok::<_, Error>(Arc::new(Chunk {
                    first_packet: first,
                    packets,
                }))
            })
            .await?
            .clone();
        self.account(&key, &chunk);
        Ok(chunk)
    }

    /// Counts a chunk's bytes once it exists, and drops the least recently used others past
    /// the cap.
    fn account(&self, key: &Key, chunk: &Chunk) {
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.map.get_mut(key) else {
            return;
        };
        if slot.bytes == 0 {
            slot.bytes = chunk.bytes();
            let added = slot.bytes;
            slots.bytes += added;
        }
        while slots.bytes > self.max_bytes {
            let oldest = slots
                .map
                .iter()
                .filter(|(k, s)| *k != key && s.bytes > 0)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some(gone) = slots.map.remove(&oldest) {
                slots.bytes -= gone.bytes;
            }
        }
        metrics::gauge!("svs_stream_sound_cache_bytes").set(slots.bytes as f64);
    }
}
