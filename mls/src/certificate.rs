//! Device certificates: a person's RSA identity key vouching for one device's MLS signature key.

use crate::Error;
use rsa::sha2::Sha256;
use rsa::{PrivateKey, PublicKey};
use svs_common::wire::{Reader, Writer};

/// Domain separator of the certificate statement.
pub const CERTIFICATE_CONTEXT: &[u8] = b"svs/v1/device-certificate\0";
/// Bytes in a device id.
pub const DEVICE_ID_LEN: usize = 16;
/// A device's id: 16 random bytes chosen when the device is created.
pub type DeviceId = [u8; DEVICE_ID_LEN];
/// Magic at the start of an MLS credential's identity.
const CREDENTIAL_MAGIC: &[u8] = b"svs1";
/// Bytes in an Ed25519 public key.
const SIGNATURE_KEY_LEN: usize = 32;

/// A device id as 32 lowercase hex digits.
pub fn device_id_hex(id: &DeviceId) -> String {
    hex::encode(id)
}

/// `name`'s identity key certifies that `signature_key` (Ed25519) is the MLS signature key of
/// its device `device_id`, created at `created_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCertificate {
    /// The person's name (canonical form).
    pub name: String,
    /// The device.
    pub device_id: DeviceId,
    /// The device's MLS signature public key (32 bytes, Ed25519).
    pub signature_key: Vec<u8>,
    /// When the device was created (Unix milliseconds).
    pub created_ms: u64,
    /// RSA-PSS-SHA256 by the person's identity key over `statement`.
    pub identity_signature: Vec<u8>,
}

/// A member of a group as its MLS credential names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberDevice {
    /// The person's name.
    pub name: String,
    /// Their device.
    pub device_id: DeviceId,
}

impl std::fmt::Display for MemberDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.name, &device_id_hex(&self.device_id)[..8])
    }
}

impl MemberDevice {
    /// The identity bytes of this device's MLS basic credential:
    /// `"svs1" | short(name) | device_id`.
    pub fn credential_identity(&self) -> Result<Vec<u8>, Error> {
        Ok(Writer::new("credential identity")
            .raw(CREDENTIAL_MAGIC)
            .short(self.name.as_bytes())
            .raw(&self.device_id)
            .finish()?)
    }

    /// Reads the identity bytes of a basic credential.
    pub fn from_credential_identity(bytes: &[u8]) -> Result<Self, Error> {
        let mut reader = Reader::new("credential identity", bytes);
        reader.expect(CREDENTIAL_MAGIC)?;
        let name = reader.short_str()?.to_string();
        let device_id = reader.array::<DEVICE_ID_LEN>()?;
        reader.finish()?;
        // Names reach people's screens: only what the directory would register.
        svs_common::names::validate(&name)?;
        if svs_common::names::canonical(&name) != name {
            return Err(svs_common::Error::Malformed {
                what: "credential identity",
                detail: "the name is not in canonical (lower-case) form".into(),
            }
            .into());
        }
        Ok(Self { name, device_id })
    }
}

impl DeviceCertificate {
    /// `context | short(name) | device_id | short(signature_key) | u64 created_ms`.
    pub fn statement(
        name: &str,
        device_id: &DeviceId,
        signature_key: &[u8],
        created_ms: u64,
    ) -> Result<Vec<u8>, Error> {
        Ok(Writer::new("device certificate")
            .raw(CERTIFICATE_CONTEXT)
            .short(name.as_bytes())
            .raw(device_id)
            .short(signature_key)
            .u64(created_ms)
            .finish()?)
    }

    /// Certifies `signature_key` as `name`'s device `device_id` (blinded RSA-PSS: call it off
    /// the async threads).
    pub fn sign(
        identity: &PrivateKey,
        name: &str,
        device_id: DeviceId,
        signature_key: Vec<u8>,
        created_ms: u64,
    ) -> Result<Self, Error> {
        let statement = Self::statement(name, &device_id, &signature_key, created_ms)?;
        let identity_signature = identity
            .pss_sign_with_rng::<Sha256, _>(&mut svs_common::identity::os_rng(), &statement)
            .map_err(|e| svs_common::Error::Crypto(e.to_string()))?;
        Ok(Self {
            name: name.to_string(),
            device_id,
            signature_key,
            created_ms,
            identity_signature,
        })
    }

    /// Checks the certificate against the person's identity key (the key the caller trusts for
    /// `self.name`) and the shape of its fields.
    pub fn verify(&self, identity: &PublicKey) -> Result<(), Error> {
        if self.signature_key.len() != SIGNATURE_KEY_LEN {
            return Err(self.untrusted("the signature key is not a 32-byte Ed25519 key"));
        }
        let statement = Self::statement(
            &self.name,
            &self.device_id,
            &self.signature_key,
            self.created_ms,
        )?;
        identity
            .pss_verify::<Sha256>(&statement, &self.identity_signature)
            .map_err(|_| self.untrusted("the identity key did not sign this device"))
    }

    /// The device this certificate is for.
    pub fn device(&self) -> MemberDevice {
        MemberDevice {
            name: self.name.clone(),
            device_id: self.device_id,
        }
    }

    fn untrusted(&self, why: &str) -> Error {
        Error::Untrusted {
            who: format!("device {} of {}", device_id_hex(&self.device_id), self.name),
            why: why.to_string(),
        }
    }

    /// The certificate as the protocol carries it.
    pub fn to_proto(&self) -> svs_common::proto::directory::DeviceCertificate {
        svs_common::proto::directory::DeviceCertificate {
            name: self.name.clone(),
            device_id: self.device_id.to_vec().into(),
            signature_key: self.signature_key.clone().into(),
            created_ms: self.created_ms,
            identity_signature: self.identity_signature.clone().into(),
        }
    }

    /// Reads a certificate from the protocol (fields checked for shape, not yet verified).
    pub fn from_proto(
        proto: &svs_common::proto::directory::DeviceCertificate,
    ) -> Result<Self, Error> {
        let device_id: DeviceId =
            proto
                .device_id
                .as_ref()
                .try_into()
                .map_err(|_| svs_common::Error::Malformed {
                    what: "device certificate",
                    detail: format!("device_id must be {DEVICE_ID_LEN} bytes"),
                })?;
        if proto.signature_key.len() != SIGNATURE_KEY_LEN
            || proto.identity_signature.len() > svs_common::sealed::MAX_RSA_OUTPUT_BYTES
        {
            return Err(svs_common::Error::Malformed {
                what: "device certificate",
                detail: format!(
                    "signature_key must be {SIGNATURE_KEY_LEN} bytes and identity_signature at most {} bytes",
                    svs_common::sealed::MAX_RSA_OUTPUT_BYTES
                ),
            }
            .into());
        }
        Ok(Self {
            name: proto.name.clone(),
            device_id,
            signature_key: proto.signature_key.to_vec(),
            created_ms: proto.created_ms,
            identity_signature: proto.identity_signature.to_vec(),
        })
    }
}
