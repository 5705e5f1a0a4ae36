//! svs-mls: svs's end-to-end encryption on Messaging Layer Security (RFC 9420, through
//! openmls). A person keeps their RSA identity key (it binds their name); each of their devices
//! has its own MLS signature key, certified by that identity (`DeviceCertificate`). A `Device`
//! is one device's MLS state — its signature key, key packages and groups — kept on disk after
//! every change, so a killed client never loses or reuses a key. `framing` reads the public
//! framing of an MLS message (group, epoch, kind), which is all the directory ever looks at.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod certificate;
mod device;
mod error;
pub mod framing;
pub mod key_package;
mod state;

pub use certificate::{
    CERTIFICATE_CONTEXT, DEVICE_ID_LEN, DeviceCertificate, DeviceId, MemberDevice, device_id_hex,
};
pub use device::{Commit, Device, Event, MAX_KEY_PACKAGES_PER_CALL, PADDING_BYTES};
pub use error::Error;

/// The one ciphersuite svs uses: X25519, AES-128-GCM, SHA-256, Ed25519 (MLS's mandatory one).
pub const CIPHERSUITE: openmls::prelude::Ciphersuite =
    openmls::prelude::Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
