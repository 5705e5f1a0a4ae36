//! Name bindings in the `svs_names` key-value bucket. A claim is `create` (it fails if the key
//! exists), so two replicas registering one name at the same instant end with exactly one
//! binding; the loser reads the winner's key and answers as for any taken name.

use super::{Cluster, NAMES_BUCKET, name_from_token, name_token, nats, timed};
use crate::Error;
use crate::bindings::{Claim, NameBindings, OnChange};
use crate::error::Refusal;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;

/// The bucket of bindings.
#[derive(Clone)]
pub(crate) struct KvBindings {
    cluster: Cluster,
    store: kv::Store,
}

impl std::fmt::Debug for KvBindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvBindings")
            .field("bucket", &NAMES_BUCKET)
            .finish()
    }
}

impl KvBindings {
    /// Opens (or creates) the bucket. Call inside the runtime.
    pub(crate) async fn open(cluster: &Cluster) -> Result<Self, Error> {
        let store = cluster
            .bucket(
                NAMES_BUCKET,
                "svs: canonical name -> SPKI DER of its key",
                Duration::ZERO,
                64 * 1024,
            )
            .await?;
        Ok(Self {
            cluster: cluster.clone(),
            store,
        })
    }
}

#[tonic::async_trait]
impl NameBindings for KvBindings {
    async fn claim(&self, canonical: &str, key_der: &[u8]) -> Result<Claim, Error> {
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
        Err(Refusal::Unavailable(
            "the name was claimed and released while registering; try again".into(),
        )
        .into())
    }

    async fn get(&self, canonical: &str) -> Result<Option<Vec<u8>>, Error> {
        self.cluster.check_up()?;
        timed("kv", self.store.get(name_token(canonical)))
            .await
            .map(|v| v.map(|b| b.to_vec()))
            .map_err(|e| nats("looking up the name", e))
    }

    async fn release(&self, canonical: &str) -> Result<bool, Error> {
        let bound = self.get(canonical).await?.is_some();
        if bound {
            self.store
                .purge(name_token(canonical))
                .await
                .map_err(|e| nats("releasing the name", e))?;
        }
        Ok(bound)
    }

    async fn all(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.cluster.check_up()?;
        let mut keys = timed("kv", self.store.keys())
            .await
            .map_err(|e| nats("listing names", e))?;
        let mut all = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| nats("listing names", e))?;
            let Some(name) = name_from_token(&key) else {
                continue;
            };
            if let Some(owner) = self.get(&name).await? {
                all.push((name, owner));
            }
        }
        Ok(all)
    }

    fn is_shared(&self) -> bool {
        true
    }

    /// Follows the bucket, re-watching after NATS comes back, so a replica's memory of bindings
    /// learns of new names and releases elsewhere.
    fn follow(&self, on_change: OnChange) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::conformance;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_nats_bucket_passes_the_names_suite() {
        let dir = tempfile::tempdir().unwrap();
        let nats = svs_test_support::NatsServer::start(&dir.path().join("nats")).await;
        let options = crate::cluster::mail::tests::options(&nats);
        conformance::check(|| async {
            let cluster = Cluster::connect(&options).await.unwrap();
            Arc::new(KvBindings::open(&cluster).await.unwrap()) as Arc<dyn NameBindings>
        })
        .await;
    }

    #[tokio::test]
    async fn a_view_learns_of_another_replicas_bindings_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let nats = svs_test_support::NatsServer::start(&dir.path().join("nats")).await;
        let options = crate::cluster::mail::tests::options(&nats);
        let here = Cluster::connect(&options).await.unwrap();
        let there = Arc::new(
            KvBindings::open(&Cluster::connect(&options).await.unwrap())
                .await
                .unwrap(),
        );
        let view =
            crate::bindings::NameStore::open(Arc::new(KvBindings::open(&here).await.unwrap()))
                .await
                .unwrap();
        // Bound elsewhere a moment ago: found by asking on a miss.
        assert_eq!(there.claim("erin", b"key-e").await.unwrap(), Claim::New);
        assert_eq!(
            view.binding("erin").await.unwrap().unwrap().key_der,
            b"key-e"
        );
        // Released elsewhere: the view hears of it without asking.
        assert!(there.release("erin").await.unwrap());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while view.binding("erin").await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the view never heard of the release"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
