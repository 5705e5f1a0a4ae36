//! Who is online: the live sessions of each name (several per name, up to a cap), presence with
//! versions (a name joins with its first session and leaves with its last), each session's event
//! stream, and handing committed mailbox items and receipts to the live streams of a name. In
//! cluster mode it also merges in the names online on other replicas (fed by
//! `cluster::presence`) and reports its own names' first join and last leave to them.

use crate::Error;
use crate::error::Refusal;
use crate::mailbox::{Committed, Mailboxes};
use crate::subscriber::{QueueLimits, Subscriber};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use svs_common::identity::{self, Fingerprint};
use svs_common::names;
use svs_common::proto::directory::{
    Event, GroupActivity, ListPeersResponse, Peer, PeerJoined, PeerLeft, event,
};
use svs_common::time::now_ms;
use svs_common::token::Claims;
use svs_server::rate::TokenBucket;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tonic::Status;

/// Peers per snapshot page in a subscription. Each stream keeps an encode buffer as large as the
/// largest message it sent, so one 1,000-peer snapshot would cost every subscriber ~400 KB for
/// the life of its stream; pages of 16 keep that to ~7 KB.
pub(crate) const SNAPSHOT_PAGE: usize = 16;

/// Why a session ended. Announced as the reason of `left` when it was the name's last session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaveReason {
    Quit,
    Disconnected,
    TooSlow,
    Expired,
    Shutdown,
}

impl LeaveReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Quit => "quit",
            LeaveReason::Disconnected => "disconnected",
            LeaveReason::TooSlow => "too slow",
            LeaveReason::Expired => "expired",
            LeaveReason::Shutdown => "directory shutting down",
        }
    }

    /// What the ending session's own stream ends with.
    fn final_status(self) -> Status {
        match self {
            LeaveReason::Quit | LeaveReason::Disconnected => Status::ok(""),
            LeaveReason::TooSlow => Status::resource_exhausted(
                "disconnected: this client read its event stream too slowly",
            ),
            LeaveReason::Expired => Status::unauthenticated("the session expired; register again"),
            LeaveReason::Shutdown => Status::unavailable("the directory service is shutting down"),
        }
    }
}

/// How sessions are bounded and their queues sized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLimits {
    pub max_per_name: usize,
    pub idle: Duration,
    pub queue: QueueLimits,
    pub send_rate: f64,
    pub send_burst: f64,
    /// The rate and burst of one name across its sessions.
    pub name_send_rate: f64,
    pub name_send_burst: f64,
}

struct Session {
    expires_at_ms: u64,
    subscriber: Option<Arc<Subscriber>>,
    last_active: Instant,
    send_budget: TokenBucket,
}

/// A name with at least one live session.
struct Online {
    peer: Peer,
    fingerprint: Fingerprint,
    sessions: HashMap<[u8; 16], Session>,
}

impl Online {
    fn listeners(&self) -> impl Iterator<Item = &Arc<Subscriber>> {
        self.sessions.values().filter_map(|s| s.subscriber.as_ref())
    }
}

/// A name's first session here began, or its last one ended (for other replicas to learn).
#[derive(Debug, Clone)]
pub(crate) enum LocalChange {
    Joined(Peer),
    Left { canonical: String, reason: String },
}

#[derive(Default)]
struct State {
    version: u64,
    /// Names with sessions on this replica.
    names: HashMap<String, Online>,
    /// Names online on other replicas: canonical name → replica → its peer record.
    remote: HashMap<String, HashMap<String, Peer>>,
    /// Where this replica's own joins and leaves go, in cluster mode.
    changes: Option<mpsc::UnboundedSender<LocalChange>>,
    /// Each name's send budget across its sessions, kept until it has refilled (the sweep
    /// drops full ones), so quitting and registering again does not refill it.
    name_send_budgets: HashMap<String, TokenBucket>,
}

impl State {
    fn is_online(&self, canonical: &str) -> bool {
        self.names.contains_key(canonical) || self.remote.contains_key(canonical)
    }

    fn tell_cluster(&self, change: LocalChange) {
        if let Some(changes) = &self.changes {
            let _ = changes.send(change);
        }
    }

    /// Announces a version step to every local stream.
    fn announce(&mut self, kind: impl FnOnce(u64) -> event::Kind) {
        self.version += 1;
        let ev = event(kind(self.version));
        broadcast(self, ev);
    }
}

/// The session an authenticated call belongs to.
#[derive(Debug, Clone)]
pub(crate) struct SessionRef {
    pub canonical: String,
    /// The name as its owner spelled it at registration.
    pub name: String,
    pub id: [u8; 16],
    pub fingerprint: Fingerprint,
}

/// Live sessions and presence.
pub(crate) struct Registry {
    state: Mutex<State>,
    limits: SessionLimits,
    mail: Arc<dyn Mailboxes>,
    shutting_down: AtomicBool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn event(kind: event::Kind) -> Event {
    Event { kind: Some(kind) }
}

/// Bytes an event counts against a queue's byte bound.
pub(crate) fn event_bytes(event: &Event) -> usize {
    match &event.kind {
        Some(event::Kind::Envelope(e)) => {
            e.header.len()
                + e.ciphertext.len()
                + e.signature.len()
                + e.wrapped_keys
                    .iter()
                    .map(|k| k.recipient.len() + k.wrapped_key.len())
                    .sum::<usize>()
        }
        _ => 64,
    }
}

fn session_ended() -> Error {
    Refusal::Unauthenticated(
        "this session has ended (quit, disconnected, expired, or the directory restarted); register again"
            .into(),
    )
    .into()
}

impl Registry {
    pub(crate) fn new(limits: SessionLimits, mail: Arc<dyn Mailboxes>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            limits,
            mail,
            shutting_down: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock can leave the state half-changed: keep serving after a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses early a name online under another key (before any disk work).
    pub(crate) fn check_key(
        &self,
        canonical: &str,
        name: &str,
        fingerprint: &Fingerprint,
    ) -> Result<(), Error> {
        let state = self.state();
        let local = state.names.get(canonical).map(|o| o.fingerprint);
        let remote = state.remote.get(canonical).into_iter().flat_map(|r| {
            r.values()
                .map(|peer| identity::fingerprint_der(&peer.public_key_der))
        });
        match local.into_iter().chain(remote).any(|f| &f != fingerprint) {
            true => Err(already_online(name)),
            false => Ok(()),
        }
    }

    /// Adds a session to `peer`'s name; announces `joined` if it is the name's first.
    pub(crate) fn add_session(
        &self,
        peer: Peer,
        fingerprint: Fingerprint,
        session_id: [u8; 16],
        expires_at_ms: u64,
    ) -> Result<(), Error> {
        let canonical = names::canonical(&peer.name);
        let session = Session {
            expires_at_ms,
            subscriber: None,
            last_active: Instant::now(),
            send_budget: TokenBucket::full(self.limits.send_burst),
        };
        let mut state = self.state();
        if let Some(online) = state.names.get_mut(&canonical) {
            if online.fingerprint != fingerprint {
                return Err(already_online(&peer.name));
            }
            if online.sessions.len() >= self.limits.max_per_name {
                return Err(Refusal::ResourceExhausted(format!(
                    "{} already has {} sessions (the limit); quit one, or wait for an idle one to expire",
                    peer.name,
                    online.sessions.len()
                )).into());
            }
            online.sessions.insert(session_id, session);
            return Ok(());
        }
        let was_online = state.is_online(&canonical);
        state.names.insert(
            canonical,
            Online {
                peer: peer.clone(),
                fingerprint,
                sessions: HashMap::from([(session_id, session)]),
            },
        );
        state.tell_cluster(LocalChange::Joined(peer.clone()));
        if !was_online {
            state.announce(|version| {
                event::Kind::Joined(PeerJoined {
                    version,
                    peer: Some(peer),
                })
            });
        }
        Ok(())
    }

    /// Resolves a verified token to its live session, refreshing its activity time.
    pub(crate) fn session(&self, claims: &Claims) -> Result<SessionRef, Error> {
        let canonical = names::canonical(&claims.name);
        let mut state = self.state();
        let online = state.names.get_mut(&canonical).ok_or_else(session_ended)?;
        let session = online
            .sessions
            .get_mut(&claims.session_id)
            .ok_or_else(session_ended)?;
        session.last_active = Instant::now();
        Ok(SessionRef {
            canonical,
            name: online.peer.name.clone(),
            id: claims.session_id,
            fingerprint: online.fingerprint,
        })
    }

    /// Takes one message from the session's send budget and from its name's.
    pub(crate) fn take_send_budget(&self, session: &SessionRef) -> Result<(), Error> {
        let limits = self.limits;
        let mut state = self.state();
        let live = state
            .names
            .get_mut(&session.canonical)
            .and_then(|o| o.sessions.get_mut(&session.id))
            .ok_or_else(session_ended)?;
        if !live.send_budget.take(limits.send_rate, limits.send_burst) {
            return Err(Refusal::RetryLater {
                message: format!(
                    "sending too fast: the limit is {} messages per second (bursts of {})",
                    limits.send_rate, limits.send_burst
                ),
                after: Duration::from_secs_f64(1.0 / limits.send_rate.max(0.001)),
            }
            .into());
        }
        let name_budget = state
            .name_send_budgets
            .entry(session.canonical.clone())
            .or_insert_with(|| TokenBucket::full(limits.name_send_burst));
        if !name_budget.take(limits.name_send_rate, limits.name_send_burst) {
            return Err(Refusal::RetryLater {
                message: format!(
                    "sending too fast: {} may send {} messages per second across all its sessions (bursts of {})",
                    session.name, limits.name_send_rate, limits.name_send_burst
                ),
                after: Duration::from_secs_f64(1.0 / limits.name_send_rate.max(0.001)),
            }.into());
        }
        Ok(())
    }

    /// Who is online now.
    pub(crate) fn snapshot(&self) -> ListPeersResponse {
        snapshot_locked(&self.state())
    }

    /// The online entry of a name, here or on another replica: its peer record.
    pub(crate) fn online_peer(&self, canonical: &str) -> Option<Peer> {
        let state = self.state();
        match state.names.get(canonical) {
            Some(online) => Some(online.peer.clone()),
            None => earliest(state.remote.get(canonical)?.values()).cloned(),
        }
    }

    /// Whether any session of the name has an event stream that takes its mail (a name online
    /// on another replica counts: that replica delivers).
    pub(crate) fn is_listening(&self, canonical: &str) -> bool {
        let state = self.state();
        state.remote.contains_key(canonical)
            || state
                .names
                .get(canonical)
                .is_some_and(|o| o.listeners().any(|s| s.takes_mail()))
    }

    /// Starts reporting this replica's joins and leaves to `changes`; returns the names online
    /// here now, which the cluster does not know of yet.
    pub(crate) fn report_changes(&self, changes: mpsc::UnboundedSender<LocalChange>) -> Vec<Peer> {
        let mut state = self.state();
        state.changes = Some(changes);
        state.names.values().map(|o| o.peer.clone()).collect()
    }

    /// A name came online on another replica (or its record there was refreshed).
    pub(crate) fn remote_joined(&self, replica: &str, peer: Peer) {
        let canonical = names::canonical(&peer.name);
        let mut state = self.state();
        let was_online = state.is_online(&canonical);
        state
            .remote
            .entry(canonical)
            .or_default()
            .insert(replica.to_string(), peer.clone());
        if !was_online {
            state.announce(|version| {
                event::Kind::Joined(PeerJoined {
                    version,
                    peer: Some(peer),
                })
            });
        }
    }

    /// A name's last session on another replica ended.
    pub(crate) fn remote_left(&self, replica: &str, canonical: &str, reason: &str) {
        remote_left_locked(&mut self.state(), replica, canonical, reason);
    }

    /// Another replica stopped (or stopped answering): its names leave unless online elsewhere.
    /// Returns the names it had.
    pub(crate) fn replica_gone(&self, replica: &str, reason: &str) -> Vec<String> {
        let mut state = self.state();
        let names: Vec<String> = state
            .remote
            .iter()
            .filter(|(_, on)| on.contains_key(replica))
            .map(|(canonical, _)| canonical.clone())
            .collect();
        for canonical in &names {
            remote_left_locked(&mut state, replica, canonical, reason);
        }
        names
    }

    /// Attaches a new event stream to the session (replacing an older one) and queues the
    /// snapshot as its first events; the name's mailbox follows.
    pub(crate) fn subscribe(
        &self,
        session: &SessionRef,
        takes_mail: bool,
    ) -> Result<(Arc<Subscriber>, crate::subscriber::Outbox), Error> {
        let (subscriber, outbox) = Subscriber::new(
            self.limits.queue,
            session.canonical.clone(),
            self.mail.clone(),
            takes_mail,
        );
        let mut state = self.state();
        let snapshot = snapshot_locked(&state);
        let live = state
            .names
            .get_mut(&session.canonical)
            .and_then(|o| o.sessions.get_mut(&session.id))
            .ok_or_else(session_ended)?;
        if let Some(old) = live.subscriber.replace(subscriber.clone()) {
            old.close(Status::aborted(
                "replaced by a newer subscription of this session",
            ));
        }
        // Pages of at most SNAPSHOT_PAGE peers; an empty directory is one empty page.
        let pages: Vec<&[Peer]> = if snapshot.peers.is_empty() {
            vec![&[]]
        } else {
            snapshot.peers.chunks(SNAPSHOT_PAGE).collect()
        };
        let last = pages.len() - 1;
        for (n, page) in pages.into_iter().enumerate() {
            subscriber.push_control(event(event::Kind::Snapshot(ListPeersResponse {
                version: snapshot.version,
                peers: page.to_vec(),
                more: n < last,
            })));
        }
        Ok((subscriber, outbox))
    }

    /// Hands just-committed mailbox items to the live streams of their names (the mailbox sink).
    pub(crate) fn deliver(&self, committed: Vec<Committed>) {
        let state = self.state();
        for item in &committed {
            if let Some(online) = state.names.get(&item.owner) {
                let bytes = event_bytes(&item.event);
                for sub in online.listeners() {
                    sub.offer(item.seq, item.prev_seq, &item.event, bytes);
                }
            }
        }
    }

    /// Pushes a receipt to every live stream of `canonical`. Returns false if there is none.
    pub(crate) fn push_receipt(&self, canonical: &str, kind: event::Kind) -> bool {
        let state = self.state();
        let Some(online) = state.names.get(canonical) else {
            return false;
        };
        let mut any = false;
        for sub in online.listeners() {
            any |= sub.push_control(event(kind.clone()));
        }
        any
    }

    /// Tells every live stream of each of `names` (canonical) that a group they have a device in
    /// has new entries. A hint: dropped for a stream whose queue is full.
    pub(crate) fn push_group_activity(&self, names: &[String], group_id: &[u8]) {
        let state = self.state();
        let event = event(event::Kind::GroupActivity(GroupActivity {
            group_id: group_id.to_vec().into(),
        }));
        for name in names {
            if let Some(online) = state.names.get(name) {
                for sub in online.listeners() {
                    sub.push_hint(event.clone());
                }
            }
        }
    }

    /// Called when a session's event stream ends for any reason.
    pub(crate) fn subscription_ended(
        &self,
        canonical: &str,
        session_id: [u8; 16],
        subscriber: &Arc<Subscriber>,
    ) {
        let mut state = self.state();
        let current = state
            .names
            .get(canonical)
            .and_then(|o| o.sessions.get(&session_id))
            .and_then(|s| s.subscriber.as_ref())
            .is_some_and(|s| Arc::ptr_eq(s, subscriber));
        if current {
            let reason = if self.shutting_down.load(Ordering::SeqCst) {
                LeaveReason::Shutdown
            } else if subscriber.cut_as_too_slow() {
                LeaveReason::TooSlow
            } else {
                LeaveReason::Disconnected
            };
            end_session_locked(&mut state, canonical, session_id, reason);
        }
    }

    /// Ends a session at the client's request.
    pub(crate) fn quit(&self, session: &SessionRef) {
        end_session_locked(
            &mut self.state(),
            &session.canonical,
            session.id,
            LeaveReason::Quit,
        );
    }

    /// Ends expired sessions, sessions idle without a stream, and subscribers cut as too slow;
    /// updates the session gauges.
    pub(crate) fn sweep(&self) {
        let mut state = self.state();
        let (rate, burst) = (self.limits.name_send_rate, self.limits.name_send_burst);
        state
            .name_send_budgets
            .retain(|_, budget| !budget.is_full(rate, burst));
        let now = Instant::now();
        let wall = now_ms();
        let ending: Vec<(String, [u8; 16], LeaveReason)> = state
            .names
            .iter()
            .flat_map(|(canonical, online)| {
                online.sessions.iter().filter_map(move |(id, s)| {
                    let reason = if s.expires_at_ms <= wall {
                        Some(LeaveReason::Expired)
                    } else if s
                        .subscriber
                        .as_ref()
                        .is_some_and(|sub| sub.cut_as_too_slow())
                    {
                        Some(LeaveReason::TooSlow)
                    } else if s.subscriber.is_none()
                        && now.duration_since(s.last_active) > self.limits.idle
                    {
                        Some(LeaveReason::Expired)
                    } else {
                        None
                    };
                    reason.map(|r| (canonical.clone(), *id, r))
                })
            })
            .collect();
        for (canonical, id, reason) in ending {
            end_session_locked(&mut state, &canonical, id, reason);
        }
        let sessions = state.names.values().flat_map(|o| o.sessions.values());
        let (sessions, subscribed) = sessions.fold((0, 0), |(n, s), session| {
            (n + 1, s + usize::from(session.subscriber.is_some()))
        });
        metrics::gauge!("svs_directory_names_online").set(state.names.len() as f64);
        metrics::gauge!("svs_directory_sessions").set(sessions as f64);
        metrics::gauge!("svs_directory_subscribers").set(subscribed as f64);
        let (messages, events) = state
            .names
            .values()
            .flat_map(Online::listeners)
            .map(|sub| sub.queued())
            .fold((0, 0), |(m, e), (qm, qe)| (m + qm, e + qe));
        metrics::gauge!("svs_directory_queued_messages").set(messages as f64);
        metrics::gauge!("svs_directory_queued_events").set(events as f64);
    }

    /// Ends every stream with UNAVAILABLE; used on shutdown.
    pub(crate) fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let state = self.state();
        for sub in state.names.values().flat_map(Online::listeners) {
            sub.close(LeaveReason::Shutdown.final_status());
        }
    }

    #[cfg(test)]
    /// Sessions of a name now (for tests and the bench).
    pub(crate) fn session_count(&self, canonical: &str) -> usize {
        self.state()
            .names
            .get(canonical)
            .map_or(0, |o| o.sessions.len())
    }
}

fn end_session_locked(
    state: &mut State,
    canonical: &str,
    session_id: [u8; 16],
    reason: LeaveReason,
) {
    let Some(online) = state.names.get_mut(canonical) else {
        return;
    };
    let Some(session) = online.sessions.remove(&session_id) else {
        return;
    };
    metrics::counter!("svs_directory_sessions_ended_total", "reason" => reason.as_str())
        .increment(1);
    if let Some(sub) = &session.subscriber {
        sub.close(reason.final_status());
    }
    if !online.sessions.is_empty() {
        tracing::debug!(name = %online.peer.name, reason = reason.as_str(), "one session of several ended");
        return;
    }
    let online = state.names.remove(canonical).expect("looked up above");
    state.tell_cluster(LocalChange::Left {
        canonical: canonical.to_string(),
        reason: reason.as_str().to_string(),
    });
    tracing::info!(name = %online.peer.name, reason = reason.as_str(), "left");
    if !state.is_online(canonical) {
        state.announce(|version| {
            event::Kind::Left(PeerLeft {
                version,
                name: online.peer.name,
                reason: reason.as_str().to_string(),
            })
        });
    }
}

fn remote_left_locked(state: &mut State, replica: &str, canonical: &str, reason: &str) {
    let Some(on) = state.remote.get_mut(canonical) else {
        return;
    };
    let Some(peer) = on.remove(replica) else {
        return;
    };
    if on.is_empty() {
        state.remote.remove(canonical);
    }
    if !state.is_online(canonical) {
        state.announce(|version| {
            event::Kind::Left(PeerLeft {
                version,
                name: peer.name,
                reason: reason.to_string(),
            })
        });
    }
}

/// The record of whoever came online first.
fn earliest<'a>(peers: impl Iterator<Item = &'a Peer>) -> Option<&'a Peer> {
    peers.min_by_key(|p| p.online_since_ms)
}

fn already_online(name: &str) -> Error {
    Refusal::AlreadyExists(format!(
        "the name {name} is taken by someone online now; pick another name"
    ))
    .into()
}

fn snapshot_locked(state: &State) -> ListPeersResponse {
    let here = state.names.values().map(|o| o.peer.clone());
    let elsewhere = state
        .remote
        .iter()
        .filter(|(canonical, _)| !state.names.contains_key(*canonical))
        .filter_map(|(_, on)| earliest(on.values()).cloned());
    let mut peers: Vec<Peer> = here.chain(elsewhere).collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    ListPeersResponse {
        version: state.version,
        peers,
        more: false,
    }
}

fn broadcast(state: &State, ev: Event) {
    for sub in state.names.values().flat_map(Online::listeners) {
        sub.push_control(ev.clone());
    }
}

/// A peer record for a registration.
pub(crate) fn peer_record(name: &str, key_der: &[u8], fingerprint: &Fingerprint) -> Peer {
    Peer {
        name: name.to_string(),
        public_key_der: Bytes::copy_from_slice(key_der),
        fingerprint: identity::fingerprint_hex(fingerprint),
        online_since_ms: now_ms(),
    }
}
