//! `Mailboxes` in the `SVS_MAIL` JetStream stream, shared by every replica.
//!
//! Each name has two subjects: `svs.mail.<name>.m` holds its sealed envelopes (the `Envelope`
//! protobuf as sent) and `svs.mail.<name>.r` its receipts (the `Event` protobuf), where `<name>`
//! is the canonical name in lowercase hex. The stream sequence is the item's sequence number.
//! JetStream enforces the per-name quota (`max_msgs_per_subject` with new messages refused) and
//! refuses a resent envelope (`Nats-Msg-Id` = `<name>.<message id hex>` within the duplicate
//! window). A store is answered once JetStream has it on disk, so a replica that dies afterwards
//! loses nothing. Acknowledging or expiring deletes the message.
//!
//! Every replica follows the stream (an ordered consumer) and hands each new item to its own
//! live sessions, so mail stored through one replica is delivered through another. The follower
//! also remembers where each message id sits, to acknowledge by id without a search.

use super::{Cluster, MAIL_STREAM, name_from_token, name_token, nats, timed, unix_ms};
use crate::Error;
use crate::error::Refusal;
use crate::mailbox::{
    Acked, Committed, Full, FullReason, Mailboxes, NewEnvelope, NewReceipt, Page, Placement,
    Quotas, Removed, Sink, set_stored_seq,
};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use svs_common::proto::directory::{Envelope, Event, event};
use svs_common::sealed::Header;

/// Deletes in flight at once for one acknowledgement.
const ACK_CONCURRENCY: usize = 64;
/// Items read or expired per pass.
const EXPIRE_BATCH: usize = 1024;

/// What this replica's follower has seen of the stream.
#[derive(Default)]
struct Seen {
    /// Per name: the last sequence number seen (the `prev_seq` of the next).
    last: HashMap<String, u64>,
    /// Per name: where each of its envelopes sits, for acknowledgements by id.
    ids: HashMap<String, HashMap<[u8; 16], Placed>>,
    /// Stored receipt sequence number → the name it was stored for.
    receipts: HashMap<u64, String>,
    /// The highest stream sequence the follower handed on.
    followed_to: u64,
    /// When `ids` last dropped what the stream no longer holds.
    pruned_at: Option<std::time::Instant>,
}

/// A message as read: its sequence number, subject and payload.
type Raw = (u64, String, Bytes);

/// Where an envelope sits in the stream, and who sent it (whom its receipt goes to).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placed {
    seq: u64,
    sender: String,
}

/// How often the id memory drops entries below the stream's first sequence.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Seen {
    /// Forgets ids of messages before `first` (expired, or acknowledged through another replica
    /// and now past the expiry horizon), so memory follows what the stream holds.
    fn prune_before(&mut self, first: u64) {
        if self.pruned_at.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.pruned_at = Some(std::time::Instant::now());
        for ids in self.ids.values_mut() {
            ids.retain(|_, placed| placed.seq >= first);
        }
        self.ids.retain(|_, ids| !ids.is_empty());
        self.receipts.retain(|seq, _| *seq >= first);
    }

    /// Remembers an item the follower or a reader saw on `owner`'s subjects.
    fn note(&mut self, owner: &str, seq: u64, origin: Option<&Origin>) {
        match origin {
            Some(origin) => {
                let placed = Placed {
                    seq,
                    sender: origin.sender.clone(),
                };
                let ids = self.ids.entry(owner.to_string()).or_default();
                ids.insert(origin.message_id, placed);
            }
            None => {
                self.receipts.insert(seq, owner.to_string());
            }
        }
    }
}

/// Mailboxes in JetStream.
pub(crate) struct JetStreamMailboxes {
    cluster: Cluster,
    stream: stream::Stream,
    quotas: Quotas,
    seen: Arc<Mutex<Seen>>,
    sink: Arc<OnceLock<Sink>>,
    following: Arc<AtomicBool>,
}

impl std::fmt::Debug for JetStreamMailboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamMailboxes").finish_non_exhaustive()
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which of a name's two subjects a message is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Envelope,
    Receipt,
}

fn subject(owner: &str, kind: Kind) -> String {
    let suffix = match kind {
        Kind::Envelope => "m",
        Kind::Receipt => "r",
    };
    format!("svs.mail.{}.{suffix}", name_token(owner))
}

/// The owner and kind of a mail subject.
fn parse_subject(subject: &str) -> Option<(String, Kind)> {
    let mut parts = subject.split('.');
    let (Some("svs"), Some("mail"), Some(token), Some(kind), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let kind = match kind {
        "m" => Kind::Envelope,
        "r" => Kind::Receipt,
        _ => return None,
    };
    Some((name_from_token(token)?, kind))
}

/// Where an envelope came from.
struct Origin {
    message_id: [u8; 16],
    /// Canonical name of its sender.
    sender: String,
}

/// A stored item as delivered: the envelope (with its origin), or the receipt with its
/// sequence number set.
struct Item {
    event: Event,
    origin: Option<Origin>,
}

fn decode_item(kind: Kind, payload: &[u8], seq: u64) -> Option<Item> {
    match kind {
        Kind::Envelope => {
            let envelope = Envelope::decode(payload).ok()?;
            let header = Header::decode(&envelope.header).ok()?;
            let origin = Origin {
                message_id: header.message_id,
                sender: svs_common::names::canonical(&header.sender),
            };
            let event = Event {
                kind: Some(event::Kind::Envelope(envelope)),
            };
            Some(Item {
                event,
                origin: Some(origin),
            })
        }
        Kind::Receipt => {
            let mut event = Event::decode(payload).ok()?;
            set_stored_seq(&mut event, seq);
            Some(Item {
                event,
                origin: None,
            })
        }
    }
}

impl JetStreamMailboxes {
    /// Creates (or updates to these quotas) the stream and starts following it; returns once
    /// the follower has read what the stream holds, so `last_seq` is right from the start.
    pub(crate) async fn open(cluster: &Cluster, quotas: Quotas) -> Result<Self, Error> {
        let ttl = Duration::from_millis(quotas.ttl_ms);
        let config = stream::Config {
            name: MAIL_STREAM.into(),
            description: Some("svs mailboxes: sealed envelopes and receipts per name".into()),
            subjects: vec!["svs.mail.>".into()],
            storage: stream::StorageType::File,
            // The expiry pass removes items at the TTL and tells their senders; this is only a
            // backstop should every replica be down for a day.
            max_age: ttl + Duration::from_secs(86_400),
            max_messages_per_subject: i64::try_from(quotas.max_messages).unwrap_or(i64::MAX),
            // The store's ceiling (--mail-max-total-bytes), enforced by JetStream: new messages
            // are refused past it.
            max_bytes: i64::try_from(quotas.max_total_bytes).unwrap_or(i64::MAX),
            discard: stream::DiscardPolicy::New,
            discard_new_per_subject: true,
            duplicate_window: Duration::from_millis(quotas.remember_ids_ms.max(1000)).min(ttl),
            allow_direct: true,
            ..Default::default()
        };
        if cluster.jetstream.get_stream(MAIL_STREAM).await.is_ok() {
            cluster
                .jetstream
                .update_stream(&config)
                .await
                .map_err(|e| nats("updating the mail stream", e))?;
        } else {
            cluster
                .jetstream
                .create_stream(config)
                .await
                .map_err(|e| nats("creating the mail stream", e))?;
        }
        let stream = cluster
            .jetstream
            .get_stream(MAIL_STREAM)
            .await
            .map_err(|e| nats("opening the mail stream", e))?;
        let mail = Self {
            cluster: cluster.clone(),
            stream,
            quotas,
            seen: Arc::new(Mutex::new(Seen::default())),
            sink: Arc::new(OnceLock::new()),
            following: Arc::new(AtomicBool::new(false)),
        };
        mail.follow().await?;
        Ok(mail)
    }

    /// Starts the follower and waits until it has caught up with the stream.
    async fn follow(&self) -> Result<(), Error> {
        let (caught_up, mut ready) = tokio::sync::watch::channel(false);
        let follower = Follower {
            stream: self.stream.clone(),
            client: self.cluster.client.clone(),
            seen: Arc::downgrade(&self.seen),
            sink: self.sink.clone(),
            following: self.following.clone(),
            caught_up,
        };
        tokio::spawn(follower.run());
        tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r))
            .await
            .map_err(|_| {
                Refusal::Unavailable("the mail stream could not be read within 30 s".into())
            })?
            .map_err(|_| Refusal::Unavailable("the mail follower stopped".into()))?;
        Ok(())
    }

    /// The stored message at `seq` if it is on `owner`'s subject of `kind`.
    async fn owned(
        &self,
        owner: &str,
        kind: Kind,
        seq: u64,
    ) -> Result<Option<jetstream::message::StreamMessage>, Error> {
        match timed("get", self.stream.get_raw_message(seq)).await {
            Ok(message) if message.subject.as_str() == subject(owner, kind) => Ok(Some(message)),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(nats("reading mail", e)),
        }
    }

    /// Where `owner`'s envelope `id` sits: from the follower's memory, else by reading the name's
    /// envelopes (a mailbox holds at most `--mailbox-max-messages`).
    async fn find(&self, owner: &str, id: &[u8; 16]) -> Result<Option<Placed>, Error> {
        if let Some(placed) = lock(&self.seen).ids.get(owner).and_then(|ids| ids.get(id)) {
            return Ok(Some(placed.clone()));
        }
        let filter = subject(owner, Kind::Envelope);
        let mut cursor = 0;
        loop {
            let Some(message) = self.next_after(&filter, cursor).await? else {
                return Ok(None);
            };
            cursor = message.sequence;
            if let Some(Item {
                origin: Some(origin),
                ..
            }) = decode_item(Kind::Envelope, &message.payload, cursor)
                && &origin.message_id == id
            {
                return Ok(Some(Placed {
                    seq: cursor,
                    sender: origin.sender,
                }));
            }
        }
    }

    /// The first message on `filter` after `seq`, if any.
    async fn next_after(
        &self,
        filter: &str,
        seq: u64,
    ) -> Result<Option<jetstream::message::StreamMessage>, Error> {
        let get = self
            .stream
            .raw_message_builder()
            .sequence(seq + 1)
            .next_by_subject(filter.to_string())
            .send();
        match timed("get", get).await {
            Ok(message) => Ok(Some(message)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(nats("reading mail", e)),
        }
    }

    /// Deletes one message; false if it was gone already (another replica took it).
    async fn delete(&self, seq: u64) -> Result<bool, Error> {
        match timed("delete", self.stream.delete_message(seq)).await {
            Ok(done) => Ok(done),
            Err(e) if e.to_string().contains("no message found") => Ok(false),
            Err(e) => Err(nats("removing mail", e)),
        }
    }

    /// Up to `limit` messages on `filter` after `seq` through a short-lived consumer: one request
    /// for the page instead of one per message. Also whether nothing more was pending.
    async fn read_batch(
        &self,
        filter: &str,
        seq: u64,
        limit: usize,
    ) -> Result<(Vec<Raw>, bool), Error> {
        let consumer = timed(
            "consumer",
            self.stream.create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: seq + 1,
                },
                filter_subject: filter.to_string(),
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| nats("reading mail", e))?;
        let mut at_end = consumer.cached_info().num_pending == 0;
        let mut found = Vec::new();
        if !at_end {
            let mut batch = timed("get", consumer.fetch().max_messages(limit).messages())
                .await
                .map_err(|e| nats("reading mail", e))?;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| nats("reading mail", e))?;
                let Ok(info) = message.info() else { continue };
                at_end = info.pending == 0;
                found.push((
                    info.stream_sequence,
                    message.subject.to_string(),
                    message.payload.clone(),
                ));
            }
        }
        let stream = self.stream.clone();
        let name = consumer.cached_info().name.clone();
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
        Ok((found, at_end))
    }

    /// As `read_batch`, one message per request.
    async fn read_one_by_one(
        &self,
        filter: &str,
        seq: u64,
        limit: usize,
    ) -> Result<(Vec<Raw>, bool), Error> {
        let mut found = Vec::new();
        let mut cursor = seq;
        while found.len() < limit {
            let Some(message) = self.next_after(filter, cursor).await? else {
                return Ok((found, true));
            };
            cursor = message.sequence;
            found.push((cursor, message.subject.to_string(), message.payload));
        }
        Ok((found, false))
    }

    fn forget(&self, owner: &str, id: &[u8; 16]) {
        if let Some(ids) = lock(&self.seen).ids.get_mut(owner) {
            ids.remove(id);
        }
    }
}

/// Deletes a name's mailbox (an operator released the name).
pub(crate) async fn purge(cluster: &Cluster, canonical: &str) -> Result<(), Error> {
    let Ok(stream) = cluster.jetstream.get_stream(MAIL_STREAM).await else {
        return Ok(());
    };
    stream
        .purge()
        .filter(format!("svs.mail.{}.*", name_token(canonical)))
        .await
        .map_err(|e| nats("deleting the mailbox", e))?;
    Ok(())
}

fn is_missing(e: &stream::RawMessageError) -> bool {
    matches!(e.kind(), stream::RawMessageErrorKind::NoMessageFound)
        || e.to_string().contains("no message found")
}

/// Reads every new item of the stream in order and hands it to the sink.
struct Follower {
    stream: stream::Stream,
    client: async_nats::Client,
    seen: std::sync::Weak<Mutex<Seen>>,
    sink: Arc<OnceLock<Sink>>,
    following: Arc<AtomicBool>,
    caught_up: tokio::sync::watch::Sender<bool>,
}

impl Follower {
    async fn run(self) {
        let mut first = true;
        loop {
            let Some(seen) = self.seen.upgrade() else {
                return;
            };
            let from = lock(&seen).followed_to;
            drop(seen);
            // The first time, the last item of every subject is enough to know each name's
            // last sequence number; after a break, everything after what was handed on.
            let deliver_policy = if first {
                consumer::DeliverPolicy::LastPerSubject
            } else {
                consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from + 1,
                }
            };
            match self.follow_once(deliver_policy).await {
                Ok(()) => return,
                Err(e) => {
                    self.following.store(false, Ordering::Release);
                    tracing::warn!(error = %e, "following the mail stream stopped; resuming");
                }
            }
            first = false;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Follows until the stream breaks (Err) or this store is dropped (Ok).
    async fn follow_once(&self, deliver_policy: consumer::DeliverPolicy) -> Result<(), Error> {
        let empty = {
            let mut stream = self.stream.clone();
            let info = stream
                .info()
                .await
                .map_err(|e| nats("reading the mail stream", e))?;
            info.state.messages == 0
        };
        let consumer = self
            .stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: "svs.mail.>".into(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| nats("following the mail stream", e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| nats("following the mail stream", e))?;
        self.following.store(true, Ordering::Release);
        if empty {
            self.caught_up.send_replace(true);
        }
        loop {
            let next = tokio::time::timeout(Duration::from_secs(1), messages.next()).await;
            let Some(seen) = self.seen.upgrade() else {
                return Ok(());
            };
            let message = match next {
                Err(_) => {
                    // Quiet: nothing pending means caught up.
                    if !*self.caught_up.borrow() {
                        self.caught_up.send_replace(true);
                    }
                    continue;
                }
                Ok(None) => return Err(Refusal::Unavailable("the mail stream ended".into()).into()),
                Ok(Some(Err(e))) => return Err(nats("following the mail stream", e)),
                Ok(Some(Ok(message))) => message,
            };
            let Ok(info) = message.info() else { continue };
            let (seq, pending) = (info.stream_sequence, info.pending);
            let committed = {
                let mut seen = lock(&seen);
                seen.followed_to = seen.followed_to.max(seq);
                parse_subject(message.subject.as_str()).and_then(|(owner, kind)| {
                    let Item { event, origin } = decode_item(kind, &message.payload, seq)?;
                    let prev_seq = seen.last.get(&owner).copied().unwrap_or(0);
                    if seq <= prev_seq {
                        return None;
                    }
                    seen.last.insert(owner.clone(), seq);
                    seen.note(&owner, seq, origin.as_ref());
                    Some(Committed {
                        owner,
                        seq,
                        prev_seq,
                        event,
                    })
                })
            };
            if let (Some(committed), Some(sink)) = (committed, self.sink.get()) {
                sink(vec![committed]);
            }
            if pending == 0 && !*self.caught_up.borrow() {
                self.caught_up.send_replace(true);
            }
        }
    }
}

#[tonic::async_trait]
impl Mailboxes for JetStreamMailboxes {
    fn set_sink(&self, sink: Sink) {
        let _ = self.sink.set(sink);
    }

    async fn store_envelope(&self, envelope: NewEnvelope) -> Result<Vec<Placement>, Error> {
        // Refused at once while NATS is away: the client would otherwise wait for an answer
        // that comes only after the client library delivers its buffered publish.
        self.cluster.check_up()?;
        let payload = Bytes::from(envelope.encoded);
        let id = hex::encode(envelope.message_id);
        let publishes = envelope.recipients.iter().map(|owner| {
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(format!("{}.{id}", name_token(owner)));
            let js = &self.cluster.jetstream;
            async move {
                // The round trip: sent, and acknowledged once on JetStream's disk.
                let ack = timed("publish", async {
                    let pending = js
                        .send_publish(subject(owner, Kind::Envelope), publish)
                        .await
                        .map_err(|e| nats("storing the message", e))?;
                    Ok::<_, Error>(pending.await)
                })
                .await?;
                Ok::<_, Error>(match ack {
                    Ok(ack) if ack.duplicate => Placement::Duplicate,
                    Ok(ack) => Placement::Stored { seq: ack.sequence },
                    Err(e) if e.to_string().contains("maximum messages per subject") => {
                        Placement::Full(Full {
                            reason: FullReason::Messages,
                            sentence: format!(
                                "{owner}'s mailbox is full ({} messages wait unread); nothing was stored for them",
                                self.quotas.max_messages
                            ),
                        })
                    }
                    Err(e) if e.to_string().contains("maximum bytes") => {
                        Placement::Full(self.quotas.store_full(owner))
                    }
                    Err(e) => return Err(nats("storing the message", e)),
                })
            }
        });
        futures_util::future::try_join_all(publishes).await
    }

    async fn store_receipts(&self, receipts: Vec<NewReceipt>) -> Result<(), Error> {
        self.cluster.check_up()?;
        let publishes = receipts.iter().map(|receipt| {
            let js = &self.cluster.jetstream;
            let payload = Bytes::from(receipt.event.encode_to_vec());
            async move {
                let ack = timed("publish", async {
                    let pending = js
                        .publish(subject(&receipt.owner, Kind::Receipt), payload)
                        .await
                        .map_err(|e| nats("storing a receipt", e))?;
                    Ok::<_, Error>(pending.await)
                })
                .await?;
                match ack {
                    Ok(_) => Ok(()),
                    // A sender with a full receipt box has stopped reading, or the whole store is
                    // full: dropping the newest receipt beats refusing the recipient's
                    // acknowledgement.
                    Err(e) if e.to_string().contains("maximum messages per subject") => {
                        tracing::warn!(owner = %receipt.owner, "receipt box full; receipt dropped");
                        Ok(())
                    }
                    Err(e) if e.to_string().contains("maximum bytes") => {
                        tracing::warn!(owner = %receipt.owner, "the mail store is full; receipt dropped");
                        Ok(())
                    }
                    Err(e) => Err(nats("storing a receipt", e)),
                }
            }
        });
        futures_util::future::try_join_all(publishes).await?;
        Ok(())
    }

    async fn ack(
        &self,
        owner: &str,
        ids: Vec<[u8; 16]>,
        receipt_seqs: Vec<u64>,
    ) -> Result<Acked, Error> {
        self.cluster.check_up()?;
        let mut acked = Acked::default();
        // The memory says where each item sits and whose it is (it only holds what was seen on
        // this name's own subjects), so an acknowledgement is one delete, not a read and a
        // delete; a batch of them goes out together, not one round trip after another.
        let removals = futures_util::stream::iter(ids)
            .map(|id| async move {
                let Some(placed) = self.find(owner, &id).await? else {
                    return Ok(None);
                };
                let removed = self.delete(placed.seq).await?;
                self.forget(owner, &id);
                Ok::<_, Error>(removed.then(|| Removed {
                    message_id: id,
                    sender: placed.sender,
                    owner: owner.to_string(),
                }))
            })
            .buffer_unordered(ACK_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        // What was deleted is reported (its sender gets a receipt) even if some deletes failed:
        // those stay stored, are delivered again and acknowledged again.
        let mut failed = None;
        for removal in removals {
            match removal {
                Ok(removed) => acked.envelopes.extend(removed),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            if acked.envelopes.is_empty() {
                return Err(e);
            }
            tracing::warn!(error = %e, "some acknowledgements could not be applied; they stay stored");
        }
        for seq in receipt_seqs {
            let known = lock(&self.seen).receipts.get(&seq).map(|o| o == owner);
            let ours = match known {
                Some(ours) => ours,
                None => self.owned(owner, Kind::Receipt, seq).await?.is_some(),
            };
            if ours && self.delete(seq).await? {
                acked.receipts += 1;
            }
            lock(&self.seen).receipts.remove(&seq);
        }
        Ok(acked)
    }

    async fn read(&self, owner: &str, after_seq: u64, limit: usize) -> Result<Page, Error> {
        self.cluster.check_up()?;
        let known_last = self.last_seq(owner);
        let filter = format!("svs.mail.{}.*", name_token(owner));
        let (found, at_end) = match self.read_batch(&filter, after_seq, limit).await? {
            // A page that says nothing at all (none found, yet more pending): one by one.
            (found, false) if found.is_empty() => {
                self.read_one_by_one(&filter, after_seq, limit).await?
            }
            batch => batch,
        };
        let mut items = Vec::new();
        let mut cursor = after_seq;
        for (seq, subject, payload) in found {
            cursor = seq;
            let Some((_, kind)) = parse_subject(&subject) else {
                continue;
            };
            if let Some(Item { event, origin }) = decode_item(kind, &payload, seq) {
                lock(&self.seen).note(owner, seq, origin.as_ref());
                items.push((seq, event));
            }
        }
        // Read to the end: everything the follower had seen was looked at, even items
        // acknowledged meanwhile.
        let scanned_to = if at_end {
            cursor.max(known_last)
        } else {
            cursor
        };
        Ok(Page { items, scanned_to })
    }

    fn last_seq(&self, owner: &str) -> u64 {
        lock(&self.seen).last.get(owner).copied().unwrap_or(0)
    }

    async fn expire(&self, now_ms: u64) -> Result<Vec<Removed>, Error> {
        let mut removed = Vec::new();
        let mut cursor = 0;
        for _ in 0..EXPIRE_BATCH {
            let Some(message) = self.next_after("svs.mail.>", cursor).await? else {
                // Nothing left up to `cursor`; later messages have higher sequences.
                lock(&self.seen).prune_before(cursor + 1);
                break;
            };
            cursor = message.sequence;
            if unix_ms(&message.time) + self.quotas.ttl_ms > now_ms {
                // The oldest message still kept: nothing before it is in the stream.
                lock(&self.seen).prune_before(cursor);
                break;
            }
            // Every replica runs this pass: whoever deletes the message tells its sender.
            if !self.delete(cursor).await? {
                continue;
            }
            if let Some((owner, kind)) = parse_subject(message.subject.as_str())
                && let Some(Item {
                    origin: Some(origin),
                    ..
                }) = decode_item(kind, &message.payload, cursor)
            {
                self.forget(&owner, &origin.message_id);
                removed.push(Removed {
                    message_id: origin.message_id,
                    sender: origin.sender,
                    owner,
                });
            }
        }
        Ok(removed)
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn is_healthy(&self) -> bool {
        self.cluster.is_up() && self.following.load(Ordering::Acquire)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mailbox::conformance;

    /// Connection options for a test NATS run with docker/nats.conf.
    pub(crate) fn options(nats: &svs_test_support::NatsServer) -> super::super::ClusterOptions {
        super::super::ClusterOptions {
            nats_url: Some(nats.url()),
            nats_creds: None,
            nats_user: Some(svs_test_support::NATS_USER.into()),
            nats_password_file: Some(nats.password_file().to_path_buf()),
            nats_ca: None,
            replica_timeout_secs: 10,
            nats_connect_secs: 10,
        }
    }

    #[tokio::test]
    async fn the_jetstream_store_passes_the_mailbox_suite() {
        let dir = tempfile::tempdir().unwrap();
        let nats = svs_test_support::NatsServer::start(&dir.path().join("nats")).await;
        let options = options(&nats);
        conformance::check(|| async {
            let cluster = Cluster::connect(&options).await.unwrap();
            Arc::new(
                JetStreamMailboxes::open(&cluster, conformance::QUOTAS)
                    .await
                    .unwrap(),
            ) as Arc<dyn Mailboxes>
        })
        .await;
    }

    #[test]
    fn id_memory_drops_what_the_stream_no_longer_holds() {
        let origin = |n: u8| Origin {
            message_id: [n; 16],
            sender: "s".into(),
        };
        let mut seen = Seen::default();
        seen.note("a", 3, Some(&origin(1)));
        seen.note("a", 9, Some(&origin(2)));
        seen.note("b", 4, Some(&origin(3)));
        seen.note("b", 2, None);
        seen.note("a", 7, None);
        seen.prune_before(5);
        assert_eq!(seen.ids.len(), 1);
        assert_eq!(seen.ids["a"][&[2; 16]].seq, 9);
        assert_eq!(seen.receipts.keys().collect::<Vec<_>>(), [&7]);
        // At most once a minute: the next call keeps everything.
        seen.prune_before(100);
        assert_eq!(seen.ids["a"].len(), 1);
    }

    #[test]
    fn subjects_round_trip_any_name() {
        for name in ["alice", "a.b-c_d", "x"] {
            for kind in [Kind::Envelope, Kind::Receipt] {
                assert_eq!(
                    parse_subject(&subject(name, kind)),
                    Some((name.to_string(), kind))
                );
            }
        }
        assert_eq!(parse_subject("svs.mail.zz.m"), None);
        assert_eq!(parse_subject("svs.mail.616c696365.x"), None);
        assert_eq!(parse_subject("svs.mail.616c696365.m.extra"), None);
    }
}
