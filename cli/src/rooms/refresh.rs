//! When a device gives itself fresh keys in its rooms.

use std::time::Duration;

/// When this device gives itself fresh keys in a room (a commit updating its leaf): so a copy
/// of its state taken now stops reading that room after the next update (forward secrecy and
/// healing after a compromise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRefresh {
    /// At least this often.
    pub every: Duration,
    /// And after this many messages sent.
    pub after_messages: u64,
}

impl Default for KeyRefresh {
    fn default() -> Self {
        Self {
            every: DEFAULT_UPDATE_EVERY,
            after_messages: DEFAULT_UPDATE_AFTER_MESSAGES,
        }
    }
}

/// `KeyRefresh::every` unless told otherwise: a day.
pub const DEFAULT_UPDATE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// `KeyRefresh::after_messages` unless told otherwise.
pub const DEFAULT_UPDATE_AFTER_MESSAGES: u64 = 100;
