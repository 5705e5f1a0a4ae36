//! The receiving side: keeps the roster in step with presence events, and turns envelopes into
//! messages — signature verified against the sender's key before any decryption, replays
//! dropped, key changes flagged.
//!
//! Replays are refused with a window per sender (`replay`). Mailboxes deliver old messages and
//! several sessions of one sender may send out of counter order, so neither age nor a strictly
//! increasing counter would do. An envelope whose id was already accepted is a redelivery (the
//! relay resends what was not acknowledged): it is acknowledged again and not shown twice.

mod replay;

pub use replay::{MAX_REMEMBERED_IDS, ReplayWrite};

use crate::error::CliError;
use crate::known_peers::{KnownPeers, PinCheck};
use replay::{Fresh, ReplayWindow};
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

/// Per-session receiving state.
pub struct Inbox {
    /// Which messages were accepted already, per sender.
    replay: ReplayWindow,
    /// Keys of senders not online, looked up from the directory.
    offline_keys: HashMap<String, Vec<u8>>,
    my_name: String,
    key: Arc<PrivateKey>,
    version: u64,
    roster: BTreeMap<String, Peer>,
    /// Pages of a snapshot still being received.
    snapshot_pages: Vec<Peer>,
    /// Woken by the directory's group activity hints (a room feed waits on it).
    room_activity: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

impl Inbox {
    pub fn new(my_name: String, key: Arc<PrivateKey>) -> Self {
        Self {
            replay: ReplayWindow::default(),
            offline_keys: HashMap::new(),
            my_name,
            key,
            version: 0,
            roster: BTreeMap::new(),
            snapshot_pages: Vec::new(),
            room_activity: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// What the directory's group activity hints wake (`rooms::RoomFeed` reads rooms then).
    pub fn room_activity(&self) -> Arc<tokio::sync::Notify> {
        self.room_activity.clone()
    }

    /// An inbox that loads and keeps its replay window in `path` (see `ReplayWindow::load`).
    /// A damaged file stops the client: without it replays could not be refused.
    pub fn with_replay_file(mut self, path: PathBuf) -> Result<Self, CliError> {
        self.replay = ReplayWindow::load(path)?;
        Ok(self)
    }

    /// Records an accepted message in the replay file now (blocking; see `plan_record`).
    pub fn record(&mut self, sender: &str, counter: u64, id: &[u8; 16]) -> Result<(), CliError> {
        match self.plan_record(sender, counter, id) {
            Some(write) => write.apply(),
            None => Ok(()),
        }
    }

    /// The write that records an accepted message (see `ReplayWindow::plan_record`).
    pub fn plan_record(
        &mut self,
        sender: &str,
        counter: u64,
        id: &[u8; 16],
    ) -> Option<ReplayWrite> {
        self.replay.plan_record(sender, counter, id)
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
            // Nothing to show: a room feed reads the group now.
            event::Kind::GroupActivity(_) => {
                self.room_activity.notify_one();
                vec![]
            }
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
            .replay
            .judge(&canonical, &header.message_id, header.counter)
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
        self.replay.remember(
            &names::canonical(&header.sender),
            header.message_id,
            header.counter,
        );
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
