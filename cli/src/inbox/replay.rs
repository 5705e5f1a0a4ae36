//! The replay window: which messages were accepted, per sender, kept in the home directory so
//! it survives restarts (`replay/NAME`, a line appended per message, compacted atomically).
//! The window is the ids of the last `MAX_REMEMBERED_IDS` messages accepted from a sender and a
//! floor below which every counter is refused (as IPsec and DTLS do).

use crate::error::CliError;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use svs_common::names;

/// Ids remembered per sender at most; older ones are refused by the floor.
pub const MAX_REMEMBERED_IDS: usize = 4096;

/// What is remembered of one sender to refuse replays.
#[derive(Debug, Default)]
struct SenderHistory {
    /// Every counter at or below this is refused.
    floor: u64,
    /// Accepted messages above the floor: counter → id, and id → counter.
    by_counter: BTreeMap<u64, [u8; 16]>,
    ids: HashMap<[u8; 16], u64>,
}

/// Whether a message from a sender is new.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fresh {
    New,
    /// This very message was accepted before.
    Seen,
    /// At or below the floor: a replay of something forgotten, or a sender counting wrongly.
    BelowFloor,
}

impl SenderHistory {
    fn judge(&self, id: &[u8; 16], counter: u64) -> Fresh {
        if self.ids.contains_key(id) {
            Fresh::Seen
        } else if counter <= self.floor {
            Fresh::BelowFloor
        } else {
            Fresh::New
        }
    }

    fn remember(&mut self, id: [u8; 16], counter: u64) {
        if counter <= self.floor || self.ids.contains_key(&id) {
            return;
        }
        // Two ids with one counter: keep the later id under the counter; both stay refused
        // once the floor passes the counter.
        if let Some(old) = self.by_counter.insert(counter, id) {
            self.ids.remove(&old);
        }
        self.ids.insert(id, counter);
        while self.by_counter.len() > MAX_REMEMBERED_IDS {
            let Some((counter, old)) = self.by_counter.pop_first() else {
                break;
            };
            self.ids.remove(&old);
            self.floor = self.floor.max(counter);
        }
    }
}

/// Every sender's history, and the file it is kept in.
#[derive(Debug, Default)]
pub(super) struct ReplayWindow {
    /// Where the window is kept between runs (`None`: memory only).
    file: Option<PathBuf>,
    /// Lines appended to the file since it was last compacted.
    appends: usize,
    /// Canonical sender name → what was accepted from it.
    history: HashMap<String, SenderHistory>,
}

impl ReplayWindow {
    /// Loads the window kept in `path` (lines `floor SENDER COUNTER` and `seen SENDER COUNTER
    /// ID`; a line `SENDER COUNTER` from older versions is a floor) and keeps it there. A damaged
    /// file is an error: without it replays could not be refused. A last line without its
    /// newline (a write cut short by a crash) is ignored: its message was not shown.
    pub(super) fn load(path: PathBuf) -> Result<Self, CliError> {
        let mut window = Self::default();
        if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            let complete = match text.rfind('\n') {
                Some(end) => &text[..=end],
                None => "",
            };
            if complete.len() < text.len() {
                // Drop the torn tail so the next append starts on a line of its own.
                svs_common::identity::write_secret_file(&path, complete.as_bytes())?;
            }
            for (n, line) in complete.lines().enumerate() {
                if !window.apply_line(line) {
                    return Err(CliError::Usage(format!(
                        "{} line {} is damaged; it keeps replayed messages out, so restore it from a backup (deleting it accepts replays of old messages once)",
                        path.display(),
                        n + 1
                    )));
                }
            }
        }
        window.file = Some(path);
        Ok(window)
    }

    /// Whether the message `id` with `counter` from `sender` (canonical) is new.
    pub(super) fn judge(&self, sender: &str, id: &[u8; 16], counter: u64) -> Fresh {
        match self.history.get(sender) {
            Some(history) => history.judge(id, counter),
            None => SenderHistory::default().judge(id, counter),
        }
    }

    /// Remembers an accepted message from `sender` (canonical).
    pub(super) fn remember(&mut self, sender: &str, id: [u8; 16], counter: u64) {
        self.history
            .entry(sender.to_string())
            .or_default()
            .remember(id, counter);
    }

    fn apply_line(&mut self, line: &str) -> bool {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (kind, sender, counter, id) = match words.as_slice() {
            ["floor", sender, counter] => ("floor", *sender, *counter, None),
            ["seen", sender, counter, id] => ("seen", *sender, *counter, Some(*id)),
            [sender, counter] => ("floor", *sender, *counter, None),
            _ => return false,
        };
        let Ok(counter) = counter.parse::<u64>() else {
            return false;
        };
        if names::validate(sender).is_err() {
            return false;
        }
        let history = self.history.entry(names::canonical(sender)).or_default();
        match (kind, id) {
            ("floor", None) => history.floor = history.floor.max(counter),
            (_, Some(id)) => {
                let Some(id) = hex::decode(id)
                    .ok()
                    .and_then(|b| <[u8; 16]>::try_from(b).ok())
                else {
                    return false;
                };
                history.remember(id, counter);
            }
            _ => return false,
        }
        true
    }

    /// The whole replay window as the file's text.
    fn text(&self) -> String {
        let mut senders: Vec<(&String, &SenderHistory)> = self.history.iter().collect();
        senders.sort_by_key(|(name, _)| name.as_str());
        let mut text = String::new();
        for (sender, h) in senders {
            text.push_str(&format!("floor {sender} {}\n", h.floor));
            for (counter, id) in &h.by_counter {
                text.push_str(&format!("seen {sender} {counter} {}\n", hex::encode(id)));
            }
        }
        text
    }

    /// The write that records an accepted message: a line appended, or the whole window
    /// rewritten atomically once the appends outgrow it. `None` without a replay file.
    pub(super) fn plan_record(
        &mut self,
        sender: &str,
        counter: u64,
        id: &[u8; 16],
    ) -> Option<ReplayWrite> {
        let path = self.file.clone()?;
        let remembered: usize = self.history.values().map(|h| h.by_counter.len() + 1).sum();
        if self.appends > remembered + 1024 {
            self.appends = 0;
            return Some(ReplayWrite::Rewrite {
                path,
                text: self.text(),
            });
        }
        self.appends += 1;
        Some(ReplayWrite::Append {
            path,
            line: format!(
                "seen {} {counter} {}\n",
                names::canonical(sender),
                hex::encode(id)
            ),
        })
    }
}

/// A change to the replay file, to run on a blocking thread.
#[derive(Debug)]
pub enum ReplayWrite {
    Append { path: PathBuf, line: String },
    Rewrite { path: PathBuf, text: String },
}

impl ReplayWrite {
    /// Writes and syncs it: a message is recorded before it is shown.
    pub fn apply(self) -> Result<(), CliError> {
        match self {
            ReplayWrite::Append { path, line } => {
                use std::io::Write;
                if let Some(dir) = path.parent() {
                    svs_common::identity::create_private_dir(dir)?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path)?;
                file.write_all(line.as_bytes())?;
                file.sync_data()?;
            }
            ReplayWrite::Rewrite { path, text } => {
                svs_common::identity::write_secret_file(&path, text.as_bytes())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_file_round_trips_and_a_damaged_one_stops_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        // An old-format floor line, then a window written by this version, then a torn line.
        std::fs::write(
            &path,
            format!(
                "alice 42\nseen bob 7 {}\nseen bob 8 ab",
                hex::encode([7u8; 16])
            ),
        )
        .unwrap();
        let mut window = ReplayWindow::load(path.clone()).unwrap();
        assert_eq!(
            window.history["alice"].judge(&[1; 16], 42),
            Fresh::BelowFloor
        );
        assert_eq!(window.history["alice"].judge(&[1; 16], 43), Fresh::New);
        assert_eq!(window.history["bob"].judge(&[7; 16], 7), Fresh::Seen);
        window
            .plan_record("Bob", 9, &[9; 16])
            .expect("a window with a file plans a write")
            .apply()
            .unwrap();
        let reloaded = ReplayWindow::load(path.clone()).unwrap();
        assert_eq!(reloaded.history["bob"].judge(&[9; 16], 9), Fresh::Seen);
        std::fs::write(&path, "alice 42\nbob seven\n").unwrap();
        let err = ReplayWindow::load(path).unwrap_err();
        assert!(err.to_string().contains("line 2 is damaged"), "{err}");
    }

    #[test]
    fn the_window_accepts_out_of_order_counters_once_and_is_bounded() {
        let mut history = SenderHistory::default();
        let id = |n: u64| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&n.to_be_bytes());
            id
        };
        // Two sessions of one sender: 11 arrives before 10; both are new, each only once.
        history.remember(id(11), 11);
        assert_eq!(history.judge(&id(10), 10), Fresh::New);
        history.remember(id(10), 10);
        assert_eq!(history.judge(&id(10), 10), Fresh::Seen);
        for n in 12..(12 + MAX_REMEMBERED_IDS as u64) {
            history.remember(id(n), n);
        }
        assert_eq!(history.ids.len(), MAX_REMEMBERED_IDS);
        assert_eq!(history.by_counter.len(), MAX_REMEMBERED_IDS);
        // The oldest fell out of the window: refused by the floor instead.
        assert_eq!(history.judge(&id(10), 10), Fresh::BelowFloor);
        assert_eq!(history.floor, 11);
    }
}
