//! Trust on first use: the key each peer name was first seen with, in `$SVS_HOME/known_peers`
//! (one line per peer: `name fingerprint-hex spki-base64`). A different key later is a warning
//! and blocks sending until `svs trust NAME`. A damaged line never resets trust: the name it
//! belongs to counts as changed until trusted again, and a line that names no peer stops the
//! client. Writers take a lock file, so two `svs` processes never lose each other's pins. A
//! first-sight pin is one appended line (no rewrite: a client meeting many new peers stays
//! cheap); `svs trust`, which replaces a pin, rewrites the file. The first line for a name wins.
//!
//! A pin set by `trust` (the user compared fingerprints with the peer) is also written to
//! `verified_peers` beside it (`name fingerprint-hex`): a name is verified while that fingerprint
//! is still its pin. The pin file keeps its format, so older clients read it unchanged.

use crate::error::CliError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use svs_common::identity;
use svs_common::names;

/// What the pin says about a key seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinCheck {
    /// First sight: now pinned.
    NewlyPinned,
    /// Same key as pinned.
    Matches,
    /// Another key than pinned (or the pin is unreadable).
    Changed { pinned: String },
}

#[derive(Debug, Clone)]
enum Pin {
    Key {
        name: String,
        fingerprint: String,
        spki: Vec<u8>,
    },
    /// A line for this name that does not parse; kept as it was until `svs trust`.
    Damaged { line: String },
}

/// The pinned keys, saved on every change.
#[derive(Debug)]
pub struct KnownPeers {
    path: PathBuf,
    pins: BTreeMap<String, Pin>,
    /// Canonical name → fingerprint the user verified (by `trust`).
    verified: BTreeMap<String, String>,
}

/// How far a pinned key is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Pinned on first sight, never compared with the peer.
    Pinned,
    /// Pinned by `trust`: the user compared the fingerprint with the peer.
    Verified,
}

fn parse_line(line: &str) -> Option<Pin> {
    let mut parts = line.split_whitespace();
    let (name, fingerprint, spki) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || names::validate(name).is_err() {
        return None;
    }
    let spki = STANDARD.decode(spki).ok()?;
    // The fingerprint must be the key's: a line edited in one place but not the other is damage.
    (identity::fingerprint_hex(&identity::fingerprint_der(&spki)) == fingerprint).then(|| {
        Pin::Key {
            name: name.to_string(),
            fingerprint: fingerprint.to_string(),
            spki,
        }
    })
}

fn verified_path(pins: &Path) -> PathBuf {
    pins.with_file_name("verified_peers")
}

/// `name fingerprint` lines; anything else is ignored (it only ever removes a "verified" mark).
fn read_verified(path: &Path) -> Result<BTreeMap<String, String>, CliError> {
    let mut verified = BTreeMap::new();
    if !path.exists() {
        return Ok(verified);
    }
    for line in std::fs::read_to_string(path)?.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(name), Some(fingerprint), None) = (parts.next(), parts.next(), parts.next())
            && names::validate(name).is_ok()
        {
            verified.insert(names::canonical(name), fingerprint.to_string());
        }
    }
    Ok(verified)
}

fn read_pins(path: &Path) -> Result<BTreeMap<String, Pin>, CliError> {
    let mut pins = BTreeMap::new();
    if !path.exists() {
        return Ok(pins);
    }
    for (n, line) in std::fs::read_to_string(path)?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let pin = match parse_line(line) {
            Some(pin) => pin,
            None => Pin::Damaged {
                line: line.to_string(),
            },
        };
        let name = line.split_whitespace().next().unwrap_or_default();
        if names::validate(name).is_err() {
            return Err(CliError::Usage(format!(
                "{} line {} is damaged and names no peer; restore the file from a backup or delete that line (and re-check fingerprints with your peers)",
                path.display(),
                n + 1
            )));
        }
        // First sight wins: a later line for the same name (two processes pinning at once) does
        // not replace it.
        pins.entry(names::canonical(name)).or_insert(pin);
    }
    Ok(pins)
}

impl KnownPeers {
    pub fn load(path: PathBuf) -> Result<Self, CliError> {
        let pins = read_pins(&path)?;
        let verified = read_verified(&verified_path(&path))?;
        Ok(Self {
            path,
            pins,
            verified,
        })
    }

    fn line(pin: &Pin) -> String {
        match pin {
            Pin::Key {
                name,
                fingerprint,
                spki,
            } => format!("{name} {fingerprint} {}\n", STANDARD.encode(spki)),
            Pin::Damaged { line } => format!("{line}\n"),
        }
    }

    fn save(&self) -> Result<(), CliError> {
        let text: String = self.pins.values().map(Self::line).collect();
        identity::write_secret_file(&self.path, text.as_bytes())?;
        Ok(())
    }

    /// Holds the lock file while `op` runs (other `svs` processes wait).
    fn locked<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, CliError>,
    ) -> Result<T, CliError> {
        let lock_path = self.path.with_extension("lock");
        if let Some(dir) = lock_path.parent() {
            identity::create_private_dir(dir)?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)?;
        lock.lock()?;
        op(self)
    }

    /// Pins `spki` for a name seen for the first time: one line appended (0600), under the lock.
    fn pin_first_sight(&mut self, name: &str, spki: &[u8]) -> Result<(), CliError> {
        use std::io::Write;
        let pin = Pin::Key {
            name: name.to_string(),
            fingerprint: identity::fingerprint_hex(&identity::fingerprint_der(spki)),
            spki: spki.to_vec(),
        };
        self.locked(|this| {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&this.path)?;
            file.write_all(Self::line(&pin).as_bytes())?;
            file.sync_data()?;
            this.pins.insert(names::canonical(name), pin);
            Ok(())
        })
    }

    /// Checks `spki` against the pin for `name`, pinning it on first sight.
    pub fn check(&mut self, name: &str, spki: &[u8]) -> Result<PinCheck, CliError> {
        let fingerprint = identity::fingerprint_hex(&identity::fingerprint_der(spki));
        match self.pins.get(&names::canonical(name)) {
            Some(Pin::Key { fingerprint: f, .. }) if *f == fingerprint => Ok(PinCheck::Matches),
            Some(Pin::Key { fingerprint: f, .. }) => Ok(PinCheck::Changed { pinned: f.clone() }),
            Some(Pin::Damaged { .. }) => Ok(PinCheck::Changed {
                pinned: format!(
                    "unreadable (its line in {} is damaged)",
                    self.path.display()
                ),
            }),
            None => {
                self.pin_first_sight(name, spki)?;
                Ok(PinCheck::NewlyPinned)
            }
        }
    }

    /// Pins `spki` for `name`, replacing any earlier pin (what `svs trust` does). Re-reads the
    /// file under a lock first, so pins written meanwhile by another `svs` are kept.
    pub fn pin(&mut self, name: &str, spki: &[u8]) -> Result<(), CliError> {
        self.locked(|this| {
            this.pins = read_pins(&this.path)?;
            let fingerprint = identity::fingerprint_hex(&identity::fingerprint_der(spki));
            this.pins.insert(
                names::canonical(name),
                Pin::Key {
                    name: name.to_string(),
                    fingerprint,
                    spki: spki.to_vec(),
                },
            );
            this.save()?;
            // The user vouched for this key: remember it as verified.
            this.verified = read_verified(&verified_path(&this.path))?;
            this.verified.insert(
                names::canonical(name),
                identity::fingerprint_hex(&identity::fingerprint_der(spki)),
            );
            let text: String = this
                .verified
                .iter()
                .map(|(name, fingerprint)| format!("{name} {fingerprint}\n"))
                .collect();
            identity::write_secret_file(&verified_path(&this.path), text.as_bytes())?;
            Ok(())
        })
    }

    /// How far the pin of `name` is trusted (`None`: nothing usable is pinned).
    pub fn trust(&self, name: &str) -> Option<Trust> {
        let pinned = self.fingerprint(name)?;
        Some(
            if self
                .verified
                .get(&names::canonical(name))
                .map(String::as_str)
                == Some(pinned)
            {
                Trust::Verified
            } else {
                Trust::Pinned
            },
        )
    }

    /// Every name with a pin, as first seen.
    pub fn names(&self) -> Vec<String> {
        self.pins
            .iter()
            .map(|(canonical, pin)| match pin {
                Pin::Key { name, .. } => name.clone(),
                Pin::Damaged { .. } => canonical.clone(),
            })
            .collect()
    }

    /// The pinned fingerprint of `name`.
    pub fn fingerprint(&self, name: &str) -> Option<&str> {
        match self.pins.get(&names::canonical(name))? {
            Pin::Key { fingerprint, .. } => Some(fingerprint),
            Pin::Damaged { .. } => None,
        }
    }

    /// The pinned key of `name`, DER SPKI.
    pub fn key(&self, name: &str) -> Option<&[u8]> {
        match self.pins.get(&names::canonical(name))? {
            Pin::Key { spki, .. } => Some(spki),
            Pin::Damaged { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spki(bits: usize) -> Vec<u8> {
        identity::public_key_der(&identity::generate(bits).unwrap().to_public_key())
    }

    #[test]
    fn a_damaged_pin_blocks_its_name_instead_of_resetting_trust() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_peers");
        let (bob, carol) = (spki(2048), spki(2048));
        let mut pins = KnownPeers::load(path.clone()).unwrap();
        assert_eq!(pins.check("bob", &bob).unwrap(), PinCheck::NewlyPinned);
        assert_eq!(pins.check("carol", &carol).unwrap(), PinCheck::NewlyPinned);
        // One character of bob's key flips on disk.
        let text = std::fs::read_to_string(&path).unwrap();
        let damaged = text.replacen("bob ", "bob x", 1);
        std::fs::write(&path, damaged).unwrap();
        let mut pins = KnownPeers::load(path.clone()).unwrap();
        assert!(
            matches!(pins.check("bob", &bob).unwrap(), PinCheck::Changed { .. }),
            "bob is not pinned anew on first sight"
        );
        assert_eq!(pins.check("carol", &carol).unwrap(), PinCheck::Matches);
        // Trusting bob again repairs his line, and marks his key verified (carol's is not).
        pins.pin("bob", &bob).unwrap();
        let mut pins = KnownPeers::load(path.clone()).unwrap();
        assert_eq!(pins.check("bob", &bob).unwrap(), PinCheck::Matches);
        assert_eq!(pins.trust("bob"), Some(Trust::Verified));
        assert_eq!(pins.trust("carol"), Some(Trust::Pinned));
        assert_eq!(pins.names(), vec!["bob".to_string(), "carol".to_string()]);
        // A line that names nobody stops the client with a sentence.
        std::fs::write(&path, "!!! garbage\n").unwrap();
        let err = KnownPeers::load(path).err().unwrap();
        assert!(err.to_string().contains("line 1 is damaged"), "{err}");
    }

    #[test]
    fn first_sight_appends_one_line_and_the_first_line_for_a_name_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_peers");
        let (first, second) = (spki(2048), spki(2048));
        let mut one = KnownPeers::load(path.clone()).unwrap();
        let mut other = KnownPeers::load(path.clone()).unwrap();
        // Two processes both see "eve" for the first time, with different keys.
        assert_eq!(one.check("eve", &first).unwrap(), PinCheck::NewlyPinned);
        assert_eq!(other.check("eve", &second).unwrap(), PinCheck::NewlyPinned);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        let mut reloaded = KnownPeers::load(path.clone()).unwrap();
        assert_eq!(reloaded.check("eve", &first).unwrap(), PinCheck::Matches);
        assert!(matches!(
            reloaded.check("eve", &second).unwrap(),
            PinCheck::Changed { .. }
        ));
        // Trusting rewrites the file with one line per name.
        reloaded.pin("eve", &second).unwrap();
        assert_eq!(reloaded.trust("eve"), Some(Trust::Verified));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn two_writers_keep_each_others_pins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_peers");
        let mut first = KnownPeers::load(path.clone()).unwrap();
        let mut second = KnownPeers::load(path.clone()).unwrap();
        first.check("bob", &spki(2048)).unwrap();
        second.check("carol", &spki(2048)).unwrap();
        let merged = KnownPeers::load(path).unwrap();
        assert!(merged.key("bob").is_some() && merged.key("carol").is_some());
    }
}
