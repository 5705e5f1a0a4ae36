//! What an operator does with the service's command line while the service runs or is stopped:
//! free a name (`release`), make the token key a cluster's replicas share (`new-token-key`).

use crate::Error;
use crate::bindings::NameBindings;
use crate::cluster::Cluster;
use crate::error::Refusal;
use crate::lifecycle::DataPaths;

/// Frees a name in a cluster's NATS (the replicas may run) and deletes its mailbox there.
pub async fn release_name_in_cluster(
    cluster: &crate::cluster::ClusterOptions,
    name: &str,
) -> Result<bool, Error> {
    let cluster = Cluster::connect(cluster).await?;
    let canonical = svs_common::names::canonical(name);
    let released = crate::cluster::kv_bindings::KvBindings::open(&cluster)
        .await?
        .release(&canonical)
        .await?;
    crate::cluster::mail::purge(&cluster, &canonical).await?;
    Ok(released)
}

/// Frees a name so another key may register it, and deletes its mailbox (sealed for the old key,
/// it would only tell the new owner who wrote to the old one). The service must be stopped.
pub async fn release_name(data_dir: &std::path::Path, name: &str) -> Result<bool, Error> {
    let path = DataPaths::new(data_dir).names_db;
    let db = crate::error::blocking(move || crate::directory::open_db(&path)).await?;
    let canonical = svs_common::names::canonical(name);
    let released = crate::bindings::RedbBindings::new(db.clone())
        .release(&canonical)
        .await?;
    crate::error::blocking(move || crate::mailbox::redb_store::purge(&db, &canonical)).await?;
    Ok(released)
}

/// Writes a new token key for a cluster's replicas to share; refuses to replace one.
pub async fn new_token_key(path: &std::path::Path) -> Result<(), Error> {
    if path.exists() {
        return Err(Refusal::AlreadyExists(format!(
            "{} exists already; replicas must keep using the key they share",
            path.display()
        ))
        .into());
    }
    let path = path.to_path_buf();
    crate::error::blocking(move || {
        let key = svs_common::identity::generate(svs_common::identity::DEFAULT_KEY_BITS)?;
        Ok(svs_common::identity::write_private_key(&path, &key)?)
    })
    .await?;
    Ok(())
}
