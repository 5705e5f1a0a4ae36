//! The relay: checks an envelope against the sender's session, stores it in each recipient's
//! mailbox (durably, before answering) and reports per recipient; turns acknowledgements and
//! expiries into receipts for the sender, live or stored. It never sees plaintext and does not
//! check signatures (docs/protocol.md, Security, says why): recipients verify every envelope.

use crate::Error;
use crate::bindings::NameStore;
use crate::error::Refusal;
use crate::mailbox::{FullReason, Mailboxes, NewEnvelope, NewReceipt, Placement, Removed};
use crate::registry::{Registry, SessionRef};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use svs_common::names;
use svs_common::proto::directory::{
    DeliveryFailure, DeliveryReceipt, Envelope, Event, LookupKeysResponse, Outcome,
    RecipientOutcome, event,
};
use svs_common::sealed::Header;
use svs_common::time::now_ms;

/// Most ids and receipt seqs in one Ack call.
pub(crate) const MAX_ACK_IDS: usize = 4096;
/// Most names in one LookupKeys call.
pub(crate) const MAX_LOOKUP_NAMES: usize = 256;

/// What the relay enforces on envelopes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayLimits {
    pub max_recipients: usize,
    pub max_message_bytes: usize,
    pub max_clock_skew_ms: u64,
    /// How long a mailbox keeps an unread message.
    pub ttl: std::time::Duration,
}

/// At most one log line per interval about refused mail: a sender can cause refusals at will.
static MAIL_REFUSED_LOG: svs_server::serve::log_throttle::LogThrottle =
    svs_server::serve::log_throttle::LogThrottle::new(std::time::Duration::from_secs(10));

/// Stores and routes sealed envelopes and their receipts.
pub(crate) struct Relay {
    registry: Arc<Registry>,
    names: Arc<NameStore>,
    mail: Arc<dyn Mailboxes>,
    limits: RelayLimits,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

impl Relay {
    /// Counts a recipient's copy a quota refused (`svs_directory_mail_refused_total{reason}`);
    /// the store or the disk being full is also logged, at most once per interval, since it
    /// refuses everyone's mail and the operator must act.
    fn note_mail_refused(&self, reason: FullReason) {
        metrics::counter!("svs_directory_mail_refused_total", "reason" => reason.as_str())
            .increment(1);
        if matches!(reason, FullReason::TotalBytes | FullReason::DiskSpace)
            && let Some(left_out) = MAIL_REFUSED_LOG.check()
        {
            tracing::warn!(
                reason = reason.as_str(),
                lines_left_out = left_out,
                "mail is refused: the directory's mail store or disk is full"
            );
        }
    }

    pub(crate) fn new(
        registry: Arc<Registry>,
        names: Arc<NameStore>,
        mail: Arc<dyn Mailboxes>,
        limits: RelayLimits,
    ) -> Self {
        Self {
            registry,
            names,
            mail,
            limits,
        }
    }

    /// Checks what the relay must (sizes, sender, key, clock), stores the envelope for every
    /// recipient registered under the key it was sealed for, and reports each in header order.
    pub(crate) async fn send(
        &self,
        session: &SessionRef,
        envelope: Envelope,
    ) -> Result<(Header, Vec<RecipientOutcome>), Error> {
        let header = self.check(session, &envelope)?;
        self.registry.take_send_budget(session)?;
        let (refused, storing) = self.check_recipients(&header).await?;
        let placements = self.store(session, &header, envelope, storing).await?;
        let outcomes = self.report(&header, refused, placements);
        for o in &outcomes {
            let outcome = Outcome::try_from(o.outcome).map_or("unknown", |o| o.as_str_name());
            metrics::counter!("svs_directory_recipients_total", "outcome" => outcome).increment(1);
        }
        if outcomes
            .iter()
            .all(|o| o.outcome == Outcome::Duplicate as i32)
        {
            return Err(Refusal::AlreadyExists(
                "this message id was already accepted for every recipient; a resent envelope is refused".into(),
            ).into());
        }
        Ok((header, outcomes))
    }

    /// The envelope's own checks: field sizes, the sender and its key are the session's, the
    /// wrapped keys match the header, the timestamp is near the directory's clock.
    fn check(&self, session: &SessionRef, envelope: &Envelope) -> Result<Header, Error> {
        let limits = &self.limits;
        if let Err(refused) = svs_common::sealed::check_field_sizes(
            envelope,
            limits.max_recipients,
            limits.max_message_bytes,
        ) {
            // Too long a message is a size the sender chose; any other field out of bounds is
            // not something a correct client makes.
            return Err(if refused.field == "ciphertext" {
                Refusal::ResourceExhausted(format!(
                    "the message is {} bytes; the limit is {} bytes",
                    envelope.ciphertext.len().saturating_sub(16),
                    limits.max_message_bytes
                ))
                .into()
            } else {
                Refusal::InvalidArgument(refused.to_string()).into()
            });
        }
        let header = Header::decode(&envelope.header)?;
        if names::canonical(&header.sender) != session.canonical {
            return Err(Refusal::PermissionDenied(format!(
                "the envelope claims to be from {} but this session is {}",
                header.sender, session.canonical
            ))
            .into());
        }
        if header.sender_fingerprint != session.fingerprint {
            return Err(Refusal::PermissionDenied(
                "the envelope names a sender key other than the one this session registered".into(),
            )
            .into());
        }
        if envelope.wrapped_keys.len() != header.recipients.len()
            || envelope
                .wrapped_keys
                .iter()
                .zip(&header.recipients)
                .any(|(k, r)| k.recipient != r.name)
        {
            return Err(Refusal::InvalidArgument(
                "the wrapped keys must name the header's recipients, in the same order".into(),
            )
            .into());
        }
        let skew = now_ms().abs_diff(header.timestamp_ms);
        if skew > limits.max_clock_skew_ms {
            return Err(Refusal::InvalidArgument(format!(
                "the message timestamp is {} s away from the directory's clock (limit {} s); check the sender's clock",
                skew / 1000,
                limits.max_clock_skew_ms / 1000
            )).into());
        }
        Ok(header)
    }

    /// Each recipient must be registered under the key the sender sealed for. Returns, in
    /// header order, the outcome of each recipient refused here (`None` for the others), and
    /// the canonical names to store for.
    async fn check_recipients(
        &self,
        header: &Header,
    ) -> Result<(Vec<Option<RecipientOutcome>>, Vec<String>), Error> {
        let mut refused = Vec::with_capacity(header.recipients.len());
        let mut storing = Vec::new();
        for r in &header.recipients {
            let canonical = names::canonical(&r.name);
            let refusal = match self.names.binding(&canonical).await? {
                None => Some((
                    Outcome::UnknownName,
                    format!("nobody is registered as {}; nothing was stored", r.name),
                )),
                Some(b) if b.fingerprint != r.fingerprint => Some((
                    Outcome::KeyMismatch,
                    format!(
                        "{} is registered with a different key than the one you sealed for; nothing was stored",
                        r.name
                    ),
                )),
                Some(_) => None,
            };
            if refusal.is_none() {
                storing.push(canonical);
            }
            refused.push(refusal.map(|(outcome, detail)| RecipientOutcome {
                recipient: r.name.clone(),
                outcome: outcome as i32,
                detail,
            }));
        }
        Ok((refused, storing))
    }

    /// Stores the envelope for `storing` (durable before this returns); each name's placement.
    async fn store(
        &self,
        session: &SessionRef,
        header: &Header,
        envelope: Envelope,
        storing: Vec<String>,
    ) -> Result<HashMap<String, Placement>, Error> {
        if storing.is_empty() {
            return Ok(HashMap::new());
        }
        let encoded = crate::mailbox::encode_envelope(&envelope);
        let new = NewEnvelope {
            message_id: header.message_id,
            sender: session.canonical.clone(),
            timestamp_ms: header.timestamp_ms,
            recipients: storing.clone(),
            encoded,
            event: Event {
                kind: Some(event::Kind::Envelope(envelope)),
            },
        };
        let stored = self.mail.store_envelope(new).await?;
        Ok(storing.into_iter().zip(stored).collect())
    }

    /// The outcome for each recipient in header order: refused here, or what storing did.
    fn report(
        &self,
        header: &Header,
        refused: Vec<Option<RecipientOutcome>>,
        mut placements: HashMap<String, Placement>,
    ) -> Vec<RecipientOutcome> {
        header
            .recipients
            .iter()
            .zip(refused)
            .map(|(r, refused)| {
                refused.unwrap_or_else(|| {
                    let canonical = names::canonical(&r.name);
                    let (outcome, detail) = match placements.remove(&canonical) {
                        Some(Placement::Stored { .. })
                            if self.registry.is_listening(&canonical) =>
                        {
                            (Outcome::Delivering, format!("delivering to {}", r.name))
                        }
                        Some(Placement::Stored { .. }) => {
                            (Outcome::Stored, format!("stored for {} (offline)", r.name))
                        }
                        Some(Placement::Full(full)) => {
                            self.note_mail_refused(full.reason);
                            (Outcome::MailboxFull, full.sentence)
                        }
                        Some(Placement::Duplicate) | None => (
                            Outcome::Duplicate,
                            format!("this message was already accepted for {}", r.name),
                        ),
                    };
                    RecipientOutcome {
                        recipient: r.name.clone(),
                        outcome: outcome as i32,
                        detail,
                    }
                })
            })
            .collect()
    }

    /// Acknowledges envelopes and stored receipts of the session's name; each acknowledged
    /// envelope's sender gets a receipt. Returns how many matched.
    pub(crate) async fn ack(
        &self,
        session: &SessionRef,
        message_ids: &[Bytes],
        receipt_seqs: &[u64],
    ) -> Result<u32, Error> {
        if message_ids.len() + receipt_seqs.len() > MAX_ACK_IDS {
            return Err(Refusal::InvalidArgument(format!(
                "at most {MAX_ACK_IDS} ids and seqs per Ack call"
            ))
            .into());
        }
        let ids = message_ids
            .iter()
            .filter_map(|id| <[u8; 16]>::try_from(id.as_ref()).ok())
            .collect();
        let acked = self
            .mail
            .ack(&session.canonical, ids, receipt_seqs.to_vec())
            .await?;
        let count = acked.envelopes.len() + acked.receipts;
        metrics::counter!("svs_directory_acknowledged_total", "kind" => "message")
            .increment(acked.envelopes.len() as u64);
        metrics::counter!("svs_directory_acknowledged_total", "kind" => "receipt")
            .increment(acked.receipts as u64);
        let receipts = acked
            .envelopes
            .into_iter()
            .map(|removed| {
                let kind = event::Kind::Delivered(DeliveryReceipt {
                    message_id: Bytes::copy_from_slice(&removed.message_id),
                    recipient: session.name.clone(),
                    stored_seq: 0,
                });
                (removed.sender, kind)
            })
            .collect();
        self.tell_senders(receipts).await?;
        Ok(count as u32)
    }

    /// Drops what expired from every mailbox and tells the senders of unread envelopes.
    pub(crate) async fn expire(&self) -> Result<(), Error> {
        let expired = self.mail.expire(now_ms()).await?;
        metrics::counter!("svs_directory_expired_total").increment(expired.len() as u64);
        let ttl = svs_common::time::spoken_duration(self.limits.ttl);
        let failures = expired
            .into_iter()
            .map(
                |Removed {
                     message_id,
                     sender,
                     owner,
                 }| {
                    let kind = event::Kind::Undelivered(DeliveryFailure {
                        message_id: Bytes::copy_from_slice(&message_id),
                        reason: format!("{owner} did not read it within {ttl}; it expired unread"),
                        recipient: owner,
                        stored_seq: 0,
                    });
                    (sender, kind)
                },
            )
            .collect();
        self.tell_senders(failures).await
    }

    /// Pushes each receipt to its sender's live streams, or stores it if there is none. With
    /// mailboxes shared by replicas every receipt is stored: the sender's sessions on every
    /// replica get it from there.
    async fn tell_senders(&self, receipts: Vec<(String, event::Kind)>) -> Result<(), Error> {
        let shared = self.mail.is_shared();
        let to_store: Vec<NewReceipt> = receipts
            .into_iter()
            .filter_map(|(sender, kind)| {
                (shared || !self.registry.push_receipt(&sender, kind.clone())).then(|| NewReceipt {
                    owner: sender,
                    event: Event { kind: Some(kind) },
                })
            })
            .collect();
        self.mail.store_receipts(to_store).await
    }

    /// The registered key of each name, online or not.
    /// The key bound to `canonical`, if any.
    pub(crate) async fn binding(
        &self,
        canonical: &str,
    ) -> Result<Option<crate::bindings::Binding>, Error> {
        self.names.binding(canonical).await
    }

    pub(crate) async fn lookup(&self, wanted: &[String]) -> Result<LookupKeysResponse, Error> {
        if wanted.len() > MAX_LOOKUP_NAMES {
            return Err(Refusal::InvalidArgument(format!(
                "at most {MAX_LOOKUP_NAMES} names per LookupKeys call"
            ))
            .into());
        }
        let mut response = LookupKeysResponse::default();
        for name in wanted {
            names::validate(name)?;
            let canonical = names::canonical(name);
            let online = self.registry.online_peer(&canonical);
            let bound = match online {
                Some(_) => None,
                None => self.names.binding(&canonical).await?,
            };
            match (online, bound) {
                (Some(peer), _) => response.peers.push(peer),
                (None, Some(binding)) => response.peers.push(svs_common::proto::directory::Peer {
                    name: canonical,
                    public_key_der: binding.key_der.into(),
                    fingerprint: svs_common::identity::fingerprint_hex(&binding.fingerprint),
                    online_since_ms: 0,
                }),
                (None, None) => response.unknown.push(name.clone()),
            }
        }
        Ok(response)
    }
}
