//! The public framing of an MLS message: what the directory reads to order a group's log
//! without being able to read the message.

use crate::Error;
use crate::error::mls;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{ContentType, MlsMessageBodyIn, MlsMessageIn};

/// What kind of message a group message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A commit: moves the group to the next epoch.
    Commit,
    /// A standalone proposal.
    Proposal,
    /// An application message.
    Application,
}

/// The public framing of a PublicMessage or PrivateMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    /// The group's id.
    pub group_id: Vec<u8>,
    /// The epoch the message was made in.
    pub epoch: u64,
    /// Commit, proposal or application message.
    pub kind: Kind,
}

/// Reads the framing of a group message; anything else (a Welcome, a KeyPackage, bytes that
/// do not parse) is an error.
pub fn read(message: &[u8]) -> Result<Framing, Error> {
    let protocol = MlsMessageIn::tls_deserialize_exact(message)
        .map_err(mls("reading an MLS message"))?
        .try_into_protocol_message()
        .map_err(mls("reading an MLS message"))?;
    let kind = match protocol.content_type() {
        ContentType::Commit => Kind::Commit,
        ContentType::Proposal => Kind::Proposal,
        ContentType::Application => Kind::Application,
    };
    Ok(Framing {
        group_id: protocol.group_id().as_slice().to_vec(),
        epoch: protocol.epoch().as_u64(),
        kind,
    })
}

/// Whether the bytes are an MLSMessage holding a Welcome.
pub fn is_welcome(message: &[u8]) -> bool {
    MlsMessageIn::tls_deserialize_exact(message)
        .map(|m| matches!(m.extract(), MlsMessageBodyIn::Welcome(_)))
        .unwrap_or(false)
}
