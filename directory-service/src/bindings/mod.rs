//! Who owns which name: once a key registers a name, no other key can take it until an operator
//! releases it. `NameBindings` is the storage seam (redb in `redb_bindings`, a NATS key-value
//! bucket in `cluster::kv_bindings`); `NameStore` is the in-memory view over either, so the relay
//! checks recipients without a disk read or a round trip.

#[cfg(test)]
pub(crate) mod conformance;
mod redb_bindings;

pub(crate) use redb_bindings::{RedbBindings, create_tables};

use crate::Error;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use svs_common::identity::{self, Fingerprint};

/// Result of claiming a name for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The name was free and now belongs to the key.
    New,
    /// The name already belonged to this key.
    Ours,
    /// Another key owns the name.
    OtherKey,
}

/// A change another replica (or an operator) made to a binding: the name and its key, or `None`
/// when it was released. Returns false to stop following.
pub(crate) type OnChange = Box<dyn Fn(String, Option<Vec<u8>>) -> bool + Send + Sync>;

/// Durable name bindings: canonical name → SPKI DER of the key that owns it.
#[tonic::async_trait]
pub(crate) trait NameBindings: Send + Sync {
    /// Binds `canonical` to `key_der` unless another key holds it. Two claims of one free name
    /// at the same instant end with exactly one `New`.
    async fn claim(&self, canonical: &str, key_der: &[u8]) -> Result<Claim, Error>;
    /// The key bound to `canonical`, if any.
    async fn get(&self, canonical: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Frees a name. Returns whether it was bound.
    async fn release(&self, canonical: &str) -> Result<bool, Error>;
    /// Every binding, for a view that holds them all (`is_shared` false).
    async fn all(&self) -> Result<Vec<(String, Vec<u8>)>, Error>;
    /// Whether other processes (replicas, an operator) change bindings while this one runs. Then
    /// the view is a cache that asks on a miss and learns of changes through `follow`; otherwise
    /// it loads every binding once and is the only writer.
    fn is_shared(&self) -> bool {
        false
    }
    /// Calls `on_change` for each change made elsewhere until it returns false (shared stores).
    fn follow(&self, on_change: OnChange) {
        drop(on_change);
    }
}

/// A registered key.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    pub key_der: Vec<u8>,
    pub fingerprint: Fingerprint,
}

fn binding(key_der: &[u8]) -> Binding {
    Binding {
        key_der: key_der.to_vec(),
        fingerprint: identity::fingerprint_der(key_der),
    }
}

/// The bindings held in memory (a name costs a few hundred bytes) over a `NameBindings` store.
pub(crate) struct NameStore {
    store: Arc<dyn NameBindings>,
    bindings: RwLock<HashMap<String, Binding>>,
}

impl std::fmt::Debug for NameStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameStore")
            .field("shared", &self.store.is_shared())
            .field("held", &self.read().len())
            .finish()
    }
}

impl NameStore {
    /// The view over `store`: every binding loaded now, or (for a shared store) none yet, with
    /// changes made elsewhere followed from now on.
    pub(crate) async fn open(store: Arc<dyn NameBindings>) -> Result<Arc<Self>, Error> {
        let initial = if store.is_shared() {
            HashMap::new()
        } else {
            store
                .all()
                .await?
                .into_iter()
                .map(|(name, key)| {
                    let bound = binding(&key);
                    (name, bound)
                })
                .collect()
        };
        let view = Arc::new(Self {
            store: store.clone(),
            bindings: RwLock::new(initial),
        });
        if store.is_shared() {
            let weak = Arc::downgrade(&view);
            store.follow(Box::new(move |canonical, key| {
                let Some(view) = weak.upgrade() else {
                    return false;
                };
                view.remember(&canonical, key.as_deref());
                true
            }));
        }
        Ok(view)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Binding>> {
        self.bindings.read().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, canonical: &str, key_der: Option<&[u8]>) {
        let mut bindings = self.bindings.write().unwrap_or_else(|p| p.into_inner());
        match key_der {
            Some(key) => bindings.insert(canonical.to_string(), binding(key)),
            None => bindings.remove(canonical),
        };
    }

    fn remembered(&self, canonical: &str) -> Option<Binding> {
        self.read().get(canonical).cloned()
    }

    /// The key bound to `canonical`, if any: from memory, or from a shared store when another
    /// replica bound it a moment ago.
    pub(crate) async fn binding(&self, canonical: &str) -> Result<Option<Binding>, Error> {
        if let Some(bound) = self.remembered(canonical) {
            return Ok(Some(bound));
        }
        if !self.store.is_shared() {
            return Ok(None);
        }
        let key = self.store.get(canonical).await?;
        if let Some(key) = &key {
            self.remember(canonical, Some(key));
        }
        Ok(key.map(|k| binding(&k)))
    }

    /// Claims `canonical` for `key_der` unless another key owns it.
    pub(crate) async fn claim(&self, canonical: &str, key_der: &[u8]) -> Result<Claim, Error> {
        // A returning name is answered from memory: no write, so registrations do not queue
        // behind the mailbox writer's commits. Only a new name is written.
        if let Some(bound) = self.remembered(canonical) {
            return Ok(if bound.key_der == key_der {
                Claim::Ours
            } else {
                Claim::OtherKey
            });
        }
        let claim = self.store.claim(canonical, key_der).await?;
        if claim != Claim::OtherKey {
            self.remember(canonical, Some(key_der));
        }
        Ok(claim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_view_answers_from_memory_and_follows_its_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::directory::open_db(&dir.path().join("names.redb")).unwrap();
        let store: Arc<dyn NameBindings> = Arc::new(RedbBindings::new(db.clone()));
        assert_eq!(store.claim("alice", b"key-a").await.unwrap(), Claim::New);
        // Loaded at open: alice is known without asking the store.
        let view = NameStore::open(store.clone()).await.unwrap();
        assert_eq!(view.remembered("alice").unwrap().key_der, b"key-a");
        assert_eq!(
            view.claim("alice", b"key-b").await.unwrap(),
            Claim::OtherKey
        );
        assert_eq!(view.claim("bob", b"key-b").await.unwrap(), Claim::New);
        assert!(view.binding("bob").await.unwrap().is_some());
        // Written through to the store, not only remembered.
        assert_eq!(
            store.get("bob").await.unwrap().as_deref(),
            Some(&b"key-b"[..])
        );
        assert!(view.binding("nobody").await.unwrap().is_none());
    }
}
