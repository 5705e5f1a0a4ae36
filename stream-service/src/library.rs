//! The video library: which `<name>_<rendition>.mp4` files exist in the videos directory, what
//! each holds, where each video's sound is (`audio::find`), and a fingerprint of each file so
//! changed sources are noticed.

use crate::audio::{self, SoundProbes, SoundTrack};
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
    /// The sound, if the video has any.
    pub(crate) audio: Option<SoundTrack>,
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
    sound_probes: std::sync::Mutex<SoundProbes>,
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

/// Splits `demo.wav` into ("demo", its place in `SIDECAR_EXTENSIONS`).
pub(crate) fn parse_sound_file_name(file: &str) -> Option<(&str, usize)> {
    let (name, extension) = file.rsplit_once('.')?;
    if name.is_empty() || name.starts_with('.') {
        return None;
    }
    let preference = audio::SIDECAR_EXTENSIONS
        .iter()
        .position(|e| e.eq_ignore_ascii_case(extension))?;
    Some((name, preference))
}

impl Library {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            videos: RwLock::new(BTreeMap::new()),
            sound_probes: std::sync::Mutex::new(SoundProbes::default()),
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
        // Sound files beside the renditions: (video name, preference) → (path, tag).
        let mut sidecars: BTreeMap<(String, usize), (PathBuf, String)> = BTreeMap::new();
        for entry in entries.flatten() {
            let file = entry.file_name();
            if let Some((name, preference)) = file.to_str().and_then(parse_sound_file_name)
                && let Some(tag) = file_tag(&entry.path())
            {
                sidecars.insert((name.to_string(), preference), (entry.path(), tag));
                continue;
            }
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
        self.find_sound(&mut next, &sidecars);
        let changed = next != previous;
        if changed {
            tracing::info!(videos = next.len(), "video library updated");
            *self.videos.write().expect("library lock") = next;
        }
        changed
    }

    /// Sets each video's sound: its first sound file with a track, else a rendition's track
    /// (highest first). Probes only new or changed files.
    fn find_sound(
        &self,
        videos: &mut BTreeMap<String, Video>,
        sidecars: &BTreeMap<(String, usize), (PathBuf, String)>,
    ) {
        let mut probes = self.sound_probes.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = std::collections::HashSet::new();
        for (name, video) in videos.iter_mut() {
            let beside: Vec<_> = sidecars
                .range((name.clone(), 0)..(name.clone(), usize::MAX))
                .map(|(_, (path, tag))| (path.as_path(), tag.as_str()))
                .collect();
            let inside: Vec<_> = video
                .renditions
                .values()
                .rev()
                .map(|s| (s.path.as_path(), s.tag.as_str()))
                .collect();
            present.extend(beside.iter().chain(&inside).map(|(p, _)| p.to_path_buf()));
            video.audio = audio::find(&mut probes, beside, inside);
        }
        probes.keep_only(&present);
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
                has_audio: video.audio.is_some(),
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

    #[test]
    fn sound_file_names() {
        assert_eq!(parse_sound_file_name("demo.wav"), Some(("demo", 0)));
        assert_eq!(parse_sound_file_name("my.talk.M4A"), Some(("my.talk", 2)));
        assert_eq!(parse_sound_file_name("demo_720p.mp4"), None);
        assert_eq!(parse_sound_file_name(".demo.wav"), None);
        assert_eq!(parse_sound_file_name("demo.txt"), None);
    }
}
