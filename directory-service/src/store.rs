//! Name-to-key bindings that survive restarts (redb): once a key registers a name, no other key
//! can take it until an operator releases it. The store re-opens itself after an I/O error.

use crate::Error;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// canonical name → SPKI DER of the key that owns it.
const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("names_v1");

/// Result of claiming a name for a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The name was free and now belongs to the key.
    New,
    /// The name already belonged to this key.
    Ours,
    /// Another key owns the name.
    OtherKey,
}

/// The persistent name table. After an I/O error (a full disk, say) redb refuses every further
/// transaction until the database is opened again, so the store then holds no database, answers
/// UNAVAILABLE, and `recover` (called by the sweeper) re-opens it once a test write succeeds.
pub struct NameStore {
    path: PathBuf,
    db: RwLock<Option<Database>>,
    /// Why the store cannot be used, while it cannot.
    broken: Mutex<Option<String>>,
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

fn open_db(path: &Path) -> Result<Database, Error> {
    let db = Database::create(path).map_err(|e| {
        Error::Storage(format!(
            "cannot open {}: {e} (is another directory-service using this data dir?)",
            path.display()
        ))
    })?;
    let txn = db.begin_write().map_err(storage)?;
    txn.open_table(NAMES).map_err(storage)?;
    txn.commit().map_err(storage)?;
    Ok(db)
}

impl NameStore {
    pub fn open(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(storage)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            db: RwLock::new(Some(open_db(path)?)),
            broken: Mutex::new(None),
        })
    }

    /// Runs `op` on the open database. A failure marks the store broken (one log line) and is
    /// reported as UNAVAILABLE: the caller may retry once the disk has room again.
    fn with_db<T>(&self, op: impl FnOnce(&Database) -> Result<T, Error>) -> Result<T, Error> {
        let db = self.db.read().unwrap_or_else(|p| p.into_inner());
        let Some(database) = db.as_ref() else {
            return Err(self.unavailable());
        };
        match op(database) {
            Ok(value) => Ok(value),
            Err(e) => {
                drop(db);
                self.mark_broken(&e.to_string());
                Err(self.unavailable())
            }
        }
    }

    fn unavailable(&self) -> Error {
        let why = self
            .broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "it is being re-opened".into());
        Error::Unavailable(format!(
            "the directory cannot use its name database right now ({why}); try again shortly"
        ))
    }

    fn mark_broken(&self, why: &str) {
        let mut broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        if broken.is_none() {
            tracing::error!(path = %self.path.display(), error = %why,
                "the name database failed; registrations are refused and health is NOT_SERVING until it can be written again");
            *broken = Some(why.to_string());
        }
        // Drop the failed handle now: redb refuses everything after an I/O error anyway.
        if let Ok(mut db) = self.db.try_write() {
            db.take();
        }
    }

    /// Whether the store works (false after a failure until `recover` succeeds).
    pub fn is_healthy(&self) -> bool {
        self.broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Re-opens a broken store and proves it writable. Returns whether it works now.
    pub fn recover(&self) -> bool {
        if self.is_healthy() {
            return true;
        }
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        db.take();
        match open_db(&self.path).and_then(|reopened| {
            probe_write(&reopened)?;
            Ok(reopened)
        }) {
            Ok(reopened) => {
                *db = Some(reopened);
                *self.broken.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(path = %self.path.display(), "the name database works again; serving");
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "the name database still cannot be written");
                false
            }
        }
    }

    /// Claims `canonical` for `key_der` unless another key owns it.
    pub fn claim(&self, canonical: &str, key_der: &[u8]) -> Result<Claim, Error> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(storage)?;
            let claim = {
                let mut table = txn.open_table(NAMES).map_err(storage)?;
                let existing = table
                    .get(canonical)
                    .map_err(storage)?
                    .map(|v| v.value().to_vec());
                match existing {
                    Some(owner) if owner == key_der => Claim::Ours,
                    Some(_) => Claim::OtherKey,
                    None => {
                        table.insert(canonical, key_der).map_err(storage)?;
                        Claim::New
                    }
                }
            };
            txn.commit().map_err(storage)?;
            Ok(claim)
        })
    }

    /// The key that owns `canonical`, if any.
    pub fn owner(&self, canonical: &str) -> Result<Option<Vec<u8>>, Error> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(NAMES).map_err(storage)?;
            Ok(table
                .get(canonical)
                .map_err(storage)?
                .map(|v| v.value().to_vec()))
        })
    }

    /// Frees a name. Returns whether it was bound.
    pub fn release(&self, canonical: &str) -> Result<bool, Error> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(storage)?;
            let removed = {
                let mut table = txn.open_table(NAMES).map_err(storage)?;
                table.remove(canonical).map_err(storage)?.is_some()
            };
            txn.commit().map_err(storage)?;
            Ok(removed)
        })
    }
}

/// Writes and removes a probe row: proof that the disk takes writes again.
fn probe_write(db: &Database) -> Result<(), Error> {
    const PROBE: TableDefinition<&str, u64> = TableDefinition::new("probe_v1");
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut table = txn.open_table(PROBE).map_err(storage)?;
        table
            .insert("probe", svs_common::time::now_ms())
            .map_err(storage)?;
    }
    txn.commit().map_err(storage)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.redb");
        {
            let store = NameStore::open(&path).unwrap();
            assert_eq!(store.claim("alice", b"key-a").unwrap(), Claim::New);
            assert_eq!(store.claim("alice", b"key-a").unwrap(), Claim::Ours);
        }
        let store = NameStore::open(&path).unwrap();
        assert_eq!(store.claim("alice", b"key-b").unwrap(), Claim::OtherKey);
        assert!(store.release("alice").unwrap());
        assert_eq!(store.claim("alice", b"key-b").unwrap(), Claim::New);
    }
}
