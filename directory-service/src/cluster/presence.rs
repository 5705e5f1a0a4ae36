//! Presence across replicas, in the `svs_presence` key-value bucket.
//!
//! Keys (`<replica>` is a replica's random id, `<name>` a canonical name in lowercase hex):
//! - `r.<replica>`: the replica's heartbeat, put every fifth of `--replica-timeout-secs` (value:
//!   the writer's clock, u64 milliseconds big-endian; only its arrival matters).
//! - `n.<replica>.<name>`: `0x01 | Peer protobuf` while the name has a session there,
//!   `0x02 | reason (UTF-8)` once its last session there ended.
//!
//! Each replica writes only its own keys (re-writing them all after NATS comes back, and the live
//! ones every few minutes so the bucket's age limit never drops them) and watches everyone
//! else's, feeding the registry, which merges them into one view with its own versions. A replica
//! whose heartbeat has not been seen for the timeout, while this one has been connected that
//! long, is gone: its names leave (unless online elsewhere) and its keys are purged.

use super::{Cluster, PRESENCE_BUCKET, name_from_token, name_token, nats, timed, unix_ms};
use crate::Error;
use crate::registry::{LeaveReason, LocalChange, Registry};
use async_nats::jetstream::kv;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use prost::Message as _;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;
use svs_common::proto::directory::Peer;
use svs_common::time::now_ms;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const JOINED: u8 = 1;
const LEFT: u8 = 2;
/// Entries older than this leave the bucket; live ones are re-written well before.
const MAX_AGE: Duration = Duration::from_secs(600);
const REFRESH: Duration = Duration::from_secs(120);
/// Reason given when a replica is lost with its sessions.
const LOST: &str = "disconnected";

/// One entry of a replica's names.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Joined(Peer),
    Left(String),
}

impl Entry {
    fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Entry::Joined(peer) => {
                out.put_u8(JOINED);
                out.put_slice(&peer.encode_to_vec());
            }
            Entry::Left(reason) => {
                out.put_u8(LEFT);
                out.put_slice(reason.as_bytes());
            }
        }
        out.freeze()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first()? {
            (&JOINED, rest) => Peer::decode(rest).ok().map(Entry::Joined),
            (&LEFT, rest) => std::str::from_utf8(rest)
                .ok()
                .map(|r| Entry::Left(r.to_string())),
            _ => None,
        }
    }
}

/// A presence key, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    Heartbeat { replica: String },
    Name { replica: String, canonical: String },
}

impl Key {
    fn parse(key: &str) -> Option<Self> {
        let mut parts = key.split('.');
        match (parts.next()?, parts.next()?, parts.next(), parts.next()) {
            ("r", replica, None, None) => Some(Key::Heartbeat {
                replica: replica.to_string(),
            }),
            ("n", replica, Some(name), None) => Some(Key::Name {
                replica: replica.to_string(),
                canonical: name_from_token(name)?,
            }),
            _ => None,
        }
    }
}

fn heartbeat_key(replica: &str) -> String {
    format!("r.{replica}")
}

fn name_key(replica: &str, canonical: &str) -> String {
    format!("n.{replica}.{}", name_token(canonical))
}

/// This replica's part in cluster presence; `leave` withdraws it on shutdown.
#[derive(Debug)]
pub(crate) struct Presence {
    goodbye: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl Presence {
    /// Opens the bucket, starts reporting this replica's names and following the others'.
    pub(crate) async fn start(cluster: &Cluster, registry: &Arc<Registry>) -> Result<Self, Error> {
        let store = cluster
            .bucket(
                PRESENCE_BUCKET,
                "svs: directory replicas' heartbeats and who is online on each",
                MAX_AGE,
                64 * 1024,
            )
            .await?;
        let (changes, changed) = mpsc::unbounded_channel();
        let (goodbye, goodbyes) = mpsc::unbounded_channel();
        let online_now = registry.report_changes(changes);
        let writer = Writer {
            store: store.clone(),
            cluster: cluster.clone(),
            entries: online_now
                .into_iter()
                .map(|peer| {
                    (
                        svs_common::names::canonical(&peer.name),
                        Entry::Joined(peer),
                    )
                })
                .collect(),
            unwritten: HashSet::new(),
        };
        tokio::spawn(writer.run(changed, goodbyes));
        let watcher = Watcher {
            store,
            cluster: cluster.clone(),
            registry: Arc::downgrade(registry),
            heard: HashMap::new(),
            names_of: HashMap::new(),
            connected_since: None,
        };
        tokio::spawn(watcher.run());
        Ok(Self { goodbye })
    }

    /// Writes this replica's last changes and removes its heartbeat, so the others announce its
    /// names at once instead of after the timeout. Waits at most `within`.
    pub(crate) async fn leave(&self, within: Duration) {
        let (done, finished) = oneshot::channel();
        if self.goodbye.send(done).is_ok() {
            let _ = tokio::time::timeout(within, finished).await;
        }
    }
}

/// Writes this replica's heartbeat and names.
struct Writer {
    store: kv::Store,
    cluster: Cluster,
    /// What the bucket should say of each name here (left names until written once).
    entries: HashMap<String, Entry>,
    /// Names whose entry is not yet in the bucket.
    unwritten: HashSet<String>,
}

impl Writer {
    async fn run(
        mut self,
        mut changed: mpsc::UnboundedReceiver<LocalChange>,
        mut goodbyes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    ) {
        self.unwritten = self.entries.keys().cloned().collect();
        let beat_every = self.cluster.replica_timeout / 5;
        let mut beat = tokio::time::interval(beat_every);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refreshed = Instant::now();
        let mut was_up = true;
        loop {
            tokio::select! {
                change = changed.recv() => {
                    let Some(change) = change else { return };
                    self.note(change);
                    while let Ok(more) = changed.try_recv() {
                        self.note(more);
                    }
                    self.write_pending().await;
                }
                _ = beat.tick() => {
                    let up = self.beat().await;
                    if up && !was_up {
                        // NATS was away: whatever it lost, write everything again.
                        tracing::info!("NATS back: re-announcing this replica's names");
                        self.unwritten = self.entries.keys().cloned().collect();
                    }
                    if up && refreshed.elapsed() >= REFRESH {
                        self.unwritten = self.entries.keys().cloned().collect();
                        refreshed = Instant::now();
                    }
                    was_up = up;
                    if up {
                        self.write_pending().await;
                    }
                }
                done = goodbyes.recv() => {
                    while let Ok(change) = changed.try_recv() {
                        self.note(change);
                    }
                    self.write_pending().await;
                    let _ = self.store.purge(heartbeat_key(&self.cluster.replica)).await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
    }

    fn note(&mut self, change: LocalChange) {
        let (canonical, entry) = match change {
            LocalChange::Joined(peer) => (
                svs_common::names::canonical(&peer.name),
                Entry::Joined(peer),
            ),
            LocalChange::Left { canonical, reason } => (canonical, Entry::Left(reason)),
        };
        self.entries.insert(canonical.clone(), entry);
        self.unwritten.insert(canonical);
    }

    async fn beat(&self) -> bool {
        let now = Bytes::copy_from_slice(&now_ms().to_be_bytes());
        match timed(
            "kv",
            self.store.put(heartbeat_key(&self.cluster.replica), now),
        )
        .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(error = %e, "heartbeat not written");
                false
            }
        }
    }

    /// Writes every unwritten entry; a name that left is forgotten once its `left` is written.
    async fn write_pending(&mut self) {
        let pending: Vec<String> = self.unwritten.iter().cloned().collect();
        for canonical in pending {
            let Some(entry) = self.entries.get(&canonical) else {
                self.unwritten.remove(&canonical);
                continue;
            };
            let key = name_key(&self.cluster.replica, &canonical);
            match timed("kv", self.store.put(&key, entry.encode())).await {
                Ok(_) => {
                    self.unwritten.remove(&canonical);
                    if matches!(entry, Entry::Left(_)) {
                        self.entries.remove(&canonical);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "presence not written; retrying with the next heartbeat");
                    return;
                }
            }
        }
    }
}

/// Follows the other replicas' keys.
struct Watcher {
    store: kv::Store,
    cluster: Cluster,
    registry: Weak<Registry>,
    /// When each other replica was last heard from.
    heard: HashMap<String, Instant>,
    /// The names each other replica has announced.
    names_of: HashMap<String, HashSet<String>>,
    /// Since when this replica has been connected without a break.
    connected_since: Option<Instant>,
}

impl Watcher {
    async fn run(mut self) {
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            let watch = match self.store.watch_with_history(">").await {
                Ok(watch) => watch,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot watch presence yet");
                    if !self.tick() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            tokio::pin!(watch);
            loop {
                tokio::select! {
                    entry = watch.next() => match entry {
                        Some(Ok(entry)) => {
                            if !self.apply(&entry) {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "presence watch broke; watching again");
                            break;
                        }
                        None => break,
                    },
                    _ = check.tick() => {
                        if !self.tick() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Applies one bucket entry; false once the registry is gone.
    fn apply(&mut self, entry: &kv::Entry) -> bool {
        let Some(registry) = self.registry.upgrade() else {
            return false;
        };
        let Some(key) = Key::parse(&entry.key) else {
            return true;
        };
        let put = entry.operation == kv::Operation::Put;
        match key {
            Key::Heartbeat { replica } if replica == self.cluster.replica => {}
            Key::Heartbeat { replica } if put => {
                // A heartbeat from before this watch began counts from when it was written.
                let age = Duration::from_millis(now_ms().saturating_sub(unix_ms(&entry.created)));
                let at = Instant::now()
                    .checked_sub(age.min(self.cluster.replica_timeout))
                    .unwrap_or_else(Instant::now);
                let heard = self.heard.entry(replica).or_insert(at);
                *heard = (*heard).max(at);
            }
            // A replica withdraws its heartbeat when it shuts down.
            Key::Heartbeat { replica } => {
                self.gone(&registry, &replica, LeaveReason::Shutdown.as_str())
            }
            Key::Name { replica, .. } if replica == self.cluster.replica => {}
            Key::Name { replica, canonical } => {
                let entry = put.then(|| Entry::decode(&entry.value)).flatten();
                // Names of a replica never heard from get the timeout to show a heartbeat.
                self.heard
                    .entry(replica.clone())
                    .or_insert_with(Instant::now);
                match entry {
                    Some(Entry::Joined(peer)) => {
                        self.names_of
                            .entry(replica.clone())
                            .or_default()
                            .insert(canonical);
                        registry.remote_joined(&replica, peer);
                    }
                    Some(Entry::Left(reason)) => {
                        self.forget(&replica, &canonical);
                        registry.remote_left(&replica, &canonical, &reason);
                    }
                    None => {
                        self.forget(&replica, &canonical);
                        registry.remote_left(&replica, &canonical, LOST);
                    }
                }
            }
        }
        true
    }

    fn forget(&mut self, replica: &str, canonical: &str) {
        if let Some(names) = self.names_of.get_mut(replica) {
            names.remove(canonical);
        }
    }

    /// Once a second: replicas silent for the timeout are gone, if this one has been connected
    /// long enough to have heard them. False once the registry is gone.
    fn tick(&mut self) -> bool {
        let Some(registry) = self.registry.upgrade() else {
            return false;
        };
        let timeout = self.cluster.replica_timeout;
        if !self.cluster.is_up() {
            self.connected_since = None;
            return true;
        }
        let since = *self.connected_since.get_or_insert_with(Instant::now);
        let silent: Vec<String> = self
            .heard
            .iter()
            .filter(|(_, at)| at.elapsed() > timeout && since.elapsed() > timeout)
            .map(|(replica, _)| replica.clone())
            .collect();
        for replica in silent {
            tracing::warn!(%replica, "a directory replica stopped answering; its sessions leave");
            self.gone(&registry, &replica, LOST);
        }
        true
    }

    /// A replica is gone: its names leave here, and its keys leave the bucket.
    fn gone(&mut self, registry: &Registry, replica: &str, reason: &str) {
        self.heard.remove(replica);
        let mut keys: Vec<String> = self
            .names_of
            .remove(replica)
            .unwrap_or_default()
            .iter()
            .map(|canonical| name_key(replica, canonical))
            .collect();
        registry.replica_gone(replica, reason);
        keys.push(heartbeat_key(replica));
        let store = self.store.clone();
        tokio::spawn(async move {
            for key in keys {
                if let Err(e) = store.purge(&key).await {
                    tracing::debug!(error = %nats("purging a lost replica", e), "will be purged by its age");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_keys_round_trip() {
        let peer = Peer {
            name: "Alice".into(),
            public_key_der: vec![1, 2, 3].into(),
            fingerprint: "ab".into(),
            online_since_ms: 7,
        };
        for entry in [Entry::Joined(peer), Entry::Left("quit".into())] {
            assert_eq!(Entry::decode(&entry.encode()), Some(entry));
        }
        assert_eq!(Entry::decode(&[9]), None);
        assert_eq!(Entry::decode(&[]), None);
        assert_eq!(
            Key::parse(&name_key("r1", "a.b")),
            Some(Key::Name {
                replica: "r1".into(),
                canonical: "a.b".into()
            })
        );
        assert_eq!(
            Key::parse(&heartbeat_key("r1")),
            Some(Key::Heartbeat {
                replica: "r1".into()
            })
        );
        assert_eq!(Key::parse("x.y"), None);
        assert_eq!(Key::parse("n.r1.zz"), None);
    }
}
