//! The frames of one cached rendition as viewers read them: from the file being written while
//! the encoder runs, then as zero-copy slices of one shared memory map.

use super::index::Entry;
use crate::Error;
use crate::media::Probe;
use bytes::Bytes;
use memmap2::Mmap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::sync::watch;

/// Build progress, watched by viewers waiting for frames.
#[derive(Debug, Clone, Default)]
pub(super) struct Progress {
    pub available: u64,
    pub done: bool,
    pub failed: Option<String>,
}

pub(super) enum State {
    /// Frames are being appended to the file; `index` says where each one is.
    Building {
        reader: File,
        index: Vec<Entry>,
    },
    /// The complete file, mapped once and shared by every viewer.
    Ready {
        map: Arc<Mmap>,
        index: Vec<Entry>,
    },
    Failed,
}

/// A slice of the shared map, owned by a `Bytes`.
struct MapSlice {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        self.map.get(self.start..self.end).unwrap_or_default()
    }
}

/// The frames of one rendition of one source file.
pub struct Frames {
    pub probe: Probe,
    pub(super) state: RwLock<State>,
    pub(super) progress: watch::Sender<Progress>,
    pub(super) last_used: Mutex<Instant>,
}

impl Frames {
    pub(super) fn new(probe: Probe, state: State, progress: Progress) -> Arc<Self> {
        Arc::new(Self {
            probe,
            state: RwLock::new(state),
            progress: watch::Sender::new(progress),
            last_used: Mutex::new(Instant::now()),
        })
    }

    /// A rendition that failed before its first frame.
    pub(super) fn failed(probe: Probe, why: String) -> Arc<Self> {
        Self::new(
            probe,
            State::Failed,
            Progress {
                failed: Some(why),
                ..Default::default()
            },
        )
    }

    pub(super) fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub(super) fn idle_for(&self) -> std::time::Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    fn get(&self, index: u64) -> Result<Option<Bytes>, Error> {
        let Ok(index) = usize::try_from(index) else {
            return Ok(None);
        };
        match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
            State::Ready { map, index: idx } => Ok(idx.get(index).and_then(|e| {
                let start = usize::try_from(e.offset).ok()?;
                let end = usize::try_from(e.end()).ok()?;
                Some(Bytes::from_owner(MapSlice {
                    map: map.clone(),
                    start,
                    end,
                }))
            })),
            State::Building { reader, index: idx } => match idx.get(index) {
                Some(e) => {
                    let mut buf = vec![0u8; e.len as usize];
                    // Small positioned read of a frame just written: page cache, microseconds.
                    reader
                        .read_exact_at(&mut buf, e.offset)
                        .map_err(|err| Error::Cache(format!("reading a cached frame: {err}")))?;
                    Ok(Some(Bytes::from(buf)))
                }
                None => Ok(None),
            },
            State::Failed => Ok(None),
        }
    }

    /// Frame `index`, waiting for the encoder if it has not got there yet. `None` past the end.
    pub async fn frame(&self, index: u64) -> Result<Option<Bytes>, Error> {
        let mut progress = self.progress.subscribe();
        loop {
            let seen = progress.borrow_and_update().clone();
            if let Some(frame) = self.get(index)? {
                return Ok(Some(frame));
            }
            if let Some(why) = seen.failed {
                return Err(Error::Cache(why));
            }
            if seen.done || index < seen.available {
                return Ok(None);
            }
            if progress.changed().await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Frames in the rendition: exact once built, the probed count before.
    pub fn frame_count(&self) -> u64 {
        let p = self.progress.borrow();
        if p.done {
            p.available
        } else {
            self.probe.frame_count
        }
    }

    pub(super) fn is_building(&self) -> bool {
        matches!(
            *self.state.read().unwrap_or_else(|p| p.into_inner()),
            State::Building { .. }
        )
    }
}
