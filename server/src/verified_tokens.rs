//! Tokens already verified, so a session's calls cost one RSA-PSS verification in all rather than
//! one each (at 3072 bits that check alone would cap a 2-core service near 8,000 calls/s). Only
//! tokens whose signature verified enter; each hit still checks expiry. Bounded: when full,
//! expired entries go, and if that frees nothing the cache starts over.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use svs_common::token::{Claims, TokenVerifier};

/// Verified tokens kept at most (about 150 bytes each).
pub const MAX_VERIFIED_TOKENS: usize = 65_536;

/// A token verifier with a memory of what it verified.
#[derive(Debug)]
pub struct VerifiedTokens {
    verifier: TokenVerifier,
    seen: Mutex<HashMap<[u8; 32], Claims>>,
    capacity: usize,
}

impl VerifiedTokens {
    /// Remembers up to `capacity` verified tokens.
    pub fn new(verifier: TokenVerifier, capacity: usize) -> Self {
        Self {
            verifier,
            seen: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The claims of `token` if its signature verifies and it has not expired at `now_ms`.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Claims, svs_common::Error> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        if let Some(claims) = cached {
            if claims.expires_at_ms <= now_ms {
                return Err(svs_common::Error::ExpiredToken);
            }
            return Ok(claims);
        }
        let claims = self.verifier.verify(token, now_ms)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= self.capacity {
            seen.retain(|_, c| c.expires_at_ms > now_ms);
            if seen.len() >= self.capacity {
                seen.clear();
            }
        }
        seen.insert(digest, claims.clone());
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use svs_common::token::TokenIssuer;

    #[test]
    fn a_cached_token_still_expires_and_a_forged_one_never_enters() {
        let issuer = TokenIssuer::new(svs_common::identity::generate(2048).unwrap());
        let tokens = VerifiedTokens::new(issuer.verifier().clone(), 2);
        let claims = |n: u8, expires_at_ms| Claims {
            session_id: [n; 16],
            name: format!("n{n}"),
            fingerprint: [0; 32],
            issued_at_ms: 0,
            expires_at_ms,
        };
        let token = issuer.issue(&claims(1, 1_000)).unwrap();
        assert_eq!(tokens.verify(&token, 10).unwrap().name, "n1");
        assert_eq!(tokens.verify(&token, 20).unwrap().name, "n1");
        assert!(matches!(
            tokens.verify(&token, 1_000),
            Err(svs_common::Error::ExpiredToken)
        ));
        let mut forged = token.clone().into_bytes();
        let at = forged.len() - 3;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(tokens.verify(&forged, 10).is_err());
        // Past capacity the cache starts over; verification still works.
        for n in 2..6 {
            let t = issuer.issue(&claims(n, 1_000)).unwrap();
            assert!(tokens.verify(&t, 10).is_ok());
        }
        assert!(tokens.seen.lock().unwrap().len() <= 2);
    }
}
