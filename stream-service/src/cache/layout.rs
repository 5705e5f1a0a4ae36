//! Where cached segments live on disk: one directory per `CacheKey`,
//! `<cache>/<video>/<rendition><codec>/<source tag>-<encoding>-f<frames per segment>/<n>.seg`
//! (`demo/720p/…-q80-f60` for JPEG, `demo/720p-h264/…-h264qp28g30-f60` for H.264), so the
//! versions of one rendition in one codec are siblings and no name is ever parsed back out of a
//! file name.

use crate::encoder::Encoding;
use crate::resolution::Rendition;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Which encoding of which source a set of segments holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub video: String,
    pub rendition: Rendition,
    /// Changes when the source file changes.
    pub source_tag: String,
    pub encoding: Encoding,
    pub frames_per_segment: u64,
}

impl CacheKey {
    /// `<cache>/<video>/<rendition><codec>`: every version of this rendition in this codec
    /// lives below it.
    pub(crate) fn rendition_dir(&self, root: &Path) -> PathBuf {
        root.join(&self.video).join(format!(
            "{}{}",
            self.rendition.label(),
            self.encoding.dir_suffix()
        ))
    }

    pub(crate) fn dir(&self, root: &Path) -> PathBuf {
        self.rendition_dir(root).join(format!(
            "{}-{}-f{}",
            self.source_tag,
            self.encoding.label(),
            self.frames_per_segment
        ))
    }

    pub(crate) fn segment_path(&self, root: &Path, number: u64) -> PathBuf {
        self.dir(root).join(format!("{number}.seg"))
    }
}

/// A segment file found on disk.
#[derive(Debug)]
pub(crate) struct OnDisk {
    pub path: PathBuf,
    pub bytes: u64,
    pub modified: SystemTime,
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn files(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| Some((e.path(), e.metadata().ok()?)))
                .filter(|(_, m)| m.is_file())
                .collect()
        })
        .unwrap_or_default()
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "seg")
}

/// Every version directory under `root` (three levels down).
fn version_dirs(root: &Path) -> Vec<PathBuf> {
    subdirs(root)
        .iter()
        .flat_map(|video| subdirs(video))
        .flat_map(|rendition| subdirs(&rendition))
        .collect()
}

/// Every segment file under `root`.
pub(crate) fn segment_files(root: &Path) -> Vec<OnDisk> {
    version_dirs(root)
        .iter()
        .flat_map(|dir| files(dir))
        .filter(|(path, _)| is_segment(path))
        .map(|(path, meta)| OnDisk {
            path,
            bytes: meta.len(),
            modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        })
        .collect()
}

/// At start, before any build runs: removes what killed builds or an older layout left behind
/// (files at the top level, anything in a version directory that is not a segment, empty
/// directories). Returns the bytes freed.
pub(crate) fn clean_leftovers(root: &Path) -> u64 {
    let mut freed = 0;
    let mut remove_file = |path: &Path, len: u64| {
        if std::fs::remove_file(path).is_ok() {
            freed += len;
        }
    };
    for (path, meta) in files(root) {
        remove_file(&path, meta.len());
    }
    for dir in version_dirs(root) {
        for (path, meta) in files(&dir) {
            if !is_segment(&path) {
                remove_file(&path, meta.len());
            }
        }
        remove_empty(&dir);
    }
    freed
}

/// Removes `dir` and then its rendition and video directories, each only if empty.
pub(crate) fn remove_empty(dir: &Path) {
    let mut at = Some(dir);
    for _ in 0..3 {
        match at {
            Some(d) if std::fs::remove_dir(d).is_ok() => at = d.parent(),
            _ => return,
        }
    }
}

/// The other versions of `key`'s rendition (older source files or settings).
pub(crate) fn sibling_versions(root: &Path, key: &CacheKey) -> Vec<PathBuf> {
    let current = key.dir(root);
    subdirs(&key.rendition_dir(root))
        .into_iter()
        .filter(|d| *d != current)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(video: &str, tag: &str) -> CacheKey {
        CacheKey {
            video: video.into(),
            rendition: Rendition::P240,
            source_tag: tag.into(),
            encoding: Encoding::Jpeg { quality: 80 },
            frames_per_segment: 60,
        }
    }

    #[test]
    fn names_with_dashes_keep_their_own_directories() {
        let root = Path::new("/c");
        assert_ne!(
            key("a-b", "1-2").rendition_dir(root),
            key("a-c", "1-2").rendition_dir(root)
        );
        assert_eq!(
            key("a-b", "1-2").segment_path(root, 7),
            Path::new("/c/a-b/240p/1-2-q80-f60/7.seg")
        );
        let h264 = CacheKey {
            encoding: Encoding::H264 {
                qp: 28,
                flat_qp: 24,
                gop: 30,
            },
            ..key("a-b", "1-2")
        };
        assert_eq!(
            h264.segment_path(root, 7),
            Path::new("/c/a-b/240p-h264/1-2-h264qp28f24g30-f60/7.seg")
        );
    }

    #[test]
    fn leftovers_are_cleaned_and_segments_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let done = key("a", "1").dir(root);
        let old = key("b", "1").dir(root);
        std::fs::create_dir_all(&done).unwrap();
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(done.join("0.seg"), b"xx").unwrap();
        std::fs::write(done.join(".1.seg.9.0.tmp"), vec![0u8; 100]).unwrap();
        // An older layout: one frames file and an index.
        std::fs::write(old.join("frames"), vec![0u8; 50]).unwrap();
        std::fs::write(old.join("index"), b"i").unwrap();
        std::fs::write(root.join("demo_240p-x-q80.frames"), b"old").unwrap();
        assert_eq!(clean_leftovers(root), 100 + 50 + 1 + 3);
        assert!(done.join("0.seg").exists());
        assert!(!old.exists() && !root.join("b").exists(), "empty dirs go");
        let left: Vec<_> = segment_files(root).into_iter().map(|f| f.path).collect();
        assert_eq!(left, [done.join("0.seg")]);
    }
}
