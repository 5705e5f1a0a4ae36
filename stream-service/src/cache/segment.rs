//! One segment in memory: the frames of a few seconds of one rendition, appended as they are
//! encoded (or set at once when loaded from disk), shared by every viewer who reaches them.

use crate::Error;
use crate::cache::layout::CacheKey;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// One rendition of one source file, as the cache cuts it into segments.
#[derive(Debug)]
pub struct Track {
    pub key: CacheKey,
    pub source: PathBuf,
    /// Frames in the source (as probed).
    pub frame_count: u64,
}

impl Track {
    pub fn frames_per_segment(&self) -> u64 {
        self.key.frames_per_segment.max(1)
    }

    pub fn segment_count(&self) -> u64 {
        self.frame_count.div_ceil(self.frames_per_segment())
    }

    pub fn first_frame(&self, number: u64) -> u64 {
        number * self.frames_per_segment()
    }

    /// Frames segment `number` holds (the last one may be short).
    pub fn frames_in(&self, number: u64) -> u64 {
        self.frame_count
            .saturating_sub(self.first_frame(number))
            .min(self.frames_per_segment())
    }
}

/// How far a segment has got, watched by viewers waiting for a frame.
#[derive(Debug, Clone, Default)]
struct Fill {
    available: usize,
    complete: bool,
    failed: Option<String>,
}

/// Who is working on a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Queued for an encoder (or handed back by one that yielded).
    Waiting = 0,
    Encoding = 1,
    Loading = 2,
    Done = 3,
}

/// Why a segment is wanted; the encoder pool serves higher first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Priority {
    /// Warming the cache before anyone asked.
    Warm = 0,
    /// The next segments of a playing viewer.
    ReadAhead = 1,
    /// A viewer is waiting for a frame of it.
    Now = 2,
}

pub struct Segment {
    pub track: Arc<Track>,
    pub number: u64,
    frames: RwLock<Vec<Bytes>>,
    fill: watch::Sender<Fill>,
    phase: AtomicU8,
    priority: AtomicU8,
}

impl Segment {
    pub fn new(track: Arc<Track>, number: u64, phase: Phase) -> Arc<Self> {
        Arc::new(Self {
            track,
            number,
            frames: RwLock::new(Vec::new()),
            fill: watch::Sender::new(Fill::default()),
            phase: AtomicU8::new(phase as u8),
            priority: AtomicU8::new(Priority::Warm as u8),
        })
    }

    pub fn first_frame(&self) -> u64 {
        self.track.first_frame(self.number)
    }

    /// Frames it will hold once complete (as probed).
    pub fn expected_frames(&self) -> u64 {
        self.track.frames_in(self.number)
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Waiting,
            1 => Phase::Encoding,
            2 => Phase::Loading,
            _ => Phase::Done,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Moves `from` → `to` if the segment is in `from`; false if someone else moved it first.
    pub fn claim(&self, from: Phase, to: Phase) -> bool {
        self.phase
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub fn priority(&self) -> Priority {
        match self.priority.load(Ordering::Acquire) {
            0 => Priority::Warm,
            1 => Priority::ReadAhead,
            _ => Priority::Now,
        }
    }

    /// Raises the priority; returns whether it rose.
    pub fn raise(&self, to: Priority) -> bool {
        self.priority.fetch_max(to as u8, Ordering::AcqRel) < to as u8
    }

    /// Frames already there.
    pub fn available(&self) -> usize {
        self.fill.borrow().available
    }

    /// Appends an encoded frame and wakes viewers waiting for it.
    pub fn push(&self, frame: Bytes) {
        let mut frames = self.frames.write().unwrap_or_else(|p| p.into_inner());
        frames.push(frame);
        let available = frames.len();
        drop(frames);
        self.fill.send_modify(|f| f.available = available);
    }

    /// Sets every frame at once (loaded from disk) and marks the segment complete.
    pub fn fill_with(&self, frames: Vec<Bytes>) {
        let available = frames.len();
        *self.frames.write().unwrap_or_else(|p| p.into_inner()) = frames;
        self.set_phase(Phase::Done);
        self.fill.send_modify(|f| {
            f.available = available;
            f.complete = true;
        });
    }

    /// No more frames will come (the source ended, or every expected frame is there).
    pub fn complete(&self) {
        self.set_phase(Phase::Done);
        self.fill.send_modify(|f| f.complete = true);
    }

    /// Viewers waiting for a frame that will never come get `why`.
    pub fn fail(&self, why: String) {
        self.set_phase(Phase::Done);
        self.fill.send_modify(|f| f.failed = Some(why));
    }

    /// The frames so far (cheap: each is a shared `Bytes`).
    pub fn frames(&self) -> Vec<Bytes> {
        self.frames
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Frame `offset` of this segment, waiting for it to be encoded or loaded. `None` when the
    /// segment ended before it (the source was shorter than probed).
    pub async fn frame(&self, offset: usize) -> Result<Option<Bytes>, Error> {
        let mut fill = self.fill.subscribe();
        loop {
            let seen = fill.borrow_and_update().clone();
            if offset < seen.available {
                let frames = self.frames.read().unwrap_or_else(|p| p.into_inner());
                return Ok(frames.get(offset).cloned());
            }
            if let Some(why) = seen.failed {
                return Err(Error::Cache(why));
            }
            if seen.complete {
                return Ok(None);
            }
            if fill.changed().await.is_err() {
                return Ok(None);
            }
        }
    }
}
