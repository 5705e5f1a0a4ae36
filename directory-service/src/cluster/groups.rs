//! `GroupStore` in NATS JetStream, shared by every replica: the MLS delivery service in cluster
//! mode.
//!
//! What lives where (docs/scaling.md has the layout for operators):
//! - `svs_mls` (KV, no expiry): `device.<id hex>` → owner and certificate (or the mark of a
//!   removed device), `name.<name hex>` → the name's device ids, `lastresort.<id hex>` → the
//!   device's last-resort key package, `group.<group id hex>` → the group's epoch, member devices
//!   and the stream sequence of the last log entry they reflect.
//! - `SVS_MLS_LOG` (stream): one subject per group, `svs.mls.log.<group id hex>`. The stream
//!   sequence is the entry's `seq`.
//! - `SVS_MLS_WELCOME` (stream): one subject per device, `svs.mls.welcome.<id hex>`.
//! - `SVS_MLS_KP` (stream): one subject per device, `svs.mls.kp.<id hex>`, one-time key packages.
//!
//! **One commit per epoch.** An entry is appended with `Nats-Expected-Last-Subject-Sequence` set
//! to the sequence of the group's last entry: of two replicas appending in the same state, only
//! one succeeds and the other re-reads and decides again (a commit then finds the epoch moved
//! on: FAILED_PRECONDITION). The group's state in the KV bucket is written after the append and
//! is only a summary of the log: whoever finds entries past the summary (a replica died between
//! the two writes, or lost the race to write it) applies them first, Welcomes included, which
//! is why a commit's entry carries its Welcome too. Per-subject limits of the streams bound the
//! log, the Welcomes and the key packages as `--max-group-log-entries`,
//! `--max-welcomes-per-device` and `--max-key-packages-per-device` say. nats-server before
//! 2.9.21 could accept two such appends at once in a *clustered* (R3) stream (nats-server issue
//! 4320); svs's streams are R1 on one server, where the check is atomic (the concurrent-commit
//! test runs against the installed server).

use super::{Cluster, name_token, nats, timed};
use crate::Error;
use crate::error::Refusal;
use crate::groups::{
    Entry, GroupLimits, GroupStore, LogPage, Post, PostKind, Posted, PublishedDevice,
    StoredWelcome, devices_of_both, next_state,
};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, RawMessageErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;
use svs_common::wire::{Reader, Writer};
use svs_mls::{DEVICE_ID_LEN, DeviceId, device_id_hex};

/// The key-value bucket of devices, names' device lists, last-resort packages and group states.
pub(crate) const MLS_BUCKET: &str = "svs_mls";
/// The stream of group logs.
pub(crate) const LOG_STREAM: &str = "SVS_MLS_LOG";
/// The stream of Welcomes waiting for devices.
pub(crate) const WELCOME_STREAM: &str = "SVS_MLS_WELCOME";
/// The stream of one-time key packages.
pub(crate) const KEY_PACKAGE_STREAM: &str = "SVS_MLS_KP";
/// Largest value in the bucket: a group's state holds 16 bytes per member device.
const MAX_VALUE_BYTES: i32 = 1 << 20;
/// Largest log entry: a message and a Welcome (each at most --max-group-message-bytes) and the
/// member list. NATS refuses payloads over its max_payload (1 MiB by default) before this.
const MAX_ENTRY_BYTES: i32 = 4 << 20;
/// Tries of a compare-and-set before answering UNAVAILABLE (each loss means another change of
/// the same record went through).
const MAX_ATTEMPTS: usize = 64;
/// Entries expired per pass and stream.
const EXPIRE_BATCH: usize = 4096;

/// The delivery service's data in JetStream.
#[derive(Clone)]
pub(crate) struct JetStreamGroups {
    cluster: Cluster,
    kv: kv::Store,
    log: stream::Stream,
    welcomes: stream::Stream,
    key_packages: stream::Stream,
    limits: GroupLimits,
}

impl std::fmt::Debug for JetStreamGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamGroups")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A device as the bucket records it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DeviceRecord {
    Published {
        name: String,
        certificate: Vec<u8>,
    },
    /// Removed by its owner: never published again.
    Removed,
}

impl DeviceRecord {
    fn encode(&self) -> Result<Vec<u8>, Error> {
        Ok(match self {
            Self::Published { name, certificate } => Writer::new("device record")
                .u8(0)
                .short(name.as_bytes())
                .long(certificate)
                .finish()?,
            Self::Removed => Writer::new("device record").u8(1).finish()?,
        })
    }

    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut reader = Reader::new("device record", bytes);
        let record = match reader.u8()? {
            0 => Self::Published {
                name: reader.short_str()?.to_string(),
                certificate: reader.long()?.to_vec(),
            },
            _ => Self::Removed,
        };
        reader.finish()?;
        Ok(record)
    }
}

/// A group's state as of one log entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GroupState {
    epoch: u64,
    /// Stream sequence of the last entry this state reflects.
    last_seq: u64,
    /// Entries the group's log ever had (the index of that last entry).
    count: u64,
    /// Member devices, 16 bytes each.
    members: Vec<u8>,
}

impl GroupState {
    fn encode(&self) -> Result<Vec<u8>, Error> {
        Ok(Writer::new("group state")
            .u64(self.epoch)
            .u64(self.last_seq)
            .u64(self.count)
            .long(&self.members)
            .finish()?)
    }

    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut reader = Reader::new("group state", bytes);
        let state = Self {
            epoch: reader.u64()?,
            last_seq: reader.u64()?,
            count: reader.u64()?,
            members: reader.long()?.to_vec(),
        };
        reader.finish()?;
        Ok(state)
    }

    fn has(&self, device: &DeviceId) -> bool {
        self.members
            .chunks_exact(DEVICE_ID_LEN)
            .any(|member| member == device)
    }

    /// The state once `entry` (stored at `seq`) applies.
    fn after(&self, seq: u64, entry: &StoredEntry) -> Self {
        match &entry.commit {
            Some(commit) => Self {
                epoch: entry.epoch + 1,
                last_seq: seq,
                count: entry.index,
                members: commit.members_after.clone(),
            },
            None => Self {
                epoch: self.epoch,
                last_seq: seq,
                count: entry.index,
                members: self.members.clone(),
            },
        }
    }
}

/// A group's state as the next append must find it.
#[derive(Debug, Clone)]
struct Current {
    state: GroupState,
    /// The subject's last sequence, which the append expects (0: the log holds nothing).
    expected_last: u64,
    /// The summary's revision to write over (`None`: write it new).
    revision: Option<u64>,
}

/// What a commit's entry carries besides the message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredCommit {
    members_after: Vec<u8>,
    /// The Welcome, empty when the commit adds no device.
    welcome: Vec<u8>,
    welcome_devices: Vec<u8>,
}

/// A log entry as stored in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredEntry {
    /// Its place in the group's log: 1, 2, … (stream sequences have gaps).
    index: u64,
    epoch: u64,
    from_device: DeviceId,
    stored_ms: u64,
    message: Vec<u8>,
    commit: Option<StoredCommit>,
}

impl StoredEntry {
    fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut writer = Writer::new("group log entry");
        writer
            .u64(self.index)
            .u64(self.epoch)
            .raw(&self.from_device)
            .u64(self.stored_ms)
            .long(&self.message);
        match &self.commit {
            Some(commit) => writer
                .u8(1)
                .long(&commit.members_after)
                .long(&commit.welcome)
                .long(&commit.welcome_devices),
            None => writer.u8(0),
        };
        Ok(writer.finish()?)
    }

    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut reader = Reader::new("group log entry", bytes);
        let index = reader.u64()?;
        let epoch = reader.u64()?;
        let from_device = reader.array::<DEVICE_ID_LEN>()?;
        let stored_ms = reader.u64()?;
        let message = reader.long()?.to_vec();
        let commit = match reader.u8()? {
            1 => Some(StoredCommit {
                members_after: reader.long()?.to_vec(),
                welcome: reader.long()?.to_vec(),
                welcome_devices: reader.long()?.to_vec(),
            }),
            _ => None,
        };
        reader.finish()?;
        Ok(Self {
            index,
            epoch,
            from_device,
            stored_ms,
            message,
            commit,
        })
    }
}

fn encode_welcome(from: &DeviceId, stored_ms: u64, welcome: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(Writer::new("welcome")
        .raw(from)
        .u64(stored_ms)
        .long(welcome)
        .finish()?)
}

fn decode_welcome(seq: u64, bytes: &[u8]) -> Result<(StoredWelcome, u64), Error> {
    let mut reader = Reader::new("welcome", bytes);
    let from_device = reader.array::<DEVICE_ID_LEN>()?;
    let stored_ms = reader.u64()?;
    let welcome = reader.long()?.to_vec();
    reader.finish()?;
    Ok((
        StoredWelcome {
            seq,
            welcome,
            from_device,
        },
        stored_ms,
    ))
}

fn device_key(device: &DeviceId) -> String {
    format!("device.{}", hex::encode(device))
}

fn name_key(name: &str) -> String {
    format!("name.{}", name_token(name))
}

fn last_resort_key(device: &DeviceId) -> String {
    format!("lastresort.{}", hex::encode(device))
}

fn group_key(group_id: &[u8]) -> String {
    format!("group.{}", hex::encode(group_id))
}

fn log_subject(group_id: &[u8]) -> String {
    format!("svs.mls.log.{}", hex::encode(group_id))
}

fn welcome_subject(device: &DeviceId) -> String {
    format!("svs.mls.welcome.{}", hex::encode(device))
}

fn key_package_subject(device: &DeviceId) -> String {
    format!("svs.mls.kp.{}", hex::encode(device))
}

fn devices_of(bytes: &[u8]) -> impl Iterator<Item = DeviceId> + '_ {
    bytes
        .chunks_exact(DEVICE_ID_LEN)
        .filter_map(|d| DeviceId::try_from(d).ok())
}

/// A value as read, with the revision to compare-and-set against (`None`: no such key).
type Versioned<T> = Option<(T, u64)>;

/// What a compare-and-set decided to write.
enum Write {
    Put(Vec<u8>),
    Keep,
}

fn is_missing(e: &stream::RawMessageError) -> bool {
    matches!(e.kind(), RawMessageErrorKind::NoMessageFound)
        || e.to_string().contains("no message found")
}

fn full(e: &impl std::fmt::Display) -> bool {
    e.to_string().contains("maximum messages per subject")
}

fn busy(what: &str) -> Error {
    Refusal::Unavailable(format!(
        "{what} changed under too many concurrent writers; try again"
    ))
    .into()
}

impl JetStreamGroups {
    /// Opens (or creates, or updates to these limits) the bucket and the three streams.
    pub(crate) async fn open(cluster: &Cluster, limits: GroupLimits) -> Result<Self, Error> {
        let kv = cluster
            .bucket(
                MLS_BUCKET,
                "svs MLS delivery service: devices, last-resort key packages, group states",
                Duration::ZERO,
                MAX_VALUE_BYTES,
            )
            .await?;
        // Expiry passes remove entries at the TTL; max_age is only a backstop should every
        // replica be down for a day.
        let backstop = Duration::from_millis(limits.ttl_ms) + Duration::from_secs(86_400);
        let per_subject = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let log = open_stream(
            cluster,
            stream::Config {
                name: LOG_STREAM.into(),
                description: Some("svs MLS group logs, one subject per group".into()),
                subjects: vec!["svs.mls.log.*".into()],
                max_age: backstop,
                max_messages_per_subject: per_subject(limits.max_log_entries_per_group),
                max_message_size: MAX_ENTRY_BYTES,
                ..stream_defaults()
            },
        )
        .await?;
        let welcomes = open_stream(
            cluster,
            stream::Config {
                name: WELCOME_STREAM.into(),
                description: Some("svs MLS Welcomes waiting, one subject per device".into()),
                subjects: vec!["svs.mls.welcome.*".into()],
                max_age: backstop,
                max_messages_per_subject: per_subject(limits.max_welcomes_per_device as u64),
                max_message_size: MAX_ENTRY_BYTES,
                ..stream_defaults()
            },
        )
        .await?;
        let key_packages = open_stream(
            cluster,
            stream::Config {
                name: KEY_PACKAGE_STREAM.into(),
                description: Some("svs MLS one-time key packages, one subject per device".into()),
                subjects: vec!["svs.mls.kp.*".into()],
                max_messages_per_subject: per_subject(limits.max_key_packages_per_device as u64),
                max_message_size: 64 * 1024,
                ..stream_defaults()
            },
        )
        .await?;
        Ok(Self {
            cluster: cluster.clone(),
            kv,
            log,
            welcomes,
            key_packages,
            limits,
        })
    }

    async fn read_key(&self, key: &str) -> Result<Versioned<Vec<u8>>, Error> {
        let entry = timed("kv_get", self.kv.entry(key))
            .await
            .map_err(|e| nats("reading the MLS bucket", e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| (e.value.to_vec(), e.revision)))
    }

    /// Writes `value` over the version read (`None`: the key must not exist); the new revision,
    /// or `None` when another writer came first.
    async fn write_over(
        &self,
        key: &str,
        value: Vec<u8>,
        read: Option<u64>,
    ) -> Result<Option<u64>, Error> {
        let value = Bytes::from(value);
        match read {
            Some(revision) => {
                match timed("kv_update", self.kv.update(key, value, revision)).await {
                    Ok(revision) => Ok(Some(revision)),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
                    Err(e) => Err(nats("writing the MLS bucket", e)),
                }
            }
            None => match timed("kv_create", self.kv.create(key, value)).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(nats("writing the MLS bucket", e)),
            },
        }
    }

    /// Reads `key`, lets `decide` choose, and writes what it chose only over what was read,
    /// again until no other writer came between. Returns what `decide` returned with its write.
    async fn compare_and_set<T>(
        &self,
        key: &str,
        mut decide: impl FnMut(Option<&[u8]>) -> Result<Result<(Write, T), Refusal>, Error>,
    ) -> Result<T, Error> {
        for _ in 0..MAX_ATTEMPTS {
            let read = self.read_key(key).await?;
            let (write, answer) = decide(read.as_ref().map(|(v, _)| v.as_slice()))??;
            match write {
                Write::Keep => return Ok(answer),
                Write::Put(value) => {
                    if self
                        .write_over(key, value, read.map(|(_, r)| r))
                        .await?
                        .is_some()
                    {
                        return Ok(answer);
                    }
                }
            }
        }
        Err(busy(key))
    }

    async fn device_record(&self, device: &DeviceId) -> Result<Option<DeviceRecord>, Error> {
        match self.read_key(&device_key(device)).await? {
            Some((bytes, _)) => Ok(Some(DeviceRecord::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Messages on `subject` in order from `from_seq`, each with its sequence number.
    async fn next_on(
        &self,
        stream: &stream::Stream,
        subject: &str,
        from_seq: u64,
    ) -> Result<Option<(u64, Bytes)>, Error> {
        let get = stream
            .raw_message_builder()
            .sequence(from_seq.max(1))
            .next_by_subject(subject.to_string())
            .send();
        match timed("get", get).await {
            Ok(message) => Ok(Some((message.sequence, message.payload))),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(nats("reading the MLS streams", e)),
        }
    }

    async fn last_on(&self, stream: &stream::Stream, subject: &str) -> Result<Option<u64>, Error> {
        let get = stream
            .raw_message_builder()
            .last_by_subject(subject.to_string())
            .send();
        match timed("get", get).await {
            Ok(message) => Ok(Some(message.sequence)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(nats("reading the MLS streams", e)),
        }
    }

    async fn count_on(&self, stream: &stream::Stream, subject: &str) -> Result<usize, Error> {
        let mut subjects = timed("info", stream.info_with_subjects(subject))
            .await
            .map_err(|e| nats("counting in the MLS streams", e))?;
        let mut count = 0;
        while let Some(found) = subjects.next().await {
            let (name, n) = found.map_err(|e| nats("counting in the MLS streams", e))?;
            if name == subject {
                count += n;
            }
        }
        Ok(count)
    }

    /// The group's state with every entry the log holds past the stored summary applied (and
    /// the summary brought up to date); `None` when there is no such group.
    async fn current(&self, group_id: &[u8]) -> Result<Option<Current>, Error> {
        let key = group_key(group_id);
        let subject = log_subject(group_id);
        let stored = self.read_key(&key).await?;
        let last = self.last_on(&self.log, &subject).await?;
        let (state, revision) = match stored {
            Some((bytes, revision)) => (GroupState::decode(&bytes)?, Some(revision)),
            // A group's first entry is written before its summary: a replica may have died
            // between the two.
            None if last.is_some() => (GroupState::default(), None),
            None => return Ok(None),
        };
        match last {
            Some(last) if last > state.last_seq => self
                .catch_up(&key, &subject, state, revision)
                .await
                .map(Some),
            last => Ok(Some(Current {
                state,
                expected_last: last.unwrap_or(0),
                revision,
            })),
        }
    }

    /// Applies the entries after `state` (delivering their Welcomes again: duplicates are
    /// dropped by id) and stores the summary.
    async fn catch_up(
        &self,
        key: &str,
        subject: &str,
        mut state: GroupState,
        revision: Option<u64>,
    ) -> Result<Current, Error> {
        while let Some((seq, payload)) =
            self.next_on(&self.log, subject, state.last_seq + 1).await?
        {
            let entry = StoredEntry::decode(&payload)?;
            self.deliver_welcomes(subject, seq, &entry).await;
            state = state.after(seq, &entry);
        }
        // `None`: another replica stored a summary first; the next append finds out which.
        let revision = self.write_over(key, state.encode()?, revision).await?;
        Ok(Current {
            expected_last: state.last_seq,
            state,
            revision,
        })
    }

    /// Puts a commit's Welcome in each new device's queue. A full queue or an outage drops it
    /// with a warning: the commit stands (the device can be added again).
    async fn deliver_welcomes(&self, subject: &str, seq: u64, entry: &StoredEntry) {
        let Some(commit) = &entry.commit else { return };
        if commit.welcome.is_empty() {
            return;
        }
        let Ok(payload) = encode_welcome(&entry.from_device, entry.stored_ms, &commit.welcome)
        else {
            return;
        };
        let payload = Bytes::from(payload);
        for device in devices_of(&commit.welcome_devices) {
            let publish = PublishMessage::build()
                .payload(payload.clone())
                .message_id(format!("{subject}.{seq}.{}", hex::encode(device)));
            let result = async {
                self.cluster
                    .jetstream
                    .send_publish(welcome_subject(&device), publish)
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Err(e) = timed("publish", result).await {
                tracing::warn!(device = %device_id_hex(&device), error = %e, "a Welcome could not be stored");
            }
        }
    }

    /// Checks `post` against the group's state: the new state, or why not.
    async fn decide(
        &self,
        post: &Post,
        state: Option<&GroupState>,
    ) -> Result<Result<GroupState, Refusal>, Error> {
        let now = state.map(|s| (s.epoch, s.members.as_slice()));
        let (epoch, members) = match next_state(post, now) {
            Ok(after) => after,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let after = GroupState {
            epoch,
            last_seq: 0,
            count: state.map_or(0, |s| s.count) + 1,
            members,
        };
        if let Some((_, devices)) = &post.welcome {
            for device in devices {
                if !matches!(
                    self.device_record(device).await?,
                    Some(DeviceRecord::Published { .. })
                ) {
                    return Ok(Err(Refusal::NotFound(format!(
                        "no published device {}",
                        device_id_hex(device)
                    ))));
                }
                let waiting = self
                    .count_on(&self.welcomes, &welcome_subject(device))
                    .await?;
                if waiting >= self.limits.max_welcomes_per_device {
                    return Ok(Err(Refusal::ResourceExhausted(format!(
                        "device {} has {waiting} Welcomes waiting, its limit",
                        device_id_hex(device)
                    ))));
                }
            }
        }
        Ok(Ok(after))
    }

    /// Walks a stream from its oldest message and deletes those stored before `before_ms`.
    async fn expire_stream(
        &self,
        stream: &stream::Stream,
        filter: &str,
        stored_ms: impl Fn(&[u8]) -> Option<u64>,
        before_ms: u64,
    ) -> Result<u64, Error> {
        let mut expired = 0;
        let mut cursor = 1;
        for _ in 0..EXPIRE_BATCH {
            let Some((seq, payload)) = self.next_on(stream, filter, cursor).await? else {
                break;
            };
            // Unreadable entries cannot be served either: they go too.
            if stored_ms(&payload).is_some_and(|at| at >= before_ms) {
                break;
            }
            match timed("delete", stream.delete_message(seq)).await {
                Ok(true) => expired += 1,
                Ok(false) => {}
                Err(e) if e.to_string().contains("no message found") => {}
                Err(e) => return Err(nats("expiring MLS entries", e)),
            }
            cursor = seq + 1;
        }
        Ok(expired)
    }
}

fn stream_defaults() -> stream::Config {
    stream::Config {
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        discard_new_per_subject: true,
        allow_direct: true,
        num_replicas: 1,
        ..Default::default()
    }
}

async fn open_stream(cluster: &Cluster, config: stream::Config) -> Result<stream::Stream, Error> {
    let name = config.name.clone();
    if cluster.jetstream.get_stream(&name).await.is_ok() {
        cluster
            .jetstream
            .update_stream(&config)
            .await
            .map_err(|e| nats(&format!("updating the {name} stream"), e))?;
    } else {
        cluster
            .jetstream
            .create_stream(config)
            .await
            .map_err(|e| nats(&format!("creating the {name} stream"), e))?;
    }
    cluster
        .jetstream
        .get_stream(&name)
        .await
        .map_err(|e| nats(&format!("opening the {name} stream"), e))
}

#[tonic::async_trait]
impl GroupStore for JetStreamGroups {
    async fn publish_device(&self, device: PublishedDevice) -> Result<u32, Error> {
        self.cluster.check_up()?;
        let id_hex = device_id_hex(&device.device_id);
        let record = DeviceRecord::Published {
            name: device.name.clone(),
            certificate: device.certificate.clone(),
        }
        .encode()?;
        // First the device: removed, another name's, or ours (new or re-published).
        let created = self
            .compare_and_set(&device_key(&device.device_id), |found| {
                match found.map(DeviceRecord::decode).transpose()? {
                    Some(DeviceRecord::Removed) => Ok(Err(Refusal::PermissionDenied(format!(
                        "device {id_hex} was removed by its owner and cannot be published again; make a new device"
                    )))),
                    Some(DeviceRecord::Published { name, .. }) if name != device.name => Ok(Err(
                        Refusal::AlreadyExists(format!("device {id_hex} belongs to another name")),
                    )),
                    other => Ok(Ok((Write::Put(record.clone()), other.is_none()))),
                }
            })
            .await?;
        // Then the name's list, within its bound.
        let max = self.limits.max_devices_per_name;
        let listed = self
            .compare_and_set(&name_key(&device.name), |found| {
                let mut list = found.unwrap_or_default().to_vec();
                let count = list.len() / DEVICE_ID_LEN;
                if devices_of(&list).any(|d| d == device.device_id) {
                    return Ok(Ok((Write::Keep, count)));
                }
                if count >= max {
                    return Ok(Err(Refusal::ResourceExhausted(format!(
                        "{} has {count} devices, the most one name may publish; remove one first",
                        device.name
                    ))));
                }
                list.extend_from_slice(&device.device_id);
                Ok(Ok((Write::Put(list), count + 1)))
            })
            .await;
        if listed.is_err() && created {
            // The device was new: it does not stay claimed by a name that could not list it.
            let _ = timed("kv_purge", self.kv.purge(device_key(&device.device_id))).await;
        }
        Ok(u32::try_from(listed?).unwrap_or(u32::MAX))
    }

    async fn device_owner(&self, device_id: DeviceId) -> Result<Option<String>, Error> {
        Ok(match self.device_record(&device_id).await? {
            Some(DeviceRecord::Published { name, .. }) => Some(name),
            _ => None,
        })
    }

    async fn devices(&self, name: &str) -> Result<Vec<PublishedDevice>, Error> {
        let list = self
            .read_key(&name_key(name))
            .await?
            .map(|(list, _)| list)
            .unwrap_or_default();
        let mut ids: Vec<DeviceId> = devices_of(&list).collect();
        ids.sort_unstable();
        let mut found = Vec::new();
        for device_id in ids {
            if let Some(DeviceRecord::Published {
                name: owner,
                certificate,
            }) = self.device_record(&device_id).await?
                && owner == name
            {
                found.push(PublishedDevice {
                    name: name.to_string(),
                    device_id,
                    certificate,
                });
            }
        }
        Ok(found)
    }

    async fn remove_device(&self, name: &str, device_id: DeviceId) -> Result<bool, Error> {
        self.cluster.check_up()?;
        let removed_record = DeviceRecord::Removed.encode()?;
        let owned = self
            .compare_and_set(&device_key(&device_id), |found| {
                match found.map(DeviceRecord::decode).transpose()? {
                    Some(DeviceRecord::Published { name: owner, .. }) if owner == name => {
                        Ok(Ok((Write::Put(removed_record.clone()), true)))
                    }
                    _ => Ok(Ok((Write::Keep, false))),
                }
            })
            .await?;
        if !owned {
            return Ok(false);
        }
        self.compare_and_set(&name_key(name), |found| {
            let list = found.unwrap_or_default();
            let kept: Vec<u8> = devices_of(list)
                .filter(|d| *d != device_id)
                .flat_map(|d| d.into_iter())
                .collect();
            Ok(Ok((Write::Put(kept), ())))
        })
        .await?;
        timed("kv_purge", self.kv.purge(last_resort_key(&device_id)))
            .await
            .map_err(|e| nats("removing the device", e))?;
        for (stream, subject) in [
            (&self.key_packages, key_package_subject(&device_id)),
            (&self.welcomes, welcome_subject(&device_id)),
        ] {
            stream
                .purge()
                .filter(subject)
                .await
                .map_err(|e| nats("removing the device", e))?;
        }
        Ok(true)
    }

    async fn add_key_packages(
        &self,
        device_id: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<u32, Error> {
        self.cluster.check_up()?;
        let subject = key_package_subject(&device_id);
        let held = self.count_on(&self.key_packages, &subject).await?;
        let max = self.limits.max_key_packages_per_device;
        let too_many = |held: usize| {
            Error::from(Refusal::ResourceExhausted(format!(
                "the device holds {held} key packages; with {} more it would pass the limit of {max}",
                packages.len()
            )))
        };
        if held + packages.len() > max {
            return Err(too_many(held));
        }
        for (n, package) in packages.iter().enumerate() {
            let ack = timed("publish", async {
                let pending = self
                    .cluster
                    .jetstream
                    .publish(subject.clone(), Bytes::from(package.clone()))
                    .await
                    .map_err(|e| nats("storing key packages", e))?;
                Ok::<_, Error>(pending.await)
            })
            .await?;
            match ack {
                Ok(_) => {}
                Err(e) if full(&e) => return Err(too_many(held + n)),
                Err(e) => return Err(nats("storing key packages", e)),
            }
        }
        if let Some(last_resort) = last_resort {
            timed(
                "kv_put",
                self.kv
                    .put(last_resort_key(&device_id), Bytes::from(last_resort)),
            )
            .await
            .map_err(|e| nats("storing key packages", e))?;
        }
        Ok(u32::try_from(held + packages.len()).unwrap_or(u32::MAX))
    }

    async fn claim_key_package(
        &self,
        device_id: DeviceId,
    ) -> Result<Option<(Vec<u8>, bool)>, Error> {
        self.cluster.check_up()?;
        let subject = key_package_subject(&device_id);
        for _ in 0..MAX_ATTEMPTS {
            let Some((seq, package)) = self.next_on(&self.key_packages, &subject, 1).await? else {
                return Ok(self
                    .read_key(&last_resort_key(&device_id))
                    .await?
                    .map(|(package, _)| (package, true)));
            };
            // Whoever deletes it has claimed it; the others take the next one.
            match timed("delete", self.key_packages.delete_message(seq)).await {
                Ok(true) => return Ok(Some((package.to_vec(), false))),
                Ok(false) => {}
                Err(e) if e.to_string().contains("no message found") => {}
                Err(e) => return Err(nats("claiming a key package", e)),
            }
        }
        Err(busy("the device's key packages"))
    }

    async fn post(&self, post: Post) -> Result<Posted, Error> {
        self.cluster.check_up()?;
        let key = group_key(&post.group_id);
        let subject = log_subject(&post.group_id);
        let mut entry = StoredEntry {
            index: 0,
            epoch: post.epoch,
            from_device: post.from_device,
            stored_ms: post.now_ms,
            message: post.message.clone(),
            commit: None,
        };
        for _ in 0..MAX_ATTEMPTS {
            let current = self.current(&post.group_id).await?;
            let (state, expected_last, revision) = match &current {
                Some(c) => (Some(&c.state), c.expected_last, c.revision),
                None => (None, 0, None),
            };
            let mut after = self.decide(&post, state).await??;
            entry.index = after.count;
            if post.kind == PostKind::Commit {
                let (welcome, welcome_devices) = post
                    .welcome
                    .as_ref()
                    .map(|(w, d)| (w.clone(), d.concat()))
                    .unwrap_or_default();
                entry.commit = Some(StoredCommit {
                    members_after: after.members.clone(),
                    welcome,
                    welcome_devices,
                });
            }
            let publish = PublishMessage::build()
                .payload(Bytes::from(entry.encode()?))
                .expected_last_subject_sequence(expected_last);
            let ack = timed("publish", async {
                let pending = self
                    .cluster
                    .jetstream
                    .send_publish(subject.clone(), publish)
                    .await
                    .map_err(|e| nats("storing the group message", e))?;
                Ok::<_, Error>(pending.await)
            })
            .await?;
            let seq = match ack {
                Ok(ack) => ack.sequence,
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => continue,
                Err(e) if full(&e) => {
                    return Err(Refusal::ResourceExhausted(format!(
                        "group {}'s log holds {} entries, its limit; entries leave it when they expire",
                        hex::encode(&post.group_id),
                        self.limits.max_log_entries_per_group
                    ))
                    .into());
                }
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Err(Refusal::ResourceExhausted(
                        "the message and its Welcome are larger than NATS takes in one message (its max_payload)".into(),
                    )
                    .into());
                }
                Err(e) => return Err(nats("storing the group message", e)),
            };
            self.deliver_welcomes(&subject, seq, &entry).await;
            after.last_seq = seq;
            // Losing this write means another replica already applied this entry (and maybe
            // more) to the summary.
            self.write_over(&key, after.encode()?, revision).await?;
            return Ok(Posted {
                devices: devices_of_both(state.map_or(&[][..], |s| &s.members), &after.members),
                seq,
                index: after.count,
                epoch: after.epoch,
            });
        }
        Err(busy(&format!("group {}", hex::encode(&post.group_id))))
    }

    async fn is_member(
        &self,
        group_id: Vec<u8>,
        device_id: DeviceId,
    ) -> Result<Option<bool>, Error> {
        Ok(self
            .current(&group_id)
            .await?
            .map(|current| current.state.has(&device_id)))
    }

    async fn read(&self, group_id: Vec<u8>, after_seq: u64) -> Result<LogPage, Error> {
        let Some(Current {
            state,
            expected_last: last,
            ..
        }) = self.current(&group_id).await?
        else {
            return Err(Refusal::NotFound(format!("no group {}", hex::encode(&group_id))).into());
        };
        let subject = log_subject(&group_id);
        let (first_seq, first_index) = match self.next_on(&self.log, &subject, 1).await? {
            Some((seq, payload)) => (seq, StoredEntry::decode(&payload)?.index),
            None => (state.last_seq + 1, state.count + 1),
        };
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        let mut cursor = after_seq.saturating_add(1);
        while cursor <= last {
            let Some((seq, payload)) = self.next_on(&self.log, &subject, cursor).await? else {
                break;
            };
            if seq > last {
                break;
            }
            let stored = StoredEntry::decode(&payload)?;
            if !entries.is_empty() && bytes + stored.message.len() > self.limits.max_fetch_bytes {
                more = true;
                break;
            }
            bytes += stored.message.len();
            entries.push(Entry {
                seq,
                index: stored.index,
                epoch: stored.epoch,
                commit: stored.commit.is_some(),
                from_device: stored.from_device,
                message: stored.message,
            });
            cursor = seq + 1;
        }
        Ok(LogPage {
            entries,
            more,
            first_seq,
            first_index,
            epoch: state.epoch,
        })
    }

    async fn welcomes(&self, device_id: DeviceId) -> Result<Vec<StoredWelcome>, Error> {
        let subject = welcome_subject(&device_id);
        let mut found = Vec::new();
        let mut cursor = 1;
        while found.len() < self.limits.max_welcomes_per_device {
            let Some((seq, payload)) = self.next_on(&self.welcomes, &subject, cursor).await? else {
                break;
            };
            found.push(decode_welcome(seq, &payload)?.0);
            cursor = seq + 1;
        }
        Ok(found)
    }

    async fn ack_welcomes(&self, device_id: DeviceId, up_to_seq: u64) -> Result<u32, Error> {
        self.cluster.check_up()?;
        let purged = self
            .welcomes
            .purge()
            .filter(welcome_subject(&device_id))
            .sequence(up_to_seq.saturating_add(1))
            .await
            .map_err(|e| nats("acknowledging Welcomes", e))?;
        Ok(u32::try_from(purged.purged).unwrap_or(u32::MAX))
    }

    async fn expire(&self, before_ms: u64) -> Result<u64, Error> {
        let log = self
            .expire_stream(
                &self.log,
                "svs.mls.log.*",
                |payload| StoredEntry::decode(payload).ok().map(|e| e.stored_ms),
                before_ms,
            )
            .await?;
        let welcomes = self
            .expire_stream(
                &self.welcomes,
                "svs.mls.welcome.*",
                |payload| decode_welcome(0, payload).ok().map(|(_, at)| at),
                before_ms,
            )
            .await?;
        Ok(log + welcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::conformance;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_jetstream_store_passes_the_groups_suite() {
        let dir = tempfile::tempdir().unwrap();
        let nats = svs_test_support::NatsServer::start(&dir.path().join("nats")).await;
        let options = crate::cluster::mail::tests::options(&nats);
        conformance::check(|| async {
            let cluster = Cluster::connect(&options).await.unwrap();
            Arc::new(
                JetStreamGroups::open(&cluster, conformance::LIMITS)
                    .await
                    .unwrap(),
            ) as Arc<dyn GroupStore>
        })
        .await;
    }
}
