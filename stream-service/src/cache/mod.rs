//! The frame cache: each rendition of each source file is decoded and JPEG-encoded once, by one
//! blocking thread, into its own directory (`layout`). Viewers during the build read the frames
//! already written; later viewers get slices of one shared memory map (`frames`). An index with
//! a checksum per frame (`index`) is verified before a cached rendition is served, and a damaged
//! one is rebuilt. A changed source gets a new directory and the older versions are removed; past
//! the size cap the least recently used renditions are evicted. Everything here that touches the
//! disk runs on blocking threads.

mod build;
mod frames;
pub mod index;
pub mod layout;

pub use frames::Frames;
pub use layout::CacheKey;

use crate::Error;
use crate::library::Source;
use crate::media::Probe;
use crate::resolution::Rendition;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

/// All cached renditions.
pub struct FrameCache {
    root: PathBuf,
    max_bytes: u64,
    quality: i32,
    entries: Mutex<HashMap<CacheKey, Arc<Frames>>>,
    encodes: AtomicU64,
}

impl FrameCache {
    /// Opens the cache directory, removing what killed builds or an older layout left there.
    pub fn new(root: PathBuf, max_bytes: u64, quality: i32) -> Result<Self, Error> {
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::Cache(format!("creating {}: {e}", root.display())))?;
        let freed = layout::clean_leftovers(&root);
        if freed > 0 {
            tracing::info!(bytes = freed, dir = %root.display(), "removed unfinished or outdated cache files");
        }
        Ok(Self {
            root,
            max_bytes,
            quality,
            entries: Mutex::new(HashMap::new()),
            encodes: AtomicU64::new(0),
        })
    }

    /// How many renditions were encoded since start.
    pub fn encodes(&self) -> u64 {
        self.encodes.load(Ordering::Relaxed)
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<CacheKey, Arc<Frames>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, video: &str, rendition: Rendition, source: &Source) -> CacheKey {
        CacheKey {
            video: video.to_string(),
            rendition,
            source_tag: source.tag.clone(),
            quality: self.quality,
        }
    }

    /// The frames of a rendition: shared if someone has them open, loaded from disk (and
    /// verified) if built before, otherwise built now (the first viewer's call starts the one
    /// encoder).
    pub async fn open(
        self: &Arc<Self>,
        video: &str,
        rendition: Rendition,
        source: &Source,
    ) -> Arc<Frames> {
        let cache = self.clone();
        let key = self.key(video, rendition, source);
        let source = source.clone();
        let probe = source.probe;
        tokio::task::spawn_blocking(move || cache.open_blocking(key, source))
            .await
            .unwrap_or_else(|e| Frames::failed(probe, format!("opening the cache failed: {e}")))
    }

    fn open_blocking(self: &Arc<Self>, key: CacheKey, source: Source) -> Arc<Frames> {
        let mut entries = self.entries();
        if let Some(frames) = entries.get(&key) {
            frames.touch();
            return frames.clone();
        }
        let frames = match self.load(&key, source.probe) {
            Ok(frames) => frames,
            Err(reason) => {
                tracing::info!(video = %key.video, rendition = key.rendition.label(), %reason, "building the frame cache");
                self.build(key.clone(), source)
            }
        };
        entries.insert(key, frames.clone());
        frames
    }

    /// A complete, verified rendition from disk.
    fn load(&self, key: &CacheKey, probe: Probe) -> Result<Arc<Frames>, String> {
        let raw = std::fs::read(key.index_path(&self.root)).map_err(|_| "not cached yet")?;
        let frames_path = key.frames_path(&self.root);
        let map = build::map(&frames_path).map_err(|e| e.to_string())?;
        let checked = index::decode(&raw, map.len() as u64).and_then(|index| {
            match index::first_damaged(&index, &map) {
                Some(n) => Err(format!("frame {n} does not match its checksum")),
                None => Ok(index),
            }
        });
        let index = match checked {
            Ok(index) => index,
            Err(why) => {
                tracing::warn!(video = %key.video, rendition = key.rendition.label(), %why, "the cached rendition is damaged; rebuilding it");
                drop(map);
                layout::remove_version(&key.dir(&self.root));
                return Err(format!("damaged cache ({why})"));
            }
        };
        // The modification time orders eviction across restarts.
        let _ = std::fs::File::options()
            .append(true)
            .open(&frames_path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        let count = index.len() as u64;
        Ok(Frames::new(
            probe,
            frames::State::Ready {
                map: Arc::new(map),
                index,
            },
            frames::Progress {
                available: count,
                done: true,
                failed: None,
            },
        ))
    }

    fn build(self: &Arc<Self>, key: CacheKey, source: Source) -> Arc<Frames> {
        let build_number = self.encodes.fetch_add(1, Ordering::Relaxed);
        let (writer, reader, tmp_path) = match build::start(&self.root, &key, build_number) {
            Ok(started) => started,
            Err(e) => return Frames::failed(source.probe, e.to_string()),
        };
        let frames = Frames::new(
            source.probe,
            frames::State::Building {
                reader,
                index: Vec::new(),
            },
            frames::Progress::default(),
        );
        let cache = self.clone();
        let building = frames.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let encoded = build::encode(
                &building,
                &source.path,
                cache.quality,
                writer,
                &tmp_path,
                &cache.root,
                &key,
            );
            match encoded {
                Ok(count) => {
                    let secs = started.elapsed().as_secs_f64();
                    tracing::info!(video = %key.video, rendition = key.rendition.label(), frames = count,
                        fps = count as f64 / secs.max(1e-9), "frame cache built");
                    cache.remove_stale_versions(&key);
                    cache.evict(Some(&key));
                }
                Err(e) => {
                    tracing::warn!(video = %key.video, rendition = key.rendition.label(), error = %e, "frame cache build failed");
                    let _ = std::fs::remove_file(&tmp_path);
                    *building.state.write().unwrap_or_else(|p| p.into_inner()) =
                        frames::State::Failed;
                    building
                        .progress
                        .send_modify(|p| p.failed = Some(e.to_string()));
                    cache.entries().remove(&key);
                }
            }
        });
        frames
    }

    /// The key cached at `dir`, if it is open.
    fn key_at<'a>(
        &self,
        entries: &'a HashMap<CacheKey, Arc<Frames>>,
        dir: &Path,
    ) -> Option<(&'a CacheKey, &'a Arc<Frames>)> {
        entries.iter().find(|(k, _)| k.dir(&self.root) == dir)
    }

    /// Deletes other versions (older source files) of `key`'s rendition that nobody plays.
    fn remove_stale_versions(&self, key: &CacheKey) {
        let current = key.dir(&self.root);
        let Ok(siblings) = std::fs::read_dir(key.rendition_dir(&self.root)) else {
            return;
        };
        let mut entries = self.entries();
        for dir in siblings.flatten().map(|e| e.path()) {
            if dir == current {
                continue;
            }
            let open = self
                .key_at(&entries, &dir)
                .map(|(k, f)| (k.clone(), f.clone()));
            match open {
                // Held by the map, this loop, and a viewer: leave it for that viewer.
                Some((_, frames)) if Arc::strong_count(&frames) > 2 => continue,
                Some((stale, _)) => {
                    entries.remove(&stale);
                }
                None => {}
            }
            layout::remove_version(&dir);
        }
    }

    /// Removes least recently used renditions until everything under the cache directory
    /// (temporary files of running builds included) fits the cap. Renditions being played or
    /// built stay, and so does `keep` (the one just built).
    pub fn evict(&self, keep: Option<&CacheKey>) {
        let mut total = layout::total_bytes(&self.root);
        if total <= self.max_bytes {
            return;
        }
        let mut entries = self.entries();
        let mut versions = layout::versions(&self.root);
        let last_used = |v: &layout::OnDisk| -> SystemTime {
            self.key_at(&entries, &v.dir)
                .map(|(_, f)| SystemTime::now() - f.idle_for())
                .unwrap_or(v.modified)
        };
        versions.sort_by_cached_key(last_used);
        for version in versions {
            if total <= self.max_bytes {
                break;
            }
            let open = self
                .key_at(&entries, &version.dir)
                .map(|(k, f)| (k.clone(), Arc::strong_count(f) > 1 || f.is_building()));
            if keep.is_some_and(|k| k.dir(&self.root) == version.dir) {
                continue;
            }
            match open {
                Some((_, true)) => continue,
                Some((key, false)) => {
                    entries.remove(&key);
                }
                None => {}
            }
            layout::remove_version(&version.dir);
            total = total.saturating_sub(version.bytes);
            tracing::info!(dir = %version.dir.display(), "evicted from the frame cache");
        }
    }
}
