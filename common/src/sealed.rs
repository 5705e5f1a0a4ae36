//! The sealed-message format: a fresh AES-256-GCM key per message, wrapped for each recipient
//! with RSA-OAEP-SHA256, the whole envelope signed by the sender with RSA-PSS-SHA256.
//! docs/protocol.md specifies every byte; `tests/protocol_vector.rs` checks the published vector.

use crate::Error;
use crate::identity::{self, Fingerprint};
use crate::names;
use crate::proto::directory::{Envelope, WrappedKey};
use crate::wire::{Reader, Writer};
use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use rand::TryCryptoRng;
use rsa::sha2::{Digest, Sha256};
use rsa::{Oaep, PrivateKey, PublicKey};
use zeroize::Zeroizing;

/// Magic and version at the start of every header.
pub const HEADER_MAGIC: &[u8] = b"SVSM\x01";
/// Domain separator of the envelope signature.
pub const SIGNATURE_CONTEXT: &[u8] = b"svs/v1/envelope-signature\0";
/// Domain separator of the OAEP label.
pub const WRAP_CONTEXT: &[u8] = b"svs/v1/wrap\0";
/// Domain separator of the key commitment.
pub const COMMITMENT_CONTEXT: &[u8] = b"svs/v1/key-commitment\0";
/// Most recipients one header can name (the u16 count allows more; services set lower limits).
pub const MAX_HEADER_RECIPIENTS: usize = 1024;
/// Shortest and longest signature or wrapped key: an RSA result is as long as the key's modulus,
/// and keys are 2048 to 4096 bits.
pub const MIN_RSA_OUTPUT_BYTES: usize = identity::MIN_KEY_BITS / 8;
/// See `MIN_RSA_OUTPUT_BYTES`.
pub const MAX_RSA_OUTPUT_BYTES: usize = identity::MAX_KEY_BITS / 8;
/// Bytes of a header besides its recipients, with the longest sender name.
const HEADER_FIXED_BYTES: usize =
    HEADER_MAGIC.len() + 16 + 1 + names::MAX_NAME_LEN + 32 + 8 + 8 + 2 + 12 + 32;
/// Bytes one recipient adds to a header at most (the longest name and a fingerprint).
const HEADER_RECIPIENT_BYTES: usize = 1 + names::MAX_NAME_LEN + 32;

/// The longest header that names `recipients` recipients (every name at its longest).
pub fn max_header_bytes(recipients: usize) -> usize {
    HEADER_FIXED_BYTES + recipients * HEADER_RECIPIENT_BYTES
}

/// Checks every field of an envelope against what the protocol allows before anything parses
/// it: at most `max_recipients` wrapped keys, a header no longer than that many recipients
/// need, signature and wrapped keys as long as a permitted RSA key's output, recipient names no
/// longer than a name, and at most `max_plaintext + 16` bytes of ciphertext. The error names the
/// field, so a sender can tell what to fix.
pub fn check_field_sizes(
    envelope: &Envelope,
    max_recipients: usize,
    max_plaintext: usize,
) -> Result<(), FieldTooLarge> {
    let rsa_output = MIN_RSA_OUTPUT_BYTES..=MAX_RSA_OUTPUT_BYTES;
    let refuse = |field: &'static str, len: usize, allowed: String| {
        Err(FieldTooLarge {
            field,
            len,
            unit: "bytes",
            allowed,
        })
    };
    if envelope.wrapped_keys.len() > max_recipients {
        return Err(FieldTooLarge {
            field: "wrapped_keys",
            len: envelope.wrapped_keys.len(),
            unit: "entries",
            allowed: format!("at most {max_recipients} (one per recipient)"),
        });
    }
    let header_limit = max_header_bytes(max_recipients.min(MAX_HEADER_RECIPIENTS));
    if envelope.header.len() > header_limit {
        return refuse(
            "header",
            envelope.header.len(),
            format!("at most {header_limit} bytes"),
        );
    }
    if !rsa_output.contains(&envelope.signature.len()) {
        return refuse(
            "signature",
            envelope.signature.len(),
            format!("{MIN_RSA_OUTPUT_BYTES} to {MAX_RSA_OUTPUT_BYTES} bytes"),
        );
    }
    for key in &envelope.wrapped_keys {
        if key.recipient.len() > names::MAX_NAME_LEN {
            return refuse(
                "wrapped_keys.recipient",
                key.recipient.len(),
                format!("at most {} bytes", names::MAX_NAME_LEN),
            );
        }
        if !rsa_output.contains(&key.wrapped_key.len()) {
            return refuse(
                "wrapped_keys.wrapped_key",
                key.wrapped_key.len(),
                format!("{MIN_RSA_OUTPUT_BYTES} to {MAX_RSA_OUTPUT_BYTES} bytes"),
            );
        }
    }
    let max_ciphertext = max_plaintext.saturating_add(16);
    if envelope.ciphertext.len() > max_ciphertext {
        return refuse(
            "ciphertext",
            envelope.ciphertext.len(),
            format!("at most {max_ciphertext} bytes (a {max_plaintext}-byte message and its tag)"),
        );
    }
    Ok(())
}

/// An envelope field longer (or shorter) than the protocol allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the envelope's {field} is {len} {unit}; the protocol allows {allowed}")]
pub struct FieldTooLarge {
    /// The field, as docs/protocol.md names it.
    pub field: &'static str,
    /// Its length.
    pub len: usize,
    /// What `len` counts: "bytes", or "entries" for `wrapped_keys`.
    pub unit: &'static str,
    /// What is allowed, for people.
    pub allowed: String,
}

/// A recipient as named in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRecipient {
    /// The recipient's name as the sender spelled it.
    pub name: String,
    /// The fingerprint of the key the message is sealed for.
    pub fingerprint: Fingerprint,
}

/// The envelope header: AEAD associated data, covered by the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Random id of the message; the relay refuses a repeat.
    pub message_id: [u8; 16],
    /// The sender's name.
    pub sender: String,
    /// The fingerprint of the sender's key.
    pub sender_fingerprint: Fingerprint,
    /// Strictly increasing per sender.
    pub counter: u64,
    /// When the sender sealed it (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Everyone it is sealed for.
    pub recipients: Vec<HeaderRecipient>,
    /// The AES-GCM nonce.
    pub nonce: [u8; 12],
    /// SHA-256(COMMITMENT_CONTEXT | content key | message id).
    pub key_commitment: [u8; 32],
}

impl Header {
    /// `magic | message_id(16) | short(sender) | sender_fpr(32) | counter u64 | timestamp u64 |
    /// u16 n | n × (short(name) | fpr(32)) | nonce(12) | key_commitment(32)`.
    /// Fails on a name over 255 bytes or more than 65535 recipients, never truncating.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut w = Writer::new("envelope header");
        w.raw(HEADER_MAGIC)
            .raw(&self.message_id)
            .short(self.sender.as_bytes())
            .raw(&self.sender_fingerprint)
            .u64(self.counter)
            .u64(self.timestamp_ms)
            .count16(self.recipients.len());
        for r in &self.recipients {
            w.short(r.name.as_bytes()).raw(&r.fingerprint);
        }
        w.raw(&self.nonce).raw(&self.key_commitment).finish()
    }

    /// Parses and checks a header: names valid, recipients unique and non-empty.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let malformed = |detail: &str| Error::Malformed {
            what: "envelope header",
            detail: detail.to_string(),
        };
        let mut r = Reader::new("envelope header", bytes);
        r.expect(HEADER_MAGIC)?;
        let message_id = r.array()?;
        let sender = r.short_str()?.to_string();
        names::validate(&sender)?;
        let sender_fingerprint = r.array()?;
        let counter = r.u64()?;
        let timestamp_ms = r.u64()?;
        let count = usize::from(r.u16()?);
        if count == 0 {
            return Err(malformed("no recipients"));
        }
        if count > MAX_HEADER_RECIPIENTS {
            return Err(malformed("too many recipients"));
        }
        let mut recipients = Vec::with_capacity(count);
        let mut seen = std::collections::HashSet::with_capacity(count);
        for _ in 0..count {
            let name = r.short_str()?.to_string();
            names::validate(&name)?;
            if !seen.insert(names::canonical(&name)) {
                return Err(malformed("a recipient is named twice"));
            }
            recipients.push(HeaderRecipient {
                name,
                fingerprint: r.array()?,
            });
        }
        let header = Header {
            message_id,
            sender,
            sender_fingerprint,
            counter,
            timestamp_ms,
            recipients,
            nonce: r.array()?,
            key_commitment: r.array()?,
        };
        r.finish()?;
        Ok(header)
    }
}

/// One recipient to seal for.
#[derive(Debug)]
pub struct SealRecipient<'a> {
    /// The recipient's name.
    pub name: &'a str,
    /// The recipient's public key (its content key is wrapped for it).
    pub key: &'a PublicKey,
}

/// What the sender puts into a message besides the plaintext.
pub struct SealParams<'a> {
    /// The sender's name.
    pub sender: &'a str,
    /// The sender's private key, which signs the envelope.
    pub sender_key: &'a PrivateKey,
    /// Strictly increasing per sender (replay detection).
    pub counter: u64,
    /// When it is sealed (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Everyone to seal for.
    pub recipients: &'a [SealRecipient<'a>],
}

impl<'a> std::fmt::Debug for SealParams<'a> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealParams").finish_non_exhaustive()
    }
}

/// OAEP label: `WRAP_CONTEXT | message_id | short(sender) | short(recipient)`.
pub fn wrap_label(message_id: &[u8; 16], sender: &str, recipient: &str) -> Result<Vec<u8>, Error> {
    Writer::new("wrap label")
        .raw(WRAP_CONTEXT)
        .raw(message_id)
        .short(sender.as_bytes())
        .short(recipient.as_bytes())
        .finish()
}

/// Key commitment: `SHA-256(COMMITMENT_CONTEXT | key | message_id)`.
pub fn key_commitment(content_key: &[u8; 32], message_id: &[u8; 16]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(COMMITMENT_CONTEXT);
    h.update(content_key);
    h.update(message_id);
    h.finalize().into()
}

/// Signature input: `SIGNATURE_CONTEXT | long(header) | u16 n | n × (short(name) |
/// medium(wrapped)) | long(ciphertext)`.
pub fn signature_input(envelope: &Envelope) -> Result<Vec<u8>, Error> {
    let mut w = Writer::new("envelope");
    w.raw(SIGNATURE_CONTEXT)
        .long(&envelope.header)
        .count16(envelope.wrapped_keys.len());
    for k in &envelope.wrapped_keys {
        w.short(k.recipient.as_bytes()).medium(&k.wrapped_key);
    }
    w.long(&envelope.ciphertext).finish()
}

fn fill<R: TryCryptoRng + ?Sized, const N: usize>(rng: &mut R) -> Result<[u8; N], Error> {
    let mut buf = [0u8; N];
    rng.try_fill_bytes(&mut buf)
        .map_err(|_| Error::Crypto("the random number generator failed".into()))?;
    Ok(buf)
}

/// Seals `plaintext` for the recipients and signs the envelope.
pub fn seal<R: TryCryptoRng + ?Sized>(
    rng: &mut R,
    params: &SealParams<'_>,
    plaintext: &[u8],
) -> Result<Envelope, Error> {
    // Everything a recipient's decoder would refuse is refused here first, as an error.
    names::validate(params.sender)?;
    if params.recipients.is_empty() || params.recipients.len() > MAX_HEADER_RECIPIENTS {
        return Err(Error::Malformed {
            what: "envelope",
            detail: format!(
                "a message needs 1 to {MAX_HEADER_RECIPIENTS} recipients, not {}",
                params.recipients.len()
            ),
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(params.recipients.len());
    for r in params.recipients {
        names::validate(r.name)?;
        if !seen.insert(names::canonical(r.name)) {
            return Err(Error::Malformed {
                what: "envelope",
                detail: format!("{} is named twice among the recipients", r.name),
            });
        }
    }
    let message_id: [u8; 16] = fill(rng)?;
    let nonce: [u8; 12] = fill(rng)?;
    let content_key = Zeroizing::new(fill::<_, 32>(rng)?);
    let header = Header {
        message_id,
        sender: params.sender.to_string(),
        sender_fingerprint: identity::fingerprint(&params.sender_key.to_public_key()),
        counter: params.counter,
        timestamp_ms: params.timestamp_ms,
        recipients: params
            .recipients
            .iter()
            .map(|r| HeaderRecipient {
                name: r.name.to_string(),
                fingerprint: identity::fingerprint(r.key),
            })
            .collect(),
        nonce,
        key_commitment: key_commitment(&content_key, &message_id),
    };
    let header_bytes = header.encode()?;
    let cipher = Aes256Gcm::new_from_slice(content_key.as_slice())
        .map_err(|_| Error::Crypto("AES-GCM key setup failed".into()))?;
    let ciphertext = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad: &header_bytes,
            },
        )
        .map_err(|_| Error::Crypto("AES-GCM encryption failed".into()))?;
    let mut wrapped_keys = Vec::with_capacity(params.recipients.len());
    for r in params.recipients {
        let label = wrap_label(&message_id, params.sender, r.name)?;
        let wrapped = r
            .key
            .encrypt(
                rng,
                Oaep::<Sha256>::new_with_label(label),
                content_key.as_slice(),
            )
            .map_err(|e| Error::Crypto(format!("wrapping the key for {}: {e}", r.name)))?;
        wrapped_keys.push(WrappedKey {
            recipient: r.name.to_string(),
            wrapped_key: wrapped.into(),
        });
    }
    let mut envelope = Envelope {
        header: header_bytes.into(),
        wrapped_keys,
        ciphertext: ciphertext.into(),
        signature: Default::default(),
    };
    let signature = params
        .sender_key
        .pss_sign_with_rng::<Sha256, _>(rng, &signature_input(&envelope)?)
        .map_err(|e| Error::Crypto(e.to_string()))?;
    envelope.signature = signature.into();
    Ok(envelope)
}

/// Parses the header, checks that the wrapped keys match its recipients one for one, and verifies
/// the signature under `sender_key`. Done by the relay and by every recipient before decrypting.
pub fn verify(envelope: &Envelope, sender_key: &PublicKey) -> Result<Header, Error> {
    let header = Header::decode(&envelope.header)?;
    if header.recipients.len() != envelope.wrapped_keys.len()
        || header
            .recipients
            .iter()
            .zip(&envelope.wrapped_keys)
            .any(|(h, k)| h.name != k.recipient)
    {
        return Err(Error::Malformed {
            what: "envelope",
            detail: "wrapped keys do not match the header's recipients".into(),
        });
    }
    if header.sender_fingerprint != identity::fingerprint(sender_key) {
        return Err(Error::BadSignature);
    }
    sender_key
        .pss_verify::<Sha256>(&signature_input(envelope)?, &envelope.signature)
        .map_err(|_| Error::BadSignature)?;
    Ok(header)
}

/// Opens a verified envelope for `my_name`. Every failure after the signature check is the same
/// `Error::Undecryptable`, so nothing tells an attacker which step failed.
pub fn open<R: TryCryptoRng + ?Sized>(
    rng: &mut R,
    envelope: &Envelope,
    header: &Header,
    my_name: &str,
    my_key: &PrivateKey,
) -> Result<Vec<u8>, Error> {
    let my_canonical = names::canonical(my_name);
    let position = header
        .recipients
        .iter()
        .position(|r| names::canonical(&r.name) == my_canonical)
        .ok_or(Error::Undecryptable)?;
    let me = &header.recipients[position];
    if me.fingerprint != identity::fingerprint(&my_key.to_public_key()) {
        return Err(Error::Undecryptable);
    }
    let label = wrap_label(&header.message_id, &header.sender, &me.name)
        .map_err(|_| Error::Undecryptable)?;
    // Open also refuses an envelope that was never verified and does not match its header.
    let wrapped = envelope
        .wrapped_keys
        .get(position)
        .filter(|k| k.recipient == me.name)
        .ok_or(Error::Undecryptable)?;
    let key_bytes = Zeroizing::new(
        my_key
            .decrypt_blinded(
                rng,
                Oaep::<Sha256>::new_with_label(label),
                &wrapped.wrapped_key,
            )
            .map_err(|_| Error::Undecryptable)?,
    );
    let content_key: Zeroizing<[u8; 32]> = Zeroizing::new(
        key_bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::Undecryptable)?,
    );
    if key_commitment(&content_key, &header.message_id) != header.key_commitment {
        return Err(Error::Undecryptable);
    }
    let cipher =
        Aes256Gcm::new_from_slice(content_key.as_slice()).map_err(|_| Error::Undecryptable)?;
    cipher
        .decrypt(
            &header.nonce.into(),
            Payload {
                msg: &envelope.ciphertext,
                aad: &envelope.header,
            },
        )
        .map_err(|_| Error::Undecryptable)
}
