//! One segment in memory: the frames of a few seconds of one rendition, put in their slots as
//! they are encoded (from where a viewer entered the segment, then the frames before it) or set
//! at once when loaded from disk, shared by every viewer who reaches them.

use crate::Error;
use crate::cache::layout::CacheKey;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// One rendition of one source file, as the cache cuts it into segments.
#[derive(Debug)]
pub(crate) struct Track {
    pub key: CacheKey,
    pub source: PathBuf,
    /// Frames in the source (as probed).
    pub frame_count: u64,
    pub fps: f64,
}

impl Track {
    pub(crate) fn frames_per_segment(&self) -> u64 {
        self.key.frames_per_segment.max(1)
    }

    pub(crate) fn segment_count(&self) -> u64 {
        self.frame_count.div_ceil(self.frames_per_segment())
    }

    pub(crate) fn first_frame(&self, number: u64) -> u64 {
        number * self.frames_per_segment()
    }

    /// Frames segment `number` holds (the last one may be short).
    pub(crate) fn frames_in(&self, number: u64) -> u64 {
        self.frame_count
            .saturating_sub(self.first_frame(number))
            .min(self.frames_per_segment())
    }

    /// Frames coded in one run from a keyframe (1 for JPEG, a group of pictures for H.264).
    pub(crate) fn run_length(&self) -> usize {
        self.key.encoding.keyframe_interval() as usize
    }

    /// Whether video frame `index` is a keyframe (keyframes are counted from segment starts).
    pub(crate) fn is_keyframe(&self, index: u64) -> bool {
        let slot = index % self.frames_per_segment();
        self.key.encoding.is_keyframe(slot as usize)
    }

    /// The first keyframe at or after video frame `index` (the frame count if none is left).
    pub(crate) fn next_keyframe(&self, index: u64) -> u64 {
        let segment_start = index - index % self.frames_per_segment();
        let run = self.run_length() as u64;
        let slot = index - segment_start;
        let next = segment_start + slot.div_ceil(run) * run;
        // A segment's last run may be short: the next segment starts with a keyframe.
        next.min(segment_start + self.frames_per_segment())
            .min(self.frame_count)
    }
}

/// A wanted slot this close after the encoder's next one is reached by decoding on.
const NEAR_SLOTS: usize = 8;

/// The frames so far, by slot (frame number within the segment).
#[derive(Debug, Default)]
struct Slots {
    frames: Vec<Option<Bytes>>,
    filled: usize,
    /// Slots past this do not exist (the source ended early); starts at the probed count.
    end: usize,
    complete: bool,
    failed: Option<String>,
}

/// Who is working on a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Queued for an encoder (or handed back by one that yielded).
    Waiting = 0,
    Encoding = 1,
    Loading = 2,
    Done = 3,
}

/// Why a segment is wanted; the encoder pool serves higher first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Priority {
    /// Warming the cache before anyone asked.
    Warm = 0,
    /// The next segments of a playing viewer.
    ReadAhead = 1,
    /// A viewer is waiting for a frame of it.
    Now = 2,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub track: Arc<Track>,
    pub number: u64,
    slots: RwLock<Slots>,
    /// Bumped on every change of `slots`; viewers wait on it.
    changed: watch::Sender<u64>,
    /// Where the encoder goes next: the slot a viewer most recently needed that was missing.
    wanted_from: AtomicUsize,
    phase: AtomicU8,
    priority: AtomicU8,
    /// When it was first asked for (logs say how long it waited for an encoder).
    pub asked: std::time::Instant,
}

impl Segment {
    pub(crate) fn new(track: Arc<Track>, number: u64, phase: Phase) -> Arc<Self> {
        let expected = track.frames_in(number) as usize;
        Arc::new(Self {
            track,
            number,
            slots: RwLock::new(Slots {
                frames: vec![None; expected],
                end: expected,
                ..Slots::default()
            }),
            changed: watch::Sender::new(0),
            wanted_from: AtomicUsize::new(0),
            phase: AtomicU8::new(phase as u8),
            priority: AtomicU8::new(Priority::Warm as u8),
            asked: std::time::Instant::now(),
        })
    }

    pub(crate) fn first_frame(&self) -> u64 {
        self.track.first_frame(self.number)
    }

    /// Frames it will hold once complete (as probed).
    pub(crate) fn expected_frames(&self) -> u64 {
        self.track.frames_in(self.number)
    }

    pub(crate) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Waiting,
            1 => Phase::Encoding,
            2 => Phase::Loading,
            _ => Phase::Done,
        }
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Moves `from` → `to` if the segment is in `from`; false if someone else moved it first.
    pub(crate) fn claim(&self, from: Phase, to: Phase) -> bool {
        self.phase
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn priority(&self) -> Priority {
        match self.priority.load(Ordering::Acquire) {
            0 => Priority::Warm,
            1 => Priority::ReadAhead,
            _ => Priority::Now,
        }
    }

    /// Raises the priority; returns whether it rose.
    pub(crate) fn raise(&self, to: Priority) -> bool {
        self.priority.fetch_max(to as u8, Ordering::AcqRel) < to as u8
    }

    /// Lowers the priority to warming (work every viewer left, finished when nothing else waits).
    pub(crate) fn demote(&self) {
        self.priority.store(Priority::Warm as u8, Ordering::Release);
    }

    /// Whether a viewer waits for it and it has fewer frames than that viewer needs to start
    /// smoothly (a quarter of a segment): such work goes before other work for viewers.
    pub(crate) fn is_starving(&self) -> bool {
        if self.priority() != Priority::Now {
            return false;
        }
        let headstart = (self.track.frames_per_segment() / 4).max(1) as usize;
        let slots = self.slots();
        slots.filled < headstart.min(slots.end)
    }

    fn slots(&self) -> std::sync::RwLockReadGuard<'_, Slots> {
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut Slots)) {
        change(&mut self.slots.write().unwrap_or_else(|p| p.into_inner()));
        self.changed.send_modify(|v| *v += 1);
    }

    /// Frames there so far.
    pub(crate) fn filled(&self) -> usize {
        self.slots().filled
    }

    /// Asks the encoder to go to `slot` next if it is missing (a viewer entered or seeked
    /// there) and not just ahead of where the encoder is (then decoding on beats a seek). Runs
    /// are coded whole, so the encoder goes to the start of the run holding `slot`, and a slot
    /// whose run has begun is reached by the encoder coding that run.
    /// Returns whether the slot is missing (a viewer will wait for it).
    pub(crate) fn want(&self, slot: usize) -> bool {
        let slots = self.slots();
        if slots.frames.get(slot).is_none_or(Option::is_some) {
            return false;
        }
        let run_start = slot - slot % self.track.run_length();
        if slots.frames.get(run_start).is_some_and(Option::is_some) {
            return true;
        }
        let next = self.next_missing_in(&slots);
        if next.is_none_or(|n| n > run_start || run_start - n >= NEAR_SLOTS) {
            self.wanted_from.store(run_start, Ordering::Release);
        }
        true
    }

    /// Whether `slot` lies before the slot the encoder was sent to: filling in the start of a
    /// segment a viewer entered later, which that viewer does not need.
    pub(crate) fn is_backfill(&self, slot: usize) -> bool {
        slot < self.wanted_from.load(Ordering::Acquire)
    }

    /// The next slot to encode: the first missing one from the wanted slot on, then from the
    /// start of the segment. `None` when every slot is there.
    pub(crate) fn next_missing(&self) -> Option<usize> {
        self.next_missing_in(&self.slots())
    }

    fn next_missing_in(&self, slots: &Slots) -> Option<usize> {
        let from = self.wanted_from.load(Ordering::Acquire).min(slots.end);
        let missing = |range: std::ops::Range<usize>| {
            range
                .into_iter()
                .find(|i| slots.frames.get(*i).is_some_and(Option::is_none))
        };
        missing(from..slots.end).or_else(|| missing(0..from))
    }

    /// Puts an encoded frame in its slot and wakes viewers waiting for it.
    pub(crate) fn put(&self, slot: usize, frame: Bytes) {
        self.update(|s| {
            if let Some(place) = s.frames.get_mut(slot)
                && place.is_none()
            {
                *place = Some(frame);
                s.filled += 1;
            }
        });
    }

    /// The source ended before `slot`: the segment is shorter than probed.
    pub(crate) fn end_at(&self, slot: usize) {
        self.update(|s| {
            if slot < s.end {
                s.end = slot;
                s.frames.truncate(slot);
                s.filled = s.frames.iter().filter(|f| f.is_some()).count();
            }
        });
    }

    /// Sets every frame at once (loaded from disk) and marks the segment complete.
    pub(crate) fn fill_with(&self, frames: Vec<Bytes>) {
        self.set_phase(Phase::Done);
        self.update(|s| {
            s.end = frames.len();
            s.filled = frames.len();
            s.frames = frames.into_iter().map(Some).collect();
            s.complete = true;
        });
    }

    /// Every slot is there.
    pub(crate) fn complete(&self) {
        self.set_phase(Phase::Done);
        self.update(|s| s.complete = true);
    }

    /// Viewers waiting for a frame that will never come get `why`.
    pub(crate) fn fail(&self, why: String) {
        self.set_phase(Phase::Done);
        self.update(|s| s.failed = Some(why));
    }

    /// Every frame in order, if every slot is there (cheap: each is a shared `Bytes`).
    pub(crate) fn frames(&self) -> Option<Vec<Bytes>> {
        self.slots().frames.iter().cloned().collect()
    }

    /// Frame `offset` of this segment, waiting for it to be encoded or loaded. `None` when the
    /// segment ended before it (the source was shorter than probed).
    pub(crate) async fn frame(&self, offset: usize) -> Result<Option<Bytes>, Error> {
        let mut changed = self.changed.subscribe();
        loop {
            {
                let slots = self.slots();
                if offset >= slots.end {
                    return Ok(None);
                }
                if let Some(Some(frame)) = slots.frames.get(offset) {
                    return Ok(Some(frame.clone()));
                }
                if let Some(why) = &slots.failed {
                    return Err(Error::Cache(why.clone()));
                }
                if slots.complete {
                    return Ok(None);
                }
            }
            if changed.changed().await.is_err() {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolution::Rendition;

    fn coded_segment(frames: u64, encoding: crate::encoder::Encoding) -> Arc<Segment> {
        let track = Arc::new(Track {
            key: CacheKey {
                video: "v".into(),
                rendition: Rendition::P240,
                source_tag: "t".into(),
                encoding,
                frames_per_segment: 20,
            },
            source: "/nonexistent".into(),
            frame_count: frames,
            fps: 30.0,
        });
        Segment::new(track, 0, Phase::Encoding)
    }

    fn segment(frames: u64) -> Arc<Segment> {
        coded_segment(frames, crate::encoder::Encoding::Jpeg { quality: 80 })
    }

    #[test]
    fn h264_runs_start_at_keyframes_and_a_viewer_waits_for_the_next() {
        let s = coded_segment(
            50,
            crate::encoder::Encoding::H264 {
                qp: 28,
                flat_qp: 24,
                gop: 6,
            },
        );
        let track = &s.track;
        assert!(track.is_keyframe(0) && track.is_keyframe(18) && track.is_keyframe(20));
        assert!(!track.is_keyframe(19), "the segment's last run is short");
        assert_eq!(track.next_keyframe(7), 12);
        assert_eq!(track.next_keyframe(12), 12);
        assert_eq!(
            track.next_keyframe(19),
            20,
            "the next segment starts with one"
        );
        assert_eq!(track.next_keyframe(49), 50, "none left: the end");
        // A viewer entering at slot 14 sends the encoder to the run's start, 12.
        s.want(14);
        assert_eq!(s.next_missing(), Some(12));
        for slot in 12..15 {
            s.put(slot, Bytes::from_static(b"f"));
        }
        // Inside a run being coded: the encoder is not moved.
        s.want(16);
        assert_eq!(s.next_missing(), Some(15));
    }

    #[tokio::test]
    async fn encoding_starts_where_a_viewer_entered_then_fills_the_start() {
        let s = segment(20);
        s.want(12);
        let mut order = Vec::new();
        while let Some(slot) = s.next_missing() {
            order.push(slot);
            s.put(slot, Bytes::from(vec![slot as u8]));
            if slot == 15 {
                // A viewer seeks back within the segment, far from the encoder: it goes there.
                s.want(2);
            }
            if slot == 3 {
                // Just ahead of the encoder: decoding on gets there without a seek.
                s.want(6);
            }
        }
        assert_eq!(
            order,
            [
                12, 13, 14, 15, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19, 0, 1
            ]
        );
        assert_eq!(s.frame(7).await.unwrap().unwrap()[..], [7]);
        let all = s.frames().unwrap();
        assert_eq!(all.len(), 20);
        assert!(all.iter().enumerate().all(|(i, f)| f[..] == [i as u8]));
    }

    #[tokio::test]
    async fn a_source_shorter_than_probed_ends_the_segment_early() {
        let s = segment(20);
        s.want(10);
        for slot in 10..14 {
            s.put(slot, Bytes::from_static(b"f"));
        }
        s.end_at(14);
        assert!(s.frames().is_none(), "the start is still missing");
        assert_eq!(s.frame(15).await.unwrap(), None, "past the end");
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { s.frame(3).await }
        });
        while let Some(slot) = s.next_missing() {
            s.put(slot, Bytes::from_static(b"f"));
        }
        s.complete();
        assert!(waiting.await.unwrap().unwrap().is_some());
        assert_eq!(s.frames().unwrap().len(), 14);
    }
}
