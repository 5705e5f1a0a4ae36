//! Name-to-key bindings that survive restarts: once a key registers a name, no other key can take
//! it until an operator releases it. Kept in the directory's database, or in NATS in cluster mode
//! (`cluster::names`); either way every binding is also held in memory.

use crate::Error;
use crate::cluster::names::KvNames;
use crate::db::{Db, storage};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use svs_common::identity::{self, Fingerprint};

fn binding(key_der: &[u8]) -> Binding {
    Binding {
        key_der: key_der.to_vec(),
        fingerprint: identity::fingerprint_der(key_der),
    }
}

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

/// A registered key.
#[derive(Debug, Clone)]
pub struct Binding {
    pub key_der: Vec<u8>,
    pub fingerprint: Fingerprint,
}

/// Where bindings are kept.
enum Backend {
    Embedded(Arc<Db>),
    Cluster(Box<KvNames>),
}

/// The persistent name table with every binding also held in memory (a name costs a few hundred
/// bytes) so the relay checks recipients without disk reads. In cluster mode the memory learns
/// of other replicas' bindings as NATS reports them, and asks NATS on a miss.
pub struct NameStore {
    backend: Backend,
    bindings: RwLock<HashMap<String, Binding>>,
}

/// Creates the name table in a fresh database.
pub fn create_tables(db: &Database) -> Result<(), Error> {
    let txn = db.begin_write().map_err(storage)?;
    txn.open_table(NAMES).map_err(storage)?;
    txn.commit().map_err(storage)?;
    Ok(())
}

impl NameStore {
    /// Loads every binding from the database.
    pub fn load(db: Arc<Db>) -> Result<Self, Error> {
        let bindings = db.with(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(NAMES).map_err(storage)?;
            let mut bindings = HashMap::new();
            for row in table.iter().map_err(storage)? {
                let (name, key) = row.map_err(storage)?;
                bindings.insert(name.value().to_string(), binding(key.value()));
            }
            Ok(bindings)
        })?;
        Ok(Self {
            backend: Backend::Embedded(db),
            bindings: RwLock::new(bindings),
        })
    }

    /// Bindings in NATS: memory starts empty and follows the bucket.
    pub fn clustered(names: KvNames) -> Arc<Self> {
        let store = Arc::new(Self {
            backend: Backend::Cluster(Box::new(names.clone())),
            bindings: RwLock::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&store);
        names.follow(Box::new(move |canonical, key| {
            let Some(store) = weak.upgrade() else {
                return false;
            };
            store.remember(&canonical, key.as_deref());
            true
        }));
        store
    }

    fn remember(&self, canonical: &str, key_der: Option<&[u8]>) {
        let mut bindings = self.bindings.write().unwrap_or_else(|p| p.into_inner());
        match key_der {
            Some(key) => bindings.insert(canonical.to_string(), binding(key)),
            None => bindings.remove(canonical),
        };
    }

    fn remembered(&self, canonical: &str) -> Option<Binding> {
        self.bindings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(canonical)
            .cloned()
    }

    /// The key bound to `canonical`, if any: from memory, or from NATS in cluster mode when
    /// another replica bound it a moment ago.
    pub async fn binding(&self, canonical: &str) -> Result<Option<Binding>, Error> {
        if let Some(bound) = self.remembered(canonical) {
            return Ok(Some(bound));
        }
        let Backend::Cluster(names) = &self.backend else {
            return Ok(None);
        };
        let key = names.get(canonical).await?;
        if let Some(key) = &key {
            self.remember(canonical, Some(key));
        }
        Ok(key.map(|k| binding(&k)))
    }

    /// Claims `canonical` for `key_der` unless another key owns it. Disk or network work: call
    /// it on a blocking thread.
    pub fn claim(&self, canonical: &str, key_der: &[u8]) -> Result<Claim, Error> {
        // A returning name is answered from memory: no write transaction, so registrations do
        // not queue behind the mailbox writer's commits. Only a new name is written.
        if let Some(bound) = self.remembered(canonical) {
            return Ok(if bound.key_der == key_der {
                Claim::Ours
            } else {
                Claim::OtherKey
            });
        }
        let db = match &self.backend {
            Backend::Embedded(db) => db,
            Backend::Cluster(names) => {
                let claim = names.claim_blocking(canonical, key_der)?;
                if claim != Claim::OtherKey {
                    self.remember(canonical, Some(key_der));
                }
                return Ok(claim);
            }
        };
        db.with(|db| {
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
        .inspect(|claim| {
            if *claim == Claim::New {
                self.bindings
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(canonical.to_string(), binding(key_der));
            }
        })
    }

    /// Frees a name in the embedded database. Returns whether it was bound.
    pub fn release(&self, canonical: &str) -> Result<bool, Error> {
        let Backend::Embedded(db) = &self.backend else {
            return Err(Error::InvalidArgument(
                "in cluster mode a name is released in NATS: `directory-service release --nats URL NAME`".into(),
            ));
        };
        db.with(|db| {
            let txn = db.begin_write().map_err(storage)?;
            let removed = {
                let mut table = txn.open_table(NAMES).map_err(storage)?;
                table.remove(canonical).map_err(storage)?.is_some()
            };
            txn.commit().map_err(storage)?;
            Ok(removed)
        })
        .inspect(|_| {
            self.bindings
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(canonical);
        })
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
            let store = NameStore::load(Arc::new(Db::open(&path, create_tables).unwrap())).unwrap();
            assert_eq!(store.claim("alice", b"key-a").unwrap(), Claim::New);
            assert_eq!(store.claim("alice", b"key-a").unwrap(), Claim::Ours);
        }
        let store = NameStore::load(Arc::new(Db::open(&path, create_tables).unwrap())).unwrap();
        assert_eq!(store.claim("alice", b"key-b").unwrap(), Claim::OtherKey);
        assert_eq!(store.remembered("alice").unwrap().key_der, b"key-a");
        assert!(store.release("alice").unwrap());
        assert_eq!(store.claim("alice", b"key-b").unwrap(), Claim::New);
    }
}
