//! Name-to-key bindings that survive restarts (redb): once a key registers a name, no other key
//! can take it until an operator releases it.

use crate::Error;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

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

/// The persistent name table.
pub struct NameStore {
    db: Database,
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

impl NameStore {
    pub fn open(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(storage)?;
        }
        let db = Database::create(path).map_err(|e| {
            Error::Storage(format!(
                "cannot open {}: {e} (is another directory-service using this data dir?)",
                path.display()
            ))
        })?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(NAMES).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(Self { db })
    }

    /// Claims `canonical` for `key_der` unless another key owns it.
    pub fn claim(&self, canonical: &str, key_der: &[u8]) -> Result<Claim, Error> {
        let txn = self.db.begin_write().map_err(storage)?;
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
    }

    /// The key that owns `canonical`, if any.
    pub fn owner(&self, canonical: &str) -> Result<Option<Vec<u8>>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(NAMES).map_err(storage)?;
        Ok(table
            .get(canonical)
            .map_err(storage)?
            .map(|v| v.value().to_vec()))
    }

    /// Frees a name. Returns whether it was bound.
    pub fn release(&self, canonical: &str) -> Result<bool, Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        let removed = {
            let mut table = txn.open_table(NAMES).map_err(storage)?;
            table.remove(canonical).map_err(storage)?.is_some()
        };
        txn.commit().map_err(storage)?;
        Ok(removed)
    }
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
