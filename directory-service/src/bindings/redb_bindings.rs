//! Name bindings in the directory's own redb database (the `names_v1` table). Each call runs its
//! transaction on a blocking thread.

use super::{Claim, NameBindings};
use crate::Error;
use crate::db::{Db, storage};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::sync::Arc;

/// canonical name → SPKI DER of the key that owns it.
const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("names_v1");

/// Creates the name table in a fresh database.
pub(crate) fn create_tables(db: &Database) -> Result<(), Error> {
    let txn = db.begin_write().map_err(storage)?;
    txn.open_table(NAMES).map_err(storage)?;
    txn.commit().map_err(storage)?;
    Ok(())
}

/// The embedded store of bindings; this process is its only writer.
#[derive(Debug, Clone)]
pub(crate) struct RedbBindings {
    db: Arc<Db>,
}

impl RedbBindings {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Database) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let db = self.db.clone();
        crate::error::blocking(move || db.with(op)).await
    }
}

#[tonic::async_trait]
impl NameBindings for RedbBindings {
    async fn claim(&self, canonical: &str, key_der: &[u8]) -> Result<Claim, Error> {
        let (canonical, key_der) = (canonical.to_string(), key_der.to_vec());
        self.run(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            let claim = {
                let mut table = txn.open_table(NAMES).map_err(storage)?;
                let existing = table
                    .get(canonical.as_str())
                    .map_err(storage)?
                    .map(|v| v.value().to_vec());
                match existing {
                    Some(owner) if owner == key_der => Claim::Ours,
                    Some(_) => Claim::OtherKey,
                    None => {
                        table
                            .insert(canonical.as_str(), key_der.as_slice())
                            .map_err(storage)?;
                        Claim::New
                    }
                }
            };
            txn.commit().map_err(storage)?;
            Ok(claim)
        })
        .await
    }

    async fn get(&self, canonical: &str) -> Result<Option<Vec<u8>>, Error> {
        let canonical = canonical.to_string();
        self.run(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(NAMES).map_err(storage)?;
            Ok(table
                .get(canonical.as_str())
                .map_err(storage)?
                .map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn release(&self, canonical: &str) -> Result<bool, Error> {
        let canonical = canonical.to_string();
        self.run(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            let removed = {
                let mut table = txn.open_table(NAMES).map_err(storage)?;
                table.remove(canonical.as_str()).map_err(storage)?.is_some()
            };
            txn.commit().map_err(storage)?;
            Ok(removed)
        })
        .await
    }

    async fn all(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.run(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(NAMES).map_err(storage)?;
            let mut all = Vec::new();
            for row in table.iter().map_err(storage)? {
                let (name, key) = row.map_err(storage)?;
                all.push((name.value().to_string(), key.value().to_vec()));
            }
            Ok(all)
        })
        .await
    }
}
