//! Rooms on MLS: this device's groups, kept in step with the directory's delivery service.
//! `Rooms::open` takes the device's lock (one process at a time changes its MLS state), makes
//! and publishes the device on first use and keeps key packages on the directory; then rooms
//! are created, joined (from Welcomes), read and written. Every member device is checked against
//! the identity key pinned for its person before anything it says is shown.

mod body;
mod index;

pub use body::Body;
pub use index::{MAX_ROOM_NAME_BYTES, Room, RoomIndex, check_room_name};

use crate::error::CliError;
use crate::home::Home;
use crate::known_peers::PinCheck;
use crate::session::Session;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use svs_common::proto::directory::*;
use svs_mls::{Commit, Device, DeviceCertificate, Event, MemberDevice};

/// When this device gives itself fresh keys in a room (a commit updating its leaf): so a copy
/// of its state taken now stops reading that room after the next update (forward secrecy and
/// healing after a compromise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRefresh {
    /// At least this often.
    pub every: Duration,
    /// And after this many messages sent.
    pub after_messages: u64,
}

impl Default for KeyRefresh {
    fn default() -> Self {
        Self {
            every: DEFAULT_UPDATE_EVERY,
            after_messages: DEFAULT_UPDATE_AFTER_MESSAGES,
        }
    }
}

/// `KeyRefresh::every` unless told otherwise: a day.
pub const DEFAULT_UPDATE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// `KeyRefresh::after_messages` unless told otherwise.
pub const DEFAULT_UPDATE_AFTER_MESSAGES: u64 = 100;

/// Key packages kept on the directory for this device (topped up when fewer are left).
pub const KEY_PACKAGES_KEPT: u32 = 20;
/// Times a commit or message is made again after another commit took the epoch.
const ATTEMPTS: usize = 5;
/// How long to wait for another `svs` of this name to finish with the device.
const LOCK_WAIT: Duration = Duration::from_secs(20);

/// Something that happened in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A line someone wrote.
    Message {
        room: String,
        from: MemberDevice,
        text: String,
    },
    /// This device was added to a room.
    Joined { room: String, by: MemberDevice },
    /// Devices were added or removed.
    Members {
        room: String,
        by: MemberDevice,
        added: Vec<MemberDevice>,
        removed: Vec<MemberDevice>,
    },
    /// A room got its name.
    Named { label: String, name: String },
    /// This device was removed: it reads nothing more there.
    RemovedMe {
        room: String,
        by: Option<MemberDevice>,
    },
    /// Something a person must know (a device not certified by its person's pinned key, a
    /// message that could not be read, entries that expired unread).
    Warning { room: String, text: String },
}

impl RoomEvent {
    /// One line for a person.
    pub fn line(&self) -> String {
        match self {
            RoomEvent::Message { room, from, text } => {
                format!("[{room}] {}: {}", from.name, crate::text::continued(text))
            }
            RoomEvent::Joined { room, by } => format!("* [{room}] {} added you", by.name),
            RoomEvent::Members {
                room,
                by,
                added,
                removed,
            } => {
                let mut parts = Vec::new();
                if !added.is_empty() {
                    parts.push(format!("added {}", list(added)));
                }
                if !removed.is_empty() {
                    parts.push(format!("removed {}", list(removed)));
                }
                if parts.is_empty() {
                    parts.push("updated their keys".into());
                }
                format!("* [{room}] {} {}", by, parts.join(" and "))
            }
            RoomEvent::Named { label, name } => format!("* [{label}] is called {name}"),
            RoomEvent::RemovedMe { room, by } => match by {
                Some(by) => format!("* [{room}] {} removed this device", by.name),
                None => format!("* [{room}] this device is no longer a member"),
            },
            RoomEvent::Warning { room, text } => {
                format!("! [{room}] {}", crate::text::printable(text))
            }
        }
    }
}

fn list(devices: &[MemberDevice]) -> String {
    devices
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A room's members for `svs room list`.
#[derive(Debug, Clone)]
pub struct RoomInfo {
    pub label: String,
    pub members: Vec<MemberDevice>,
    pub epoch: u64,
}

/// The exclusive lock on a name's MLS state, released when dropped.
#[derive(Debug)]
struct DeviceLock {
    _file: std::fs::File,
}

async fn lock_device(home: &Home, name: &str) -> Result<DeviceLock, CliError> {
    let path = home.device_lock_path(name);
    crate::error::blocking(move || -> Result<DeviceLock, CliError> {
        if let Some(dir) = path.parent() {
            svs_common::identity::create_private_dir(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(DeviceLock { _file: file }),
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(CliError::Usage(format!(
                        "another svs is using this device's MLS state ({}: {e}); try again when it is done",
                        path.display()
                    )));
                }
            }
        }
    })
    .await?
}

/// This device's rooms, for as long as the lock is held.
#[derive(Debug)]
pub struct Rooms {
    device: Arc<Mutex<Device>>,
    me: MemberDevice,
    index: RoomIndex,
    /// Events seen while catching up before a commit or a send.
    pending: Vec<RoomEvent>,
    refresh: KeyRefresh,
    _lock: DeviceLock,
}

impl Rooms {
    /// Takes the device's lock, makes the device on first use (certified by the identity key),
    /// publishes it and tops up its key packages on the directory.
    pub async fn open(home: &Home, session: &mut Session) -> Result<Self, CliError> {
        let (rooms, created) = Self::load(home, session).await?;
        let certificate = rooms
            .device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .certificate()
            .to_proto();
        session
            .groups()
            .publish_device(PublishDeviceRequest {
                certificate: Some(certificate),
            })
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unimplemented => CliError::Refused(
                    "this directory does not serve rooms (MLS groups): a directory in cluster mode does not yet".into(),
                ),
                _ => CliError::from(status),
            })?;
        rooms.top_up_key_packages(session, created).await?;
        Ok(rooms)
    }

    /// Takes the device's lock and reads its state (making it when there is none: then `true`),
    /// without asking the directory anything: for each round of a long-running reader, which
    /// lets go of the lock in between so other `svs` commands of this name can run.
    pub async fn load(home: &Home, session: &Session) -> Result<(Self, bool), CliError> {
        let lock = lock_device(home, &session.name).await?;
        let path = home.device_path(&session.name);
        let name = svs_common::names::canonical(&session.name);
        let identity = session.identity_key();
        let (device, created) = crate::error::blocking(move || -> Result<_, CliError> {
            if path.exists() {
                Ok((Device::open(&path)?, false))
            } else {
                Ok((
                    Device::create(&path, &identity, &name, svs_common::time::now_ms())?,
                    true,
                ))
            }
        })
        .await??;
        if device.certificate().name != svs_common::names::canonical(&session.name) {
            return Err(CliError::Usage(format!(
                "{} holds a device of {}, not of {}",
                home.device_path(&session.name).display(),
                device.certificate().name,
                session.name
            )));
        }
        let me = device.me();
        let index = RoomIndex::load(&home.rooms_path(&session.name))?;
        Ok((
            Self {
                device: Arc::new(Mutex::new(device)),
                me,
                index,
                pending: Vec::new(),
                refresh: KeyRefresh::default(),
                _lock: lock,
            },
            created,
        ))
    }

    /// Sets when this device refreshes its keys in its rooms.
    pub fn with_refresh(mut self, refresh: KeyRefresh) -> Self {
        self.refresh = refresh;
        self
    }

    /// Keeps the directory's stock of this device's key packages up (others use one each time
    /// they add this device).
    pub async fn refresh_key_packages(&self, session: &mut Session) -> Result<(), CliError> {
        self.top_up_key_packages(session, false).await
    }

    /// Runs `work` on this device on a blocking thread.
    async fn with_device<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Device) -> Result<T, svs_mls::Error> + Send + 'static,
    ) -> Result<T, CliError> {
        let device = self.device.clone();
        Ok(crate::error::blocking(move || {
            let mut device = device.lock().unwrap_or_else(|p| p.into_inner());
            work(&mut device)
        })
        .await??)
    }

    fn device_id(&self) -> Vec<u8> {
        self.me.device_id.to_vec()
    }

    async fn top_up_key_packages(&self, session: &mut Session, new: bool) -> Result<(), CliError> {
        let held = session
            .groups()
            .upload_key_packages(UploadKeyPackagesRequest {
                device_id: self.device_id().into(),
                ..Default::default()
            })
            .await
            .map_err(CliError::from)?
            .into_inner()
            .held;
        if held >= KEY_PACKAGES_KEPT / 2 && !new {
            return Ok(());
        }
        let count = (KEY_PACKAGES_KEPT - held.min(KEY_PACKAGES_KEPT)) as usize;
        let (packages, last_resort) = self
            .with_device(move |d| {
                let last = if new {
                    Some(d.last_resort_key_package()?)
                } else {
                    None
                };
                Ok((d.key_packages(count)?, last))
            })
            .await?;
        session
            .groups()
            .upload_key_packages(UploadKeyPackagesRequest {
                device_id: self.device_id().into(),
                key_packages: packages.into_iter().map(Into::into).collect(),
                last_resort: last_resort.unwrap_or_default().into(),
            })
            .await
            .map_err(CliError::from)?;
        Ok(())
    }

    pub fn index(&self) -> &RoomIndex {
        &self.index
    }

    /// This device.
    pub fn me(&self) -> &MemberDevice {
        &self.me
    }

    fn room(&self, room: &str) -> Result<Room, CliError> {
        self.index.find(room).cloned().ok_or_else(|| {
            CliError::Usage(format!(
                "this device is in no room called {room:?} (`svs room list` shows its rooms)"
            ))
        })
    }

    /// The identity key pinned for each of `names` (pinning on first sight, as messages do);
    /// a changed key is an error naming it.
    async fn identities(
        &self,
        session: &mut Session,
        names: &BTreeSet<String>,
    ) -> Result<Vec<(String, svs_common::rsa::PublicKey)>, CliError> {
        let wanted: Vec<String> = names.iter().cloned().collect();
        let found = session.lookup_keys(&wanted).await?;
        let mut keys = Vec::new();
        for peer in found.peers {
            let canonical = svs_common::names::canonical(&peer.name);
            if let PinCheck::Changed { pinned } =
                session.pins.check(&canonical, &peer.public_key_der)?
            {
                return Err(CliError::KeyChanged {
                    name: canonical,
                    pinned,
                    now: svs_common::identity::fingerprint_hex(
                        &svs_common::identity::fingerprint_der(&peer.public_key_der),
                    ),
                });
            }
            keys.push((
                canonical,
                svs_common::identity::parse_public_key(&peer.public_key_der)?,
            ));
        }
        if let Some(unknown) = found.unknown.first() {
            return Err(CliError::Usage(format!(
                "nobody is registered as {unknown}"
            )));
        }
        Ok(keys)
    }

    /// Problems with `members`: a device whose published certificate is missing, does not
    /// verify under its person's pinned key, or certifies another signature key.
    async fn check_members(
        &self,
        session: &mut Session,
        members: &[(MemberDevice, Vec<u8>)],
    ) -> Result<Vec<String>, CliError> {
        let names: BTreeSet<String> = members.iter().map(|(m, _)| m.name.clone()).collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let identities = match self.identities(session, &names).await {
            Ok(keys) => keys,
            Err(e @ CliError::KeyChanged { .. }) => return Ok(vec![e.to_string()]),
            Err(e) => return Err(e),
        };
        let listed = session
            .groups()
            .list_devices(ListDevicesRequest {
                names: names.iter().cloned().collect(),
            })
            .await
            .map_err(CliError::from)?
            .into_inner()
            .devices;
        let certificates: Vec<DeviceCertificate> = listed
            .iter()
            .filter_map(|c| DeviceCertificate::from_proto(c).ok())
            .collect();
        let mut problems = Vec::new();
        for (member, signature_key) in members {
            let certified = certificates.iter().find(|c| c.device() == *member);
            let key = identities.iter().find(|(n, _)| *n == member.name);
            let ok = match (certified, key) {
                (Some(c), Some((_, key))) => {
                    c.verify(key).is_ok() && c.signature_key == *signature_key
                }
                _ => false,
            };
            if !ok {
                problems.push(format!(
                    "device {member} is NOT certified by the key pinned for {}: do not trust what it says",
                    member.name
                ));
            }
        }
        Ok(problems)
    }

    /// Claims a key package for every device of `names` except this one, each checked against
    /// its person's pinned key.
    async fn claim(
        &self,
        session: &mut Session,
        names: &[String],
    ) -> Result<Vec<(DeviceCertificate, Vec<u8>)>, CliError> {
        let canonical: BTreeSet<String> = names
            .iter()
            .map(|n| {
                svs_common::names::validate(n)?;
                Ok(svs_common::names::canonical(n))
            })
            .collect::<Result<_, svs_common::Error>>()?;
        let identities = self.identities(session, &canonical).await?;
        let claimed = session
            .groups()
            .claim_key_packages(ClaimKeyPackagesRequest {
                names: canonical.iter().cloned().collect(),
            })
            .await
            .map_err(CliError::from)?
            .into_inner();
        let mut out = Vec::new();
        for c in claimed.key_packages {
            let Some(proto) = c.device else { continue };
            let certificate = DeviceCertificate::from_proto(&proto)?;
            if certificate.device() == self.me {
                continue;
            }
            let key = identities
                .iter()
                .find(|(n, _)| *n == certificate.name)
                .map(|(_, k)| k)
                .ok_or_else(|| {
                    CliError::Refused(format!(
                        "the directory sent a device of {}, whom nobody asked for",
                        certificate.name
                    ))
                })?;
            certificate.verify(key)?;
            out.push((certificate, c.key_package.to_vec()));
        }
        let me = &self.me.name;
        let missing: Vec<String> = claimed
            .without_key_packages
            .into_iter()
            .filter(|n| n != me)
            .collect();
        if !missing.is_empty() {
            return Err(CliError::Usage(format!(
                "{} has no MLS device yet: they need to run `svs room list` (or any `svs room` command) once",
                missing.join(", ")
            )));
        }
        Ok(out)
    }

    /// Makes a commit with `make` and posts it; when another commit took the epoch, catches up
    /// and makes it again. Returns the log sequence number it got.
    async fn commit(
        &mut self,
        session: &mut Session,
        room: &Room,
        make: impl Fn(&mut Device, &[u8]) -> Result<Commit, svs_mls::Error>
        + Send
        + Sync
        + Clone
        + 'static,
    ) -> Result<u64, CliError> {
        let group = room.group_id();
        for _ in 0..ATTEMPTS {
            self.catch_up(session, &room.group, None).await?;
            let (make_now, group_now) = (make.clone(), group.clone());
            let commit = self.with_device(move |d| make_now(d, &group_now)).await?;
            let posted = session
                .groups()
                .post_group_message(PostGroupMessageRequest {
                    device_id: self.device_id().into(),
                    message: commit.message.into(),
                    member_devices: commit
                        .members_after
                        .iter()
                        .map(|m| m.device_id.to_vec().into())
                        .collect(),
                    welcome: commit.welcome.unwrap_or_default().into(),
                    welcome_devices: commit
                        .welcome_devices
                        .iter()
                        .map(|d| d.to_vec().into())
                        .collect(),
                })
                .await;
            let group_now = group.clone();
            match posted {
                Ok(posted) => {
                    // Others' messages that landed between the catch-up and this commit are in
                    // the old epoch: read them before applying the commit.
                    let seq = posted.into_inner().seq;
                    self.catch_up(session, &room.group, Some(seq)).await?;
                    self.with_device(move |d| d.commit_accepted(&group_now))
                        .await?;
                    self.advance(&room.group, seq)?;
                    return Ok(seq);
                }
                Err(status) => {
                    self.with_device(move |d| d.commit_lost(&group_now)).await?;
                    if status.code() != tonic::Code::FailedPrecondition {
                        return Err(status.into());
                    }
                }
            }
        }
        Err(CliError::Refused(format!(
            "others kept changing room {} ({ATTEMPTS} attempts); try again",
            room.label()
        )))
    }

    fn advance(&mut self, group: &str, seq: u64) -> Result<(), CliError> {
        if let Some(room) = self.index.by_group_mut(group) {
            room.cursor = room.cursor.max(seq);
        }
        self.index.save()
    }

    /// Posts an application message, catching up and encrypting again when the epoch moved.
    async fn post_body(
        &mut self,
        session: &mut Session,
        room: &Room,
        body: Body,
    ) -> Result<u64, CliError> {
        let group = room.group_id();
        for _ in 0..ATTEMPTS {
            self.catch_up(session, &room.group, None).await?;
            if self.index.by_group_mut(&room.group).is_none() {
                return Err(CliError::Refused(format!(
                    "this device is no longer in room {}",
                    room.label()
                )));
            }
            let (bytes, group_now) = (body.encode(), group.clone());
            let message = self
                .with_device(move |d| d.encrypt(&group_now, &bytes))
                .await?;
            let posted = session
                .groups()
                .post_group_message(PostGroupMessageRequest {
                    device_id: self.device_id().into(),
                    message: message.into(),
                    ..Default::default()
                })
                .await;
            match posted {
                Ok(posted) => {
                    let seq = posted.into_inner().seq;
                    return Ok(seq);
                }
                Err(status) if status.code() == tonic::Code::FailedPrecondition => continue,
                Err(status) => return Err(status.into()),
            }
        }
        Err(CliError::Refused(format!(
            "others kept changing room {} ({ATTEMPTS} attempts); try again",
            room.label()
        )))
    }

    /// Creates a room with every device of `with` (and this person's other devices).
    pub async fn create(
        &mut self,
        session: &mut Session,
        name: &str,
        with: &[String],
    ) -> Result<Vec<MemberDevice>, CliError> {
        check_room_name(name)?;
        if self.index.find(name).is_some() {
            return Err(CliError::Usage(format!(
                "this device is already in a room called {name}"
            )));
        }
        let mut names: Vec<String> = with.to_vec();
        names.push(self.me.name.clone());
        let claimed = self.claim(session, &names).await?;
        let group = self.with_device(|d| d.create_group()).await?;
        let room = Room {
            name: name.to_string(),
            group: hex::encode(&group),
            cursor: 0,
            updated_ms: svs_common::time::now_ms(),
            sent_since_update: 0,
        };
        self.index.insert(room.clone());
        self.index.save()?;
        let devices: Vec<MemberDevice> = claimed.iter().map(|(c, _)| c.device()).collect();
        self.add_claimed(session, &room, claimed).await?;
        Ok(devices)
    }

    async fn add_claimed(
        &mut self,
        session: &mut Session,
        room: &Room,
        claimed: Vec<(DeviceCertificate, Vec<u8>)>,
    ) -> Result<(), CliError> {
        if claimed.is_empty() {
            return Ok(());
        }
        let claimed = Arc::new(claimed);
        self.commit(session, room, move |d, group| d.add(group, &claimed))
            .await?;
        // Devices joining now learn the room's name from the next message.
        let name = self
            .index
            .find(&room.label())
            .map(|r| r.name.clone())
            .unwrap_or_default();
        if !name.is_empty() {
            self.post_body(session, room, Body::RoomName { name })
                .await?;
        }
        Ok(())
    }

    /// Adds every device of `names` to a room.
    pub async fn add(
        &mut self,
        session: &mut Session,
        room: &str,
        names: &[String],
    ) -> Result<Vec<MemberDevice>, CliError> {
        let room = self.room(room)?;
        let present: BTreeSet<MemberDevice> = {
            let group = room.group_id();
            self.with_device(move |d| d.members(&group))
                .await?
                .into_iter()
                .map(|(m, _)| m)
                .collect()
        };
        let claimed: Vec<_> = self
            .claim(session, names)
            .await?
            .into_iter()
            .filter(|(c, _)| !present.contains(&c.device()))
            .collect();
        if claimed.is_empty() {
            return Err(CliError::Usage(format!(
                "every device of {} is in {} already",
                names.join(", "),
                room.label()
            )));
        }
        let devices = claimed.iter().map(|(c, _)| c.device()).collect();
        self.add_claimed(session, &room, claimed).await?;
        Ok(devices)
    }

    /// Removes every device of `name` (or the one device `name/xxxxxxxx`) from a room.
    pub async fn remove(
        &mut self,
        session: &mut Session,
        room: &str,
        who: &str,
    ) -> Result<Vec<MemberDevice>, CliError> {
        let room = self.room(room)?;
        let group = room.group_id();
        let members = self.with_device(move |d| d.members(&group)).await?;
        let gone: Vec<MemberDevice> = members
            .into_iter()
            .map(|(m, _)| m)
            .filter(|m| m.name == svs_common::names::canonical(who) || m.to_string() == who)
            .filter(|m| *m != self.me)
            .collect();
        if gone.is_empty() {
            return Err(CliError::Usage(format!(
                "{who} has no device in {} (other than this one)",
                room.label()
            )));
        }
        let removing = Arc::new(gone.clone());
        self.commit(session, &room, move |d, group| d.remove(group, &removing))
            .await?;
        Ok(gone)
    }

    /// Writes a line in a room.
    pub async fn send(
        &mut self,
        session: &mut Session,
        room: &str,
        text: &str,
    ) -> Result<(), CliError> {
        let room = self.room(room)?;
        self.post_body(
            session,
            &room,
            Body::Text {
                text: text.to_string(),
            },
        )
        .await?;
        if let Some(r) = self.index.by_group_mut(&room.group) {
            r.sent_since_update += 1;
        }
        self.index.save()?;
        self.refresh_keys_if_due(session, &room.group).await
    }

    /// Rooms and their members.
    pub async fn list(&self) -> Result<Vec<RoomInfo>, CliError> {
        let mut out = Vec::new();
        for room in self.index.rooms() {
            let group = room.group_id();
            let (members, epoch) = self
                .with_device(move |d| Ok((d.members(&group)?, d.epoch(&group)?)))
                .await?;
            out.push(RoomInfo {
                label: room.label(),
                members: members.into_iter().map(|(m, _)| m).collect(),
                epoch,
            });
        }
        Ok(out)
    }

    /// Joins rooms whose Welcomes wait, then reads every room's new entries.
    pub async fn sync(&mut self, session: &mut Session) -> Result<Vec<RoomEvent>, CliError> {
        self.accept_welcomes(session).await?;
        let groups: Vec<String> = self.index.rooms().iter().map(|r| r.group.clone()).collect();
        for group in groups {
            self.catch_up(session, &group, None).await?;
            self.refresh_keys_if_due(session, &group).await?;
        }
        Ok(std::mem::take(&mut self.pending))
    }

    /// Commits fresh keys for this device in the room when `KeyRefresh` says it is time.
    async fn refresh_keys_if_due(
        &mut self,
        session: &mut Session,
        group: &str,
    ) -> Result<(), CliError> {
        let Some(room) = self.index.by_group_mut(group).cloned() else {
            return Ok(());
        };
        let age = svs_common::time::now_ms().saturating_sub(room.updated_ms);
        if age < self.refresh.every.as_millis() as u64
            && room.sent_since_update < self.refresh.after_messages
        {
            return Ok(());
        }
        self.commit(session, &room, |d, group| d.update(group))
            .await?;
        if let Some(r) = self.index.by_group_mut(group) {
            r.updated_ms = svs_common::time::now_ms();
            r.sent_since_update = 0;
        }
        self.index.save()
    }

    async fn accept_welcomes(&mut self, session: &mut Session) -> Result<(), CliError> {
        let welcomes = session
            .groups()
            .fetch_welcomes(FetchWelcomesRequest {
                device_id: self.device_id().into(),
            })
            .await
            .map_err(CliError::from)?
            .into_inner()
            .welcomes;
        let Some(last) = welcomes.last().map(|w| w.seq) else {
            return Ok(());
        };
        for welcome in welcomes {
            let bytes = welcome.welcome.to_vec();
            let joined = self
                .with_device(move |d| {
                    let group = d.join(&bytes)?;
                    let members = d.members(&group)?;
                    Ok((group, members))
                })
                .await;
            let (group, members) = match joined {
                Ok(joined) => joined,
                Err(e) => {
                    self.pending.push(RoomEvent::Warning {
                        room: "?".into(),
                        text: format!("could not join a room this device was added to: {e}"),
                    });
                    continue;
                }
            };
            let room = Room {
                name: String::new(),
                group: hex::encode(&group),
                cursor: 0,
                updated_ms: svs_common::time::now_ms(),
                sent_since_update: 0,
            };
            let label = room.label();
            self.index.insert(room);
            let by = members
                .iter()
                .map(|(m, _)| m)
                .find(|m| m.device_id.as_slice() == welcome.from_device.as_ref())
                .cloned()
                .unwrap_or_else(|| MemberDevice {
                    name: "?".into(),
                    device_id: [0; 16],
                });
            self.pending.push(RoomEvent::Joined {
                room: label.clone(),
                by,
            });
            for text in self.check_members(session, &members).await? {
                self.pending.push(RoomEvent::Warning {
                    room: label.clone(),
                    text,
                });
            }
        }
        self.index.save()?;
        session
            .groups()
            .ack_welcomes(AckWelcomesRequest {
                device_id: self.device_id().into(),
                up_to_seq: last,
            })
            .await
            .map_err(CliError::from)?;
        Ok(())
    }

    /// Reads the room's new entries into `pending`; with `until`, only those before it.
    async fn catch_up(
        &mut self,
        session: &mut Session,
        group: &str,
        until: Option<u64>,
    ) -> Result<(), CliError> {
        loop {
            let Some(room) = self.index.by_group_mut(group).cloned() else {
                return Ok(());
            };
            let fetched = session
                .groups()
                .fetch_group(FetchGroupRequest {
                    group_id: room.group_id().into(),
                    device_id: self.device_id().into(),
                    after_seq: room.cursor,
                })
                .await;
            let page = match fetched {
                Ok(page) => page.into_inner(),
                // A group this device just made: nothing on the directory until its first commit.
                Err(status) if status.code() == tonic::Code::NotFound => return Ok(()),
                Err(status) if status.code() == tonic::Code::PermissionDenied => {
                    self.index.remove(group);
                    self.index.save()?;
                    self.pending.push(RoomEvent::RemovedMe {
                        room: room.label(),
                        by: None,
                    });
                    return Ok(());
                }
                Err(status) => return Err(status.into()),
            };
            if page.first_seq > room.cursor + 1 && room.cursor > 0 {
                self.pending.push(RoomEvent::Warning {
                    room: room.label(),
                    text: format!(
                        "entries {} to {} expired before this device read them; ask a member to remove and add it again",
                        room.cursor + 1,
                        page.first_seq - 1
                    ),
                });
            }
            // The directory is not trusted to page honestly: entries at or before the cursor
            // are not processed again, and a page that moves nothing on ends the round.
            let mut progressed = false;
            for entry in &page.entries {
                let cursor = self
                    .index
                    .by_group_mut(group)
                    .map_or(u64::MAX, |r| r.cursor);
                if entry.seq <= cursor {
                    continue;
                }
                if until.is_some_and(|until| entry.seq >= until) {
                    self.index.save()?;
                    return Ok(());
                }
                progressed = true;
                self.handle_entry(session, &room, entry).await?;
                if self.index.by_group_mut(group).is_none() {
                    return Ok(());
                }
            }
            self.index.save()?;
            if !page.more || !progressed {
                return Ok(());
            }
        }
    }

    async fn handle_entry(
        &mut self,
        session: &mut Session,
        room: &Room,
        entry: &GroupEntry,
    ) -> Result<(), CliError> {
        if let Some(r) = self.index.by_group_mut(&room.group) {
            r.cursor = r.cursor.max(entry.seq);
        }
        let group = room.group_id();
        let own = entry.from_device.as_ref() == self.me.device_id.as_slice();
        let epoch = {
            let group = group.clone();
            self.with_device(move |d| d.epoch(&group)).await?
        };
        if own || entry.epoch < epoch {
            return Ok(());
        }
        let message = entry.message.to_vec();
        let processed = self.with_device(move |d| d.process(&group, &message)).await;
        let label = self
            .index
            .by_group_mut(&room.group)
            .map(|r| r.label())
            .unwrap_or_else(|| room.label());
        match processed {
            Ok(Event::Message { from, body }) => match Body::decode(&body) {
                Some(Body::Text { text }) => self.pending.push(RoomEvent::Message {
                    room: label,
                    from,
                    text,
                }),
                Some(Body::RoomName { name }) => {
                    if let Some(named) = self.index.name_room(&room.group, &name) {
                        self.pending.push(RoomEvent::Named { label, name: named });
                    }
                }
                None => self.pending.push(RoomEvent::Warning {
                    room: label,
                    text: format!("{from} sent a message this version of svs cannot read"),
                }),
            },
            Ok(Event::Commit {
                by,
                added,
                removed,
                removed_me,
                ..
            }) => {
                if removed_me {
                    self.index.remove(&room.group);
                    self.index.save()?;
                    self.pending.push(RoomEvent::RemovedMe {
                        room: label,
                        by: Some(by),
                    });
                    return Ok(());
                }
                let problems = self.check_members(session, &added).await?;
                self.pending.push(RoomEvent::Members {
                    room: label.clone(),
                    by,
                    added: added.into_iter().map(|(m, _)| m).collect(),
                    removed,
                });
                for text in problems {
                    self.pending.push(RoomEvent::Warning {
                        room: label.clone(),
                        text,
                    });
                }
            }
            Err(e) => self.pending.push(RoomEvent::Warning {
                room: label,
                text: format!("could not read entry {}: {e}", entry.seq),
            }),
        }
        Ok(())
    }
}
