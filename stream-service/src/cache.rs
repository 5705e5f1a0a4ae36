//! The frame cache: each rendition is decoded and JPEG-encoded once, by one blocking thread,
//! into `<cache-dir>/<stem>.frames` with an index `<stem>.idx`. Viewers during the build read the
//! frames already written; later viewers get slices of one shared memory map (no decode, no
//! encode, no copy). A changed source has a new stem and is rebuilt; past the size cap the
//! least recently used renditions are evicted.

use crate::Error;
use crate::library::Source;
use crate::media::{JpegFrames, Probe};
use crate::resolution::Rendition;
use bytes::Bytes;
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};
use tokio::sync::watch;

const INDEX_MAGIC: &[u8; 8] = b"SVSIDX1\n";

/// Build progress, watched by viewers waiting for frames.
#[derive(Debug, Clone, Default)]
struct Progress {
    available: u64,
    done: bool,
    failed: Option<String>,
}

enum State {
    /// Frames are being appended to the file; `index` says where each one is.
    Building {
        reader: File,
        index: Vec<(u64, u32)>,
    },
    /// The complete file, mapped once and shared by every viewer.
    Ready {
        map: Arc<Mmap>,
        index: Vec<(u64, u32)>,
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
        &self.map[self.start..self.end]
    }
}

/// The frames of one rendition of one source file.
pub struct Frames {
    pub probe: Probe,
    state: RwLock<State>,
    progress: watch::Sender<Progress>,
    last_used: Mutex<Instant>,
}

impl Frames {
    fn new(probe: Probe, state: State, progress: Progress) -> Arc<Self> {
        Arc::new(Self {
            probe,
            state: RwLock::new(state),
            progress: watch::Sender::new(progress),
            last_used: Mutex::new(Instant::now()),
        })
    }

    fn get(&self, index: u64) -> Result<Option<Bytes>, Error> {
        let index = index as usize;
        match &*self.state.read().expect("frames lock") {
            State::Ready { map, index: idx } => Ok(idx.get(index).map(|&(offset, len)| {
                Bytes::from_owner(MapSlice {
                    map: map.clone(),
                    start: offset as usize,
                    end: offset as usize + len as usize,
                })
            })),
            State::Building { reader, index: idx } => match idx.get(index) {
                Some(&(offset, len)) => {
                    let mut buf = vec![0u8; len as usize];
                    reader
                        .read_exact_at(&mut buf, offset)
                        .map_err(|e| Error::Cache(format!("reading a cached frame: {e}")))?;
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

    fn is_building(&self) -> bool {
        matches!(
            *self.state.read().expect("frames lock"),
            State::Building { .. }
        )
    }
}

/// All cached renditions.
pub struct FrameCache {
    dir: PathBuf,
    max_bytes: u64,
    quality: i32,
    entries: Mutex<HashMap<String, Arc<Frames>>>,
    encodes: AtomicU64,
}

fn cache_err(context: &str, path: &Path) -> impl Fn(std::io::Error) -> Error {
    let text = format!("{context} {}", path.display());
    move |e| Error::Cache(format!("{text}: {e}"))
}

impl FrameCache {
    pub fn new(dir: PathBuf, max_bytes: u64, quality: i32) -> Result<Self, Error> {
        std::fs::create_dir_all(&dir).map_err(cache_err("creating", &dir))?;
        Ok(Self {
            dir,
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

    fn stem(&self, video: &str, rendition: Rendition, source: &Source) -> String {
        format!(
            "{video}_{}-{}-q{}",
            rendition.label(),
            source.tag,
            self.quality
        )
    }

    /// The frames of a rendition: shared if someone has them open, loaded from disk if built
    /// before, otherwise built now (the first viewer's call starts the one encoder).
    pub fn open(
        self: &Arc<Self>,
        video: &str,
        rendition: Rendition,
        source: &Source,
    ) -> Arc<Frames> {
        let stem = self.stem(video, rendition, source);
        let mut entries = self.entries.lock().expect("cache lock");
        if let Some(frames) = entries.get(&stem) {
            *frames.last_used.lock().expect("frames lock") = Instant::now();
            return frames.clone();
        }
        let frames = match self.load(&stem, source.probe) {
            Ok(frames) => frames,
            Err(reason) => {
                tracing::info!(%stem, %reason, "building the frame cache");
                self.build(stem.clone(), source.clone())
            }
        };
        entries.insert(stem, frames.clone());
        frames
    }

    fn paths(&self, stem: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{stem}.frames")),
            self.dir.join(format!("{stem}.idx")),
        )
    }

    fn load(&self, stem: &str, probe: Probe) -> Result<Arc<Frames>, String> {
        let (frames_path, index_path) = self.paths(stem);
        let raw = std::fs::read(&index_path).map_err(|_| "not cached yet".to_string())?;
        let index = decode_index(&raw).ok_or("index unreadable")?;
        let file = File::open(&frames_path).map_err(|e| e.to_string())?;
        // The cache directory belongs to this service; nothing else writes these files.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| e.to_string())?;
        let end = index.last().map(|&(o, l)| o + l as u64).unwrap_or(0);
        if end != map.len() as u64 {
            return Err("frames file does not match its index".into());
        }
        let count = index.len() as u64;
        let _ = filetime_touch(&frames_path);
        Ok(Frames::new(
            probe,
            State::Ready {
                map: Arc::new(map),
                index,
            },
            Progress {
                available: count,
                done: true,
                failed: None,
            },
        ))
    }

    fn build(self: &Arc<Self>, stem: String, source: Source) -> Arc<Frames> {
        let build_number = self.encodes.fetch_add(1, Ordering::Relaxed);
        let (frames_path, index_path) = self.paths(&stem);
        // Each build writes its own temporary file: a rebuild never touches another's.
        let tmp_path = self.dir.join(format!(
            ".{stem}.{}.{build_number}.frames.tmp",
            std::process::id()
        ));
        let created = File::create(&tmp_path).and_then(|w| Ok((w, File::open(&tmp_path)?)));
        let (writer, reader) = match created {
            Ok(pair) => pair,
            Err(e) => {
                let why = format!("cannot create {}: {e}", tmp_path.display());
                return Frames::new(
                    source.probe,
                    State::Failed,
                    Progress {
                        failed: Some(why),
                        ..Default::default()
                    },
                );
            }
        };
        let frames = Frames::new(
            source.probe,
            State::Building {
                reader,
                index: Vec::new(),
            },
            Progress::default(),
        );
        let cache = self.clone();
        let building = frames.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            match encode(
                &building,
                &source.path,
                cache.quality,
                writer,
                &tmp_path,
                &frames_path,
                &index_path,
            ) {
                Ok(count) => {
                    let secs = started.elapsed().as_secs_f64();
                    tracing::info!(%stem, frames = count, fps = count as f64 / secs.max(1e-9), "frame cache built");
                    cache.remove_stale_versions(&stem);
                    cache.evict(Some(&stem));
                }
                Err(e) => {
                    tracing::warn!(%stem, error = %e, "frame cache build failed");
                    let _ = std::fs::remove_file(&tmp_path);
                    *building.state.write().expect("frames lock") = State::Failed;
                    building
                        .progress
                        .send_modify(|p| p.failed = Some(e.to_string()));
                    cache.entries.lock().expect("cache lock").remove(&stem);
                }
            }
        });
        frames
    }

    /// Deletes other versions (older source files) of the rendition `stem` belongs to.
    fn remove_stale_versions(&self, stem: &str) {
        let Some((prefix, _)) = stem.split_once('-') else {
            return;
        };
        let mut entries = self.entries.lock().expect("cache lock");
        for (other, _) in self.cached_files() {
            if other != stem && other.split_once('-').map(|(p, _)| p) == Some(prefix) {
                let in_use = entries
                    .get(&other)
                    .is_some_and(|f| Arc::strong_count(f) > 1);
                if !in_use {
                    entries.remove(&other);
                    self.delete(&other);
                }
            }
        }
    }

    fn cached_files(&self) -> Vec<(String, std::fs::Metadata)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        dir.flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".frames")?.to_string();
                Some((stem, e.metadata().ok()?))
            })
            .collect()
    }

    fn delete(&self, stem: &str) {
        let (frames, index) = self.paths(stem);
        let _ = std::fs::remove_file(index);
        let _ = std::fs::remove_file(frames);
    }

    /// Removes least recently used renditions until the cache fits its cap. Renditions being
    /// played or built stay, and so does `keep` (the one just built).
    pub fn evict(&self, keep: Option<&str>) {
        let mut files = self.cached_files();
        let mut total: u64 = files.iter().map(|(_, m)| m.len()).sum();
        if total <= self.max_bytes {
            return;
        }
        let mut entries = self.entries.lock().expect("cache lock");
        let last_used = |stem: &str, meta: &std::fs::Metadata| -> SystemTime {
            entries
                .get(stem)
                .map(|f| {
                    let ago = f.last_used.lock().expect("frames lock").elapsed();
                    SystemTime::now() - ago
                })
                .or_else(|| meta.modified().ok())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        files.sort_by_key(|(stem, meta)| last_used(stem, meta));
        for (stem, meta) in files {
            if total <= self.max_bytes {
                break;
            }
            let busy = keep == Some(stem.as_str())
                || entries
                    .get(&stem)
                    .is_some_and(|f| Arc::strong_count(f) > 1 || f.is_building());
            if busy {
                continue;
            }
            entries.remove(&stem);
            self.delete(&stem);
            total = total.saturating_sub(meta.len());
            tracing::info!(%stem, "evicted from the frame cache");
        }
    }
}

fn encode(
    frames: &Frames,
    source: &Path,
    quality: i32,
    mut writer: File,
    tmp_path: &Path,
    frames_path: &Path,
    index_path: &Path,
) -> Result<u64, Error> {
    let mut jpegs = JpegFrames::open(source, quality)?;
    let mut offset = 0u64;
    let mut index = Vec::new();
    while let Some(jpeg) = jpegs.next_jpeg()? {
        writer
            .write_all(&jpeg)
            .map_err(cache_err("writing", tmp_path))?;
        let entry = (offset, jpeg.len() as u32);
        offset += jpeg.len() as u64;
        index.push(entry);
        if let State::Building { index: shared, .. } =
            &mut *frames.state.write().expect("frames lock")
        {
            shared.push(entry);
        }
        frames.progress.send_modify(|p| p.available += 1);
    }
    writer.sync_all().map_err(cache_err("syncing", tmp_path))?;
    std::fs::rename(tmp_path, frames_path).map_err(cache_err("renaming", tmp_path))?;
    let tmp_index = index_path.with_extension("idx.tmp");
    std::fs::write(&tmp_index, encode_index(&index)).map_err(cache_err("writing", &tmp_index))?;
    std::fs::rename(&tmp_index, index_path).map_err(cache_err("renaming", &tmp_index))?;
    let file = File::open(frames_path).map_err(cache_err("opening", frames_path))?;
    // The cache directory belongs to this service; nothing else writes these files.
    let map = unsafe { Mmap::map(&file) }.map_err(cache_err("mapping", frames_path))?;
    let count = index.len() as u64;
    *frames.state.write().expect("frames lock") = State::Ready {
        map: Arc::new(map),
        index,
    };
    frames.progress.send_modify(|p| p.done = true);
    Ok(count)
}

/// `magic(8) | u64 count | count × (u64 offset | u32 length)`, big-endian.
fn encode_index(index: &[(u64, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + index.len() * 12);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&(index.len() as u64).to_be_bytes());
    for (offset, len) in index {
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
    }
    out
}

fn decode_index(raw: &[u8]) -> Option<Vec<(u64, u32)>> {
    let rest = raw.strip_prefix(INDEX_MAGIC)?;
    let count = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize;
    let body = &rest[8..];
    if body.len() != count * 12 {
        return None;
    }
    Some(
        body.chunks_exact(12)
            .map(|c| {
                (
                    u64::from_be_bytes(c[..8].try_into().expect("8 bytes")),
                    u32::from_be_bytes(c[8..].try_into().expect("4 bytes")),
                )
            })
            .collect(),
    )
}

/// Marks a cache file as used now (its modification time orders eviction across restarts).
fn filetime_touch(path: &Path) -> std::io::Result<()> {
    File::options()
        .append(true)
        .open(path)?
        .set_modified(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trip() {
        let index = vec![(0, 10), (10, 2000), (2010, 7)];
        assert_eq!(decode_index(&encode_index(&index)), Some(index));
        assert_eq!(decode_index(b"garbage"), None);
    }
}
