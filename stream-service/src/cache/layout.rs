//! Where cached renditions live on disk: one directory per `CacheKey`,
//! `<cache>/<video>/<rendition>/<source tag>-q<quality>/` holding `frames` and `index`, so the
//! versions of one rendition are siblings and no name is ever parsed back out of a file name.

use crate::resolution::Rendition;
use std::path::{Path, PathBuf};

/// Which encoding of which source a cache entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub video: String,
    pub rendition: Rendition,
    /// Changes when the source file changes.
    pub source_tag: String,
    pub quality: i32,
}

impl CacheKey {
    /// `<cache>/<video>/<rendition>`: every version of this rendition lives below it.
    pub fn rendition_dir(&self, root: &Path) -> PathBuf {
        root.join(&self.video).join(self.rendition.label())
    }

    pub fn dir(&self, root: &Path) -> PathBuf {
        self.rendition_dir(root)
            .join(format!("{}-q{}", self.source_tag, self.quality))
    }

    pub fn frames_path(&self, root: &Path) -> PathBuf {
        self.dir(root).join("frames")
    }

    pub fn index_path(&self, root: &Path) -> PathBuf {
        self.dir(root).join("index")
    }
}

/// A version directory found on disk, with the bytes it holds and when it was last used.
pub struct OnDisk {
    pub dir: PathBuf,
    pub bytes: u64,
    pub modified: std::time::SystemTime,
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

/// Every version directory under `root` (three levels down).
pub fn versions(root: &Path) -> Vec<OnDisk> {
    let mut found = Vec::new();
    for video in subdirs(root) {
        for rendition in subdirs(&video) {
            for version in subdirs(&rendition) {
                let contents = files(&version);
                let bytes = contents.iter().map(|(_, m)| m.len()).sum();
                let modified = contents
                    .iter()
                    .filter(|(p, _)| p.file_name().is_some_and(|n| n == "frames"))
                    .find_map(|(_, m)| m.modified().ok())
                    .unwrap_or(std::time::UNIX_EPOCH);
                found.push(OnDisk {
                    dir: version,
                    bytes,
                    modified,
                });
            }
        }
    }
    found
}

/// Bytes of every regular file under `root`, temporary files of running builds included.
pub fn total_bytes(root: &Path) -> u64 {
    fn walk(dir: &Path, depth: usize) -> u64 {
        let here: u64 = files(dir).iter().map(|(_, m)| m.len()).sum();
        if depth == 0 {
            return here;
        }
        here + subdirs(dir).iter().map(|d| walk(d, depth - 1)).sum::<u64>()
    }
    walk(root, 3)
}

/// At start, before any build runs: removes what a killed build or an older layout left behind
/// (temporary files anywhere, files at the top level, version directories without an index).
/// Returns the bytes freed.
pub fn clean_leftovers(root: &Path) -> u64 {
    let mut freed = 0;
    let mut remove_file = |path: &Path, len: u64| {
        if std::fs::remove_file(path).is_ok() {
            freed += len;
        }
    };
    for (path, meta) in files(root) {
        remove_file(&path, meta.len());
    }
    for version in versions(root) {
        for (path, meta) in files(&version.dir) {
            if path.extension().is_some_and(|e| e == "tmp") {
                remove_file(&path, meta.len());
            }
        }
        if !version.dir.join("index").exists() {
            for (path, meta) in files(&version.dir) {
                remove_file(&path, meta.len());
            }
            let _ = std::fs::remove_dir(&version.dir);
        }
    }
    freed
}

/// Removes a version directory and, when they become empty, its rendition and video directories.
pub fn remove_version(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let rendition = dir.parent();
    if let Some(rendition) = rendition
        && std::fs::remove_dir(rendition).is_ok()
        && let Some(video) = rendition.parent()
    {
        let _ = std::fs::remove_dir(video);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(video: &str, tag: &str) -> CacheKey {
        CacheKey {
            video: video.into(),
            rendition: Rendition::P240,
            source_tag: tag.into(),
            quality: 80,
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
            key("a-b", "1-2").dir(root),
            Path::new("/c/a-b/240p/1-2-q80")
        );
    }

    #[test]
    fn leftovers_are_cleaned_and_complete_versions_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let done = key("a", "1").dir(root);
        let half = key("b", "1").dir(root);
        std::fs::create_dir_all(&done).unwrap();
        std::fs::create_dir_all(&half).unwrap();
        std::fs::write(done.join("frames"), b"xx").unwrap();
        std::fs::write(done.join("index"), b"i").unwrap();
        std::fs::write(done.join(".frames.1.0.tmp"), vec![0u8; 100]).unwrap();
        std::fs::write(half.join(".frames.9.0.tmp"), vec![0u8; 50]).unwrap();
        std::fs::write(root.join("demo_240p-x-q80.frames"), b"old").unwrap();
        assert_eq!(total_bytes(root), 2 + 1 + 100 + 50 + 3);
        assert_eq!(clean_leftovers(root), 153);
        assert!(done.join("frames").exists() && done.join("index").exists());
        assert!(!half.exists());
        assert_eq!(total_bytes(root), 3);
    }
}
