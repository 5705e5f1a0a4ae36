//! Trust on first use: the key each peer name was first seen with, in `$SVS_HOME/known_peers`
//! (one line per peer: `name fingerprint-hex spki-base64`). A different key later is a warning
//! and blocks sending until `svs trust NAME`.

use crate::error::CliError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::collections::BTreeMap;
use std::path::PathBuf;
use svs_common::identity;
use svs_common::names;

/// What the pin says about a key seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinCheck {
    /// First sight: now pinned.
    NewlyPinned,
    /// Same key as pinned.
    Matches,
    /// Another key than pinned.
    Changed { pinned: String },
}

#[derive(Debug, Clone)]
struct Pin {
    name: String,
    fingerprint: String,
    spki: Vec<u8>,
}

/// The pinned keys, saved on every change.
pub struct KnownPeers {
    path: PathBuf,
    pins: BTreeMap<String, Pin>,
}

impl KnownPeers {
    pub fn load(path: PathBuf) -> Result<Self, CliError> {
        let mut pins = BTreeMap::new();
        if path.exists() {
            for line in std::fs::read_to_string(&path)?.lines() {
                let mut parts = line.split_whitespace();
                if let (Some(name), Some(fingerprint), Some(spki)) =
                    (parts.next(), parts.next(), parts.next())
                    && let Ok(spki) = STANDARD.decode(spki)
                {
                    pins.insert(
                        names::canonical(name),
                        Pin {
                            name: name.to_string(),
                            fingerprint: fingerprint.to_string(),
                            spki,
                        },
                    );
                }
            }
        }
        Ok(Self { path, pins })
    }

    fn save(&self) -> Result<(), CliError> {
        let mut text = String::new();
        for pin in self.pins.values() {
            text.push_str(&format!(
                "{} {} {}\n",
                pin.name,
                pin.fingerprint,
                STANDARD.encode(&pin.spki)
            ));
        }
        identity::write_secret_file(&self.path, text.as_bytes())?;
        Ok(())
    }

    /// Checks `spki` against the pin for `name`, pinning it on first sight.
    pub fn check(&mut self, name: &str, spki: &[u8]) -> Result<PinCheck, CliError> {
        let fingerprint = identity::fingerprint_hex(&identity::fingerprint_der(spki));
        match self.pins.get(&names::canonical(name)) {
            Some(pin) if pin.fingerprint == fingerprint => Ok(PinCheck::Matches),
            Some(pin) => Ok(PinCheck::Changed {
                pinned: pin.fingerprint.clone(),
            }),
            None => {
                self.pin(name, spki)?;
                Ok(PinCheck::NewlyPinned)
            }
        }
    }

    /// Pins `spki` for `name`, replacing any earlier pin (what `svs trust` does).
    pub fn pin(&mut self, name: &str, spki: &[u8]) -> Result<(), CliError> {
        let fingerprint = identity::fingerprint_hex(&identity::fingerprint_der(spki));
        self.pins.insert(
            names::canonical(name),
            Pin {
                name: name.to_string(),
                fingerprint,
                spki: spki.to_vec(),
            },
        );
        self.save()
    }

    /// The pinned fingerprint of `name`.
    pub fn fingerprint(&self, name: &str) -> Option<&str> {
        self.pins
            .get(&names::canonical(name))
            .map(|p| p.fingerprint.as_str())
    }

    /// The pinned key of `name`, DER SPKI.
    pub fn key(&self, name: &str) -> Option<&[u8]> {
        self.pins
            .get(&names::canonical(name))
            .map(|p| p.spki.as_slice())
    }
}
