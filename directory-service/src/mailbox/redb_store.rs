//! `Mailboxes` on the directory's redb database. One writer thread takes every queued change and
//! applies as many as are waiting in one transaction with one fsync (group commit): a Send is
//! answered only once its envelope is on disk, yet a burst costs one sync, not one per message.
//! Envelope bytes are kept once however many recipients hold them (reference counted).
//!
//! The writer keeps a tally of what is held (per name, per sender within each name, in total),
//! so every quota of `Quotas::admit` is checked without a scan; the per-sender part is rebuilt
//! from the mailbox rows at open.

use super::record::Record;
use super::{
    Acked, Committed, Held, Holdings, Mailboxes, NewEnvelope, NewReceipt, Page, Placement, Quotas,
    Removed, Sink, free_disk_bytes, set_stored_seq,
};
use crate::Error;
use crate::db::{Db, storage};
use crate::error::Refusal;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use svs_common::proto::directory::{Event, event};
use svs_common::time::now_ms;
use tokio::sync::{mpsc, oneshot};

/// (owner, seq) → `Record`.
const MAIL: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("mail_v1");
/// (owner, message id) → seq of its row, while the row exists.
const MAIL_IDS: TableDefinition<(&str, &[u8; 16]), u64> = TableDefinition::new("mail_ids_v1");
/// envelope ref → envelope protobuf, shared by every recipient's row.
const ENVELOPES: TableDefinition<u64, &[u8]> = TableDefinition::new("envelopes_v1");
/// envelope ref → rows that still point at it.
const ENVELOPE_REFS: TableDefinition<u64, u32> = TableDefinition::new("envelope_refs_v1");
/// (when, owner, seq): the row leaves the mailbox at `when`.
const EXPIRY: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("mail_expiry_v1");
/// owner → (envelopes held, their bytes, last seq given out).
const USAGE: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("mail_usage_v1");
/// "next_envelope_ref" → the next envelope ref.
const META: TableDefinition<&str, u64> = TableDefinition::new("mail_meta_v1");
const NEXT_REF: &str = "next_envelope_ref";

/// Most queued changes applied in one transaction.
const MAX_GROUP: usize = 1024;
/// Rows removed by one expiry pass (the next pass continues).
const EXPIRE_BATCH: usize = 4096;
/// Changes waiting for the writer before callers wait for room.
const QUEUE: usize = 8192;

/// Creates the mailbox tables in a fresh database.
pub(crate) fn create_tables(db: &Database) -> Result<(), Error> {
    let txn = db.begin_write().map_err(storage)?;
    txn.open_table(MAIL).map_err(storage)?;
    txn.open_table(MAIL_IDS).map_err(storage)?;
    txn.open_table(ENVELOPES).map_err(storage)?;
    txn.open_table(ENVELOPE_REFS).map_err(storage)?;
    txn.open_table(EXPIRY).map_err(storage)?;
    txn.open_table(USAGE).map_err(storage)?;
    txn.open_table(META).map_err(storage)?;
    txn.commit().map_err(storage)?;
    Ok(())
}

/// What one name's mailbox holds, and the last sequence number it gave out.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    held: Held,
    last_seq: u64,
}

/// (recipient, sender) → the envelopes from that sender waiting in that mailbox.
type ShareKey = (String, String);

/// What every mailbox holds, as the last commit left it.
#[derive(Debug, Default)]
struct Tally {
    owners: HashMap<String, Usage>,
    shares: HashMap<ShareKey, Held>,
    total_bytes: u64,
}

enum Change {
    Envelope(NewEnvelope),
    Receipts(Vec<NewReceipt>),
    Ack {
        owner: String,
        ids: Vec<[u8; 16]>,
        seqs: Vec<u64>,
    },
    Expire {
        now_ms: u64,
    },
}

enum Applied {
    Envelope(Vec<Placement>),
    Receipts,
    Ack(Acked),
    Expire(Vec<Removed>),
}

struct Job {
    change: Change,
    reply: oneshot::Sender<Result<Applied, Error>>,
}

/// Mailboxes in redb.
pub(crate) struct RedbMailboxes {
    db: Arc<Db>,
    jobs: mpsc::Sender<Job>,
    tally: Arc<Mutex<Tally>>,
    sink: Arc<OnceLock<Sink>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for RedbMailboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbMailboxes").finish_non_exhaustive()
    }
}

impl Drop for RedbMailboxes {
    /// Closes the queue and waits for the writer to finish what it holds, so the database is
    /// released (and can be opened again) when this returns.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the tally from the database: per-name usage from its table, the per-sender shares
/// from the envelope rows.
fn load_tally(db: &Database) -> Result<(Tally, u64), Error> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(USAGE).map_err(storage)?;
    let mut tally = Tally::default();
    for row in table.iter().map_err(storage)? {
        let (owner, value) = row.map_err(storage)?;
        let (messages, bytes, last_seq) = value.value();
        tally.total_bytes += bytes;
        tally.owners.insert(
            owner.value().to_string(),
            Usage {
                held: Held { messages, bytes },
                last_seq,
            },
        );
    }
    let mail = txn.open_table(MAIL).map_err(storage)?;
    for row in mail.iter().map_err(storage)? {
        let (key, value) = row.map_err(storage)?;
        // A damaged row is reported when it is read; here it only does not count.
        if let Ok(Record::Envelope { bytes, sender, .. }) = Record::decode(value.value()) {
            let owner = key.value().0.to_string();
            tally.shares.entry((owner, sender)).or_default().add(bytes);
        }
    }
    let meta = txn.open_table(META).map_err(storage)?;
    let next_ref = meta
        .get(NEXT_REF)
        .map_err(storage)?
        .map_or(1, |v| v.value());
    Ok((tally, next_ref))
}

impl RedbMailboxes {
    /// Loads the per-name usage and starts the writer thread (it ends when this is dropped).
    pub(crate) fn open(db: Arc<Db>, quotas: Quotas) -> Result<Self, Error> {
        let (tally, next_ref) = db.with(load_tally)?;
        let tally = Arc::new(Mutex::new(tally));
        let sink: Arc<OnceLock<Sink>> = Arc::new(OnceLock::new());
        let (jobs, queue) = mpsc::channel(QUEUE);
        let writer = Writer {
            db: db.clone(),
            quotas,
            tally: tally.clone(),
            sink: sink.clone(),
            next_ref,
        };
        let writer = std::thread::Builder::new()
            .name("mailbox-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| Error::Internal(format!("cannot start the mailbox writer: {e}")))?;
        Ok(Self {
            db,
            jobs,
            tally,
            sink,
            writer: Some(writer),
        })
    }

    async fn submit(&self, change: Change) -> Result<Applied, Error> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { change, reply })
            .await
            .map_err(|_| Refusal::Unavailable("the mailbox writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Refusal::Unavailable("the mailbox writer has stopped".into()))?
    }
}

fn unexpected() -> Error {
    Error::Internal("the mailbox writer answered a different request".into())
}

#[tonic::async_trait]
impl Mailboxes for RedbMailboxes {
    fn set_sink(&self, sink: Sink) {
        let _ = self.sink.set(sink);
    }

    async fn store_envelope(&self, envelope: NewEnvelope) -> Result<Vec<Placement>, Error> {
        match self.submit(Change::Envelope(envelope)).await? {
            Applied::Envelope(placements) => Ok(placements),
            _ => Err(unexpected()),
        }
    }

    async fn store_receipts(&self, receipts: Vec<NewReceipt>) -> Result<(), Error> {
        if receipts.is_empty() {
            return Ok(());
        }
        match self.submit(Change::Receipts(receipts)).await? {
            Applied::Receipts => Ok(()),
            _ => Err(unexpected()),
        }
    }

    async fn ack(&self, owner: &str, ids: Vec<[u8; 16]>, seqs: Vec<u64>) -> Result<Acked, Error> {
        let change = Change::Ack {
            owner: owner.to_string(),
            ids,
            seqs,
        };
        match self.submit(change).await? {
            Applied::Ack(acked) => Ok(acked),
            _ => Err(unexpected()),
        }
    }

    async fn read(&self, owner: &str, after_seq: u64, limit: usize) -> Result<Page, Error> {
        let db = self.db.clone();
        let owner = owner.to_string();
        crate::error::blocking(move || db.with(|db| read_page(db, &owner, after_seq, limit))).await
    }

    fn last_seq(&self, owner: &str) -> u64 {
        lock(&self.tally)
            .owners
            .get(owner)
            .map_or(0, |u| u.last_seq)
    }

    async fn expire(&self, now_ms: u64) -> Result<Vec<Removed>, Error> {
        // Most sweeps find nothing due: look first, so they cost no write and no fsync.
        let db = self.db.clone();
        let due = crate::error::blocking(move || {
            db.with(|db| {
                let txn = db.begin_read().map_err(storage)?;
                let expiry = txn.open_table(EXPIRY).map_err(storage)?;
                Ok(expiry
                    .first()
                    .map_err(storage)?
                    .is_some_and(|(key, _)| key.value().0 <= now_ms))
            })
        })
        .await?;
        if !due {
            return Ok(Vec::new());
        }
        match self.submit(Change::Expire { now_ms }).await? {
            Applied::Expire(removed) => Ok(removed),
            _ => Err(unexpected()),
        }
    }

    fn is_healthy(&self) -> bool {
        self.db.is_healthy()
    }
}

impl RedbMailboxes {
    #[cfg(test)]
    /// Waiting envelopes and their bytes for `owner`.
    pub(crate) fn usage(&self, owner: &str) -> (u64, u64) {
        lock(&self.tally)
            .owners
            .get(owner)
            .map_or((0, 0), |u| (u.held.messages, u.held.bytes))
    }

    #[cfg(test)]
    /// Waiting envelopes and their bytes from `sender` for `owner`.
    pub(crate) fn share(&self, owner: &str, sender: &str) -> (u64, u64) {
        lock(&self.tally)
            .shares
            .get(&(owner.to_string(), sender.to_string()))
            .map_or((0, 0), |h| (h.messages, h.bytes))
    }
}

fn read_page(db: &Database, owner: &str, after_seq: u64, limit: usize) -> Result<Page, Error> {
    let txn = db.begin_read().map_err(storage)?;
    let mail = txn.open_table(MAIL).map_err(storage)?;
    let envelopes = txn.open_table(ENVELOPES).map_err(storage)?;
    let mut page = Page {
        items: Vec::new(),
        scanned_to: after_seq,
    };
    let Some(start) = after_seq.checked_add(1) else {
        return Ok(page);
    };
    for row in mail
        .range((owner, start)..=(owner, u64::MAX))
        .map_err(storage)?
        .take(limit)
    {
        let (key, value) = row.map_err(storage)?;
        let seq = key.value().1;
        page.scanned_to = seq;
        let Some(event) = stored_event(&envelopes, owner, seq, value.value())? else {
            continue;
        };
        page.items.push((seq, event));
    }
    Ok(page)
}

/// The event a mailbox row delivers: `None` for a read row, and for a damaged row (logged and
/// skipped: one bad row must not stop the name's mail, nor mark the database broken).
fn stored_event(
    envelopes: &redb::ReadOnlyTable<u64, &[u8]>,
    owner: &str,
    seq: u64,
    row: &[u8],
) -> Result<Option<Event>, Error> {
    let damaged = |why: String| {
        tracing::error!(%owner, seq, %why, "a mailbox row is damaged; skipped");
        Ok(None)
    };
    let record = match Record::decode(row) {
        Ok(record) => record,
        Err(e) => return damaged(e.to_string()),
    };
    let event = match record {
        Record::Envelope { envelope_ref, .. } => {
            let Some(bytes) = envelopes.get(envelope_ref).map_err(storage)? else {
                return damaged("its envelope is missing".into());
            };
            match prost::Message::decode(bytes.value()) {
                Ok(envelope) => Event {
                    kind: Some(event::Kind::Envelope(envelope)),
                },
                Err(e) => return damaged(e.to_string()),
            }
        }
        Record::Receipt { event, .. } => match prost::Message::decode(event.as_slice()) {
            Ok(mut event) => {
                set_stored_seq(&mut event, seq);
                event
            }
            Err(e) => return damaged(e.to_string()),
        },
        Record::Read { .. } => return Ok(None),
    };
    Ok(Some(event))
}

/// The writer thread's state.
struct Writer {
    db: Arc<Db>,
    quotas: Quotas,
    /// Shared with readers of `last_seq` and `usage`; changed only after a commit.
    tally: Arc<Mutex<Tally>>,
    sink: Arc<OnceLock<Sink>>,
    next_ref: u64,
}

/// What one transaction changes before it commits (discarded if it fails).
struct Pending<'a> {
    /// Names and shares this transaction touched, as it left them.
    owners: HashMap<String, Usage>,
    shares: HashMap<ShareKey, Held>,
    total_bytes: u64,
    /// The committed tally, read for what this transaction has not touched yet.
    shared: &'a Mutex<Tally>,
    /// Free bytes on the database's disk when the transaction began.
    free_disk_bytes: Option<u64>,
    next_ref: u64,
    committed: Vec<Committed>,
}

impl<'a> Pending<'a> {
    fn new(shared: &'a Mutex<Tally>, free_disk_bytes: Option<u64>, next_ref: u64) -> Self {
        Self {
            owners: HashMap::new(),
            shares: HashMap::new(),
            total_bytes: lock(shared).total_bytes,
            shared,
            free_disk_bytes,
            next_ref,
            committed: Vec::new(),
        }
    }

    fn usage(&mut self, owner: &str) -> &mut Usage {
        if !self.owners.contains_key(owner) {
            let current = lock(self.shared)
                .owners
                .get(owner)
                .copied()
                .unwrap_or_default();
            self.owners.insert(owner.to_string(), current);
        }
        self.owners.get_mut(owner).expect("inserted above")
    }

    fn share(&mut self, owner: &str, sender: &str) -> &mut Held {
        let key = (owner.to_string(), sender.to_string());
        if !self.shares.contains_key(&key) {
            let current = lock(self.shared)
                .shares
                .get(&key)
                .copied()
                .unwrap_or_default();
            self.shares.insert(key.clone(), current);
        }
        self.shares.get_mut(&key).expect("inserted above")
    }

    /// What an envelope from `sender` to `owner` would join.
    fn holdings(&mut self, owner: &str, sender: &str) -> Holdings {
        Holdings {
            mailbox: self.usage(owner).held,
            from_sender: *self.share(owner, sender),
            total_bytes: self.total_bytes,
            free_disk_bytes: self.free_disk_bytes,
        }
    }

    /// Counts an envelope that joined `owner`'s mailbox; returns its sequence number.
    fn add_envelope(&mut self, owner: &str, sender: &str, bytes: u64) -> u64 {
        self.share(owner, sender).add(bytes);
        self.total_bytes += bytes;
        self.free_disk_bytes = self.free_disk_bytes.map(|free| free.saturating_sub(bytes));
        let usage = self.usage(owner);
        usage.held.add(bytes);
        usage.last_seq += 1;
        usage.last_seq
    }

    /// Counts an envelope that left `owner`'s mailbox.
    fn remove_envelope(&mut self, owner: &str, sender: &str, bytes: u64) {
        self.share(owner, sender).remove(bytes);
        self.total_bytes = self.total_bytes.saturating_sub(bytes);
        self.usage(owner).held.remove(bytes);
    }

    /// Publishes what this transaction changed, once it committed.
    fn publish(self) {
        let mut tally = lock(self.shared);
        tally.owners.extend(self.owners);
        for (key, held) in self.shares {
            if held.is_empty() {
                tally.shares.remove(&key);
            } else {
                tally.shares.insert(key, held);
            }
        }
        tally.total_bytes = self.total_bytes;
    }
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        while let Some(first) = queue.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let (changes, replies): (Vec<Change>, Vec<_>) =
                jobs.into_iter().map(|j| (j.change, j.reply)).unzip();
            match self.apply_group(&changes) {
                Ok((results, committed)) => {
                    if let Some(sink) = self.sink.get()
                        && !committed.is_empty()
                    {
                        sink(committed);
                    }
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(result));
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(Refusal::Unavailable(why.clone()).into()));
                    }
                }
            }
        }
    }

    /// Applies every change in one transaction; on success publishes the new usage.
    fn apply_group(&mut self, changes: &[Change]) -> Result<(Vec<Applied>, Vec<Committed>), Error> {
        let shared = self.tally.clone();
        let quotas = self.quotas;
        let next_ref = self.next_ref;
        // Once per group: a statvfs per envelope would cost more than the check is worth.
        let free_disk = (quotas.min_free_disk_bytes > 0)
            .then(|| free_disk_bytes(self.db.path()))
            .flatten();
        let (results, mut pending) = self.db.with(|db| {
            let mut pending = Pending::new(&shared, free_disk, next_ref);
            let txn = db.begin_write().map_err(storage)?;
            let mut results = Vec::with_capacity(changes.len());
            for change in changes {
                results.push(apply(&txn, change, &quotas, &mut pending)?);
            }
            {
                let mut usage = txn.open_table(USAGE).map_err(storage)?;
                for (owner, u) in &pending.owners {
                    usage
                        .insert(owner.as_str(), (u.held.messages, u.held.bytes, u.last_seq))
                        .map_err(storage)?;
                }
                if pending.next_ref != next_ref {
                    let mut meta = txn.open_table(META).map_err(storage)?;
                    meta.insert(NEXT_REF, pending.next_ref).map_err(storage)?;
                }
            }
            txn.commit().map_err(storage)?;
            Ok((results, pending))
        })?;
        self.next_ref = pending.next_ref;
        let committed = std::mem::take(&mut pending.committed);
        pending.publish();
        Ok((results, committed))
    }
}

/// The mailbox tables opened in one write transaction, and the four changes applied to them.
struct Tables<'txn> {
    mail: redb::Table<'txn, (&'static str, u64), &'static [u8]>,
    ids: redb::Table<'txn, (&'static str, &'static [u8; 16]), u64>,
    envelopes: redb::Table<'txn, u64, &'static [u8]>,
    refs: redb::Table<'txn, u64, u32>,
    expiry: redb::Table<'txn, (u64, &'static str, u64), ()>,
    now: u64,
}

fn apply(
    txn: &WriteTransaction,
    change: &Change,
    quotas: &Quotas,
    pending: &mut Pending<'_>,
) -> Result<Applied, Error> {
    let mut tables = Tables {
        mail: txn.open_table(MAIL).map_err(storage)?,
        ids: txn.open_table(MAIL_IDS).map_err(storage)?,
        envelopes: txn.open_table(ENVELOPES).map_err(storage)?,
        refs: txn.open_table(ENVELOPE_REFS).map_err(storage)?,
        expiry: txn.open_table(EXPIRY).map_err(storage)?,
        now: now_ms(),
    };
    Ok(match change {
        Change::Envelope(new) => Applied::Envelope(tables.store_envelope(new, quotas, pending)?),
        Change::Receipts(receipts) => {
            tables.store_receipts(receipts, quotas, pending)?;
            Applied::Receipts
        }
        Change::Ack { owner, ids, seqs } => {
            let mut acked = tables.ack_envelopes(owner, ids, quotas, pending)?;
            acked.receipts = tables.ack_receipts(owner, seqs)?;
            Applied::Ack(acked)
        }
        Change::Expire { now_ms } => Applied::Expire(tables.expire(*now_ms, pending)?),
    })
}

impl Tables<'_> {
    /// Stores `new` once for every recipient whose quotas admit it (the bytes once, counted by
    /// holders); a repeated id is a duplicate.
    fn store_envelope(
        &mut self,
        new: &NewEnvelope,
        quotas: &Quotas,
        pending: &mut Pending<'_>,
    ) -> Result<Vec<Placement>, Error> {
        let size = new.encoded.len() as u64;
        let envelope_ref = pending.next_ref;
        let expires_at_ms = self.now.saturating_add(quotas.ttl_ms);
        let mut holders = 0u32;
        let mut placements = Vec::with_capacity(new.recipients.len());
        for owner in &new.recipients {
            if self
                .ids
                .get((owner.as_str(), &new.message_id))
                .map_err(storage)?
                .is_some()
            {
                placements.push(Placement::Duplicate);
                continue;
            }
            let holdings = pending.holdings(owner, &new.sender);
            if let Err(full) = quotas.admit(owner, &new.sender, &holdings, size) {
                placements.push(Placement::Full(full));
                continue;
            }
            let seq = pending.add_envelope(owner, &new.sender, size);
            let record = Record::Envelope {
                message_id: new.message_id,
                envelope_ref,
                bytes: size,
                timestamp_ms: new.timestamp_ms,
                expires_at_ms,
                sender: new.sender.clone(),
            };
            self.mail
                .insert((owner.as_str(), seq), record.encode()?.as_slice())
                .map_err(storage)?;
            self.ids
                .insert((owner.as_str(), &new.message_id), seq)
                .map_err(storage)?;
            self.expiry
                .insert((expires_at_ms, owner.as_str(), seq), ())
                .map_err(storage)?;
            holders += 1;
            pending.committed.push(Committed {
                owner: owner.clone(),
                seq,
                prev_seq: seq - 1,
                event: new.event.clone(),
            });
            placements.push(Placement::Stored { seq });
        }
        if holders > 0 {
            self.envelopes
                .insert(envelope_ref, new.encoded.as_slice())
                .map_err(storage)?;
            self.refs.insert(envelope_ref, holders).map_err(storage)?;
            pending.next_ref += 1;
        }
        Ok(placements)
    }

    /// Keeps each receipt in its owner's mailbox under the owner's next sequence number.
    fn store_receipts(
        &mut self,
        receipts: &[NewReceipt],
        quotas: &Quotas,
        pending: &mut Pending<'_>,
    ) -> Result<(), Error> {
        let expires_at_ms = self.now.saturating_add(quotas.ttl_ms);
        for receipt in receipts {
            let usage = pending.usage(&receipt.owner);
            usage.last_seq += 1;
            let seq = usage.last_seq;
            let record = Record::Receipt {
                expires_at_ms,
                event: prost::Message::encode_to_vec(&receipt.event),
            };
            self.mail
                .insert((receipt.owner.as_str(), seq), record.encode()?.as_slice())
                .map_err(storage)?;
            self.expiry
                .insert((expires_at_ms, receipt.owner.as_str(), seq), ())
                .map_err(storage)?;
            let mut event = receipt.event.clone();
            set_stored_seq(&mut event, seq);
            pending.committed.push(Committed {
                owner: receipt.owner.clone(),
                seq,
                prev_seq: seq - 1,
                event,
            });
        }
        Ok(())
    }

    /// Marks `owner`'s envelopes with these ids read: their bytes go, their ids are remembered
    /// until `remember_ids_ms` after they were sent, so a replay is still a duplicate.
    fn ack_envelopes(
        &mut self,
        owner: &str,
        acked_ids: &[[u8; 16]],
        quotas: &Quotas,
        pending: &mut Pending<'_>,
    ) -> Result<Acked, Error> {
        let mut acked = Acked::default();
        for id in acked_ids {
            let Some(seq) = self
                .ids
                .get((owner, id))
                .map_err(storage)?
                .map(|seq| seq.value())
            else {
                continue;
            };
            let Some(row) = self.mail.get((owner, seq)).map_err(storage)? else {
                continue;
            };
            let Record::Envelope {
                envelope_ref,
                bytes,
                timestamp_ms,
                expires_at_ms,
                sender,
                ..
            } = Record::decode(row.value())?
            else {
                continue;
            };
            drop(row);
            let forget_at_ms = timestamp_ms
                .saturating_add(quotas.remember_ids_ms)
                .max(self.now + 1);
            let read = Record::Read {
                message_id: *id,
                forget_at_ms,
            };
            self.mail
                .insert((owner, seq), read.encode()?.as_slice())
                .map_err(storage)?;
            self.expiry
                .remove((expires_at_ms, owner, seq))
                .map_err(storage)?;
            self.expiry
                .insert((forget_at_ms, owner, seq), ())
                .map_err(storage)?;
            self.release_envelope(envelope_ref)?;
            pending.remove_envelope(owner, &sender, bytes);
            acked.envelopes.push(Removed {
                message_id: *id,
                sender,
                owner: owner.to_string(),
            });
        }
        Ok(acked)
    }

    /// Removes `owner`'s receipts with these sequence numbers; returns how many there were.
    fn ack_receipts(&mut self, owner: &str, seqs: &[u64]) -> Result<usize, Error> {
        let mut removed = 0;
        for &seq in seqs {
            let Some(row) = self.mail.get((owner, seq)).map_err(storage)? else {
                continue;
            };
            let record = Record::decode(row.value())?;
            drop(row);
            if let Record::Receipt { expires_at_ms, .. } = record {
                self.mail.remove((owner, seq)).map_err(storage)?;
                self.expiry
                    .remove((expires_at_ms, owner, seq))
                    .map_err(storage)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes up to `EXPIRE_BATCH` rows due by `now_ms`; returns the unread envelopes among them.
    fn expire(&mut self, now_ms: u64, pending: &mut Pending<'_>) -> Result<Vec<Removed>, Error> {
        let due: Vec<(u64, String, u64)> = self
            .expiry
            .range(..(now_ms.saturating_add(1), "", 0))
            .map_err(storage)?
            .take(EXPIRE_BATCH)
            .map(|row| {
                row.map(|(k, _)| {
                    let (at, owner, seq) = k.value();
                    (at, owner.to_string(), seq)
                })
                .map_err(storage)
            })
            .collect::<Result<_, _>>()?;
        let mut removed = Vec::new();
        for (at, owner, seq) in due {
            self.expiry
                .remove((at, owner.as_str(), seq))
                .map_err(storage)?;
            let Some(row) = self.mail.remove((owner.as_str(), seq)).map_err(storage)? else {
                continue;
            };
            let record = Record::decode(row.value())?;
            drop(row);
            match record {
                Record::Envelope {
                    message_id,
                    envelope_ref,
                    bytes,
                    sender,
                    ..
                } => {
                    self.ids
                        .remove((owner.as_str(), &message_id))
                        .map_err(storage)?;
                    self.release_envelope(envelope_ref)?;
                    pending.remove_envelope(&owner, &sender, bytes);
                    removed.push(Removed {
                        message_id,
                        sender,
                        owner: owner.clone(),
                    });
                }
                Record::Read { message_id, .. } => {
                    self.ids
                        .remove((owner.as_str(), &message_id))
                        .map_err(storage)?;
                }
                Record::Receipt { .. } => {}
            }
        }
        Ok(removed)
    }

    /// One holder fewer for an envelope (see `release_envelope`).
    fn release_envelope(&mut self, envelope_ref: u64) -> Result<(), Error> {
        release_envelope(&mut self.envelopes, &mut self.refs, envelope_ref)
    }
}

/// One holder fewer for an envelope; its bytes go when the last holder does.
fn release_envelope(
    envelopes: &mut redb::Table<u64, &[u8]>,
    refs: &mut redb::Table<u64, u32>,
    envelope_ref: u64,
) -> Result<(), Error> {
    let holders = refs
        .get(envelope_ref)
        .map_err(storage)?
        .map_or(0, |v| v.value());
    if holders <= 1 {
        refs.remove(envelope_ref).map_err(storage)?;
        envelopes.remove(envelope_ref).map_err(storage)?;
    } else {
        refs.insert(envelope_ref, holders - 1).map_err(storage)?;
    }
    Ok(())
}

/// Deletes every row of `owner`'s mailbox (used when an operator releases the name).
pub(crate) fn purge(db: &Db, owner: &str) -> Result<(), Error> {
    db.with(|db| {
        let txn = db.begin_write().map_err(storage)?;
        {
            let mut mail = txn.open_table(MAIL).map_err(storage)?;
            let mut ids = txn.open_table(MAIL_IDS).map_err(storage)?;
            let mut envelopes = txn.open_table(ENVELOPES).map_err(storage)?;
            let mut refs = txn.open_table(ENVELOPE_REFS).map_err(storage)?;
            let mut expiry = txn.open_table(EXPIRY).map_err(storage)?;
            let mut usage = txn.open_table(USAGE).map_err(storage)?;
            let rows: Vec<(u64, Record)> = mail
                .range((owner, 0)..=(owner, u64::MAX))
                .map_err(storage)?
                .map(|row| {
                    let (k, v) = row.map_err(storage)?;
                    Ok((k.value().1, Record::decode(v.value())?))
                })
                .collect::<Result<_, Error>>()?;
            for (seq, record) in rows {
                mail.remove((owner, seq)).map_err(storage)?;
                expiry
                    .remove((record.expires_at_ms(), owner, seq))
                    .map_err(storage)?;
                match record {
                    Record::Envelope {
                        message_id,
                        envelope_ref,
                        ..
                    } => {
                        ids.remove((owner, &message_id)).map_err(storage)?;
                        release_envelope(&mut envelopes, &mut refs, envelope_ref)?;
                    }
                    Record::Read { message_id, .. } => {
                        ids.remove((owner, &message_id)).map_err(storage)?;
                    }
                    Record::Receipt { .. } => {}
                }
            }
            usage.remove(owner).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;
    use svs_common::proto::directory::Envelope;

    fn envelope_raw(id: u8, to: &[&str]) -> NewEnvelope {
        NewEnvelope {
            message_id: [id; 16],
            sender: "alice".into(),
            timestamp_ms: now_ms(),
            recipients: to.iter().map(|s| s.to_string()).collect(),
            encoded: vec![id; 100],
            event: Event::default(),
        }
    }

    /// An envelope whose stored form decodes (100 bytes on disk).
    fn real(id: u8, to: &[&str]) -> NewEnvelope {
        let envelope = Envelope {
            ciphertext: vec![id; 98].into(),
            ..Default::default()
        };
        NewEnvelope {
            encoded: super::super::encode_envelope(&envelope),
            ..envelope_raw(id, to)
        }
    }

    fn open(path: &std::path::Path, quotas: Quotas) -> RedbMailboxes {
        let db = crate::directory::open_db(path).unwrap();
        RedbMailboxes::open(db, quotas).unwrap()
    }

    const QUOTAS: Quotas = Quotas {
        ttl_ms: 60_000,
        max_messages: 2,
        max_bytes: 1 << 20,
        max_messages_per_sender: 2,
        max_bytes_per_sender: 1 << 20,
        max_total_bytes: 1 << 30,
        min_free_disk_bytes: 0,
        remember_ids_ms: 600_000,
    };

    #[tokio::test]
    async fn quota_duplicates_expiry_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.redb");
        {
            let mail = open(&path, QUOTAS);
            let placed = mail
                .store_envelope(real(1, &["bob", "carol"]))
                .await
                .unwrap();
            assert_eq!(
                placed,
                [Placement::Stored { seq: 1 }, Placement::Stored { seq: 1 }]
            );
            let again = mail.store_envelope(real(1, &["bob"])).await.unwrap();
            assert_eq!(again, [Placement::Duplicate]);
            mail.store_envelope(real(2, &["bob"])).await.unwrap();
            let full = mail.store_envelope(real(3, &["bob"])).await.unwrap();
            assert!(
                matches!(&full[0], Placement::Full(why) if why.sentence.contains("2 messages")),
                "{full:?}"
            );
            assert_eq!(mail.usage("bob"), (2, 200));
            // Reading one makes room; the read id is still refused as a duplicate.
            let acked = mail.ack("bob", vec![[1; 16]], vec![]).await.unwrap();
            assert_eq!(acked.envelopes.len(), 1);
            assert_eq!(mail.usage("bob"), (1, 100));
            let again = mail.store_envelope(real(1, &["bob"])).await.unwrap();
            assert_eq!(again, [Placement::Duplicate]);
        }
        // After a restart: the same contents and sequence numbers, then expiry.
        let mail = open(&path, QUOTAS);
        assert_eq!(mail.usage("bob"), (1, 100));
        assert_eq!(mail.last_seq("bob"), 2);
        let page = mail.read("bob", 0, 10).await.unwrap();
        assert_eq!(page.items.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2]);
        assert_eq!(page.scanned_to, 2);
        let expired = mail.expire(now_ms() + 61_000).await.unwrap();
        let mut owners: Vec<_> = expired
            .iter()
            .map(|r| (r.owner.as_str(), r.message_id[0]))
            .collect();
        owners.sort();
        assert_eq!(owners, [("bob", 2), ("carol", 1)]);
        assert_eq!(mail.usage("bob"), (0, 0));
        assert!(mail.read("carol", 0, 10).await.unwrap().items.is_empty());
        // A damaged row is skipped, not fatal: the rows after it still arrive.
        mail.store_envelope(envelope_raw(4, &["dave"]))
            .await
            .unwrap();
        mail.store_envelope(real(5, &["dave"])).await.unwrap();
        let page = mail.read("dave", 0, 10).await.unwrap();
        assert_eq!(page.items.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2]);
        assert!(mail.db.is_healthy());
        // Shared envelope bytes went with their last holder: only dave's two are left.
        let left = mail
            .db
            .with(|db| {
                let txn = db.begin_read().map_err(storage)?;
                txn.open_table(ENVELOPES)
                    .map_err(storage)?
                    .len()
                    .map_err(storage)
            })
            .unwrap();
        assert_eq!(left, 2);
    }

    fn from(sender: &str, id: u8, to: &[&str]) -> NewEnvelope {
        NewEnvelope {
            sender: sender.into(),
            ..real(id, to)
        }
    }

    #[tokio::test]
    async fn one_sender_fills_only_its_share_and_the_share_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.redb");
        let quotas = Quotas {
            max_messages: 100,
            max_messages_per_sender: 3,
            max_bytes_per_sender: 1 << 20,
            max_total_bytes: 650,
            ..QUOTAS
        };
        {
            let mail = open(&path, quotas);
            for id in 1..=3 {
                let placed = mail.store_envelope(from("mallory", id, &["bob"])).await;
                assert!(matches!(placed.unwrap()[0], Placement::Stored { .. }));
            }
            let refused = mail.store_envelope(from("mallory", 4, &["bob"])).await;
            assert!(
                matches!(&refused.unwrap()[0], Placement::Full(f) if f.reason == super::super::FullReason::SenderMessages),
            );
            // A friend still gets through, and mallory can still write to someone else.
            let friend = mail.store_envelope(from("alice", 5, &["bob"])).await;
            assert!(matches!(friend.unwrap()[0], Placement::Stored { .. }));
            assert_eq!(mail.share("bob", "mallory"), (3, 300));
            assert_eq!(mail.share("bob", "alice"), (1, 100));
        }
        let mail = open(&path, quotas);
        assert_eq!(mail.share("bob", "mallory"), (3, 300), "rebuilt at open");
        let refused = mail.store_envelope(from("mallory", 6, &["bob"])).await;
        assert!(matches!(&refused.unwrap()[0], Placement::Full(_)));
        // Reading one of mallory's gives mallory's share one place back.
        mail.ack("bob", vec![[1; 16]], vec![]).await.unwrap();
        assert_eq!(mail.share("bob", "mallory"), (2, 200));
        let placed = mail.store_envelope(from("mallory", 7, &["bob"])).await;
        assert!(matches!(placed.unwrap()[0], Placement::Stored { .. }));
        // The store as a whole keeps 650 bytes: 400 held, two more of 100, then no more.
        mail.store_envelope(from("carol", 8, &["dave"]))
            .await
            .unwrap();
        mail.store_envelope(from("carol", 9, &["dave"]))
            .await
            .unwrap();
        let over = mail.store_envelope(from("carol", 10, &["erin"])).await;
        assert!(
            matches!(&over.unwrap()[0], Placement::Full(f) if f.reason == super::super::FullReason::TotalBytes),
        );
        // Expiry gives the shares back.
        mail.expire(now_ms() + 61_000).await.unwrap();
        assert_eq!(mail.share("bob", "mallory"), (0, 0));
        let placed = mail.store_envelope(from("carol", 10, &["erin"])).await;
        assert!(matches!(placed.unwrap()[0], Placement::Stored { .. }));
    }
}
