//! Encoding one rendition into the cache, on a blocking thread: JPEG frames appended to a
//! temporary file that viewers already read from, then the file and its checksummed index put in
//! place by rename (index last, so an index always describes a complete frames file).

use super::frames::{Frames, State};
use super::index::{self, Entry};
use super::layout::CacheKey;
use crate::Error;
use crate::media::JpegFrames;
use memmap2::Mmap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

fn cache_err(context: &str, path: &Path) -> impl Fn(std::io::Error) -> Error {
    let text = format!("{context} {}", path.display());
    move |e| Error::Cache(format!("{text}: {e}"))
}

/// Maps a complete frames file read-only.
pub(super) fn map(path: &Path) -> Result<Mmap, Error> {
    let file = File::open(path).map_err(cache_err("opening", path))?;
    // SAFETY: the cache directory belongs to this service; a frames file is complete before it
    // gets its final name and is never written again (a new version gets a new directory), so
    // the mapped bytes do not change while mapped. Its checksums are verified before use.
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(&file) }.map_err(cache_err("mapping", path))?;
    Ok(map)
}

/// Creates the temporary frames file of a build and a reader on it for viewers.
pub(super) fn start(
    root: &Path,
    key: &CacheKey,
    build: u64,
) -> Result<(File, File, std::path::PathBuf), Error> {
    let dir = key.dir(root);
    std::fs::create_dir_all(&dir).map_err(cache_err("creating", &dir))?;
    // Each build writes its own temporary file: a rebuild never touches another's.
    let tmp = dir.join(format!(".frames.{}.{build}.tmp", std::process::id()));
    let writer = File::create(&tmp).map_err(cache_err("creating", &tmp))?;
    let reader = File::open(&tmp).map_err(cache_err("opening", &tmp))?;
    Ok((writer, reader, tmp))
}

/// Encodes every frame of `source`, publishing each to viewers as it is written, and leaves the
/// finished rendition mapped in `frames`. Returns the frame count.
pub(super) fn encode(
    frames: &Arc<Frames>,
    source: &Path,
    quality: i32,
    mut writer: File,
    tmp_path: &Path,
    root: &Path,
    key: &CacheKey,
) -> Result<u64, Error> {
    let mut jpegs = JpegFrames::open(source, quality)?;
    let mut entries: Vec<Entry> = Vec::new();
    while let Some(jpeg) = jpegs.next_jpeg()? {
        writer
            .write_all(&jpeg)
            .map_err(cache_err("writing", tmp_path))?;
        let entry = index::next_entry(entries.last(), &jpeg);
        entries.push(entry);
        if let State::Building { index, .. } =
            &mut *frames.state.write().unwrap_or_else(|p| p.into_inner())
        {
            index.push(entry);
        }
        frames.progress.send_modify(|p| p.available += 1);
    }
    writer.sync_all().map_err(cache_err("syncing", tmp_path))?;
    let frames_path = key.frames_path(root);
    std::fs::rename(tmp_path, &frames_path).map_err(cache_err("renaming", tmp_path))?;
    let index_path = key.index_path(root);
    let tmp_index = index_path.with_extension("tmp");
    let mut index_file = File::create(&tmp_index).map_err(cache_err("creating", &tmp_index))?;
    index_file
        .write_all(&index::encode(&entries))
        .and_then(|_| index_file.sync_all())
        .map_err(cache_err("writing", &tmp_index))?;
    std::fs::rename(&tmp_index, &index_path).map_err(cache_err("renaming", &tmp_index))?;
    let map = map(&frames_path)?;
    let count = entries.len() as u64;
    *frames.state.write().unwrap_or_else(|p| p.into_inner()) = State::Ready {
        map: Arc::new(map),
        index: entries,
    };
    frames.progress.send_modify(|p| p.done = true);
    Ok(count)
}
