//! What the delivery service stores, behind one trait so a backend can be swapped.

use crate::Error;
use crate::error::Refusal;
use svs_mls::DeviceId;

/// Bounds on what one name, device or group may make the directory hold. Each is a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupLimits {
    /// Devices one name may publish.
    pub max_devices_per_name: usize,
    /// One-time key packages held per device.
    pub max_key_packages_per_device: usize,
    /// Entries one group's log may hold (they leave it when they expire).
    pub max_log_entries_per_group: u64,
    /// Welcomes waiting for one device.
    pub max_welcomes_per_device: usize,
    /// Bytes of entries one fetch returns at most (at least one entry is always returned).
    pub max_fetch_bytes: usize,
    /// How long log entries and Welcomes are kept, in milliseconds.
    pub ttl_ms: u64,
}

/// Whether a group message is a commit or an application message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PostKind {
    /// Takes the epoch it was made in; the group moves on by one.
    Commit,
    /// Must be made in the group's current epoch.
    Application,
}

/// A message to append to a group's log.
#[derive(Debug, Clone)]
pub(crate) struct Post {
    pub group_id: Vec<u8>,
    pub epoch: u64,
    pub kind: PostKind,
    pub from_device: DeviceId,
    pub message: Vec<u8>,
    /// With a commit: the member devices once it applies.
    pub members_after: Vec<DeviceId>,
    /// With a commit that adds devices: the Welcome and whom it is for.
    pub welcome: Option<(Vec<u8>, Vec<DeviceId>)>,
    pub now_ms: u64,
}

/// Where a posted message landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Posted {
    /// The group's devices before and after it, each once (whom to tell: a removed device
    /// learns it is out by fetching).
    pub devices: Vec<DeviceId>,
    pub seq: u64,
    /// Its place in the group's log: 1, 2, … with no gaps.
    pub index: u64,
    /// The group's epoch after it.
    pub epoch: u64,
}

/// One entry of a group's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub seq: u64,
    /// Its place in the group's log: 1, 2, … with no gaps (`seq` may have them).
    pub index: u64,
    pub epoch: u64,
    pub commit: bool,
    pub from_device: DeviceId,
    pub message: Vec<u8>,
}

/// A page of a group's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogPage {
    pub entries: Vec<Entry>,
    pub more: bool,
    /// The oldest sequence number still held (the next one to be written if none is).
    pub first_seq: u64,
    /// The index of the oldest entry still held (of the next one if none is).
    pub first_index: u64,
    pub epoch: u64,
}

/// A Welcome waiting for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredWelcome {
    pub seq: u64,
    pub welcome: Vec<u8>,
    pub from_device: DeviceId,
}

/// The rules every store applies to a post, from the group's epoch and member devices now (16
/// bytes each; `None`: no such group): the epoch and member devices once it applies, or why
/// not. What needs a store's own data (bounds, published devices, Welcome queues) each store
/// checks beside it, in the same transaction or conditional write as the append.
pub(crate) fn next_state(
    post: &Post,
    now: Option<(u64, &[u8])>,
) -> Result<(u64, Vec<u8>), Refusal> {
    let group_hex = hex::encode(&post.group_id);
    let has = |members: &[u8], device: &DeviceId| {
        members
            .chunks_exact(svs_mls::DEVICE_ID_LEN)
            .any(|m| m == device)
    };
    let (epoch_now, members_now) = match (now, post.kind) {
        (None, PostKind::Commit) if post.epoch == 0 => (0, &[][..]),
        (None, _) => {
            return Err(Refusal::NotFound(format!(
                "no group {group_hex}: a group starts with a commit made in epoch 0"
            )));
        }
        (Some((epoch, members)), _) => {
            if !has(members, &post.from_device) {
                return Err(Refusal::PermissionDenied(format!(
                    "device {} is not a member of group {group_hex}",
                    svs_mls::device_id_hex(&post.from_device)
                )));
            }
            (epoch, members)
        }
    };
    if post.epoch != epoch_now {
        return Err(Refusal::FailedPrecondition(format!(
            "group {group_hex} is at epoch {epoch_now}, the message was made in epoch {}: fetch \
             the group's log, process it, and make the message again",
            post.epoch
        )));
    }
    let after = match post.kind {
        PostKind::Application => (epoch_now, members_now.to_vec()),
        PostKind::Commit if post.members_after.is_empty() => {
            return Err(Refusal::InvalidArgument(
                "a commit needs member_devices: the group's devices once it applies".into(),
            ));
        }
        PostKind::Commit => (epoch_now + 1, post.members_after.concat()),
    };
    if let Some((_, devices)) = &post.welcome
        && let Some(stranger) = devices.iter().find(|d| !has(&after.1, d))
    {
        return Err(Refusal::InvalidArgument(format!(
            "welcome_devices names {}, which is not in member_devices",
            svs_mls::device_id_hex(stranger)
        )));
    }
    Ok(after)
}

/// Devices in `before` and then those of `after` not in it (16-byte ids concatenated).
pub(crate) fn devices_of_both(before: &[u8], after: &[u8]) -> Vec<DeviceId> {
    let mut devices: Vec<DeviceId> = Vec::new();
    for chunk in before
        .chunks_exact(svs_mls::DEVICE_ID_LEN)
        .chain(after.chunks_exact(svs_mls::DEVICE_ID_LEN))
    {
        if let Ok(device) = DeviceId::try_from(chunk)
            && !devices.contains(&device)
        {
            devices.push(device);
        }
    }
    devices
}

/// A published device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishedDevice {
    pub name: String,
    pub device_id: DeviceId,
    /// The `DeviceCertificate` protobuf as published.
    pub certificate: Vec<u8>,
}

/// The delivery service's storage. Refusals come back as `Error::Refused` with the sentence for
/// the caller; the store checks every rule that needs its data in the same transaction as the
/// change (device ownership, membership, the epoch compare-and-set, the bounds).
#[tonic::async_trait]
pub(crate) trait GroupStore: Send + Sync + std::fmt::Debug {
    /// Publishes or re-publishes `device`; returns how many devices its name has.
    async fn publish_device(&self, device: PublishedDevice) -> Result<u32, Error>;
    /// The owner of a device, if it is published.
    async fn device_owner(&self, device_id: DeviceId) -> Result<Option<String>, Error>;
    /// A name's devices.
    async fn devices(&self, name: &str) -> Result<Vec<PublishedDevice>, Error>;
    /// Withdraws `name`'s device with its key packages and Welcomes, for good (it cannot be
    /// published again); false if it had none.
    async fn remove_device(&self, name: &str, device_id: DeviceId) -> Result<bool, Error>;
    /// Adds one-time key packages (and replaces the last-resort one when given); returns how
    /// many one-time packages the device holds.
    async fn add_key_packages(
        &self,
        device_id: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<u32, Error>;
    /// Takes a device's oldest one-time key package, else returns its last-resort one (kept);
    /// the flag says which.
    async fn claim_key_package(
        &self,
        device_id: DeviceId,
    ) -> Result<Option<(Vec<u8>, bool)>, Error>;
    /// Appends to a group's log: a commit only for the group's current epoch (epoch 0 creates
    /// the group), an application message only in the current epoch, and only from a member.
    async fn post(&self, post: Post) -> Result<Posted, Error>;
    /// Whether `device_id` is a member of the group; `None` when there is no such group.
    async fn is_member(
        &self,
        group_id: Vec<u8>,
        device_id: DeviceId,
    ) -> Result<Option<bool>, Error>;
    /// Entries after `after_seq`, up to the fetch byte bound.
    async fn read(&self, group_id: Vec<u8>, after_seq: u64) -> Result<LogPage, Error>;
    /// Welcomes waiting for a device, oldest first.
    async fn welcomes(&self, device_id: DeviceId) -> Result<Vec<StoredWelcome>, Error>;
    /// Deletes a device's Welcomes up to `up_to_seq`; returns how many.
    async fn ack_welcomes(&self, device_id: DeviceId, up_to_seq: u64) -> Result<u32, Error>;
    /// Deletes log entries and Welcomes stored before `before_ms`; returns how many.
    async fn expire(&self, before_ms: u64) -> Result<u64, Error>;
}
