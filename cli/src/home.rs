//! The client's home directory ($SVS_HOME, default ~/.config/svs): identity keys and pinned peers.

use std::path::{Path, PathBuf};

/// Paths under the client's home.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// `$SVS_HOME`, else `~/.config/svs`.
    pub fn default_root() -> PathBuf {
        if let Some(home) = std::env::var_os("HOME") {
            PathBuf::from(home).join(".config/svs")
        } else {
            PathBuf::from(".svs")
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The identity key of `name` (one per name, PKCS#8 PEM, 0600).
    pub fn key_path(&self, name: &str) -> PathBuf {
        self.root
            .join("keys")
            .join(format!("{}.pem", svs_common::names::canonical(name)))
    }

    /// The cached stream token of `name` (0600).
    pub fn token_path(&self, name: &str) -> PathBuf {
        self.root
            .join("tokens")
            .join(format!("{}.token", svs_common::names::canonical(name)))
    }

    /// The last message counter `name` used (text, 0600): counters stay increasing across runs
    /// even when the wall clock steps back.
    pub fn counter_path(&self, name: &str) -> PathBuf {
        self.root
            .join("counters")
            .join(svs_common::names::canonical(name))
    }

    /// The highest message counter accepted from each sender by `name` (text, 0600), so a
    /// restarted client still refuses envelopes it accepted before.
    pub fn replay_path(&self, name: &str) -> PathBuf {
        self.root
            .join("replay")
            .join(svs_common::names::canonical(name))
    }

    /// Pinned peer keys.
    /// Where the full-screen chat sends what libraries write to stderr (Qt, OpenCV) while it
    /// owns the terminal.
    pub fn chat_log_path(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("chat-{name}.log"))
    }

    /// This device's MLS state for `name` (svs-mls's state file, 0600).
    pub fn device_path(&self, name: &str) -> PathBuf {
        self.root
            .join("mls")
            .join(format!("{}.device", svs_common::names::canonical(name)))
    }

    /// The rooms this device of `name` is in, and how far it read each (JSON, 0600).
    pub fn rooms_path(&self, name: &str) -> PathBuf {
        self.root
            .join("mls")
            .join(format!("{}.rooms.json", svs_common::names::canonical(name)))
    }

    /// Held while a process uses `name`'s MLS state, so two never change it at once.
    pub fn device_lock_path(&self, name: &str) -> PathBuf {
        self.root
            .join("mls")
            .join(format!("{}.lock", svs_common::names::canonical(name)))
    }

    pub fn known_peers_path(&self) -> PathBuf {
        self.root.join("known_peers")
    }
}
