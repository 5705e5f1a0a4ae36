//! The frame cache, cut into segments: a few seconds of one rendition each (`segment`), encoded
//! on demand from the source at the position a viewer needs by a bounded pool of encoder threads
//! (`pool`, `build`), shared by every viewer who reaches them, written to disk with a checksum
//! per frame (`segment_file`, `layout`) and loaded back verified (`load`), evicted least recently
//! used first past the size cap (`disk`). A viewer reads through a `Reader`, which holds the
//! segment it plays and asks for the next few ahead of it.

mod build;
mod disk;
pub(crate) mod layout;
mod load;
mod pool;
mod reader;
pub(crate) mod segment;
pub(crate) mod segment_file;

pub(crate) use layout::CacheKey;
pub(crate) use reader::Reader;
pub(crate) use segment::Priority;

use crate::Error;
use crate::encoder::{Codec, Encoding};
use crate::library::{Library, Source};
use crate::progress::Progress;
use crate::resolution::Rendition;
use disk::DiskUse;
use pool::Pool;
use segment::{Phase, Segment, Track};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// How the cache cuts, encodes and keeps segments.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Bytes of segment files kept; least recently used ones are evicted beyond it.
    pub max_bytes: u64,
    /// JPEG quality (1-100).
    pub jpeg_quality: i32,
    /// H.264 quantiser (0-51, lower is better and bigger).
    pub h264_qp: u8,
    /// H.264 quantiser of flat groups of pictures (`encoder::FLAT_BITS_PER_PIXEL`).
    pub h264_flat_qp: u8,
    /// Seconds of video per segment.
    pub segment_seconds: f64,
    /// Encoder threads.
    pub encoders: usize,
    /// Segments encoded ahead of a playing viewer.
    pub read_ahead: u64,
}

type SegmentId = (CacheKey, u64);

/// Counters, for tests, benchmarks and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Segments encoded since start.
    pub encoded: u64,
    /// Segments loaded from disk (and verified) since start.
    pub loaded: u64,
    /// Segment files on disk, and their bytes.
    pub files: usize,
    pub bytes: u64,
}

pub struct FrameCache {
    root: PathBuf,
    options: CacheOptions,
    /// Segments some viewer or encoder holds, by rendition version and number.
    live: Mutex<HashMap<SegmentId, Weak<Segment>>>,
    disk: Mutex<DiskUse>,
    pool: Arc<Pool>,
    /// Version directories whose older siblings have been removed this run.
    cleaned: Mutex<HashSet<PathBuf>>,
    encoded: AtomicU64,
    loaded: AtomicU64,
    warming: Mutex<Option<Progress>>,
}

impl std::fmt::Debug for FrameCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCache").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FrameCache {
    /// Opens the cache directory (blocking: removes what killed builds or an older layout left
    /// there and takes stock of the rest) and starts the encoders.
    pub fn new(root: PathBuf, options: CacheOptions) -> Result<Arc<Self>, Error> {
        std::fs::create_dir_all(&root).map_err(|e| Error::io("creating", &root, e))?;
        let freed = layout::clean_leftovers(&root);
        if freed > 0 {
            tracing::info!(bytes = freed, dir = %root.display(), "removed unfinished or outdated cache files");
        }
        let disk = DiskUse::scan(&root);
        tracing::info!(segments = disk.files(), bytes = disk.total(), dir = %root.display(), "frame cache opened");
        let cache = Arc::new_cyclic(|me: &Weak<Self>| Self {
            root,
            pool: Pool::start(options.encoders, me.clone()),
            options,
            live: Mutex::new(HashMap::new()),
            disk: Mutex::new(disk),
            cleaned: Mutex::new(HashSet::new()),
            encoded: AtomicU64::new(0),
            loaded: AtomicU64::new(0),
            warming: Mutex::new(None),
        });
        cache.evict();
        Ok(cache)
    }

    /// At shutdown: stops the encoders and waits up to `limit` for them to finish the run they
    /// are on (blocking).
    pub fn stop_encoders(&self, limit: std::time::Duration) {
        let running = self.pool.stop_and_wait(limit);
        if running > 0 {
            tracing::warn!(running, "encoder threads still busy at shutdown");
        }
    }

    pub fn counts(&self) -> CacheCounts {
        let disk = lock(&self.disk);
        CacheCounts {
            encoded: self.encoded.load(Ordering::Relaxed),
            loaded: self.loaded.load(Ordering::Relaxed),
            files: disk.files(),
            bytes: disk.total(),
        }
    }

    /// How `codec` is coded for a source at `fps` cut into segments of `per_segment` frames:
    /// H.264 with a keyframe every second (or at every segment start if segments are shorter).
    fn encoding(&self, codec: Codec, fps: f64, per_segment: u64) -> Encoding {
        match codec {
            Codec::Jpeg => Encoding::Jpeg {
                quality: self.options.jpeg_quality,
            },
            Codec::H264 => Encoding::H264 {
                qp: self.options.h264_qp,
                flat_qp: self.options.h264_flat_qp,
                gop: (fps.round().max(1.0) as u64).min(per_segment) as u32,
            },
        }
    }

    fn track(
        &self,
        video: &str,
        rendition: Rendition,
        codec: Codec,
        source: &Source,
    ) -> Arc<Track> {
        let per_segment = (self.options.segment_seconds * source.probe.fps)
            .round()
            .max(1.0) as u64;
        Arc::new(Track {
            key: CacheKey {
                video: video.to_string(),
                rendition,
                source_tag: source.tag.clone(),
                encoding: self.encoding(codec, source.probe.fps, per_segment),
                frames_per_segment: per_segment,
            },
            source: source.path.clone(),
            frame_count: source.probe.frame_count,
            fps: source.probe.fps,
        })
    }

    /// A viewer's way into one rendition of `video` coded as `codec`, reading ahead as it
    /// plays, or not at all (`read_ahead` false: a JPEG bridge to the next H.264 keyframe).
    pub fn reader(
        self: &Arc<Self>,
        video: &str,
        rendition: Rendition,
        codec: Codec,
        source: &Source,
        read_ahead: bool,
    ) -> Reader {
        Reader::new(
            self.clone(),
            self.track(video, rendition, codec, source),
            source.probe,
            if read_ahead {
                self.options.read_ahead
            } else {
                0
            },
        )
    }

    /// Segment `number` of `track`, wanted at `priority`: the one in memory if someone holds
    /// it, else loaded from disk in the background, else queued for an encoder.
    fn segment(
        self: &Arc<Self>,
        track: &Arc<Track>,
        number: u64,
        priority: Priority,
    ) -> Arc<Segment> {
        let path = track.key.segment_path(&self.root, number);
        let id = (track.key.clone(), number);
        let mut live = lock(&self.live);
        if let Some(segment) = live.get(&id).and_then(Weak::upgrade) {
            drop(live);
            metrics::counter!("svs_stream_cache_lookups_total", "found" => "memory").increment(1);
            lock(&self.disk).touch(&path);
            self.pool.request(&segment, priority, false);
            return segment;
        }
        let on_disk = lock(&self.disk).touch(&path);
        let phase = if on_disk {
            Phase::Loading
        } else {
            Phase::Waiting
        };
        let found = if on_disk { "disk" } else { "encoder" };
        metrics::counter!("svs_stream_cache_lookups_total", "found" => found).increment(1);
        let segment = Segment::new(track.clone(), number, phase);
        if live.len() > 1024 {
            live.retain(|_, s| s.strong_count() > 0);
        }
        live.insert(id, Arc::downgrade(&segment));
        drop(live);
        if on_disk {
            segment.raise(priority);
            self.load_in_background(segment.clone());
        } else {
            self.pool.request(&segment, priority, true);
        }
        segment
    }

    /// A viewer waits for a frame of `segment`: it is wanted now.
    fn urge(&self, segment: &Arc<Segment>) {
        self.pool.request(segment, Priority::Now, false);
    }

    /// After a failed load: the segment goes to an encoder instead.
    fn encode_instead(&self, segment: &Arc<Segment>) {
        segment.set_phase(Phase::Waiting);
        self.pool.request(segment, segment.priority(), true);
    }

    /// Forgets `segment` in the live map if that entry is this segment.
    fn forget(&self, segment: &Arc<Segment>) {
        let id = (segment.track.key.clone(), segment.number);
        let mut live = lock(&self.live);
        if live
            .get(&id)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(segment)))
        {
            live.remove(&id);
        }
    }

    /// Files of segments someone holds now: never evicted or removed.
    fn in_use(&self) -> HashSet<PathBuf> {
        lock(&self.live)
            .iter()
            .filter(|(_, s)| s.strong_count() > 0)
            .map(|((key, number), _)| key.segment_path(&self.root, *number))
            .collect()
    }

    /// Deletes least recently used segment files until the cache fits its cap (blocking).
    pub fn evict(&self) {
        let in_use = self.in_use();
        let mut disk = lock(&self.disk);
        let gone = disk.evict(self.options.max_bytes, &in_use);
        metrics::gauge!("svs_stream_cache_bytes").set(disk.total() as f64);
        metrics::counter!("svs_stream_cache_evicted_total").increment(gone.len() as u64);
        drop(disk);
        for path in &gone {
            let _ = std::fs::remove_file(path);
            if let Some(dir) = path.parent() {
                layout::remove_empty(dir);
            }
        }
        if !gone.is_empty() {
            tracing::debug!(segments = gone.len(), "evicted from the frame cache");
        }
    }

    /// Removes other versions of `key`'s rendition (an older source file or other settings)
    /// that nobody plays, once per version per run (blocking).
    fn remove_stale_versions(&self, key: &CacheKey) {
        let current = key.dir(&self.root);
        if !lock(&self.cleaned).insert(current) {
            return;
        }
        let in_use = self.in_use();
        for dir in layout::sibling_versions(&self.root, key) {
            if in_use.iter().any(|p| p.starts_with(&dir)) {
                lock(&self.cleaned).remove(&key.dir(&self.root));
                continue;
            }
            let _ = std::fs::remove_dir_all(&dir);
            lock(&self.disk).remove_under(&dir);
            tracing::info!(dir = %dir.display(), "removed the cache of an older version");
        }
    }

    /// Queues the first `segments` segments of every rendition of every video in both codecs
    /// (H.264 first: what new clients ask for) that are not cached yet, at the lowest priority,
    /// so most starts are warm. Progress goes to the log.
    pub fn prewarm(self: &Arc<Self>, library: &Library, segments: u64) {
        if segments == 0 {
            return;
        }
        let mut queued = 0u64;
        let videos = library.videos();
        for codec in [Codec::H264, Codec::Jpeg] {
            for (name, video) in &videos {
                for (rendition, source) in &video.renditions {
                    let track = self.track(name, *rendition, codec, source);
                    for number in 0..segments.min(track.segment_count()) {
                        let path = track.key.segment_path(&self.root, number);
                        let id = (track.key.clone(), number);
                        let held = lock(&self.live)
                            .get(&id)
                            .is_some_and(|s| s.strong_count() > 0);
                        if held || lock(&self.disk).touch(&path) {
                            continue;
                        }
                        // Queued and held by the pool alone until built.
                        drop(self.segment(&track, number, Priority::Warm));
                        queued += 1;
                    }
                }
            }
        }
        if queued > 0 {
            tracing::info!(segments = queued, "warming the frame cache");
            *lock(&self.warming) = Some(Progress::in_log(
                "warming the frame cache",
                queued,
                "segments",
            ));
        }
    }

    /// A warming segment was built.
    fn warmed(&self) {
        let mut warming = lock(&self.warming);
        let finished = warming.as_mut().is_some_and(|p| {
            p.advance(1);
            p.is_done()
        });
        if finished && let Some(progress) = warming.take() {
            progress.finish();
        }
    }
}

impl Drop for FrameCache {
    fn drop(&mut self) {
        self.pool.stop();
    }
}
