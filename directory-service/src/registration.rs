//! Registration: stateless challenges, the signed statement that proves the key, the name claim,
//! the session token, and the new session in the registry.

use crate::Error;
use crate::bindings::{Claim, NameStore};
use crate::challenges::Challenges;
use crate::error::Refusal;
use crate::registry::{Registry, peer_record};
use std::sync::Arc;
use svs_common::identity;
use svs_common::names;
use svs_common::registration::{self, CHALLENGE_LEN};
use svs_common::time::now_ms;
use svs_common::token::{Claims, TokenIssuer};

/// A fresh challenge for the client to sign.
#[derive(Debug)]
pub(crate) struct IssuedChallenge {
    pub challenge: [u8; CHALLENGE_LEN],
    pub service_id: String,
    pub expires_at_ms: u64,
}

/// A registration whose statement verified: the caller holds the key it offers for the name.
/// Not yet a session: the name is claimed next, then the session opened.
#[derive(Debug)]
pub(crate) struct Proven {
    name: String,
    canonical: String,
    key_der: Vec<u8>,
    fingerprint: identity::Fingerprint,
}

/// A session created by registration.
pub(crate) struct Registered {
    pub token: String,
    pub expires_at_ms: u64,
    pub fingerprint: String,
}

/// Holds a secret: shown without its fields.
impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered").finish_non_exhaustive()
    }
}

/// Issues challenges and turns proven keys into sessions.
#[derive(Debug)]
pub(crate) struct Registrar {
    challenges: Challenges,
    names: Arc<NameStore>,
    tokens: TokenIssuer,
    registry: Arc<Registry>,
    token_ms: u64,
}

impl Registrar {
    pub(crate) fn new(
        challenges: Challenges,
        names: Arc<NameStore>,
        tokens: TokenIssuer,
        registry: Arc<Registry>,
        token_ms: u64,
    ) -> Self {
        Self {
            challenges,
            names,
            tokens,
            registry,
            token_ms,
        }
    }

    /// The directory's identity bound into registration statements.
    pub(crate) fn service_id(&self) -> &str {
        self.tokens.verifier().service_id()
    }

    /// Forgets expired used challenges.
    pub(crate) fn sweep(&self) {
        self.challenges.sweep(now_ms());
    }

    /// Step 1 of registration. Keeps no state: the challenge authenticates itself.
    pub(crate) fn challenge(&self, name: &str, key_der: &[u8]) -> Result<IssuedChallenge, Error> {
        names::validate(name)?;
        identity::parse_public_key(key_der)?;
        let (challenge, expires_at_ms) =
            self.challenges
                .issue(&names::canonical(name), key_der, now_ms())?;
        Ok(IssuedChallenge {
            challenge,
            service_id: self.service_id().to_string(),
            expires_at_ms,
        })
    }

    /// Whether `name` is bound to a key already (a returning name, not a new one).
    pub(crate) async fn is_bound(&self, name: &str) -> Result<bool, Error> {
        names::validate(name)?;
        Ok(self.names.binding(&names::canonical(name)).await?.is_some())
    }

    /// Step 2 of registration, first part: checks the challenge and the signed statement, and
    /// that the key may join the name's sessions. RSA work: call it on a blocking thread.
    pub(crate) fn prove(
        &self,
        name: &str,
        key_der: &[u8],
        challenge: &[u8],
        signature: &[u8],
    ) -> Result<Proven, Error> {
        names::validate(name)?;
        let canonical = names::canonical(name);
        let challenge: [u8; CHALLENGE_LEN] = challenge.try_into().map_err(|_| {
            Refusal::InvalidArgument(format!("the challenge must be {CHALLENGE_LEN} bytes"))
        })?;
        self.challenges
            .check(&challenge, &canonical, key_der, now_ms())?;
        let key = identity::parse_public_key(key_der)?;
        registration::verify(
            &key,
            self.service_id(),
            name,
            key_der,
            &challenge,
            signature,
        )
        .map_err(|_| {
            Refusal::PermissionDenied(
                "the registration signature does not verify under the offered key".into(),
            )
        })?;
        // Single use, remembered only now that the client has proved its key.
        self.challenges.consume(&challenge, now_ms())?;
        let fingerprint = identity::fingerprint_der(key_der);
        self.registry.check_key(&canonical, name, &fingerprint)?;
        Ok(Proven {
            name: name.to_string(),
            canonical,
            key_der: key_der.to_vec(),
            fingerprint,
        })
    }

    /// Step 2, second part: binds the name to the proven key unless another key owns it.
    pub(crate) async fn claim(&self, proven: &Proven) -> Result<(), Error> {
        if self.names.claim(&proven.canonical, &proven.key_der).await? == Claim::OtherKey {
            let name = &proven.name;
            return Err(Refusal::PermissionDenied(format!(
                "the name {name} belongs to another key; its owner must use it, or an operator can free it with `directory-service release {name}`"
            )).into());
        }
        Ok(())
    }

    /// Step 2, last part: signs the session token and starts the session beside any the name
    /// already has. RSA work: call it on a blocking thread, after `claim`.
    pub(crate) fn open_session(&self, proven: Proven) -> Result<Registered, Error> {
        let Proven {
            name,
            key_der,
            fingerprint,
            ..
        } = proven;
        let name = name.as_str();
        let key_der = key_der.as_slice();
        let session_id = identity::random::<16>()?;
        let now = now_ms();
        let expires_at_ms = now + self.token_ms;
        let token = self.tokens.issue(&Claims {
            session_id,
            name: name.to_string(),
            fingerprint,
            issued_at_ms: now,
            expires_at_ms,
        })?;
        self.registry.add_session(
            peer_record(name, key_der, &fingerprint),
            fingerprint,
            session_id,
            expires_at_ms,
        )?;
        tracing::info!(%name, fingerprint = %identity::fingerprint_hex(&fingerprint), "registered");
        Ok(Registered {
            token,
            expires_at_ms,
            fingerprint: identity::fingerprint_hex(&fingerprint),
        })
    }
}
