//! What the cache holds on disk: the size and last use of every segment file, their total, and
//! which files to evict (least recently used first) to fit the cap.

use super::layout;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

struct FileUse {
    bytes: u64,
    /// Nanoseconds since the epoch; from the file's modification time after a restart.
    last_used: u128,
}

#[derive(Default)]
pub(super) struct DiskUse {
    files: HashMap<PathBuf, FileUse>,
    total: u64,
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

impl DiskUse {
    /// What is under `root` now (blocking: walks the directory).
    pub(super) fn scan(root: &Path) -> Self {
        let mut usage = Self::default();
        for file in layout::segment_files(root) {
            usage.total += file.bytes;
            usage.files.insert(
                file.path,
                FileUse {
                    bytes: file.bytes,
                    last_used: nanos(file.modified),
                },
            );
        }
        usage
    }

    pub(super) fn total(&self) -> u64 {
        self.total
    }

    pub(super) fn files(&self) -> usize {
        self.files.len()
    }

    pub(super) fn add(&mut self, path: PathBuf, bytes: u64) {
        self.remove(&path);
        self.total += bytes;
        self.files.insert(
            path,
            FileUse {
                bytes,
                last_used: nanos(SystemTime::now()),
            },
        );
    }

    /// Marks `path` used now; false if it is not on disk.
    pub(super) fn touch(&mut self, path: &Path) -> bool {
        match self.files.get_mut(path) {
            Some(file) => {
                file.last_used = nanos(SystemTime::now());
                true
            }
            None => false,
        }
    }

    pub(super) fn remove(&mut self, path: &Path) {
        if let Some(file) = self.files.remove(path) {
            self.total -= file.bytes;
        }
    }

    /// Forgets every file under `dir`.
    pub(super) fn remove_under(&mut self, dir: &Path) {
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        for path in gone {
            self.remove(&path);
        }
    }

    /// Chooses files to delete, least recently used first and never one in `in_use`, until the
    /// rest fit `max_bytes`; forgets them and returns their paths.
    pub(super) fn evict(&mut self, max_bytes: u64, in_use: &HashSet<PathBuf>) -> Vec<PathBuf> {
        if self.total <= max_bytes {
            return Vec::new();
        }
        let mut candidates: Vec<(u128, &PathBuf)> = self
            .files
            .iter()
            .filter(|(path, _)| !in_use.contains(*path))
            .map(|(path, file)| (file.last_used, path))
            .collect();
        candidates.sort();
        let mut over = self.total - max_bytes;
        let mut chosen = Vec::new();
        for (_, path) in candidates {
            if over == 0 {
                break;
            }
            over = over.saturating_sub(self.files[path].bytes);
            chosen.push(path.clone());
        }
        for path in &chosen {
            self.remove(path);
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_first_and_skips_files_in_use() {
        let mut usage = DiskUse::default();
        for (name, bytes) in [("a", 10), ("b", 20), ("c", 30), ("d", 40)] {
            usage.add(PathBuf::from(name), bytes);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(usage.touch(Path::new("a")), "a is now the most recent");
        assert!(!usage.touch(Path::new("zz")));
        let in_use: HashSet<PathBuf> = [PathBuf::from("b")].into();
        // 100 bytes, cap 55: b is in use, so c (30) then d (40) go.
        let gone = usage.evict(55, &in_use);
        assert_eq!(gone, [PathBuf::from("c"), PathBuf::from("d")]);
        assert_eq!(usage.total(), 30);
        assert!(usage.evict(55, &in_use).is_empty());
        usage.remove_under(Path::new(""));
        assert_eq!((usage.total(), usage.files()), (0, 0));
    }
}
