//! Which file holds a video's sound: a sound file beside the renditions (`<name>.wav`,
//! `<name>.m4a`, …) if there is one, else the sound track of a rendition file, highest first.
//! Probes are remembered by file tag, so a rescan reads only new or changed files.

use super::decode::{self, TrackInfo};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Extensions of sound files read beside the renditions, in order of preference.
pub(crate) const SIDECAR_EXTENSIONS: [&str; 7] = ["wav", "flac", "m4a", "mp3", "ogg", "mka", "aac"];

/// A video's sound track.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SoundTrack {
    /// The file holding it.
    pub(crate) path: PathBuf,
    /// The file's size and modification time (changes when the file does).
    pub(crate) tag: String,
    /// What the track is.
    pub(crate) info: TrackInfo,
}

impl SoundTrack {
    /// Names this version of the track in the sound cache.
    pub(crate) fn cache_key(&self) -> String {
        format!("{}@{}", self.path.display(), self.tag)
    }
}

/// Remembered probes: path → (tag, track or none).
#[derive(Debug, Default)]
pub(crate) struct SoundProbes(HashMap<PathBuf, (String, Option<TrackInfo>)>);

impl SoundProbes {
    /// The track in `path` (tagged `tag`), probing it only if it is new or changed. A file that
    /// cannot be read has no track (and is logged once per version).
    fn track(&mut self, path: &Path, tag: &str) -> Option<SoundTrack> {
        if let Some((known, info)) = self.0.get(path)
            && known == tag
        {
            return info.map(|info| SoundTrack {
                path: path.to_path_buf(),
                tag: tag.to_string(),
                info,
            });
        }
        let info = match decode::probe(path) {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping a sound track that cannot be read");
                None
            }
        };
        self.0.insert(path.to_path_buf(), (tag.to_string(), info));
        info.map(|info| SoundTrack {
            path: path.to_path_buf(),
            tag: tag.to_string(),
            info,
        })
    }

    /// Forgets files no longer in the library.
    pub(crate) fn keep_only(&mut self, present: &std::collections::HashSet<PathBuf>) {
        self.0.retain(|path, _| present.contains(path));
    }
}

/// The sound of one video: the first sidecar (`sidecars`: path and tag, in preference order)
/// with a track, else the first rendition file (`renditions`, highest first) with one.
pub(crate) fn find<'a>(
    probes: &mut SoundProbes,
    sidecars: impl IntoIterator<Item = (&'a Path, &'a str)>,
    renditions: impl IntoIterator<Item = (&'a Path, &'a str)>,
) -> Option<SoundTrack> {
    sidecars
        .into_iter()
        .chain(renditions)
        .find_map(|(path, tag)| probes.track(path, tag))
}
