//! One viewer's way through one rendition: frames by index, the segment being played held (so
//! it is neither dropped nor evicted), and the next few asked for ahead of the viewer.

use super::FrameCache;
use super::segment::{Priority, Segment, Track};
use crate::Error;
use crate::media::Probe;
use bytes::Bytes;
use std::sync::Arc;

#[derive(Debug)]
pub struct Reader {
    pub probe: Probe,
    cache: Arc<FrameCache>,
    track: Arc<Track>,
    read_ahead: u64,
    /// The segment played now, then those read ahead, in order.
    held: Vec<Arc<Segment>>,
}

impl Reader {
    pub(super) fn new(
        cache: Arc<FrameCache>,
        track: Arc<Track>,
        probe: Probe,
        read_ahead: u64,
    ) -> Self {
        Self {
            probe,
            cache,
            track,
            read_ahead,
            held: Vec::new(),
        }
    }

    /// Frames in the rendition (as probed).
    pub fn frame_count(&self) -> u64 {
        self.track.frame_count
    }

    pub fn encoding(&self) -> crate::encoder::Encoding {
        self.track.key.encoding
    }

    /// Whether frame `index` decodes on its own.
    pub fn is_keyframe(&self, index: u64) -> bool {
        self.track.is_keyframe(index)
    }

    /// The first keyframe at or after `index` (the frame count if none is left).
    pub fn next_keyframe(&self, index: u64) -> u64 {
        self.track.next_keyframe(index)
    }

    /// Frame `index`, waiting for its segment to be loaded or encoded. `None` past the end.
    pub async fn frame(&mut self, index: u64) -> Result<Option<Bytes>, Error> {
        if index >= self.track.frame_count {
            return Ok(None);
        }
        let number = index / self.track.frames_per_segment();
        if self.held.first().is_none_or(|s| s.number != number) {
            self.move_to(number);
        }
        let Some(segment) = self.held.first().cloned() else {
            return Ok(None);
        };
        let slot = (index - segment.first_frame()) as usize;
        // Entering (or seeking within) a segment not yet encoded there: the encoder starts at
        // this frame rather than at the segment's first, and a viewer waits for it.
        if segment.want(slot) {
            self.cache.urge(&segment);
        }
        segment.frame(slot).await
    }

    /// Holds segment `number` (wanted now) and the next `read_ahead` (wanted soon); lets go of
    /// the rest.
    fn move_to(&mut self, number: u64) {
        let last = (number + self.read_ahead).min(self.track.segment_count().saturating_sub(1));
        let wanted: Vec<Arc<Segment>> = (number..=last.max(number))
            .map(|n| {
                let priority = if n == number {
                    Priority::Now
                } else {
                    Priority::ReadAhead
                };
                self.cache.segment(&self.track, n, priority)
            })
            .collect();
        self.held = wanted;
    }
}
