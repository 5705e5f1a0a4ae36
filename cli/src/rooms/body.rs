//! What an MLS application message in a room carries: JSON, `{"kind":"text","text":…}` or
//! `{"kind":"room_name","name":…}` (docs/protocol.md, Room messages).

use serde::{Deserialize, Serialize};

/// One application message's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// A chat line.
    Text { text: String },
    /// The room's name, sent by whoever adds devices, right after the commit.
    RoomName { name: String },
}

impl Body {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `None` for bytes that are not a body this client knows.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}
