//! Loading a segment from disk on a blocking thread: mapped read-only, every checksum verified
//! before any frame is served, frames handed out as zero-copy slices of the one map. A damaged
//! or missing file is deleted and the segment encoded again.

use super::segment::Segment;
use super::segment_file::Damage;
use super::{FrameCache, lock, segment_file};
use bytes::Bytes;
use memmap2::Mmap;
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

/// Why a cached segment cannot be served from its file.
#[derive(Debug, thiserror::Error)]
enum Unloadable {
    #[error("cannot read it")]
    Unreadable(#[source] std::io::Error),
    #[error(transparent)]
    Damaged(#[from] Damage),
}

/// A slice of a shared map, owned by a `Bytes`.
struct MapSlice {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        self.map.get(self.range.clone()).unwrap_or_default()
    }
}

fn map(path: &Path) -> std::io::Result<Mmap> {
    let file = File::open(path)?;
    // SAFETY: the cache directory belongs to this service; a segment file is complete before it
    // gets its name and is never written again (it is only ever replaced by rename or deleted,
    // which leaves an existing map intact), so the mapped bytes do not change while mapped.
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(&file) }?;
    // The modification time orders eviction across restarts.
    let _ = File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
    Ok(map)
}

impl FrameCache {
    fn load(&self, segment: &Segment) -> Result<(), Unloadable> {
        let path = segment.track.key.segment_path(&self.root, segment.number);
        let map = Arc::new(map(&path).map_err(Unloadable::Unreadable)?);
        let verified = segment_file::verify(&map)?;
        let count = verified.frames.len() as u64;
        if verified.first_frame != segment.first_frame() {
            return Err(Damage::WrongStart {
                found: verified.first_frame,
                expected: segment.first_frame(),
            }
            .into());
        }
        if count == 0 || count > segment.expected_frames() {
            return Err(Damage::WrongCount(count).into());
        }
        let track = &segment.track;
        if let Some(n) = (0..verified.keyframes.len())
            .find(|&n| verified.keyframes[n] != track.key.encoding.is_keyframe(n))
        {
            return Err(Damage::WrongKind(n).into());
        }
        let frames = verified
            .frames
            .into_iter()
            .map(|range| {
                Bytes::from_owner(MapSlice {
                    map: map.clone(),
                    range,
                })
            })
            .collect();
        segment.fill_with(frames);
        self.loaded.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("svs_stream_segments_loaded_total").increment(1);
        Ok(())
    }

    /// Loads `segment` on a blocking thread; encodes it instead if the file is damaged or gone.
    pub(super) fn load_in_background(self: &Arc<Self>, segment: Arc<Segment>) {
        let cache = self.clone();
        let job = move || {
            if let Err(why) = cache.load(&segment) {
                let path = segment.track.key.segment_path(&cache.root, segment.number);
                tracing::warn!(file = %path.display(), why = %svs_common::error::with_causes(&why),
                    "a cached segment is damaged; encoding it again");
                let _ = std::fs::remove_file(&path);
                lock(&cache.disk).remove(&path);
                cache.encode_instead(&segment);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(job)),
            Err(_) => job(),
        }
    }
}
