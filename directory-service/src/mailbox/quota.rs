//! How much a mailbox may take, and from whom: one policy, asked by every mailbox store before
//! it keeps an envelope, so the embedded and the clustered store refuse for the same reasons
//! with the same sentences.
//!
//! A name's mailbox has a size (messages and bytes); inside it each sender has a share, so no one
//! sender can fill someone's mailbox and shut out their friends; the store as a whole has a byte
//! ceiling, and the disk keeps a free reserve so that registrations and acknowledgements (which
//! also write) go on working when mail is refused.

/// How long things are kept and how much may be held.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quotas {
    /// An unacknowledged envelope or receipt is dropped this long after it was accepted.
    pub ttl_ms: u64,
    /// Envelopes one name may hold (receipts do not count: they are small and bounded by what the
    /// name itself sent).
    pub max_messages: u64,
    /// Envelope bytes one name may hold.
    pub max_bytes: u64,
    /// Envelopes from one sender that one name may hold.
    pub max_messages_per_sender: u64,
    /// Envelope bytes from one sender that one name may hold.
    pub max_bytes_per_sender: u64,
    /// Envelope bytes all mailboxes together may hold (each recipient's copy counted).
    pub max_total_bytes: u64,
    /// Mail is refused while the store's disk has fewer free bytes than this (0: not checked).
    pub min_free_disk_bytes: u64,
    /// An acknowledged message id is remembered (so a resend is refused) until this long after
    /// the message's own timestamp: after that the relay refuses the envelope as too old anyway.
    pub remember_ids_ms: u64,
}

/// Envelopes and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Held {
    pub messages: u64,
    pub bytes: u64,
}

impl Held {
    /// One envelope of `bytes` more.
    pub(crate) fn add(&mut self, bytes: u64) {
        self.messages += 1;
        self.bytes += bytes;
    }

    /// One envelope of `bytes` fewer.
    pub(crate) fn remove(&mut self, bytes: u64) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.messages == 0 && self.bytes == 0
    }
}

/// Which limit refused an envelope (the `reason` label of `svs_directory_mail_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FullReason {
    /// The recipient's mailbox holds its most messages.
    Messages,
    /// The recipient's mailbox holds its most bytes.
    Bytes,
    /// The recipient's mailbox holds the most messages one sender may leave there.
    SenderMessages,
    /// The recipient's mailbox holds the most bytes one sender may leave there.
    SenderBytes,
    /// All mailboxes together hold the most bytes the directory keeps.
    TotalBytes,
    /// The disk is down to its free reserve.
    DiskSpace,
}

impl FullReason {
    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FullReason::Messages => "messages",
            FullReason::Bytes => "bytes",
            FullReason::SenderMessages => "sender_messages",
            FullReason::SenderBytes => "sender_bytes",
            FullReason::TotalBytes => "total_bytes",
            FullReason::DiskSpace => "disk_space",
        }
    }
}

/// Why an envelope was not kept for one recipient, as a reason and a sentence for the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Full {
    pub reason: FullReason,
    pub sentence: String,
}

/// What is held where an envelope would go.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Holdings {
    /// The recipient's whole mailbox.
    pub mailbox: Held,
    /// The part of it from this envelope's sender.
    pub from_sender: Held,
    /// Every mailbox together (bytes).
    pub total_bytes: u64,
    /// Free bytes on the store's disk, when known.
    pub free_disk_bytes: Option<u64>,
}

fn kib(bytes: u64) -> u64 {
    bytes / 1024
}

impl Quotas {
    /// The refusal when every mailbox together holds `max_total_bytes` (checked here for the
    /// embedded store; JetStream refuses it for the clustered one).
    pub(crate) fn store_full(&self, owner: &str) -> Full {
        Full {
            reason: FullReason::TotalBytes,
            sentence: format!(
                "not stored for {owner}: the directory holds as much unread mail as it keeps ({} MiB); it takes more once some is read or expires",
                self.max_total_bytes >> 20
            ),
        }
    }

    /// Whether an envelope of `size` bytes from `sender` may join `owner`'s mailbox given what
    /// is held; `Err` says which limit refuses it, in a sentence that names no flag.
    pub(crate) fn admit(
        &self,
        owner: &str,
        sender: &str,
        held: &Holdings,
        size: u64,
    ) -> Result<(), Full> {
        let full = |reason, sentence| Err(Full { reason, sentence });
        if self.min_free_disk_bytes > 0
            && held
                .free_disk_bytes
                .is_some_and(|free| free < self.min_free_disk_bytes.saturating_add(size))
        {
            return full(
                FullReason::DiskSpace,
                format!(
                    "not stored for {owner}: the directory's disk is nearly full; it takes mail again once some is read or expires"
                ),
            );
        }
        if held.total_bytes.saturating_add(size) > self.max_total_bytes {
            return Err(self.store_full(owner));
        }
        if held.mailbox.messages >= self.max_messages {
            return full(
                FullReason::Messages,
                format!(
                    "{owner}'s mailbox is full ({} messages waiting, the limit); it takes more once {owner} reads",
                    held.mailbox.messages
                ),
            );
        }
        if held.mailbox.bytes.saturating_add(size) > self.max_bytes {
            return full(
                FullReason::Bytes,
                format!(
                    "{owner}'s mailbox is full ({} KiB waiting, the limit is {} KiB); it takes more once {owner} reads",
                    kib(held.mailbox.bytes),
                    kib(self.max_bytes)
                ),
            );
        }
        if held.from_sender.messages >= self.max_messages_per_sender {
            return full(
                FullReason::SenderMessages,
                format!(
                    "{owner}'s mailbox holds {} unread messages from {sender}, the most one sender may leave there; it takes more from {sender} once {owner} reads",
                    held.from_sender.messages
                ),
            );
        }
        if held.from_sender.bytes.saturating_add(size) > self.max_bytes_per_sender {
            return full(
                FullReason::SenderBytes,
                format!(
                    "{owner}'s mailbox holds {} KiB of unread messages from {sender}; one sender may leave at most {} KiB there; it takes more from {sender} once {owner} reads",
                    kib(held.from_sender.bytes),
                    kib(self.max_bytes_per_sender)
                ),
            );
        }
        Ok(())
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `path`, or `None` when the
/// system cannot say.
pub(crate) fn free_disk_bytes(path: &std::path::Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTAS: Quotas = Quotas {
        ttl_ms: 1,
        max_messages: 10,
        max_bytes: 1000,
        max_messages_per_sender: 3,
        max_bytes_per_sender: 300,
        max_total_bytes: 10_000,
        min_free_disk_bytes: 500,
        remember_ids_ms: 1,
    };

    fn reason(held: Holdings, size: u64) -> Option<FullReason> {
        QUOTAS
            .admit("bob", "mallory", &held, size)
            .err()
            .map(|full| full.reason)
    }

    #[test]
    fn each_limit_refuses_for_its_own_reason() {
        let room = Holdings {
            free_disk_bytes: Some(1 << 30),
            ..Default::default()
        };
        assert_eq!(reason(room, 100), None);
        let sender = |messages, bytes| Holdings {
            from_sender: Held { messages, bytes },
            mailbox: Held { messages, bytes },
            ..room
        };
        assert_eq!(reason(sender(3, 30), 10), Some(FullReason::SenderMessages));
        assert_eq!(reason(sender(2, 250), 51), Some(FullReason::SenderBytes));
        assert_eq!(reason(sender(2, 250), 50), None);
        let mailbox = Holdings {
            mailbox: Held {
                messages: 10,
                bytes: 100,
            },
            ..room
        };
        assert_eq!(reason(mailbox, 1), Some(FullReason::Messages));
        let mailbox = Holdings {
            mailbox: Held {
                messages: 1,
                bytes: 950,
            },
            ..room
        };
        assert_eq!(reason(mailbox, 51), Some(FullReason::Bytes));
        let total = Holdings {
            total_bytes: 9_990,
            ..room
        };
        assert_eq!(reason(total, 11), Some(FullReason::TotalBytes));
        let disk = Holdings {
            free_disk_bytes: Some(550),
            ..room
        };
        assert_eq!(reason(disk, 51), Some(FullReason::DiskSpace));
        let unknown_disk = Holdings {
            free_disk_bytes: None,
            ..room
        };
        assert_eq!(reason(unknown_disk, 51), None);
    }

    #[test]
    fn a_sentence_names_the_owner_and_the_sender_not_a_flag() {
        let held = Holdings {
            from_sender: Held {
                messages: 3,
                bytes: 3,
            },
            free_disk_bytes: Some(1 << 30),
            ..Default::default()
        };
        let full = QUOTAS.admit("bob", "mallory", &held, 1).unwrap_err();
        assert!(
            full.sentence
                .contains("bob's mailbox holds 3 unread messages from mallory")
        );
        assert!(!full.sentence.contains("--"));
    }

    #[test]
    fn the_disk_reserve_of_zero_is_not_checked() {
        let quotas = Quotas {
            min_free_disk_bytes: 0,
            ..QUOTAS
        };
        let held = Holdings {
            free_disk_bytes: Some(0),
            ..Default::default()
        };
        assert!(quotas.admit("bob", "mallory", &held, 10).is_ok());
    }
}
