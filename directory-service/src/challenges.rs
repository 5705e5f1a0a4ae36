//! Registration challenges that cost the directory no memory until they are used: each one
//! carries its expiry and a MAC by a key only this process knows, binding it to the name and key
//! it was issued for. Only a challenge whose registration signature verified is remembered (to
//! refuse its reuse), and only until it expires.
//!
//! `challenge = u64 expires_at_ms || nonce (8) || HMAC-SHA256(k, "svs/v1/challenge\0" ||
//! u64 expires_at_ms || nonce || short(canonical name) || fingerprint(SPKI))[..16]`

use crate::Error;
use crate::error::Refusal;
use hmac::{KeyInit, Mac};
use std::collections::HashMap;
use std::sync::Mutex;
use svs_common::identity;
use svs_common::registration::CHALLENGE_LEN;
use zeroize::Zeroizing;

type HmacSha256 = hmac::Hmac<svs_common::rsa::sha2::Sha256>;

const CONTEXT: &[u8] = b"svs/v1/challenge\0";
const TAG_LEN: usize = 16;

/// Issues and checks challenges.
pub(crate) struct Challenges {
    key: Zeroizing<[u8; 32]>,
    lifetime_ms: u64,
    max_used: usize,
    /// Used challenge → its expiry (ms since the epoch).
    used: Mutex<HashMap<[u8; CHALLENGE_LEN], u64>>,
}

/// Holds a secret: shown without its fields.
impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges").finish_non_exhaustive()
    }
}

impl Challenges {
    /// `lifetime_ms`: how long a challenge is valid; `max_used`: used challenges remembered at
    /// once (each is a successful registration within the lifetime).
    pub(crate) fn new(lifetime_ms: u64, max_used: usize) -> Result<Self, Error> {
        Ok(Self {
            key: Zeroizing::new(identity::random()?),
            lifetime_ms,
            max_used,
            used: Mutex::default(),
        })
    }

    fn tag(&self, expires_ms: u64, nonce: &[u8], canonical: &str, key_der: &[u8]) -> [u8; 32] {
        // A 32-byte key always suits HMAC; a name is at most 32 bytes (validated before).
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(self.key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(CONTEXT);
        mac.update(&expires_ms.to_be_bytes());
        mac.update(nonce);
        mac.update(&[canonical.len().min(255) as u8]);
        mac.update(canonical.as_bytes());
        mac.update(&identity::fingerprint_der(key_der));
        mac.finalize().into_bytes().into()
    }

    /// A fresh challenge for `canonical` and `key_der`, and when it expires.
    pub(crate) fn issue(
        &self,
        canonical: &str,
        key_der: &[u8],
        now_ms: u64,
    ) -> Result<([u8; CHALLENGE_LEN], u64), Error> {
        let expires_ms = now_ms + self.lifetime_ms;
        let nonce: [u8; 8] = identity::random()?;
        let tag = self.tag(expires_ms, &nonce, canonical, key_der);
        let mut challenge = [0u8; CHALLENGE_LEN];
        challenge[..8].copy_from_slice(&expires_ms.to_be_bytes());
        challenge[8..16].copy_from_slice(&nonce);
        challenge[16..].copy_from_slice(&tag[..TAG_LEN]);
        Ok((challenge, expires_ms))
    }

    /// Checks that this service issued `challenge` for this name and key and that it has not
    /// expired. Keeps no state.
    pub(crate) fn check(
        &self,
        challenge: &[u8; CHALLENGE_LEN],
        canonical: &str,
        key_der: &[u8],
        now_ms: u64,
    ) -> Result<(), Error> {
        let mut expires = [0u8; 8];
        expires.copy_from_slice(&challenge[..8]);
        let expires_ms = u64::from_be_bytes(expires);
        let tag = self.tag(expires_ms, &challenge[8..16], canonical, key_der);
        let genuine: bool = subtle_eq(&tag[..TAG_LEN], &challenge[16..]);
        if !genuine {
            return Err(Refusal::PermissionDenied(
                "this challenge was not issued by this directory for this name and key; ask for a new one".into(),
            ).into());
        }
        if now_ms >= expires_ms {
            return Err(Refusal::PermissionDenied(
                "the challenge expired; ask for a new one".into(),
            )
            .into());
        }
        Ok(())
    }

    /// Marks a checked challenge used after its signature verified; refuses a second use.
    pub(crate) fn consume(
        &self,
        challenge: &[u8; CHALLENGE_LEN],
        now_ms: u64,
    ) -> Result<(), Error> {
        let mut expires = [0u8; 8];
        expires.copy_from_slice(&challenge[..8]);
        let expires_ms = u64::from_be_bytes(expires);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.contains_key(challenge) {
            return Err(Refusal::PermissionDenied(
                "this challenge was already used; ask for a new one".into(),
            )
            .into());
        }
        if used.len() >= self.max_used {
            used.retain(|_, &mut e| e > now_ms);
            if used.len() >= self.max_used {
                return Err(Refusal::RetryLater {
                    message:
                        "too many registrations in the last moments; try again in a few seconds"
                            .into(),
                    after: std::time::Duration::from_secs(5),
                }
                .into());
            }
        }
        used.insert(*challenge, expires_ms);
        Ok(())
    }

    /// Forgets used challenges that have expired (they are refused by `check` anyway).
    pub(crate) fn sweep(&self, now_ms: u64) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, &mut e| e > now_ms);
    }

    #[cfg(test)]
    /// Used challenges remembered now.
    pub(crate) fn remembered(&self) -> usize {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Constant-time comparison of two byte strings of equal length.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_to_name_key_and_time_and_single_use() {
        let challenges = Challenges::new(30_000, 10).unwrap();
        let (c, expires) = challenges.issue("alice", b"key-a", 1_000).unwrap();
        assert_eq!(expires, 31_000);
        assert!(challenges.check(&c, "alice", b"key-a", 2_000).is_ok());
        assert!(challenges.check(&c, "bob", b"key-a", 2_000).is_err());
        assert!(challenges.check(&c, "alice", b"key-b", 2_000).is_err());
        assert!(challenges.check(&c, "alice", b"key-a", 31_000).is_err());
        let mut forged = c;
        forged[0] ^= 1; // a later expiry
        assert!(challenges.check(&forged, "alice", b"key-a", 2_000).is_err());
        assert_eq!(challenges.remembered(), 0, "checking keeps nothing");
        challenges.consume(&c, 2_000).unwrap();
        assert!(challenges.consume(&c, 2_000).is_err(), "second use refused");
        challenges.sweep(31_000);
        assert_eq!(challenges.remembered(), 0);
        let other = Challenges::new(30_000, 10).unwrap();
        assert!(
            other.check(&c, "alice", b"key-a", 2_000).is_err(),
            "another process's key does not verify"
        );
    }
}
