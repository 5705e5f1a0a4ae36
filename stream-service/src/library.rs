//! The video library: which `<name>_<rendition>.mp4` files exist in the videos directory, what
//! each holds, and a fingerprint of each file so changed sources are noticed.

use crate::media::{self, Probe};
use crate::resolution::Rendition;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::UNIX_EPOCH;
use svs_common::proto::stream::{self as pb};

/// One rendition file.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub path: PathBuf,
    /// Changes when the file changes (size and modification time).
    pub tag: String,
    pub probe: Probe,
}

/// A video and the renditions it has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Video {
    pub renditions: BTreeMap<Rendition, Source>,
}

impl Video {
    pub fn available(&self) -> String {
        self.renditions
            .keys()
            .map(|r| r.label())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The scanned library.
#[derive(Debug)]
pub struct Library {
    dir: PathBuf,
    videos: RwLock<BTreeMap<String, Video>>,
}

/// Size and modification time of a regular file (symlinks followed); `None` for anything else
/// (a FIFO, a device, a directory), which is never opened.
fn file_tag(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let modified = meta
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{:x}-{:x}", meta.len(), modified))
}

/// Splits `demo_720p.mp4` into ("demo", 720p).
pub(crate) fn parse_file_name(file: &str) -> Option<(&str, Rendition)> {
    let stem = file.strip_suffix(".mp4")?;
    let (name, label) = stem.rsplit_once('_')?;
    if name.is_empty() || name.starts_with('.') {
        return None;
    }
    Some((name, Rendition::from_label(label)?))
}

impl Library {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            videos: RwLock::new(BTreeMap::new()),
        }
    }

    /// Rescans the directory (blocking: probes new or changed files with OpenCV). Files OpenCV
    /// cannot open are logged and skipped. Returns whether anything changed.
    pub fn rescan(&self) -> bool {
        let previous = self.videos.read().expect("library lock").clone();
        let mut next: BTreeMap<String, Video> = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the videos directory");
                return false;
            }
        };
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some((name, rendition)) = file.to_str().and_then(parse_file_name) else {
                continue;
            };
            let path = entry.path();
            let Some(tag) = file_tag(&path) else {
                tracing::debug!(file = %path.display(), "skipping something that is not a regular file");
                continue;
            };
            let known = previous
                .get(name)
                .and_then(|v| v.renditions.get(&rendition))
                .filter(|s| s.tag == tag)
                .cloned();
            let source = match known {
                Some(source) => source,
                None => match media::probe(&path) {
                    Ok(probe) => Source { path, tag, probe },
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "skipping a file OpenCV cannot read");
                        continue;
                    }
                },
            };
            next.entry(name.to_string())
                .or_default()
                .renditions
                .insert(rendition, source);
        }
        let changed = next != previous;
        if changed {
            tracing::info!(videos = next.len(), "video library updated");
            *self.videos.write().expect("library lock") = next;
        }
        changed
    }

    /// Every video (a copy).
    pub fn videos(&self) -> BTreeMap<String, Video> {
        self.videos
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn get(&self, name: &str) -> Option<Video> {
        self.videos.read().expect("library lock").get(name).cloned()
    }

    /// The library as ListVideos reports it.
    pub fn list(&self) -> Vec<pb::Video> {
        self.videos
            .read()
            .expect("library lock")
            .iter()
            .map(|(name, video)| pb::Video {
                name: name.clone(),
                renditions: video
                    .renditions
                    .iter()
                    .map(|(r, s)| pb::Rendition {
                        resolution: r.wire() as i32,
                        width: s.probe.width,
                        height: s.probe.height,
                        fps: s.probe.fps,
                        frame_count: s.probe.frame_count,
                        duration_seconds: s.probe.frame_count as f64 / s.probe.fps,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Up to `n` video names closest to `wanted` (edit distance, then name), and how many videos
    /// there are in all.
    pub fn closest(&self, wanted: &str, n: usize) -> (Vec<String>, usize) {
        let videos = self.videos.read().unwrap_or_else(|p| p.into_inner());
        let wanted: String = wanted.chars().take(256).collect();
        let mut scored: Vec<(usize, &String)> = videos
            .keys()
            .map(|name| (strsim::levenshtein(&wanted, name), name))
            .collect();
        scored.sort();
        let closest = scored
            .into_iter()
            .take(n)
            .map(|(_, name)| name.clone())
            .collect();
        (closest, videos.len())
    }

    pub fn is_empty(&self) -> bool {
        self.videos.read().expect("library lock").is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(
            parse_file_name("demo_720p.mp4"),
            Some(("demo", Rendition::P720))
        );
        assert_eq!(
            parse_file_name("my_talk_1440p.mp4"),
            Some(("my_talk", Rendition::P1440))
        );
        assert_eq!(parse_file_name("demo_480p.mp4"), None);
        assert_eq!(parse_file_name("demo.mp4"), None);
        assert_eq!(parse_file_name(".demo_240p.tmp.mp4"), None);
    }
}
