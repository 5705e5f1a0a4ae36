//! Rooms on MLS: this device's groups, kept in step with the directory's delivery service.
//! `Rooms::open` takes the device's lock (one process at a time changes its MLS state), makes
//! and publishes the device on first use and keeps key packages on the directory; then rooms
//! are created, joined (from Welcomes), read and written. Every member device is checked against
//! the identity key pinned for its person before anything it says is shown.

mod body;
mod change;
mod event;
mod feed;
mod index;
mod lock;
mod members;
mod refresh;
mod sync;

pub use body::Body;
pub use event::{RoomEvent, RoomInfo, device_list};
pub use feed::{DEFAULT_ROOMS_POLL_SECS, REFRESH_KEY_PACKAGES, RoomFeed, RoomNews};
pub use index::{MAX_ROOM_NAME_BYTES, Room, RoomIndex, check_room_name};
pub use refresh::{DEFAULT_UPDATE_AFTER_MESSAGES, DEFAULT_UPDATE_EVERY, KeyRefresh};

use lock::{DeviceLock, lock_device};

use crate::error::CliError;
use crate::home::Home;
use crate::known_peers::PinCheck;
use crate::session::Session;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use svs_common::proto::directory::*;
use svs_mls::{Commit, Device, DeviceCertificate, Event, MemberDevice};

/// Key packages kept on the directory for this device (topped up when fewer are left).
pub const KEY_PACKAGES_KEPT: u32 = 20;

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
                    "this directory does not serve rooms (MLS groups): it is older than svs's rooms; upgrade it".into(),
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

    /// Rooms and their members.
    pub async fn list(&self) -> Result<Vec<RoomInfo>, CliError> {
        let mut out = Vec::new();
        for room in self.index.rooms() {
            let group = room.group_id();
            let (members, epoch, authenticator) = self
                .with_device(move |d| {
                    Ok((
                        d.members(&group)?,
                        d.epoch(&group)?,
                        d.epoch_authenticator(&group)?,
                    ))
                })
                .await?;
            out.push(RoomInfo {
                label: room.label(),
                members: members.into_iter().map(|(m, _)| m).collect(),
                epoch,
                code: svs_common::safety::room_code(&authenticator),
            });
        }
        Ok(out)
    }
}
