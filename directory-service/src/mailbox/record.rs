//! The byte layout of one mailbox row (one codec for the type; see docs/protocol.md, Mailboxes).
//!
//! ```text
//! envelope:  0x01 | message_id[16] | envelope_ref u64 | bytes u64 | timestamp_ms u64
//!                 | expires_at_ms u64 | short(sender)
//! receipt:   0x02 | expires_at_ms u64 | long(Event protobuf)
//! read:      0x03 | message_id[16] | forget_at_ms u64
//! ```
//! A `read` row stays after the envelope was acknowledged, until the relay would refuse the
//! envelope as too old anyway, so a resent copy is refused as a duplicate.

use svs_common::Error;
use svs_common::wire::{Reader, Writer};

/// One row of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    Envelope {
        message_id: [u8; 16],
        /// Key of the shared envelope bytes.
        envelope_ref: u64,
        /// Bytes counted against the owner's quota.
        bytes: u64,
        timestamp_ms: u64,
        expires_at_ms: u64,
        sender: String,
    },
    Receipt {
        expires_at_ms: u64,
        event: Vec<u8>,
    },
    Read {
        message_id: [u8; 16],
        forget_at_ms: u64,
    },
}

const WHAT: &str = "mailbox record";

impl Record {
    /// When this row leaves the mailbox.
    pub(crate) fn expires_at_ms(&self) -> u64 {
        match self {
            Record::Envelope { expires_at_ms, .. } | Record::Receipt { expires_at_ms, .. } => {
                *expires_at_ms
            }
            Record::Read { forget_at_ms, .. } => *forget_at_ms,
        }
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut w = Writer::new(WHAT);
        match self {
            Record::Envelope {
                message_id,
                envelope_ref,
                bytes,
                timestamp_ms,
                expires_at_ms,
                sender,
            } => w
                .u8(1)
                .raw(message_id)
                .u64(*envelope_ref)
                .u64(*bytes)
                .u64(*timestamp_ms)
                .u64(*expires_at_ms)
                .short(sender.as_bytes()),
            Record::Receipt {
                expires_at_ms,
                event,
            } => w.u8(2).u64(*expires_at_ms).long(event),
            Record::Read {
                message_id,
                forget_at_ms,
            } => w.u8(3).raw(message_id).u64(*forget_at_ms),
        };
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(WHAT, bytes);
        let record = match r.u8()? {
            1 => Record::Envelope {
                message_id: r.array()?,
                envelope_ref: r.u64()?,
                bytes: r.u64()?,
                timestamp_ms: r.u64()?,
                expires_at_ms: r.u64()?,
                sender: r.short_str()?.to_string(),
            },
            2 => Record::Receipt {
                expires_at_ms: r.u64()?,
                event: r.long()?.to_vec(),
            },
            3 => Record::Read {
                message_id: r.array()?,
                forget_at_ms: r.u64()?,
            },
            other => {
                return Err(Error::Malformed {
                    what: WHAT,
                    detail: format!("unknown kind {other}"),
                });
            }
        };
        r.finish()?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_damage_is_an_error() {
        let records = [
            Record::Envelope {
                message_id: [7; 16],
                envelope_ref: 42,
                bytes: 1300,
                timestamp_ms: 1_700_000_000_000,
                expires_at_ms: 1_702_592_000_000,
                sender: "alice".into(),
            },
            Record::Receipt {
                expires_at_ms: 9,
                event: vec![1, 2, 3],
            },
            Record::Read {
                message_id: [1; 16],
                forget_at_ms: 5,
            },
        ];
        for record in records {
            let bytes = record.encode().unwrap();
            assert_eq!(Record::decode(&bytes).unwrap(), record);
            assert!(Record::decode(&bytes[..bytes.len() - 1]).is_err());
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Record::decode(&longer).is_err());
        }
        assert!(Record::decode(&[9]).is_err());
        assert!(Record::decode(&[]).is_err());
    }
}
