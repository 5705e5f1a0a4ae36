//! What happens in rooms, as a person reads it.

use svs_mls::MemberDevice;

/// Something that happened in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A line someone wrote.
    Message {
        room: String,
        from: MemberDevice,
        text: String,
    },
    /// This device was added to a room.
    Joined { room: String, by: MemberDevice },
    /// Devices were added or removed.
    Members {
        room: String,
        by: MemberDevice,
        added: Vec<MemberDevice>,
        removed: Vec<MemberDevice>,
    },
    /// A member's device asked to leave (a member's device removes it next).
    Leaving { room: String, who: MemberDevice },
    /// A room got its name.
    Named { label: String, name: String },
    /// This device was removed: it reads nothing more there.
    RemovedMe {
        room: String,
        by: Option<MemberDevice>,
    },
    /// Something a person must know (a device not certified by its person's pinned key, a
    /// message that could not be read, entries that expired unread).
    Warning { room: String, text: String },
}

impl RoomEvent {
    /// The room it happened in (its name, or `#` and the group id's start while it has none).
    pub fn room(&self) -> &str {
        match self {
            RoomEvent::Message { room, .. }
            | RoomEvent::Joined { room, .. }
            | RoomEvent::Members { room, .. }
            | RoomEvent::Leaving { room, .. }
            | RoomEvent::RemovedMe { room, .. }
            | RoomEvent::Warning { room, .. } => room,
            RoomEvent::Named { name, .. } => name,
        }
    }

    /// One line for a person.
    pub fn line(&self) -> String {
        match self {
            RoomEvent::Message { room, from, text } => {
                format!("[{room}] {}: {}", from.name, crate::text::continued(text))
            }
            RoomEvent::Joined { room, by } => format!("* [{room}] {} added you", by.name),
            RoomEvent::Members {
                room,
                by,
                added,
                removed,
            } => {
                let mut parts = Vec::new();
                if !added.is_empty() {
                    parts.push(format!("added {}", device_list(added)));
                }
                if !removed.is_empty() {
                    parts.push(format!("removed {}", device_list(removed)));
                }
                if parts.is_empty() {
                    parts.push("updated their keys".into());
                }
                format!("* [{room}] {} {}", by, parts.join(" and "))
            }
            RoomEvent::Named { label, name } => format!("* [{label}] is called {name}"),
            RoomEvent::Leaving { room, who } => format!("* [{room}] {who} left"),
            RoomEvent::RemovedMe { room, by } => match by {
                Some(by) => format!("* [{room}] {} removed this device", by.name),
                None => format!("* [{room}] this device is no longer a member"),
            },
            RoomEvent::Warning { room, text } => {
                format!("! [{room}] {}", crate::text::printable(text))
            }
        }
    }
}

/// Devices as `name/1a2b3c4d, …`.
pub fn device_list(devices: &[MemberDevice]) -> String {
    devices
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A room's members for `svs room list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    pub label: String,
    pub members: Vec<MemberDevice>,
    pub epoch: u64,
    /// Ten digits members compare (`svs_common::safety::room_code`): equal for everyone in the
    /// same epoch with the same group state.
    pub code: String,
}

impl RoomInfo {
    /// Each person in the room, by canonical name, with how many of their devices are members.
    pub fn people(&self) -> Vec<(String, usize)> {
        let mut people: std::collections::BTreeMap<String, (String, usize)> =
            std::collections::BTreeMap::new();
        for member in &self.members {
            people
                .entry(svs_common::names::canonical(&member.name))
                .or_insert_with(|| (member.name.clone(), 0))
                .1 += 1;
        }
        people.into_values().collect()
    }
}
