//! The directory's live state: challenges, sessions, presence versions, and the relay that fans
//! sealed envelopes out to subscribers and routes receipts back. Methods are synchronous and hold
//! the state lock only for map operations; RSA and disk work happen outside it.

use crate::Error;
use crate::challenges::Challenges;
use crate::config::Limits;
use crate::store::{Claim, NameStore};
use crate::subscriber::{Outbox, Push, QueueLimits, Subscriber};
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use svs_common::identity::{self, Fingerprint};
use svs_common::names;
use svs_common::proto::directory::{
    DeliveryFailure, DeliveryReceipt, Envelope, Event, ListPeersResponse, Outcome, Peer,
    PeerJoined, PeerLeft, RecipientOutcome, event,
};
use svs_common::registration::{self, CHALLENGE_LEN};
use svs_common::rsa::PublicKey;
use svs_common::sealed::{self, Header};
use svs_common::time::now_ms;
use svs_common::token::{Claims, TokenIssuer};
use svs_server::rate::TokenBucket;
use tonic::Status;

/// Message ids a session remembers to refuse a resent envelope.
const RECENT_IDS: usize = 4096;
/// Most ids in one Ack call.
pub const MAX_ACK_IDS: usize = 4096;
/// Peers per snapshot page in a subscription. Each stream keeps an encode buffer as large as the
/// largest message it sent, so one 1,000-peer snapshot would cost every subscriber ~400 KB for
/// the life of its stream; pages keep that to ~25 KB.
pub const SNAPSHOT_PAGE: usize = 64;

/// Why a session ended, as announced to everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    Quit,
    Disconnected,
    Superseded,
    TooSlow,
    Expired,
    Shutdown,
}

impl LeaveReason {
    fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Quit => "quit",
            LeaveReason::Disconnected => "disconnected",
            LeaveReason::Superseded => "superseded",
            LeaveReason::TooSlow => "too slow",
            LeaveReason::Expired => "expired",
            LeaveReason::Shutdown => "directory shutting down",
        }
    }

    /// What the leaving session's own stream ends with.
    fn final_status(self) -> Status {
        match self {
            LeaveReason::Quit | LeaveReason::Disconnected => Status::ok(""),
            LeaveReason::Superseded => Status::aborted(
                "this session was taken over by a newer registration of the same name and key",
            ),
            LeaveReason::TooSlow => Status::resource_exhausted(
                "disconnected: this client read its event stream too slowly",
            ),
            LeaveReason::Expired => Status::unauthenticated("the session expired; register again"),
            LeaveReason::Shutdown => Status::unavailable("the directory service is shutting down"),
        }
    }
}

/// Who is waiting for a receipt.
#[derive(Clone)]
struct SenderRef {
    canonical: String,
    session_id: [u8; 16],
}

struct Session {
    id: [u8; 16],
    peer: Peer,
    key: Arc<PublicKey>,
    fingerprint: Fingerprint,
    expires_at_ms: u64,
    subscriber: Option<Arc<Subscriber>>,
    last_active: Instant,
    send_budget: TokenBucket,
    /// Message id → who waits for its receipt. Ids are chosen by senders, so two senders may use
    /// one id (a co-recipient copying it): each keeps its own entry and gets its own receipt.
    awaiting_ack: HashMap<[u8; 16], Vec<SenderRef>>,
    recent_ids: VecDeque<[u8; 16]>,
    recent_set: HashSet<[u8; 16]>,
}

#[derive(Default)]
struct State {
    version: u64,
    sessions: HashMap<String, Session>,
}

impl State {
    /// The session a call belongs to, if it is still the live one for its name.
    fn live(&mut self, session: &SessionRef) -> Result<&mut Session, Error> {
        self.sessions
            .get_mut(&session.canonical)
            .filter(|s| s.id == session.id)
            .ok_or_else(|| Error::Unauthenticated("this session has ended; register again".into()))
    }
}

/// A fresh challenge for the client to sign.
pub struct IssuedChallenge {
    pub challenge: [u8; CHALLENGE_LEN],
    pub service_id: String,
    pub expires_at_ms: u64,
}

/// A session created by registration.
pub struct Registered {
    pub token: String,
    pub expires_at_ms: u64,
    pub fingerprint: String,
}

/// The session an authenticated call belongs to.
pub struct SessionRef {
    pub canonical: String,
    pub id: [u8; 16],
    key: Arc<PublicKey>,
    fingerprint: Fingerprint,
}

/// Registration, presence and relay.
pub struct Directory {
    state: Mutex<State>,
    challenges: Challenges,
    shutting_down: AtomicBool,
    store: NameStore,
    tokens: TokenIssuer,
    limits: Limits,
}

fn event(kind: event::Kind) -> Event {
    Event { kind: Some(kind) }
}

fn envelope_bytes(envelope: &Envelope) -> usize {
    envelope.header.len()
        + envelope.ciphertext.len()
        + envelope.signature.len()
        + envelope
            .wrapped_keys
            .iter()
            .map(|k| k.recipient.len() + k.wrapped_key.len())
            .sum::<usize>()
}

impl Directory {
    pub fn new(store: NameStore, tokens: TokenIssuer, limits: Limits) -> Result<Self, Error> {
        Ok(Self {
            state: Mutex::new(State::default()),
            challenges: Challenges::new(limits.challenge_secs * 1000, limits.max_used_challenges)?,
            shutting_down: AtomicBool::new(false),
            store,
            tokens,
            limits,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock can leave the state half-changed: keep serving after a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The name store, for the sweeper's recovery and health.
    pub fn store(&self) -> &NameStore {
        &self.store
    }

    /// The directory's identity bound into registration statements.
    pub fn service_id(&self) -> &str {
        self.tokens.verifier().service_id()
    }

    /// Step 1 of registration. Keeps no state: the challenge authenticates itself.
    pub fn challenge(&self, name: &str, key_der: &[u8]) -> Result<IssuedChallenge, Error> {
        names::validate(name)?;
        identity::parse_public_key(key_der)?;
        let (challenge, expires_at_ms) =
            self.challenges
                .issue(&names::canonical(name), key_der, now_ms())?;
        Ok(IssuedChallenge {
            challenge,
            service_id: self.service_id().to_string(),
            expires_at_ms,
        })
    }

    /// Step 2 of registration: checks the signed statement, claims the name, starts a session.
    pub fn register(
        &self,
        name: &str,
        key_der: &[u8],
        challenge: &[u8],
        signature: &[u8],
    ) -> Result<Registered, Error> {
        names::validate(name)?;
        let canonical = names::canonical(name);
        let challenge: [u8; CHALLENGE_LEN] = challenge.try_into().map_err(|_| {
            Error::InvalidArgument(format!("the challenge must be {CHALLENGE_LEN} bytes"))
        })?;
        self.challenges
            .check(&challenge, &canonical, key_der, now_ms())?;
        let key = identity::parse_public_key(key_der)?;
        registration::verify(
            &key,
            self.service_id(),
            name,
            key_der,
            &challenge,
            signature,
        )
        .map_err(|_| {
            Error::PermissionDenied(
                "the registration signature does not verify under the offered key".into(),
            )
        })?;
        // Single use, remembered only now that the client has proved its key.
        self.challenges.consume(&challenge, now_ms())?;
        let fingerprint = identity::fingerprint_der(key_der);
        self.refuse_if_online_with_other_key(&canonical, name, &fingerprint)?;
        if self.store.claim(&canonical, key_der)? == Claim::OtherKey {
            return Err(Error::PermissionDenied(format!(
                "the name {name} belongs to another key; its owner must use it, or an operator can free it with `directory-service release {name}`"
            )));
        }

        let session_id = identity::random::<16>()?;
        let now = now_ms();
        let expires_at_ms = now + self.limits.token_hours * 3600 * 1000;
        let claims = Claims {
            session_id,
            name: name.to_string(),
            fingerprint,
            issued_at_ms: now,
            expires_at_ms,
        };
        let token = self.tokens.issue(&claims)?;
        let peer = Peer {
            name: name.to_string(),
            public_key_der: Bytes::copy_from_slice(key_der),
            fingerprint: identity::fingerprint_hex(&fingerprint),
            online_since_ms: now,
        };
        let mut state = self.state();
        if let Some(existing) = state.sessions.get(&canonical) {
            if existing.fingerprint != fingerprint {
                return Err(already_online(name));
            }
            let old_id = existing.id;
            self.end_session_locked(&mut state, &canonical, old_id, LeaveReason::Superseded);
        }
        state.sessions.insert(
            canonical.clone(),
            Session {
                id: session_id,
                peer: peer.clone(),
                key: Arc::new(key),
                fingerprint,
                expires_at_ms,
                subscriber: None,
                last_active: Instant::now(),
                send_budget: TokenBucket::full(self.limits.send_burst),
                awaiting_ack: HashMap::new(),
                recent_ids: VecDeque::new(),
                recent_set: HashSet::new(),
            },
        );
        state.version += 1;
        let version = state.version;
        broadcast(
            &state,
            event(event::Kind::Joined(PeerJoined {
                version,
                peer: Some(peer),
            })),
        );
        drop(state);
        tracing::info!(%name, fingerprint = %identity::fingerprint_hex(&fingerprint), "registered");
        Ok(Registered {
            token,
            expires_at_ms,
            fingerprint: identity::fingerprint_hex(&fingerprint),
        })
    }

    fn refuse_if_online_with_other_key(
        &self,
        canonical: &str,
        name: &str,
        fingerprint: &Fingerprint,
    ) -> Result<(), Error> {
        match self.state().sessions.get(canonical) {
            Some(s) if &s.fingerprint != fingerprint => Err(already_online(name)),
            _ => Ok(()),
        }
    }

    /// Resolves a verified token to its live session, refreshing its activity time.
    pub fn session(&self, claims: &Claims) -> Result<SessionRef, Error> {
        let canonical = names::canonical(&claims.name);
        let mut state = self.state();
        let session = state
            .sessions
            .get_mut(&canonical)
            .filter(|s| s.id == claims.session_id)
            .ok_or_else(|| {
                Error::Unauthenticated(
                    "this session has ended (quit, taken over, disconnected or expired); register again".into(),
                )
            })?;
        session.last_active = Instant::now();
        Ok(SessionRef {
            canonical,
            id: session.id,
            key: session.key.clone(),
            fingerprint: session.fingerprint,
        })
    }

    /// Who is online now.
    pub fn snapshot(&self) -> ListPeersResponse {
        snapshot_locked(&self.state())
    }

    /// Attaches a new event stream to the session (replacing an older one) and queues the
    /// snapshot as its first event.
    pub fn subscribe(&self, session: &SessionRef) -> Result<(Arc<Subscriber>, Outbox), Error> {
        let (subscriber, outbox) = Subscriber::new(QueueLimits {
            messages: self.limits.queue_messages,
            bytes: self.limits.queue_bytes,
            events: self.limits.queue_events,
            presence_window: Duration::from_millis(self.limits.presence_batch_ms),
        });
        let mut state = self.state();
        let snapshot = snapshot_locked(&state);
        let live = state.live(session)?;
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

    /// Called when a session's event stream ends for any reason.
    pub fn subscription_ended(
        &self,
        canonical: &str,
        session_id: [u8; 16],
        subscriber: &Arc<Subscriber>,
    ) {
        let mut state = self.state();
        let current = state.sessions.get(canonical).is_some_and(|s| {
            s.id == session_id
                && s.subscriber
                    .as_ref()
                    .is_some_and(|x| Arc::ptr_eq(x, subscriber))
        });
        if current {
            let reason = if self.shutting_down.load(Ordering::SeqCst) {
                LeaveReason::Shutdown
            } else if subscriber.cut_as_too_slow() {
                LeaveReason::TooSlow
            } else {
                LeaveReason::Disconnected
            };
            self.end_session_locked(&mut state, canonical, session_id, reason);
        }
    }

    /// Ends a session at the client's request.
    pub fn quit(&self, session: &SessionRef) {
        let mut state = self.state();
        self.end_session_locked(
            &mut state,
            &session.canonical,
            session.id,
            LeaveReason::Quit,
        );
    }

    fn end_session_locked(
        &self,
        state: &mut State,
        canonical: &str,
        session_id: [u8; 16],
        reason: LeaveReason,
    ) {
        if state
            .sessions
            .get(canonical)
            .is_none_or(|s| s.id != session_id)
        {
            return;
        }
        let session = state.sessions.remove(canonical).expect("checked above");
        if let Some(sub) = &session.subscriber {
            sub.close(reason.final_status());
        }
        for (message_id, sender) in session
            .awaiting_ack
            .into_iter()
            .flat_map(|(id, senders)| senders.into_iter().map(move |s| (id, s)))
        {
            notify_sender(
                state,
                &sender,
                event::Kind::Undelivered(DeliveryFailure {
                    message_id: Bytes::copy_from_slice(&message_id),
                    recipient: session.peer.name.clone(),
                    reason: format!(
                        "{} went offline ({}) before acknowledging it",
                        session.peer.name,
                        reason.as_str()
                    ),
                }),
            );
        }
        state.version += 1;
        let version = state.version;
        broadcast(
            state,
            event(event::Kind::Left(PeerLeft {
                version,
                name: session.peer.name.clone(),
                reason: reason.as_str().to_string(),
            })),
        );
        tracing::info!(name = %session.peer.name, reason = reason.as_str(), "left");
    }

    /// Checks an envelope against the sender's session and key, then queues it for each
    /// recipient. The outcome list follows the header's recipient order.
    pub fn relay(
        &self,
        session: &SessionRef,
        envelope: Envelope,
    ) -> Result<(Header, Vec<RecipientOutcome>), Error> {
        let limits = &self.limits;
        if envelope.wrapped_keys.len() > limits.max_recipients {
            return Err(Error::InvalidArgument(format!(
                "a message may go to at most {} recipients; this one names {}",
                limits.max_recipients,
                envelope.wrapped_keys.len()
            )));
        }
        let max_ciphertext = limits.max_message_bytes + 16;
        if envelope.ciphertext.len() > max_ciphertext {
            return Err(Error::ResourceExhausted(format!(
                "the message is {} bytes; the limit is {} bytes",
                envelope.ciphertext.len().saturating_sub(16),
                limits.max_message_bytes
            )));
        }
        let header = Header::decode(&envelope.header)?;
        if names::canonical(&header.sender) != session.canonical {
            return Err(Error::PermissionDenied(format!(
                "the envelope claims to be from {} but this session is {}",
                header.sender, session.canonical
            )));
        }
        if header.sender_fingerprint != session.fingerprint {
            return Err(Error::PermissionDenied(
                "the envelope names a sender key other than the one this session registered".into(),
            ));
        }
        let skew = now_ms().abs_diff(header.timestamp_ms);
        if skew > limits.max_clock_skew_secs * 1000 {
            return Err(Error::InvalidArgument(format!(
                "the message timestamp is {} s away from the directory's clock (limit {} s); check the sender's clock",
                skew / 1000,
                limits.max_clock_skew_secs
            )));
        }
        sealed::verify(&envelope, &session.key).map_err(|e| match e {
            svs_common::Error::BadSignature => Error::InvalidArgument(
                "the envelope signature does not verify under the sender's registered key".into(),
            ),
            other => other.into(),
        })?;
        // Recipients not online: whether anyone owns the name is read from disk outside the lock.
        let mut not_online = HashSet::new();
        {
            let state = self.state();
            for r in &header.recipients {
                let canonical = names::canonical(&r.name);
                if !state.sessions.contains_key(&canonical) {
                    not_online.insert(canonical);
                }
            }
        }
        let mut known_offline = HashSet::new();
        for canonical in &not_online {
            if self.store.owner(canonical)?.is_some() {
                known_offline.insert(canonical.clone());
            }
        }

        let event_size = envelope_bytes(&envelope);
        let shared = event(event::Kind::Envelope(envelope));
        let mut state = self.state();
        let sender = state.live(session)?;
        if !sender.send_budget.take(limits.send_rate, limits.send_burst) {
            return Err(Error::ResourceExhausted(format!(
                "sending too fast: the limit is {} messages per second (bursts of {})",
                limits.send_rate, limits.send_burst
            )));
        }
        if !sender.recent_set.insert(header.message_id) {
            return Err(Error::AlreadyExists(
                "this message id was already sent; a resent envelope is refused".into(),
            ));
        }
        sender.recent_ids.push_back(header.message_id);
        if sender.recent_ids.len() > RECENT_IDS
            && let Some(old) = sender.recent_ids.pop_front()
        {
            sender.recent_set.remove(&old);
        }
        let sender_ref = SenderRef {
            canonical: session.canonical.clone(),
            session_id: session.id,
        };
        let max_awaiting = limits.queue_messages * 4;
        let outcomes = header
            .recipients
            .iter()
            .map(|r| {
                let canonical = names::canonical(&r.name);
                let (outcome, detail) = match state.sessions.get_mut(&canonical) {
                    None if known_offline.contains(&canonical) => {
                        (Outcome::Offline, format!("{} is offline", r.name))
                    }
                    None => (
                        Outcome::UnknownName,
                        format!("nobody is registered as {}", r.name),
                    ),
                    Some(s) if s.fingerprint != r.fingerprint => (
                        Outcome::KeyMismatch,
                        format!(
                            "{} is online with a different key than the one you sealed for",
                            r.name
                        ),
                    ),
                    Some(s) => match &s.subscriber {
                        None => (
                            Outcome::Offline,
                            format!("{} is registered but not listening", r.name),
                        ),
                        Some(sub) if s.awaiting_ack.len() >= max_awaiting => {
                            // Not acknowledging is as stuck as not reading.
                            sub.note_full();
                            (
                                Outcome::QueueFull,
                                format!("{} has too many unacknowledged messages", r.name),
                            )
                        }
                        Some(sub) => match sub.push_message(shared.clone(), event_size) {
                            Push::Queued => {
                                s.awaiting_ack
                                    .entry(header.message_id)
                                    .or_default()
                                    .push(sender_ref.clone());
                                (Outcome::Queued, format!("queued for {}", r.name))
                            }
                            Push::Full => (
                                Outcome::QueueFull,
                                format!("{} is not reading fast enough; its queue is full", r.name),
                            ),
                        },
                    },
                };
                RecipientOutcome {
                    recipient: r.name.clone(),
                    outcome: outcome as i32,
                    detail,
                }
            })
            .collect();
        Ok((header, outcomes))
    }

    /// Acknowledges envelopes received by `session`, sending receipts to their senders.
    pub fn ack(&self, session: &SessionRef, message_ids: &[Bytes]) -> Result<u32, Error> {
        if message_ids.len() > MAX_ACK_IDS {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_ACK_IDS} ids per Ack call"
            )));
        }
        let mut state = self.state();
        let me = state.live(session)?;
        let my_name = me.peer.name.clone();
        let senders: Vec<([u8; 16], SenderRef)> = message_ids
            .iter()
            .filter_map(|id| <[u8; 16]>::try_from(id.as_ref()).ok())
            .filter_map(|id| me.awaiting_ack.remove(&id).map(|s| (id, s)))
            .flat_map(|(id, senders)| senders.into_iter().map(move |s| (id, s)))
            .collect();
        for (id, sender) in &senders {
            notify_sender(
                &state,
                sender,
                event::Kind::Delivered(DeliveryReceipt {
                    message_id: Bytes::copy_from_slice(id),
                    recipient: my_name.clone(),
                }),
            );
        }
        Ok(senders.len() as u32)
    }

    /// Periodic upkeep: expired challenges, expired or idle sessions, stalled subscribers.
    pub fn sweep(&self) {
        self.challenges.sweep(now_ms());
        let mut state = self.state();
        let now = Instant::now();
        let idle = Duration::from_secs(self.limits.idle_session_secs);
        let wall = now_ms();
        let ending: Vec<(String, [u8; 16], LeaveReason)> = state
            .sessions
            .iter()
            .filter_map(|(canonical, s)| {
                let reason = if s.expires_at_ms <= wall {
                    Some(LeaveReason::Expired)
                } else if s.subscriber.as_ref().is_some_and(|sub| {
                    sub.stalled_longer_than(self.limits.slow_subscriber()) || sub.cut_as_too_slow()
                }) {
                    Some(LeaveReason::TooSlow)
                } else if s.subscriber.is_none() && now.duration_since(s.last_active) > idle {
                    Some(LeaveReason::Expired)
                } else {
                    None
                };
                reason.map(|r| (canonical.clone(), s.id, r))
            })
            .collect();
        for (canonical, id, reason) in ending {
            self.end_session_locked(&mut state, &canonical, id, reason);
        }
    }

    /// Ends every stream with UNAVAILABLE; used on shutdown.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let state = self.state();
        for session in state.sessions.values() {
            if let Some(sub) = &session.subscriber {
                sub.close(LeaveReason::Shutdown.final_status());
            }
        }
    }
}

fn already_online(name: &str) -> Error {
    Error::AlreadyExists(format!(
        "the name {name} is taken by someone online now; pick another name"
    ))
}

fn snapshot_locked(state: &State) -> ListPeersResponse {
    let mut peers: Vec<Peer> = state.sessions.values().map(|s| s.peer.clone()).collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    ListPeersResponse {
        version: state.version,
        peers,
        more: false,
    }
}

fn broadcast(state: &State, ev: Event) {
    for sub in state
        .sessions
        .values()
        .filter_map(|s| s.subscriber.as_ref())
    {
        sub.push_control(ev.clone());
    }
}

fn notify_sender(state: &State, sender: &SenderRef, kind: event::Kind) {
    if let Some(sub) = state
        .sessions
        .get(&sender.canonical)
        .filter(|s| s.id == sender.session_id)
        .and_then(|s| s.subscriber.as_ref())
    {
        sub.push_control(event(kind));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use svs_common::token::TokenVerifier;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: Limits,
    }

    struct Fixture {
        directory: Directory,
        verifier: TokenVerifier,
        key: svs_common::rsa::PrivateKey,
        _tmp: tempfile::TempDir,
    }

    fn fixture(flags: &[&str]) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let store = NameStore::open(&tmp.path().join("names.redb")).unwrap();
        let tokens = TokenIssuer::new(identity::generate(2048).unwrap());
        let verifier = tokens.verifier().clone();
        // Presence is not batched here: these tests read queues with short timeouts.
        let mut args = vec!["test", "--presence-batch-ms", "0"];
        args.extend_from_slice(flags);
        let limits = Flags::parse_from(args).limits;
        Fixture {
            directory: Directory::new(store, tokens, limits).unwrap(),
            verifier,
            key: identity::generate(2048).unwrap(),
            _tmp: tmp,
        }
    }

    impl Fixture {
        /// Registers `name` (all names share one key here) and resolves its session.
        fn join(&self, name: &str) -> SessionRef {
            let spki = identity::public_key_der(&self.key.to_public_key());
            let issued = self.directory.challenge(name, &spki).unwrap();
            let signature = registration::sign(
                &self.key,
                &issued.service_id,
                name,
                &spki,
                &issued.challenge,
            )
            .unwrap();
            let registered = self
                .directory
                .register(name, &spki, &issued.challenge, &signature)
                .unwrap();
            let claims = self.verifier.verify(&registered.token, now_ms()).unwrap();
            self.directory.session(&claims).unwrap()
        }
    }

    /// Every event queued in `outbox` now.
    async fn drain(outbox: &mut Outbox, sub: &Subscriber) -> Vec<Event> {
        let mut events = Vec::new();
        while let Ok(Some(Ok(event))) =
            tokio::time::timeout(Duration::from_millis(20), outbox.next(sub)).await
        {
            events.push(event);
        }
        events
    }

    fn left_reasons(events: &[Event], name: &str) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(event::Kind::Left(left)) if left.name == name => Some(left.reason.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_subscriber_cut_for_piling_up_events_is_announced_too_slow() {
        let f = fixture(&["--queue-events", "4"]);
        let watcher = f.join("watcher");
        let (watcher_sub, mut watcher_outbox) = f.directory.subscribe(&watcher).unwrap();
        let sleeper = f.join("sleeper");
        let (sleeper_sub, _never_read) = f.directory.subscribe(&sleeper).unwrap();
        // Others come and go; the watcher reads, the sleeper's presence events pile up past 4.
        let mut seen = Vec::new();
        for n in 0..3 {
            let other = f.join(&format!("other{n}"));
            f.directory.quit(&other);
            seen.extend(drain(&mut watcher_outbox, &watcher_sub).await);
        }
        assert!(sleeper_sub.cut_as_too_slow());
        // Its stream ends (what the gRPC stream guard reports) before any sweep runs.
        f.directory
            .subscription_ended(&sleeper.canonical, sleeper.id, &sleeper_sub);
        seen.extend(drain(&mut watcher_outbox, &watcher_sub).await);
        assert_eq!(left_reasons(&seen, "sleeper"), ["too slow"]);
    }

    #[tokio::test]
    async fn a_stream_ended_by_shutdown_is_not_announced_too_slow() {
        let f = fixture(&[]);
        let alice = f.join("alice");
        let (alice_sub, _alice_outbox) = f.directory.subscribe(&alice).unwrap();
        let bob = f.join("bob");
        let (bob_sub, mut bob_outbox) = f.directory.subscribe(&bob).unwrap();
        f.directory.shutdown();
        // A sweep during the drain must not call the closed streams "too slow".
        f.directory.sweep();
        assert!(
            f.directory.snapshot().peers.len() == 2,
            "sweep ended nobody"
        );
        f.directory
            .subscription_ended(&alice.canonical, alice.id, &alice_sub);
        assert_eq!(f.directory.snapshot().peers.len(), 1);
        // Bob's stream is closed: its last word is the shutdown status.
        let last = bob_outbox.next(&bob_sub).await;
        assert!(
            matches!(&last, Some(Err(s)) if s.code() == tonic::Code::Unavailable),
            "{last:?}"
        );
    }
}
