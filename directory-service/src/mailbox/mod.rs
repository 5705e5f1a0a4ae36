//! Mailboxes: every accepted envelope is kept, as ciphertext, per recipient name until one of the
//! name's sessions acknowledges it or it expires; receipts for a sender with no live session wait
//! in the sender's mailbox the same way. `Mailboxes` is the storage interface (redb here, so a
//! clustered store implements it too: `cluster::mail`); items of one name carry increasing
//! sequence numbers.

#[cfg(test)]
pub(crate) mod conformance;
mod quota;
pub(crate) mod record;
pub(crate) mod redb_store;

pub(crate) use quota::{Full, FullReason, Held, Holdings, Quotas, free_disk_bytes};

use crate::Error;
use std::sync::Arc;
use svs_common::proto::directory::{Envelope, Event, event};

/// An envelope the relay accepted, to store for each recipient.
#[derive(Debug)]
pub(crate) struct NewEnvelope {
    pub message_id: [u8; 16],
    /// Canonical name of the sender.
    pub sender: String,
    /// The signed timestamp from the header.
    pub timestamp_ms: u64,
    /// Canonical recipient names, without repeats.
    pub recipients: Vec<String>,
    /// The envelope, encoded once for the disk.
    pub encoded: Vec<u8>,
    /// The same envelope as an event, handed to live sessions after the commit.
    pub event: Event,
}

/// What happened to one recipient's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    Stored {
        seq: u64,
    },
    /// This message id was accepted for this name before.
    Duplicate,
    /// A quota refused it (the recipient's mailbox, the sender's share of it, the store, the
    /// disk); says which, in a sentence for the sender.
    Full(Full),
}

/// A receipt to keep for a sender with no live session.
#[derive(Debug)]
pub(crate) struct NewReceipt {
    /// Canonical name of the sender that gets it.
    pub owner: String,
    /// A `Delivered` or `Undelivered` event (its `stored_seq` is set when it is read back).
    pub event: Event,
}

/// Something that was just made durable, in the order of its name's sequence numbers.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub owner: String,
    pub seq: u64,
    /// The sequence number of the name's item before this one (0 for the first): a subscriber
    /// that has handed over exactly up to it can take this one live.
    pub prev_seq: u64,
    pub event: Event,
}

/// Called by the store after each commit, in commit order, before the writers are answered.
pub(crate) type Sink = Arc<dyn Fn(Vec<Committed>) + Send + Sync>;

/// An envelope that left a mailbox, and whom to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Removed {
    pub message_id: [u8; 16],
    /// Canonical name of its sender.
    pub sender: String,
    /// Canonical name of the mailbox it left.
    pub owner: String,
}

/// What an acknowledgement removed.
#[derive(Debug, Default)]
pub(crate) struct Acked {
    pub envelopes: Vec<Removed>,
    pub receipts: usize,
}

/// Stored items of one name after a sequence number.
#[derive(Debug)]
pub(crate) struct Page {
    /// Items in sequence order; each event is as delivered (envelope, or receipt with stored_seq).
    pub items: Vec<(u64, Event)>,
    /// The highest sequence number looked at (acknowledged ones are skipped but counted).
    pub scanned_to: u64,
}

/// Durable per-name mailboxes.
#[tonic::async_trait]
pub(crate) trait Mailboxes: Send + Sync {
    /// Sets who is handed each commit (the live sessions).
    fn set_sink(&self, sink: Sink);
    /// Stores `envelope` for each recipient; answers once it is durable, one placement per
    /// recipient in order.
    async fn store_envelope(&self, envelope: NewEnvelope) -> Result<Vec<Placement>, Error>;
    /// Stores receipts for senders with no live session; answers once they are durable.
    async fn store_receipts(&self, receipts: Vec<NewReceipt>) -> Result<(), Error>;
    /// Removes acknowledged envelopes (by message id) and receipts (by sequence number).
    async fn ack(
        &self,
        owner: &str,
        ids: Vec<[u8; 16]>,
        receipt_seqs: Vec<u64>,
    ) -> Result<Acked, Error>;
    /// Up to `limit` stored items of `owner` after `after_seq`.
    async fn read(&self, owner: &str, after_seq: u64, limit: usize) -> Result<Page, Error>;
    /// The highest sequence number committed for `owner` (0 when none).
    fn last_seq(&self, owner: &str) -> u64;
    /// Removes what expired by `now_ms`; returns the unread envelopes among it.
    async fn expire(&self, now_ms: u64) -> Result<Vec<Removed>, Error>;
    /// Whether other directory replicas deliver from these mailboxes too. Then a receipt is
    /// always stored (never only pushed to this replica's streams), so the sender's sessions on
    /// every replica get it.
    fn is_shared(&self) -> bool {
        false
    }
    /// Whether the store can be used now (health reports NOT_SERVING while it cannot).
    fn is_healthy(&self) -> bool {
        true
    }
}

pub(crate) use redb_store::RedbMailboxes;

/// Encodes an envelope as it is kept on disk (the protobuf encoding).
pub(crate) fn encode_envelope(envelope: &Envelope) -> Vec<u8> {
    prost::Message::encode_to_vec(envelope)
}

/// Sets the sequence number a stored receipt is acknowledged by.
pub(crate) fn set_stored_seq(event: &mut Event, seq: u64) {
    match &mut event.kind {
        Some(event::Kind::Delivered(d)) => d.stored_seq = seq,
        Some(event::Kind::Undelivered(u)) => u.stored_seq = seq,
        _ => {}
    }
}
