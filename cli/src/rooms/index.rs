//! The rooms this device is in: each room's name, its MLS group and how far the device read
//! its log. A JSON file (0600) rewritten whole after every change.

use crate::error::CliError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Longest room name, in bytes.
pub const MAX_ROOM_NAME_BYTES: usize = 64;

/// One room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// What people call it ("" until its name arrives).
    pub name: String,
    /// The MLS group id, hex.
    pub group: String,
    /// The sequence number of the last log entry handled (where the next fetch starts).
    pub cursor: u64,
    /// Its index (indexes have no gaps, so a jump shows entries that expired unread).
    #[serde(default)]
    pub last_index: u64,
    /// When this device last gave itself fresh keys in the room (Unix ms).
    #[serde(default)]
    pub updated_ms: u64,
    /// Messages this device sent there since.
    #[serde(default)]
    pub sent_since_update: u64,
}

impl Room {
    /// The name, or `#` and the group id's first 8 hex digits while it has none.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("#{}", &self.group[..8.min(self.group.len())])
        } else {
            self.name.clone()
        }
    }

    /// The group id's bytes.
    pub fn group_id(&self) -> Vec<u8> {
        hex::decode(&self.group).unwrap_or_default()
    }
}

/// The file of rooms.
#[derive(Debug, Default)]
pub struct RoomIndex {
    path: PathBuf,
    rooms: Vec<Room>,
}

#[derive(Serialize, Deserialize)]
struct File {
    rooms: Vec<Room>,
}

/// Refuses names people could not type or tell apart.
pub fn check_room_name(name: &str) -> Result<(), CliError> {
    if name.is_empty()
        || name.len() > MAX_ROOM_NAME_BYTES
        || name.starts_with('#')
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(CliError::Usage(format!(
            "a room name is 1 to {MAX_ROOM_NAME_BYTES} bytes without spaces or control characters, not starting with #"
        )));
    }
    Ok(())
}

impl RoomIndex {
    /// Reads the file (none yet: no rooms).
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let rooms = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice::<File>(&bytes)
                    .map_err(|e| {
                        CliError::Usage(format!(
                            "{} is damaged ({e}); move it away to start the room list afresh",
                            path.display()
                        ))
                    })?
                    .rooms
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            path: path.to_path_buf(),
            rooms,
        })
    }

    /// Writes the file (0600, through a temporary file and a rename).
    pub fn save(&self) -> Result<(), CliError> {
        let bytes = serde_json::to_vec_pretty(&File {
            rooms: self.rooms.clone(),
        })
        .map_err(|e| CliError::Internal(e.to_string()))?;
        svs_common::identity::write_secret_file(&self.path, &bytes)?;
        Ok(())
    }

    pub fn rooms(&self) -> &[Room] {
        &self.rooms
    }

    /// The room called `name`, or whose label (`#1a2b3c4d`) it is.
    pub fn find(&self, name: &str) -> Option<&Room> {
        self.rooms
            .iter()
            .find(|r| r.name == name)
            .or_else(|| self.rooms.iter().find(|r| r.label() == name))
    }

    pub fn by_group_mut(&mut self, group: &str) -> Option<&mut Room> {
        self.rooms.iter_mut().find(|r| r.group == group)
    }

    /// Adds a room; a name already taken here gets the group's label appended.
    pub fn insert(&mut self, mut room: Room) {
        if !room.name.is_empty() && self.find(&room.name).is_some() {
            room.name = format!("{}{}", room.name, room.label().trim_start_matches('#'));
        }
        self.rooms.retain(|r| r.group != room.group);
        self.rooms.push(room);
    }

    /// Names a room that had no name yet (or keeps the one it has).
    pub fn name_room(&mut self, group: &str, name: &str) -> Option<String> {
        let taken = self
            .rooms
            .iter()
            .any(|r| r.name == name && r.group != group);
        let room = self.by_group_mut(group)?;
        if room.name.is_empty() && check_room_name(name).is_ok() {
            room.name = if taken {
                format!("{name}{}", &group[..8.min(group.len())])
            } else {
                name.to_string()
            };
            return Some(room.name.clone());
        }
        None
    }

    pub fn remove(&mut self, group: &str) {
        self.rooms.retain(|r| r.group != group);
    }
}
