//! `GroupStore` in the directory's redb database. Every change is one write transaction, so
//! the epoch compare-and-set, membership and bounds are checked against what is committed.

use super::store::{
    Entry, GroupLimits, GroupStore, LogPage, Post, PostKind, Posted, PublishedDevice,
    StoredWelcome, devices_of_both, next_state,
};
use crate::Error;
use crate::db::{Db, storage};
use crate::error::Refusal;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::sync::Arc;
use svs_common::wire::{Reader, Writer};
use svs_mls::{DEVICE_ID_LEN, DeviceId, device_id_hex};

/// Device → (owner name, certificate protobuf).
const DEVICES: TableDefinition<&[u8; DEVICE_ID_LEN], (&str, &[u8])> =
    TableDefinition::new("mls_devices_v1");
/// (name, device) → (): a name's devices.
const NAME_DEVICES: TableDefinition<(&str, &[u8; DEVICE_ID_LEN]), ()> =
    TableDefinition::new("mls_name_devices_v1");
/// (device, n) → one-time key package.
const KEY_PACKAGES: TableDefinition<(&[u8; DEVICE_ID_LEN], u64), &[u8]> =
    TableDefinition::new("mls_key_packages_v1");
/// Device → last-resort key package.
const LAST_RESORT: TableDefinition<&[u8; DEVICE_ID_LEN], &[u8]> =
    TableDefinition::new("mls_last_resort_v1");
/// Group → (epoch, next sequence number, member devices concatenated).
const GROUPS: TableDefinition<&[u8], (u64, u64, &[u8])> = TableDefinition::new("mls_groups_v1");
/// (group, seq) → entry (`encode_entry`).
const LOG: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("mls_log_v1");
/// (device, seq) → Welcome (`encode_welcome`).
const WELCOMES: TableDefinition<(&[u8; DEVICE_ID_LEN], u64), &[u8]> =
    TableDefinition::new("mls_welcomes_v1");
/// (stored_ms, 0 = log / 1 = welcome, group or device, seq) → ().
const EXPIRY: TableDefinition<(u64, u8, &[u8], u64), ()> = TableDefinition::new("mls_expiry_v1");
/// Device → when its owner removed it: a removed device cannot be published again.
const REMOVED_DEVICES: TableDefinition<&[u8; DEVICE_ID_LEN], u64> =
    TableDefinition::new("mls_removed_devices_v1");
/// Counters: "welcome_seq".
const META: TableDefinition<&str, u64> = TableDefinition::new("mls_meta_v1");

const EXPIRES_LOG: u8 = 0;
const EXPIRES_WELCOME: u8 = 1;
/// Items expired per transaction.
const EXPIRE_BATCH: usize = 1024;

/// Creates the tables (called when the database is opened).
pub(crate) fn create_tables(db: &Database) -> Result<(), Error> {
    let txn = db.begin_write().map_err(storage)?;
    txn.open_table(DEVICES).map_err(storage)?;
    txn.open_table(NAME_DEVICES).map_err(storage)?;
    txn.open_table(KEY_PACKAGES).map_err(storage)?;
    txn.open_table(LAST_RESORT).map_err(storage)?;
    txn.open_table(GROUPS).map_err(storage)?;
    txn.open_table(LOG).map_err(storage)?;
    txn.open_table(WELCOMES).map_err(storage)?;
    txn.open_table(EXPIRY).map_err(storage)?;
    txn.open_table(META).map_err(storage)?;
    txn.open_table(REMOVED_DEVICES).map_err(storage)?;
    txn.commit().map_err(storage)?;
    Ok(())
}

/// The delivery service's data in the embedded database.
#[derive(Debug, Clone)]
pub(crate) struct RedbGroups {
    db: Arc<Db>,
    limits: GroupLimits,
}

/// A refusal decided inside a transaction: the transaction is dropped (nothing written) and
/// the caller gets the sentence, without the database being marked broken.
type Decided<T> = Result<T, Refusal>;

impl RedbGroups {
    pub(crate) fn new(db: Arc<Db>, limits: GroupLimits) -> Self {
        Self { db, limits }
    }

    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Database, GroupLimits) -> Result<Decided<T>, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let db = self.db.clone();
        let limits = self.limits;
        Ok(crate::error::blocking(move || db.with(|database| op(database, limits))).await??)
    }
}

fn contains(members: &[u8], device: &DeviceId) -> bool {
    members.chunks_exact(DEVICE_ID_LEN).any(|m| m == device)
}

fn encode_entry(
    epoch: u64,
    commit: bool,
    from: &DeviceId,
    now_ms: u64,
    message: &[u8],
) -> Result<Vec<u8>, Error> {
    Ok(Writer::new("group log entry")
        .u64(epoch)
        .u8(u8::from(commit))
        .raw(from)
        .u64(now_ms)
        .long(message)
        .finish()?)
}

fn decode_entry(seq: u64, bytes: &[u8]) -> Result<Entry, Error> {
    let mut reader = Reader::new("group log entry", bytes);
    let epoch = reader.u64()?;
    let commit = reader.u8()? == 1;
    let from_device = reader.array::<DEVICE_ID_LEN>()?;
    let _stored_ms = reader.u64()?;
    let message = reader.long()?.to_vec();
    reader.finish()?;
    Ok(Entry {
        seq,
        // A group's sequence numbers are its own and have no gaps.
        index: seq,
        epoch,
        commit,
        from_device,
        message,
    })
}

fn encode_welcome(from: &DeviceId, welcome: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(Writer::new("welcome").raw(from).long(welcome).finish()?)
}

fn decode_welcome(seq: u64, bytes: &[u8]) -> Result<StoredWelcome, Error> {
    let mut reader = Reader::new("welcome", bytes);
    let from_device = reader.array::<DEVICE_ID_LEN>()?;
    let welcome = reader.long()?.to_vec();
    reader.finish()?;
    Ok(StoredWelcome {
        seq,
        welcome,
        from_device,
    })
}

fn next_counter(txn: &WriteTransaction, key: &str) -> Result<u64, Error> {
    let mut meta = txn.open_table(META).map_err(storage)?;
    let next = meta.get(key).map_err(storage)?.map_or(1, |v| v.value());
    meta.insert(key, next + 1).map_err(storage)?;
    Ok(next)
}

/// Applies a post inside `txn`, or says why not.
fn apply_post(
    txn: &WriteTransaction,
    post: &Post,
    limits: GroupLimits,
) -> Result<Decided<Posted>, Error> {
    let group_hex = hex::encode(&post.group_id);
    let mut groups = txn.open_table(GROUPS).map_err(storage)?;
    let current = groups
        .get(post.group_id.as_slice())
        .map_err(storage)?
        .map(|v| {
            let (epoch, next_seq, members) = v.value();
            (epoch, next_seq, members.to_vec())
        });
    let now = current
        .as_ref()
        .map(|(epoch, _, members)| (*epoch, members.as_slice()));
    let (epoch_after, members_after) = match next_state(post, now) {
        Ok(after) => after,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let (next_seq, members_before) = current
        .map(|(_, next_seq, members)| (next_seq, members))
        .unwrap_or((1, Vec::new()));
    let first_seq = {
        let log = txn.open_table(LOG).map_err(storage)?;
        let first = log
            .range((post.group_id.as_slice(), 0)..=(post.group_id.as_slice(), u64::MAX))
            .map_err(storage)?
            .next()
            .transpose()
            .map_err(storage)?
            .map(|(k, _)| k.value().1);
        first.unwrap_or(next_seq)
    };
    if next_seq - first_seq >= limits.max_log_entries_per_group {
        return Ok(Err(Refusal::ResourceExhausted(format!(
            "group {group_hex}'s log holds {} entries, its limit; entries leave it when they expire",
            limits.max_log_entries_per_group
        ))));
    }
    if let Some((welcome, devices)) = &post.welcome {
        let mut welcomes = txn.open_table(WELCOMES).map_err(storage)?;
        let published = txn.open_table(DEVICES).map_err(storage)?;
        for device in devices {
            if published.get(device).map_err(storage)?.is_none() {
                return Ok(Err(Refusal::NotFound(format!(
                    "no published device {}",
                    device_id_hex(device)
                ))));
            }
            let waiting = welcomes
                .range((device, 0)..=(device, u64::MAX))
                .map_err(storage)?
                .count();
            if waiting >= limits.max_welcomes_per_device {
                return Ok(Err(Refusal::ResourceExhausted(format!(
                    "device {} has {waiting} Welcomes waiting, its limit",
                    device_id_hex(device)
                ))));
            }
            let seq = next_counter(txn, "welcome_seq")?;
            welcomes
                .insert(
                    (device, seq),
                    encode_welcome(&post.from_device, welcome)?.as_slice(),
                )
                .map_err(storage)?;
            txn.open_table(EXPIRY)
                .map_err(storage)?
                .insert((post.now_ms, EXPIRES_WELCOME, device.as_slice(), seq), ())
                .map_err(storage)?;
        }
    }
    let entry = encode_entry(
        post.epoch,
        post.kind == PostKind::Commit,
        &post.from_device,
        post.now_ms,
        &post.message,
    )?;
    txn.open_table(LOG)
        .map_err(storage)?
        .insert((post.group_id.as_slice(), next_seq), entry.as_slice())
        .map_err(storage)?;
    txn.open_table(EXPIRY)
        .map_err(storage)?
        .insert(
            (post.now_ms, EXPIRES_LOG, post.group_id.as_slice(), next_seq),
            (),
        )
        .map_err(storage)?;
    groups
        .insert(
            post.group_id.as_slice(),
            (epoch_after, next_seq + 1, members_after.as_slice()),
        )
        .map_err(storage)?;
    Ok(Ok(Posted {
        devices: devices_of_both(&members_before, &members_after),
        seq: next_seq,
        index: next_seq,
        epoch: epoch_after,
    }))
}

#[tonic::async_trait]
impl GroupStore for RedbGroups {
    async fn publish_device(&self, device: PublishedDevice) -> Result<u32, Error> {
        self.run(move |db, limits| {
            let txn = db.begin_write().map_err(storage)?;
            let count = {
                let mut devices = txn.open_table(DEVICES).map_err(storage)?;
                let mut by_name = txn.open_table(NAME_DEVICES).map_err(storage)?;
                if txn
                    .open_table(REMOVED_DEVICES)
                    .map_err(storage)?
                    .get(&device.device_id)
                    .map_err(storage)?
                    .is_some()
                {
                    return Ok(Err(Refusal::PermissionDenied(format!(
                        "device {} was removed by its owner and cannot be published again; make a new device",
                        device_id_hex(&device.device_id)
                    ))));
                }
                let taken = devices
                    .get(&device.device_id)
                    .map_err(storage)?
                    .is_some_and(|owner| owner.value().0 != device.name);
                if taken {
                    return Ok(Err(Refusal::AlreadyExists(format!(
                        "device {} belongs to another name",
                        device_id_hex(&device.device_id)
                    ))));
                }
                let name = device.name.as_str();
                let mut count = by_name
                    .range((name, &[0u8; DEVICE_ID_LEN])..=(name, &[0xffu8; DEVICE_ID_LEN]))
                    .map_err(storage)?
                    .count();
                if by_name.get((name, &device.device_id)).map_err(storage)?.is_none() {
                    if count >= limits.max_devices_per_name {
                        return Ok(Err(Refusal::ResourceExhausted(format!(
                            "{name} has {count} devices, the most one name may publish; remove one first"
                        ))));
                    }
                    count += 1;
                }
                devices
                    .insert(&device.device_id, (name, device.certificate.as_slice()))
                    .map_err(storage)?;
                by_name.insert((name, &device.device_id), ()).map_err(storage)?;
                count
            };
            txn.commit().map_err(storage)?;
            Ok(Ok(u32::try_from(count).unwrap_or(u32::MAX)))
        })
        .await
    }

    async fn device_owner(&self, device_id: DeviceId) -> Result<Option<String>, Error> {
        self.run(move |db, _| {
            let txn = db.begin_read().map_err(storage)?;
            let devices = txn.open_table(DEVICES).map_err(storage)?;
            let owner = devices
                .get(&device_id)
                .map_err(storage)?
                .map(|v| v.value().0.to_string());
            Ok(Ok(owner))
        })
        .await
    }

    async fn devices(&self, name: &str) -> Result<Vec<PublishedDevice>, Error> {
        let name = name.to_string();
        self.run(move |db, _| {
            let txn = db.begin_read().map_err(storage)?;
            let by_name = txn.open_table(NAME_DEVICES).map_err(storage)?;
            let devices = txn.open_table(DEVICES).map_err(storage)?;
            let mut found = Vec::new();
            let range = by_name
                .range(
                    (name.as_str(), &[0u8; DEVICE_ID_LEN])
                        ..=(name.as_str(), &[0xffu8; DEVICE_ID_LEN]),
                )
                .map_err(storage)?;
            for item in range {
                let (key, _) = item.map_err(storage)?;
                let device_id = *key.value().1;
                if let Some(record) = devices.get(&device_id).map_err(storage)? {
                    found.push(PublishedDevice {
                        name: name.clone(),
                        device_id,
                        certificate: record.value().1.to_vec(),
                    });
                }
            }
            Ok(Ok(found))
        })
        .await
    }

    async fn remove_device(&self, name: &str, device_id: DeviceId) -> Result<bool, Error> {
        let name = name.to_string();
        self.run(move |db, _| {
            let txn = db.begin_write().map_err(storage)?;
            let removed = {
                let mut devices = txn.open_table(DEVICES).map_err(storage)?;
                let owned = devices
                    .get(&device_id)
                    .map_err(storage)?
                    .is_some_and(|v| v.value().0 == name);
                if owned {
                    devices.remove(&device_id).map_err(storage)?;
                    txn.open_table(REMOVED_DEVICES)
                        .map_err(storage)?
                        .insert(&device_id, svs_common::time::now_ms())
                        .map_err(storage)?;
                    txn.open_table(NAME_DEVICES)
                        .map_err(storage)?
                        .remove((name.as_str(), &device_id))
                        .map_err(storage)?;
                    txn.open_table(KEY_PACKAGES)
                        .map_err(storage)?
                        .retain_in((&device_id, 0)..=(&device_id, u64::MAX), |_, _| false)
                        .map_err(storage)?;
                    txn.open_table(LAST_RESORT)
                        .map_err(storage)?
                        .remove(&device_id)
                        .map_err(storage)?;
                    txn.open_table(WELCOMES)
                        .map_err(storage)?
                        .retain_in((&device_id, 0)..=(&device_id, u64::MAX), |_, _| false)
                        .map_err(storage)?;
                }
                owned
            };
            txn.commit().map_err(storage)?;
            Ok(Ok(removed))
        })
        .await
    }

    async fn add_key_packages(
        &self,
        device_id: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<u32, Error> {
        self.run(move |db, limits| {
            let txn = db.begin_write().map_err(storage)?;
            let held = {
                let mut table = txn.open_table(KEY_PACKAGES).map_err(storage)?;
                let range = (&device_id, 0)..=(&device_id, u64::MAX);
                let held = table.range(range.clone()).map_err(storage)?.count();
                if held + packages.len() > limits.max_key_packages_per_device {
                    return Ok(Err(Refusal::ResourceExhausted(format!(
                        "the device holds {held} key packages; with {} more it would pass the limit of {}",
                        packages.len(),
                        limits.max_key_packages_per_device
                    ))));
                }
                let next = table
                    .range(range)
                    .map_err(storage)?
                    .next_back()
                    .transpose()
                    .map_err(storage)?
                    .map_or(0, |(k, _)| k.value().1 + 1);
                for (n, package) in (next..).zip(&packages) {
                    table.insert((&device_id, n), package.as_slice()).map_err(storage)?;
                }
                if let Some(last_resort) = &last_resort {
                    txn.open_table(LAST_RESORT)
                        .map_err(storage)?
                        .insert(&device_id, last_resort.as_slice())
                        .map_err(storage)?;
                }
                held + packages.len()
            };
            txn.commit().map_err(storage)?;
            Ok(Ok(u32::try_from(held).unwrap_or(u32::MAX)))
        })
        .await
    }

    async fn claim_key_package(
        &self,
        device_id: DeviceId,
    ) -> Result<Option<(Vec<u8>, bool)>, Error> {
        self.run(move |db, _| {
            let txn = db.begin_write().map_err(storage)?;
            let claimed = {
                let mut table = txn.open_table(KEY_PACKAGES).map_err(storage)?;
                let first = table
                    .range((&device_id, 0)..=(&device_id, u64::MAX))
                    .map_err(storage)?
                    .next()
                    .transpose()
                    .map_err(storage)?
                    .map(|(k, v)| (k.value().1, v.value().to_vec()));
                match first {
                    Some((n, package)) => {
                        table.remove((&device_id, n)).map_err(storage)?;
                        Some((package, false))
                    }
                    None => txn
                        .open_table(LAST_RESORT)
                        .map_err(storage)?
                        .get(&device_id)
                        .map_err(storage)?
                        .map(|v| (v.value().to_vec(), true)),
                }
            };
            txn.commit().map_err(storage)?;
            Ok(Ok(claimed))
        })
        .await
    }

    async fn post(&self, post: Post) -> Result<Posted, Error> {
        self.run(move |db, limits| {
            let txn = db.begin_write().map_err(storage)?;
            let posted = apply_post(&txn, &post, limits)?;
            if posted.is_ok() {
                txn.commit().map_err(storage)?;
            }
            Ok(posted)
        })
        .await
    }

    async fn is_member(
        &self,
        group_id: Vec<u8>,
        device_id: DeviceId,
    ) -> Result<Option<bool>, Error> {
        self.run(move |db, _| {
            let txn = db.begin_read().map_err(storage)?;
            let groups = txn.open_table(GROUPS).map_err(storage)?;
            let member = groups
                .get(group_id.as_slice())
                .map_err(storage)?
                .map(|v| contains(v.value().2, &device_id));
            Ok(Ok(member))
        })
        .await
    }

    async fn read(&self, group_id: Vec<u8>, after_seq: u64) -> Result<LogPage, Error> {
        self.run(move |db, limits| {
            let txn = db.begin_read().map_err(storage)?;
            let groups = txn.open_table(GROUPS).map_err(storage)?;
            let Some((epoch, next_seq)) = groups
                .get(group_id.as_slice())
                .map_err(storage)?
                .map(|v| (v.value().0, v.value().1))
            else {
                return Ok(Err(Refusal::NotFound(format!(
                    "no group {}",
                    hex::encode(&group_id)
                ))));
            };
            let log = txn.open_table(LOG).map_err(storage)?;
            let first_seq = log
                .range((group_id.as_slice(), 0)..=(group_id.as_slice(), u64::MAX))
                .map_err(storage)?
                .next()
                .transpose()
                .map_err(storage)?
                .map_or(next_seq, |(k, _)| k.value().1);
            let mut entries = Vec::new();
            let mut bytes = 0;
            let mut more = false;
            let start = after_seq.saturating_add(1);
            for item in log
                .range((group_id.as_slice(), start)..=(group_id.as_slice(), u64::MAX))
                .map_err(storage)?
            {
                let (key, value) = item.map_err(storage)?;
                if !entries.is_empty() && bytes + value.value().len() > limits.max_fetch_bytes {
                    more = true;
                    break;
                }
                bytes += value.value().len();
                entries.push(decode_entry(key.value().1, value.value())?);
            }
            Ok(Ok(LogPage {
                entries,
                more,
                first_seq,
                first_index: first_seq,
                epoch,
            }))
        })
        .await
    }

    async fn welcomes(&self, device_id: DeviceId) -> Result<Vec<StoredWelcome>, Error> {
        self.run(move |db, _| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(WELCOMES).map_err(storage)?;
            let mut found = Vec::new();
            for item in table
                .range((&device_id, 0)..=(&device_id, u64::MAX))
                .map_err(storage)?
            {
                let (key, value) = item.map_err(storage)?;
                found.push(decode_welcome(key.value().1, value.value())?);
            }
            Ok(Ok(found))
        })
        .await
    }

    async fn ack_welcomes(&self, device_id: DeviceId, up_to_seq: u64) -> Result<u32, Error> {
        self.run(move |db, _| {
            let txn = db.begin_write().map_err(storage)?;
            let mut count = 0u32;
            {
                let mut table = txn.open_table(WELCOMES).map_err(storage)?;
                table
                    .retain_in((&device_id, 0)..=(&device_id, up_to_seq), |_, _| {
                        count += 1;
                        false
                    })
                    .map_err(storage)?;
            }
            txn.commit().map_err(storage)?;
            Ok(Ok(count))
        })
        .await
    }

    async fn expire(&self, before_ms: u64) -> Result<u64, Error> {
        self.run(move |db, _| {
            let mut expired = 0u64;
            loop {
                let txn = db.begin_write().map_err(storage)?;
                let batch = {
                    let mut expiry = txn.open_table(EXPIRY).map_err(storage)?;
                    let mut log = txn.open_table(LOG).map_err(storage)?;
                    let mut welcomes = txn.open_table(WELCOMES).map_err(storage)?;
                    let due: Vec<(u64, u8, Vec<u8>, u64)> = expiry
                        .range((0, 0, &[][..], 0)..(before_ms, 0, &[][..], 0))
                        .map_err(storage)?
                        .take(EXPIRE_BATCH)
                        .map(|item| {
                            item.map(|(k, _)| {
                                let (at, kind, key, seq) = k.value();
                                (at, kind, key.to_vec(), seq)
                            })
                        })
                        .collect::<Result<_, _>>()
                        .map_err(storage)?;
                    for (at, kind, key, seq) in &due {
                        expiry
                            .remove((*at, *kind, key.as_slice(), *seq))
                            .map_err(storage)?;
                        if *kind == EXPIRES_LOG {
                            log.remove((key.as_slice(), *seq)).map_err(storage)?;
                        } else if let Ok(device) = <&[u8; DEVICE_ID_LEN]>::try_from(key.as_slice())
                        {
                            welcomes.remove((device, *seq)).map_err(storage)?;
                        }
                    }
                    due.len()
                };
                txn.commit().map_err(storage)?;
                expired += batch as u64;
                if batch < EXPIRE_BATCH {
                    return Ok(Ok(expired));
                }
            }
        })
        .await
    }
}
