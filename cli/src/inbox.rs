//! The receiving side: keeps the roster in step with presence events, and turns envelopes into
//! messages — signature verified against the sender's key before any decryption, replays and
//! stale messages dropped, key changes flagged. The highest counter accepted from each sender is
//! kept in a file (`sender counter` per line), so replay protection survives restarts: counters
//! are signed and strictly increasing, so that alone refuses every replay.

use crate::error::CliError;
use crate::known_peers::{KnownPeers, PinCheck};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use svs_common::identity;
use svs_common::names;
use svs_common::proto::directory::{Envelope, Event, ListPeersResponse, Peer, event};
use svs_common::rsa::PrivateKey;
use svs_common::sealed::{self, Header};
use svs_common::time::now_ms;

/// Messages older than this (by their signed timestamp) are dropped as possible replays.
pub const MAX_MESSAGE_AGE_MS: u64 = 10 * 60 * 1000;

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
    ResyncNeeded,
}

/// Ids remembered per sender at most (older ones are also refused by counter and age).
pub const MAX_REMEMBERED_IDS: usize = 4096;

/// What is remembered of one sender to refuse replays: the highest counter accepted, and the
/// ids of messages still young enough to be accepted (bounded in age and count).
#[derive(Default)]
struct SenderHistory {
    last_counter: u64,
    ids: HashSet<[u8; 16]>,
    order: std::collections::VecDeque<([u8; 16], u64)>,
}

impl SenderHistory {
    fn remember(&mut self, id: [u8; 16], timestamp_ms: u64, now_ms: u64) {
        self.ids.insert(id);
        self.order.push_back((id, timestamp_ms));
        while let Some(&(old, ts)) = self.order.front() {
            let too_old = now_ms.saturating_sub(ts) > MAX_MESSAGE_AGE_MS;
            if !too_old && self.order.len() <= MAX_REMEMBERED_IDS {
                break;
            }
            self.ids.remove(&old);
            self.order.pop_front();
        }
    }
}

/// Per-session receiving state.
pub struct Inbox {
    /// Where the highest accepted counters are kept between runs (`None`: memory only).
    replay_file: Option<PathBuf>,
    my_name: String,
    key: Arc<PrivateKey>,
    version: u64,
    roster: BTreeMap<String, Peer>,
    history: HashMap<String, SenderHistory>,
    /// Pages of a snapshot still being received.
    snapshot_pages: Vec<Peer>,
}

impl Inbox {
    pub fn new(my_name: String, key: Arc<PrivateKey>) -> Self {
        Self {
            replay_file: None,
            my_name,
            key,
            version: 0,
            roster: BTreeMap::new(),
            history: HashMap::new(),
            snapshot_pages: Vec::new(),
        }
    }

    /// An inbox that loads and keeps the highest counter accepted from each sender in `path`.
    /// A damaged file stops the client: without it replays could not be refused.
    pub fn with_replay_file(mut self, path: PathBuf) -> Result<Self, CliError> {
        if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            for (n, line) in text.lines().enumerate() {
                let mut parts = line.split_whitespace();
                let parsed = match (parts.next(), parts.next(), parts.next()) {
                    (Some(sender), Some(counter), None) if names::validate(sender).is_ok() => {
                        counter.parse::<u64>().ok().map(|c| (sender, c))
                    }
                    _ => None,
                };
                let Some((sender, counter)) = parsed else {
                    return Err(CliError::Usage(format!(
                        "{} line {} is damaged; it keeps replayed messages out, so restore it from a backup (deleting it accepts replays of old messages once)",
                        path.display(),
                        n + 1
                    )));
                };
                self.history
                    .entry(names::canonical(sender))
                    .or_default()
                    .last_counter = counter;
            }
        }
        self.replay_file = Some(path);
        Ok(self)
    }

    /// What to write to the replay file now, if this inbox keeps one.
    pub fn replay_state(&self) -> Option<(PathBuf, String)> {
        let path = self.replay_file.clone()?;
        let mut senders: Vec<(&String, u64)> = self
            .history
            .iter()
            .map(|(sender, h)| (sender, h.last_counter))
            .collect();
        senders.sort();
        let text = senders
            .into_iter()
            .map(|(sender, counter)| format!("{sender} {counter}\n"))
            .collect();
        Some((path, text))
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
    /// steps with the decryption on a blocking thread.
    fn open(&mut self, envelope: &Envelope, pins: &mut KnownPeers) -> Incoming {
        match self.check(envelope.clone(), pins) {
            Err(dropped) => dropped,
            Ok(verified) => {
                let plaintext = verified.decrypt();
                let incoming = self.finish(verified, plaintext);
                if let (Incoming::Message(_), Some((path, text))) = (&incoming, self.replay_state())
                    && let Err(e) = svs_common::identity::write_secret_file(&path, text.as_bytes())
                {
                    return Incoming::Dropped {
                        from: "?".into(),
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
                None => return Err(dropped("the sender's key is unknown".into())),
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
        let history = self.history.entry(canonical).or_default();
        if history.ids.contains(&header.message_id) || header.counter <= history.last_counter {
            return Err(dropped("replayed message dropped".into()));
        }
        if now_ms().saturating_sub(header.timestamp_ms) > MAX_MESSAGE_AGE_MS {
            return Err(dropped("message older than 10 minutes dropped".into()));
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
        history.remember(header.message_id, header.timestamp_ms, now_ms());
        history.last_counter = header.counter;
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

/// An envelope that passed every check before decryption; `decrypt` is the RSA private-key
/// step, to be run on a blocking thread.
pub struct Verified {
    envelope: Envelope,
    header: Header,
    my_name: String,
    key: Arc<PrivateKey>,
    warning: Option<String>,
}

impl Verified {
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
        std::fs::write(&path, "alice 42\nbob 7\n").unwrap();
        let inbox = Inbox::new("me".into(), key.clone())
            .with_replay_file(path.clone())
            .unwrap();
        assert_eq!(inbox.history["alice"].last_counter, 42);
        let (written_to, text) = inbox.replay_state().unwrap();
        assert_eq!(written_to, path);
        assert_eq!(text, "alice 42\nbob 7\n");
        std::fs::write(&path, "alice 42\nbob seven\n").unwrap();
        let err = Inbox::new("me".into(), key)
            .with_replay_file(path)
            .err()
            .unwrap();
        assert!(err.to_string().contains("line 2 is damaged"), "{err}");
    }

    #[test]
    fn replay_memory_is_bounded_in_count_and_age() {
        let now = 100 * MAX_MESSAGE_AGE_MS;
        let mut history = SenderHistory::default();
        for n in 0..(MAX_REMEMBERED_IDS as u32 + 1000) {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&n.to_be_bytes());
            history.remember(id, now, now);
        }
        assert_eq!(history.ids.len(), MAX_REMEMBERED_IDS);
        assert_eq!(history.order.len(), MAX_REMEMBERED_IDS);
        // Ten minutes later one new id pushes out every id too old to be accepted anyway.
        history.remember(
            [0xff; 16],
            now + MAX_MESSAGE_AGE_MS + 1,
            now + MAX_MESSAGE_AGE_MS + 1,
        );
        assert_eq!(history.ids.len(), 1);
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
