//! Checking a key package against the device certificate it is handed out under.

use crate::certificate::{DeviceCertificate, MemberDevice};
use crate::{CIPHERSUITE, Error};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{KeyPackage, KeyPackageIn, ProtocolVersion};
use openmls_rust_crypto::RustCrypto;

/// Longest key package svs accepts, in bytes (one is about 300).
pub const MAX_KEY_PACKAGE_BYTES: usize = 4096;

/// Verifies that `bytes` is a valid MLS key package of svs's ciphersuite, signed by its own
/// leaf, whose credential names the certified device and whose signature key is the certified
/// one. Returns whether it is a last-resort package.
pub fn check(certificate: &DeviceCertificate, bytes: &[u8]) -> Result<bool, Error> {
    Ok(validated(certificate, bytes, &RustCrypto::default())?.last_resort())
}

pub(crate) fn validated(
    certificate: &DeviceCertificate,
    bytes: &[u8],
    crypto: &RustCrypto,
) -> Result<KeyPackage, Error> {
    let untrusted = |why: &str| Error::Untrusted {
        who: format!("key package of {}", certificate.device()),
        why: why.to_string(),
    };
    if bytes.len() > MAX_KEY_PACKAGE_BYTES {
        return Err(untrusted("it is longer than 4096 bytes"));
    }
    let key_package = KeyPackageIn::tls_deserialize_exact(bytes)
        .map_err(|_| untrusted("it does not parse"))?
        .validate(crypto, ProtocolVersion::Mls10)
        .map_err(|_| untrusted("its signature or contents do not verify"))?;
    if key_package.ciphersuite() != CIPHERSUITE {
        return Err(untrusted("it is for another ciphersuite"));
    }
    let leaf = key_package.leaf_node();
    let named = MemberDevice::from_credential_identity(leaf.credential().serialized_content());
    if named.ok().as_ref() != Some(&certificate.device()) {
        return Err(untrusted("its credential names another device"));
    }
    if leaf.signature_key().as_slice() != certificate.signature_key.as_slice() {
        return Err(untrusted("its signature key is not the certified one"));
    }
    Ok(key_package)
}
