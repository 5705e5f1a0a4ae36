//! Name bindings in the `svs_names` key-value bucket. A claim is `create` (it fails if the key
//! exists), so two replicas registering one name at the same instant end with exactly one
//! binding; the loser reads the winner's key and answers as for any taken name.

use super::{Cluster, NAMES_BUCKET, name_from_token, name_token, nats, timed};
use crate::Error;
use crate::names::Claim;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;

/// The bucket of bindings.
#[derive(Clone)]
pub struct KvNames {
    cluster: Cluster,
    store: kv::Store,
    runtime: tokio::runtime::Handle,
}

/// A change another replica (or an operator) made to a binding; returns false to stop following.
pub type OnChange = Box<dyn Fn(String, Option<Vec<u8>>) -> bool + Send + Sync>;

impl KvNames {
    /// Opens (or creates) the bucket. Call inside the runtime.
    pub async fn open(cluster: &Cluster) -> Result<Self, Error> {
        let store = cluster
            .bucket(
                NAMES_BUCKET,
                "svs: canonical name -> SPKI DER of its key",
                Duration::ZERO,
            )
            .await?;
        Ok(Self {
            cluster: cluster.clone(),
            store,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// `claim` for callers on a blocking thread (registration does its RSA work there).
    pub fn claim_blocking(&self, canonical: &str, key_der: &[u8]) -> Result<Claim, Error> {
        self.runtime.block_on(self.claim(canonical, key_der))
    }

    /// Binds `canonical` to `key_der` unless another key holds it.
    pub async fn claim(&self, canonical: &str, key_der: &[u8]) -> Result<Claim, Error> {
        // UNAVAILABLE at once while NATS is away, not after the request timeout.
        self.cluster.check_up()?;
        let key = name_token(canonical);
        // Twice at most: a binding released between our create and get is claimed again.
        for _ in 0..2 {
            match timed(
                "kv",
                self.store.create(&key, Bytes::copy_from_slice(key_der)),
            )
            .await
            {
                Ok(_) => return Ok(Claim::New),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    match self.get(canonical).await? {
                        Some(owner) if owner == key_der => return Ok(Claim::Ours),
                        Some(_) => return Ok(Claim::OtherKey),
                        None => continue,
                    }
                }
                Err(e) => return Err(nats("claiming the name", e)),
            }
        }
        Err(Error::Unavailable(
            "the name was claimed and released while registering; try again".into(),
        ))
    }

    /// The key bound to `canonical`, if any.
    pub async fn get(&self, canonical: &str) -> Result<Option<Vec<u8>>, Error> {
        self.cluster.check_up()?;
        timed("kv", self.store.get(name_token(canonical)))
            .await
            .map(|v| v.map(|b| b.to_vec()))
            .map_err(|e| nats("looking up the name", e))
    }

    /// Frees a name. Returns whether it was bound.
    pub async fn release(&self, canonical: &str) -> Result<bool, Error> {
        let bound = self.get(canonical).await?.is_some();
        if bound {
            self.store
                .purge(name_token(canonical))
                .await
                .map_err(|e| nats("releasing the name", e))?;
        }
        Ok(bound)
    }

    /// Follows changes to the bucket until `on_change` says stop, re-watching after NATS comes back,
    /// so a replica's memory of bindings learns of new names and releases elsewhere.
    pub fn follow(&self, on_change: OnChange) {
        let store = self.store.clone();
        tokio::spawn(async move {
            loop {
                match store.watch_all().await {
                    Ok(mut watch) => {
                        while let Some(Ok(entry)) = watch.next().await {
                            let Some(name) = name_from_token(&entry.key) else {
                                continue;
                            };
                            let value = (entry.operation == kv::Operation::Put)
                                .then(|| entry.value.to_vec());
                            if !on_change(name, value) {
                                return;
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot watch names yet"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}
