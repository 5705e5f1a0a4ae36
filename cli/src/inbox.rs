//! The receiving side: keeps the roster in step with presence events, and turns envelopes into
//! messages — signature verified against the sender's key before any decryption, replays
//! dropped, key changes flagged.
//!
//! Replays are refused with a window per sender (as IPsec and DTLS do): the ids of the last
//! `MAX_REMEMBERED_IDS` messages accepted, and a floor below which every counter is refused.
//! Mailboxes deliver old messages and several sessions of one sender may send out of counter
//! order, so neither age nor a strictly increasing counter would do. The window is kept in the
//! home directory (`replay/NAME`, appended per message, compacted atomically) so it survives
//! restarts. An envelope whose id was already accepted is a redelivery (the relay resends what
//! was not acknowledged): it is acknowledged again and not shown twice.

use crate::error::CliError;
use crate::known_peers::{KnownPeers, PinCheck};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use svs_common::identity;
use svs_common::names;
use svs_common::proto::directory::{Envelope, Event, ListPeersResponse, Peer, event};
use svs_common::rsa::PrivateKey;
use svs_common::sealed::{self, Header};

/// A decrypted message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Message {
    pub from: String,
    pub to: Vec<String>,
    pub id: String,
    pub text: String,
    pub time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// What the user should learn from one event.
#[derive(Debug, Clone)]
pub enum Incoming {
    Roster(Vec<(Peer, PinCheck)>),
    Joined(Peer, PinCheck),
    Left {
        name: String,
        reason: String,
    },
    Message(Message),
    Delivered {
        id: String,
        to: String,
    },
    Undelivered {
        id: String,
        to: String,
        reason: String,
    },
    Dropped {
        from: String,
        why: String,
    },
    /// An envelope already accepted, delivered again: acknowledge it, show nothing.
    Redelivered,
    ResyncNeeded,
}

/// Ids remembered per sender at most; older ones are refused by the floor.
pub const MAX_REMEMBERED_IDS: usize = 4096;

/// What is remembered of one sender to refuse replays.
#[derive(Default)]
struct SenderHistory {
    /// Every counter at or below this is refused.
    floor: u64,
    /// Accepted messages above the floor: counter → id, and id → counter.
    by_counter: BTreeMap<u64, [u8; 16]>,
    ids: HashMap<[u8; 16], u64>,
}

/// Whether a message from a sender is new.
#[derive(Debug, PartialEq, Eq)]
enum Fresh {
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

/// Per-session receiving state.
pub struct Inbox {
    /// Where the replay window is kept between runs (`None`: memory only).
    replay_file: Option<PathBuf>,
    /// Lines appended to the replay file since it was last compacted.
    replay_appends: usize,
    /// Keys of senders not online, looked up from the directory.
    offline_keys: HashMap<String, Vec<u8>>,
    my_name: String,
    key: Arc<PrivateKey>,
    version: u64,
    roster: BTreeMap<String, Peer>,
    history: HashMap<String, SenderHistory>,
    /// Pages of a snapshot still being received.
    snapshot_pages: Vec<Peer>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

impl Inbox {
    pub fn new(my_name: String, key: Arc<PrivateKey>) -> Self {
        Self {
            replay_file: None,
            replay_appends: 0,
            offline_keys: HashMap::new(),
            my_name,
            key,
            version: 0,
            roster: BTreeMap::new(),
            history: HashMap::new(),
            snapshot_pages: Vec::new(),
        }
    }

    /// An inbox that loads and keeps its replay window in `path` (lines `floor SENDER COUNTER`
    /// and `seen SENDER COUNTER ID`; a line `SENDER COUNTER` from older versions is a floor).
    /// A damaged file stops the client: without it replays could not be refused. A last line
    /// without its newline (a write cut short by a crash) is ignored: its message was not shown.
    pub fn with_replay_file(mut self, path: PathBuf) -> Result<Self, CliError> {
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
                if !self.apply_replay_line(line) {
                    return Err(CliError::Usage(format!(
                        "{} line {} is damaged; it keeps replayed messages out, so restore it from a backup (deleting it accepts replays of old messages once)",
                        path.display(),
                        n + 1
                    )));
                }
            }
        }
        self.replay_file = Some(path);
        Ok(self)
    }

    fn apply_replay_line(&mut self, line: &str) -> bool {
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
    fn replay_text(&self) -> String {
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

    /// Records an accepted message in the replay file now (blocking; see `plan_record`).
    pub fn record(&mut self, sender: &str, counter: u64, id: &[u8; 16]) -> Result<(), CliError> {
        match self.plan_record(sender, counter, id) {
            Some(write) => write.apply(),
            None => Ok(()),
        }
    }

    /// The write that records an accepted message: a line appended, or the whole window
    /// rewritten atomically once the appends outgrow it. `None` without a replay file.
    pub fn plan_record(
        &mut self,
        sender: &str,
        counter: u64,
        id: &[u8; 16],
    ) -> Option<ReplayWrite> {
        let path = self.replay_file.clone()?;
        let remembered: usize = self.history.values().map(|h| h.by_counter.len() + 1).sum();
        if self.replay_appends > remembered + 1024 {
            self.replay_appends = 0;
            return Some(ReplayWrite::Rewrite {
                path,
                text: self.replay_text(),
            });
        }
        self.replay_appends += 1;
        Some(ReplayWrite::Append {
            path,
            line: format!(
                "seen {} {counter} {}\n",
                names::canonical(sender),
                hex::encode(id)
            ),
        })
    }

    /// Whether the key of `sender` is known (online, pinned, or looked up).
    pub fn knows_key(&self, sender: &str, pins: &KnownPeers) -> bool {
        let canonical = names::canonical(sender);
        self.roster.contains_key(&canonical)
            || self.offline_keys.contains_key(&canonical)
            || pins.key(sender).is_some()
    }

    /// Remembers the registered key of someone not online (from LookupKeys).
    pub fn learn_key(&mut self, peer: &Peer) {
        self.offline_keys
            .insert(names::canonical(&peer.name), peer.public_key_der.to_vec());
    }

    /// Everyone online, by name.
    pub fn online(&self) -> Vec<Peer> {
        self.roster.values().cloned().collect()
    }

    /// Replaces the roster with a snapshot.
    pub fn resync(&mut self, snapshot: ListPeersResponse, pins: &mut KnownPeers) -> Vec<Incoming> {
        self.version = snapshot.version;
        self.roster = snapshot
            .peers
            .iter()
            .map(|p| (names::canonical(&p.name), p.clone()))
            .collect();
        let checked = snapshot
            .peers
            .into_iter()
            .map(|p| {
                let check = self.pin(pins, &p);
                (p, check)
            })
            .collect();
        vec![Incoming::Roster(checked)]
    }

    /// Interprets one event.
    pub fn handle(&mut self, event: Event, pins: &mut KnownPeers) -> Vec<Incoming> {
        let Some(kind) = event.kind else {
            return vec![];
        };
        match kind {
            event::Kind::Snapshot(mut page) => {
                // A subscription's snapshot arrives in pages; apply it once complete.
                self.snapshot_pages.append(&mut page.peers);
                if page.more {
                    return vec![];
                }
                page.peers = std::mem::take(&mut self.snapshot_pages);
                self.resync(page, pins)
            }
            event::Kind::Joined(j) => {
                let gap = j.version != self.version + 1;
                self.version = j.version;
                let Some(peer) = j.peer else { return vec![] };
                self.roster
                    .insert(names::canonical(&peer.name), peer.clone());
                let check = self.pin(pins, &peer);
                let mut out = vec![Incoming::Joined(peer, check)];
                if gap {
                    out.push(Incoming::ResyncNeeded);
                }
                out
            }
            event::Kind::Left(l) => {
                let gap = l.version != self.version + 1;
                self.version = l.version;
                self.roster.remove(&names::canonical(&l.name));
                let mut out = vec![Incoming::Left {
                    name: l.name,
                    reason: l.reason,
                }];
                if gap {
                    out.push(Incoming::ResyncNeeded);
                }
                out
            }
            event::Kind::Envelope(envelope) => vec![self.open(&envelope, pins)],
            event::Kind::Delivered(d) => vec![Incoming::Delivered {
                id: hex::encode(&d.message_id),
                to: d.recipient,
            }],
            event::Kind::Undelivered(u) => vec![Incoming::Undelivered {
                id: hex::encode(&u.message_id),
                to: u.recipient,
                reason: u.reason,
            }],
        }
    }

    /// Checks a peer's key against its pin (pinning on first sight). Your own key is not pinned:
    /// it is yours. A pin file that cannot be written is reported as a changed key, the safe side.
    fn pin(&self, pins: &mut KnownPeers, peer: &Peer) -> PinCheck {
        if names::canonical(&peer.name) == names::canonical(&self.my_name) {
            return PinCheck::Matches;
        }
        pins.check(&peer.name, &peer.public_key_der)
            .unwrap_or_else(|e| PinCheck::Changed {
                pinned: format!("unknown ({e})"),
            })
    }

    /// Opens an envelope in one go (check, decrypt, record). `Session::process` runs the same
    /// steps with the decryption and the write on a blocking thread.
    fn open(&mut self, envelope: &Envelope, pins: &mut KnownPeers) -> Incoming {
        match self.check(envelope.clone(), pins) {
            Err(dropped) => dropped,
            Ok(verified) => {
                let plaintext = verified.decrypt();
                let (sender, counter, id) = verified.identity();
                let incoming = self.finish(verified, plaintext);
                if matches!(incoming, Incoming::Message(_))
                    && let Err(e) = self.record(&sender, counter, &id)
                {
                    return Incoming::Dropped {
                        from: sender,
                        why: format!("could not record the message as received ({e}); not shown"),
                    };
                }
                incoming
            }
        }
    }

    /// Everything before decryption: header, sender key, pin, signature, replay and age. An
    /// envelope that fails comes back as the `Dropped` to show.
    pub fn check(
        &mut self,
        envelope: Envelope,
        pins: &mut KnownPeers,
    ) -> Result<Verified, Incoming> {
        let header = Header::decode(&envelope.header).map_err(|e| Incoming::Dropped {
            from: "?".into(),
            why: e.to_string(),
        })?;
        let from = header.sender.clone();
        let dropped = |why: String| Incoming::Dropped {
            from: from.clone(),
            why,
        };
        // The sender's key: the directory's current one if online, else the pinned one.
        let canonical = names::canonical(&header.sender);
        let spki = match self.roster.get(&canonical) {
            Some(peer) => peer.public_key_der.to_vec(),
            None => match pins.key(&header.sender) {
                Some(k) => k.to_vec(),
                None => match self.offline_keys.get(&canonical) {
                    Some(k) => k.clone(),
                    None => return Err(dropped("the sender's key is unknown".into())),
                },
            },
        };
        let warning = match pins.check(&header.sender, &spki) {
            Ok(PinCheck::Changed { pinned }) => Some(format!(
                "{}'s key CHANGED (pinned {pinned}); this message may not be from the {} you know — verify and run `svs trust {}`",
                header.sender, header.sender, header.sender
            )),
            _ => None,
        };
        let Ok(sender_key) = identity::parse_public_key(&spki) else {
            return Err(dropped("the sender's key is invalid".into()));
        };
        if let Err(e) = sealed::verify(&envelope, &sender_key) {
            return Err(dropped(format!("rejected: {e}")));
        }
        match self
            .history
            .entry(canonical)
            .or_default()
            .judge(&header.message_id, header.counter)
        {
            Fresh::New => {}
            Fresh::Seen => return Err(Incoming::Redelivered),
            Fresh::BelowFloor => {
                return Err(dropped(
                    "replayed message dropped (its counter is below what this client still remembers)".into(),
                ));
            }
        }
        Ok(Verified {
            envelope,
            header,
            my_name: self.my_name.clone(),
            key: self.key.clone(),
            warning,
        })
    }

    /// Records a decrypted message (so a replay of it is refused) and turns it into what to show.
    pub fn finish(
        &mut self,
        verified: Verified,
        plaintext: Result<Vec<u8>, svs_common::Error>,
    ) -> Incoming {
        let header = verified.header;
        let plaintext = match plaintext {
            Ok(p) => p,
            Err(e) => {
                return Incoming::Dropped {
                    from: header.sender,
                    why: e.to_string(),
                };
            }
        };
        let history = self
            .history
            .entry(names::canonical(&header.sender))
            .or_default();
        history.remember(header.message_id, header.counter);
        Incoming::Message(Message {
            from: header.sender.clone(),
            to: header.recipients.iter().map(|r| r.name.clone()).collect(),
            id: hex::encode(header.message_id),
            text: String::from_utf8_lossy(&plaintext).into_owned(),
            time: header.timestamp_ms,
            warning: verified.warning,
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

/// An envelope that passed every check before decryption; `decrypt` is the RSA private-key
/// step, to be run on a blocking thread.
pub struct Verified {
    envelope: Envelope,
    header: Header,
    my_name: String,
    key: Arc<PrivateKey>,
    warning: Option<String>,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified").finish_non_exhaustive()
    }
}

impl Verified {
    /// Sender, counter and message id: what `Inbox::record` keeps.
    pub fn identity(&self) -> (String, u64, [u8; 16]) {
        (
            self.header.sender.clone(),
            self.header.counter,
            self.header.message_id,
        )
    }

    pub fn decrypt(&self) -> Result<Vec<u8>, svs_common::Error> {
        sealed::open(
            &mut identity::os_rng(),
            &self.envelope,
            &self.header,
            &self.my_name,
            &self.key,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use svs_common::proto::directory::ListPeersResponse;

    fn page(names: &[&str], more: bool) -> Event {
        let peers = names
            .iter()
            .map(|n| Peer {
                name: n.to_string(),
                public_key_der: bytes::Bytes::from(n.as_bytes().to_vec()),
                fingerprint: String::new(),
                online_since_ms: 0,
            })
            .collect();
        Event {
            kind: Some(event::Kind::Snapshot(ListPeersResponse {
                version: 7,
                peers,
                more,
            })),
        }
    }

    #[test]
    fn the_replay_file_round_trips_and_a_damaged_one_stops_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        let key = Arc::new(svs_common::identity::generate(2048).unwrap());
        // An old-format floor line, then a window written by this version, then a torn line.
        std::fs::write(
            &path,
            format!(
                "alice 42\nseen bob 7 {}\nseen bob 8 ab",
                hex::encode([7u8; 16])
            ),
        )
        .unwrap();
        let mut inbox = Inbox::new("me".into(), key.clone())
            .with_replay_file(path.clone())
            .unwrap();
        assert_eq!(
            inbox.history["alice"].judge(&[1; 16], 42),
            Fresh::BelowFloor
        );
        assert_eq!(inbox.history["alice"].judge(&[1; 16], 43), Fresh::New);
        assert_eq!(inbox.history["bob"].judge(&[7; 16], 7), Fresh::Seen);
        inbox.record("Bob", 9, &[9; 16]).unwrap();
        let reloaded = Inbox::new("me".into(), key.clone())
            .with_replay_file(path.clone())
            .unwrap();
        assert_eq!(reloaded.history["bob"].judge(&[9; 16], 9), Fresh::Seen);
        std::fs::write(&path, "alice 42\nbob seven\n").unwrap();
        let err = Inbox::new("me".into(), key)
            .with_replay_file(path)
            .err()
            .unwrap();
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

    #[test]
    fn a_paged_snapshot_is_applied_once_complete() {
        let dir = tempfile::tempdir().unwrap();
        let mut pins = KnownPeers::load(dir.path().join("known_peers")).unwrap();
        let key = svs_common::identity::generate(2048).unwrap();
        let mut inbox = Inbox::new("me".into(), Arc::new(key));
        assert!(inbox.handle(page(&["a", "b"], true), &mut pins).is_empty());
        assert!(
            inbox.online().is_empty(),
            "nothing applied before the last page"
        );
        let done = inbox.handle(page(&["c"], false), &mut pins);
        assert!(matches!(&done[..], [Incoming::Roster(peers)] if peers.len() == 3));
        let names: Vec<String> = inbox.online().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
