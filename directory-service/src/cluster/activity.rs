//! Group activity hints across replicas. The replica that took a group message publishes on
//! core NATS (`svs.mls.activity`: not stored, lost if no replica listens, which is fine for a
//! hint) the group id and the names to tell; every replica, itself included, hands the hint to
//! its own live streams of those names.

use super::{Cluster, nats};
use crate::Error;
use crate::registry::Registry;
use futures_util::StreamExt;
use std::sync::Arc;
use svs_common::wire::{Reader, Writer};

/// The subject hints travel on.
pub(crate) const ACTIVITY_SUBJECT: &str = "svs.mls.activity";

/// This replica's side of the hints.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    client: async_nats::Client,
}

fn encode(names: &[String], group_id: &[u8]) -> Result<Vec<u8>, Error> {
    let mut writer = Writer::new("group activity");
    writer.short(group_id).count16(names.len());
    for name in names {
        writer.short(name.as_bytes());
    }
    Ok(writer.finish()?)
}

fn decode(bytes: &[u8]) -> Result<(Vec<u8>, Vec<String>), Error> {
    let mut reader = Reader::new("group activity", bytes);
    let group_id = reader.short()?.to_vec();
    let count = reader.u16()?;
    let names = (0..count)
        .map(|_| reader.short_str().map(str::to_string))
        .collect::<Result<Vec<_>, _>>()?;
    reader.finish()?;
    Ok((group_id, names))
}

impl Activity {
    /// Follows the hints of every replica and hands them to `registry`'s streams.
    pub(crate) async fn start(cluster: &Cluster, registry: &Arc<Registry>) -> Result<Self, Error> {
        let mut hints = cluster
            .client
            .subscribe(ACTIVITY_SUBJECT)
            .await
            .map_err(|e| nats("following group activity", e))?;
        let registry = Arc::downgrade(registry);
        tokio::spawn(async move {
            while let Some(hint) = hints.next().await {
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                match decode(&hint.payload) {
                    Ok((group_id, names)) => registry.push_group_activity(&names, &group_id),
                    Err(e) => tracing::debug!(error = %e, "an unreadable group activity hint"),
                }
            }
        });
        Ok(Self {
            client: cluster.client.clone(),
        })
    }

    /// Tells every replica's streams of `names` that the group has new entries.
    pub(crate) async fn announce(&self, names: &[String], group_id: &[u8]) {
        let published = match encode(names, group_id) {
            Ok(payload) => self
                .client
                .publish(ACTIVITY_SUBJECT, payload.into())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = published {
            tracing::debug!(error = %e, "a group activity hint was not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_reads_back_and_damage_is_refused() {
        let names = vec!["alice".to_string(), "bob.b".to_string()];
        let bytes = encode(&names, b"group").unwrap();
        assert_eq!(decode(&bytes).unwrap(), (b"group".to_vec(), names));
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
