//! The registration statement a client signs to prove it holds the key it registers.

use crate::Error;
use crate::wire::Writer;
use rsa::sha2::Sha256;
use rsa::{PrivateKey, PublicKey};

/// Domain separator of the registration statement.
pub const REGISTRATION_CONTEXT: &[u8] = b"svs/v1/register\0";
/// Length of a registration challenge in bytes.
pub const CHALLENGE_LEN: usize = 32;

/// `context | short(service_id) | short(name) | medium(spki_der) | challenge`.
pub fn statement(
    service_id: &str,
    name: &str,
    spki_der: &[u8],
    challenge: &[u8],
) -> Result<Vec<u8>, Error> {
    Writer::new("registration statement")
        .raw(REGISTRATION_CONTEXT)
        .short(service_id.as_bytes())
        .short(name.as_bytes())
        .medium(spki_der)
        .raw(challenge)
        .finish()
}

/// Signs the statement with RSA-PSS-SHA256 (blinded).
pub fn sign(
    key: &PrivateKey,
    service_id: &str,
    name: &str,
    spki_der: &[u8],
    challenge: &[u8],
) -> Result<Vec<u8>, Error> {
    key.pss_sign_with_rng::<Sha256, _>(
        &mut crate::identity::os_rng(),
        &statement(service_id, name, spki_der, challenge)?,
    )
    .map_err(|e| Error::Crypto(e.to_string()))
}

/// Verifies a registration signature.
pub fn verify(
    key: &PublicKey,
    service_id: &str,
    name: &str,
    spki_der: &[u8],
    challenge: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    key.pss_verify::<Sha256>(
        &statement(service_id, name, spki_der, challenge)?,
        signature,
    )
    .map_err(|_| Error::BadSignature)
}
