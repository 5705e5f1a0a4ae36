//! Session tokens: claims signed by the directory's token key, verifiable offline by any service
//! that has the directory's public token key.

use crate::Error;
use crate::identity::{self, Fingerprint};
use crate::wire::{Reader, Writer};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::sha2::Sha256;
use rsa::{PrivateKey, PublicKey};
use std::path::Path;

/// Domain separator of token signatures.
pub const TOKEN_CONTEXT: &[u8] = b"svs/v1/token\0";
const TOKEN_PREFIX: &str = "svs1.";
const CLAIMS_VERSION: u8 = 1;
/// Longest token string accepted before any parsing.
pub const MAX_TOKEN_LEN: usize = 2048;

/// What a session token asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Random id of the session; the directory revokes a token by ending its session.
    pub session_id: [u8; 16],
    /// Registered name, as spelled at registration.
    pub name: String,
    /// Fingerprint of the registered key.
    pub fingerprint: Fingerprint,
    /// When the token was issued (ms since the Unix epoch).
    pub issued_at_ms: u64,
    /// When the token stops being accepted (ms since the Unix epoch).
    pub expires_at_ms: u64,
}

impl Claims {
    /// `version(1) | session_id(16) | issued_at u64 | expires_at u64 | fingerprint(32) | short(name)`.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        Writer::new("token claims")
            .u8(CLAIMS_VERSION)
            .raw(&self.session_id)
            .u64(self.issued_at_ms)
            .u64(self.expires_at_ms)
            .raw(&self.fingerprint)
            .short(self.name.as_bytes())
            .finish()
    }

    /// Parses claims from their canonical bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new("token claims", bytes);
        r.expect(&[CLAIMS_VERSION])?;
        let claims = Claims {
            session_id: r.array()?,
            issued_at_ms: r.u64()?,
            expires_at_ms: r.u64()?,
            fingerprint: r.array()?,
            name: r.short_str()?.to_string(),
        };
        r.finish()?;
        Ok(claims)
    }
}

fn signed_bytes(claims: &[u8]) -> Result<Vec<u8>, Error> {
    Writer::new("token").raw(TOKEN_CONTEXT).raw(claims).finish()
}

/// The encoded claims and the signature of a token string, both still unverified.
fn split(token: &str) -> Result<(Vec<u8>, Vec<u8>), Error> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Error::InvalidToken("too long"));
    }
    let body = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(Error::InvalidToken("not an svs1 token"))?;
    let (claims_b64, sig_b64) = body
        .split_once('.')
        .ok_or(Error::InvalidToken("missing signature"))?;
    let claims = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|_| Error::InvalidToken("claims are not base64url"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| Error::InvalidToken("signature is not base64url"))?;
    Ok((claims, signature))
}

/// The claims of a token WITHOUT checking its signature: only for a client deciding whether its
/// own cached token is still worth presenting. Never use this to authorise anything.
pub fn unverified_claims(token: &str) -> Result<Claims, Error> {
    let (claims, _) = split(token)?;
    Claims::decode(&claims).map_err(|_| Error::InvalidToken("malformed claims"))
}

/// Issues tokens (held by directory-service only).
pub struct TokenIssuer {
    key: PrivateKey,
    verifier: TokenVerifier,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer signing with `key`.
    pub fn new(key: PrivateKey) -> Self {
        let verifier = TokenVerifier::new(key.to_public_key());
        Self { key, verifier }
    }

    /// Loads the token key from `private_path` or creates it (3072-bit, 0600), and (re)writes the
    /// public half to `public_path` for other services.
    pub fn load_or_create(private_path: &Path, public_path: &Path) -> Result<Self, Error> {
        let (key, _) = identity::load_or_generate(private_path, identity::DEFAULT_KEY_BITS)?;
        identity::write_public_key(public_path, &key.to_public_key())?;
        Ok(Self::new(key))
    }

    /// A signed token carrying `claims`.
    pub fn issue(&self, claims: &Claims) -> Result<String, Error> {
        let encoded = claims.encode()?;
        let signature = self
            .key
            .pss_sign_with_rng::<Sha256, _>(&mut identity::os_rng(), &signed_bytes(&encoded)?)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        Ok(format!(
            "{TOKEN_PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(encoded),
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// The verifier for the tokens this issuer signs.
    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }
}

/// Verifies tokens offline.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    key: PublicKey,
    service_id: String,
}

impl TokenVerifier {
    /// A verifier for tokens signed by the private half of `key`.
    pub fn new(key: PublicKey) -> Self {
        let service_id = identity::fingerprint_hex(&identity::fingerprint(&key));
        Self { key, service_id }
    }

    /// Loads the issuer's public key (PEM) from `path`.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        Ok(Self::new(identity::read_public_key(path)?))
    }

    /// The directory's identity: hex SHA-256 of its token public key.
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// Checks format, signature and expiry.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Claims, Error> {
        let (claims, signature) = split(token)?;
        self.key
            .pss_verify::<Sha256>(&signed_bytes(&claims)?, &signature)
            .map_err(|_| Error::InvalidToken("signature does not verify"))?;
        let claims =
            Claims::decode(&claims).map_err(|_| Error::InvalidToken("malformed claims"))?;
        if now_ms >= claims.expires_at_ms {
            return Err(Error::ExpiredToken);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_and_unverified_claims_agree_and_forgery_is_caught() {
        let issuer = TokenIssuer::new(identity::generate(2048).unwrap());
        let claims = Claims {
            session_id: [3; 16],
            name: "alice".into(),
            fingerprint: [4; 32],
            issued_at_ms: 1_000,
            expires_at_ms: 2_000,
        };
        let token = issuer.issue(&claims).unwrap();
        assert_eq!(issuer.verifier().verify(&token, 1_500).unwrap(), claims);
        assert_eq!(unverified_claims(&token).unwrap(), claims);
        assert!(matches!(
            issuer.verifier().verify(&token, 2_000),
            Err(Error::ExpiredToken)
        ));
        let other = TokenIssuer::new(identity::generate(2048).unwrap());
        assert!(other.verifier().verify(&token, 1_500).is_err());
        assert!(unverified_claims("svs1.not-base64!.x").is_err());
    }
}
