//! The gRPC face of the delivery service: checks what it can without the store (sizes, MLS
//! framing, certificates, key packages), resolves the caller's session and device, and calls
//! the `GroupStore`.

use super::store::{GroupStore, Post, PostKind, PublishedDevice};
use crate::directory::Directory;
use crate::error::Refusal;
use prost::Message as _;
use std::sync::Arc;
use svs_common::names;
use svs_common::proto::directory::groups_server::Groups as GroupsApi;
use svs_common::proto::directory::*;
use svs_mls::framing::{self, Kind};
use svs_mls::{DEVICE_ID_LEN, DeviceId, device_id_hex};
use tonic::{Request, Response, Status};

/// Names one ListDevices or ClaimKeyPackages call may ask for.
pub(crate) const MAX_NAMES_PER_CALL: usize = 64;
/// Key packages one upload may carry.
pub(crate) const MAX_KEY_PACKAGES_PER_UPLOAD: usize = 100;
/// Member devices one commit may list.
pub(crate) const MAX_GROUP_DEVICES: usize = 2048;
/// Longest group id (svs's clients make 16 random bytes; MLS allows more, the service does not
/// keep arbitrary keys).
pub(crate) const MAX_GROUP_ID_BYTES: usize = 64;

fn check_group_id(group_id: &[u8]) -> Result<(), Status> {
    match group_id.len() {
        1..=MAX_GROUP_ID_BYTES => Ok(()),
        n => Err(Status::invalid_argument(format!(
            "a group id is 1 to {MAX_GROUP_ID_BYTES} bytes, not {n}"
        ))),
    }
}

/// Implements `svs.directory.v1.Groups`.
#[derive(Debug)]
pub(crate) struct GroupsService {
    directory: Arc<Directory>,
    store: Arc<dyn GroupStore>,
    /// Device → owner name, for group activity hints (a device id never changes owner).
    owners: std::sync::Mutex<std::collections::HashMap<DeviceId, String>>,
    /// `--max-group-message-bytes`: longest commit, Welcome or application message.
    max_message_bytes: usize,
}

fn device_id(bytes: &[u8], field: &str) -> Result<DeviceId, Status> {
    bytes
        .try_into()
        .map_err(|_| Status::invalid_argument(format!("{field} must be {DEVICE_ID_LEN} bytes")))
}

fn mls_refusal(e: svs_mls::Error) -> Status {
    match e {
        svs_mls::Error::Common(e) => svs_server::status::from_common(e, "directory service"),
        other => Status::invalid_argument(svs_common::error::with_causes(&other)),
    }
}

/// Owners remembered at most (then the memory starts again).
const MAX_OWNERS_REMEMBERED: usize = 65_536;

impl GroupsService {
    /// The names owning `devices` (canonical, each once): whom a group's activity concerns.
    async fn owners_of(&self, devices: &[DeviceId]) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for device in devices {
            let known = self
                .owners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(device)
                .cloned();
            let owner = match known {
                Some(owner) => Some(owner),
                None => match self.store.device_owner(*device).await {
                    Ok(Some(owner)) => {
                        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
                        if owners.len() >= MAX_OWNERS_REMEMBERED {
                            owners.clear();
                        }
                        owners.insert(*device, owner.clone());
                        Some(owner)
                    }
                    // A removed device or a failed lookup: no hint (clients poll as well).
                    _ => None,
                },
            };
            if let Some(owner) = owner
                && !names.contains(&owner)
            {
                names.push(owner);
            }
        }
        names
    }

    pub(crate) fn new(
        directory: Arc<Directory>,
        store: Arc<dyn GroupStore>,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            directory,
            store,
            owners: std::sync::Mutex::new(std::collections::HashMap::new()),
            max_message_bytes,
        }
    }

    /// The caller's canonical name, from its session.
    fn caller<T>(&self, request: &Request<T>) -> Result<String, Status> {
        Ok(crate::service::session(&self.directory, request)?.canonical)
    }

    /// Checks that `device` is one of `name`'s published devices.
    async fn owned(&self, name: &str, device: DeviceId) -> Result<(), Status> {
        match self.store.device_owner(device).await? {
            Some(owner) if owner == name => Ok(()),
            _ => Err(Refusal::PermissionDenied(format!(
                "{name} has no published device {}",
                device_id_hex(&device)
            ))
            .into()),
        }
    }

    fn check_size(&self, field: &str, len: usize) -> Result<(), Status> {
        if len > self.max_message_bytes {
            return Err(Status::resource_exhausted(format!(
                "{field} is {len} bytes; at most {} (--max-group-message-bytes)",
                self.max_message_bytes
            )));
        }
        Ok(())
    }

    async fn certificate_of(
        &self,
        name: &str,
        device: DeviceId,
    ) -> Result<svs_mls::DeviceCertificate, Status> {
        let published = self
            .store
            .devices(name)
            .await?
            .into_iter()
            .find(|d| d.device_id == device)
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "{name} has no published device {}",
                    device_id_hex(&device)
                ))
            })?;
        decode_certificate(&published.certificate)
    }
}

/// One-time key packages, and the last-resort one if sent.
type CheckedKeyPackages = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// The request's key packages once each is checked against the device's certificate: one-time
/// ones without the last_resort extension, the last-resort one with it.
fn check_key_packages(
    certificate: &svs_mls::DeviceCertificate,
    request: &UploadKeyPackagesRequest,
) -> Result<CheckedKeyPackages, Status> {
    let mut packages = Vec::with_capacity(request.key_packages.len());
    for package in &request.key_packages {
        if svs_mls::key_package::check(certificate, package).map_err(mls_refusal)? {
            return Err(Status::invalid_argument(
                "a last-resort key package goes in last_resort, not key_packages",
            ));
        }
        packages.push(package.to_vec());
    }
    if request.last_resort.is_empty() {
        return Ok((packages, None));
    }
    if !svs_mls::key_package::check(certificate, &request.last_resort).map_err(mls_refusal)? {
        return Err(Status::invalid_argument(
            "last_resort must carry the last_resort extension",
        ));
    }
    Ok((packages, Some(request.last_resort.to_vec())))
}

fn decode_certificate(bytes: &[u8]) -> Result<svs_mls::DeviceCertificate, Status> {
    let proto = DeviceCertificate::decode(bytes)
        .map_err(|e| Status::internal(format!("stored certificate: {e}")))?;
    svs_mls::DeviceCertificate::from_proto(&proto).map_err(mls_refusal)
}

fn canonical_names(wanted: &[String]) -> Result<Vec<String>, Status> {
    if wanted.len() > MAX_NAMES_PER_CALL {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_NAMES_PER_CALL} names per call"
        )));
    }
    wanted
        .iter()
        .map(|name| {
            names::validate(name)
                .map_err(|e| svs_server::status::from_common(e, "directory service"))?;
            Ok(names::canonical(name))
        })
        .collect()
}

#[tonic::async_trait]
impl GroupsApi for GroupsService {
    async fn publish_device(
        &self,
        request: Request<PublishDeviceRequest>,
    ) -> Result<Response<PublishDeviceResponse>, Status> {
        let name = self.caller(&request)?;
        let proto = request
            .into_inner()
            .certificate
            .ok_or_else(|| Status::invalid_argument("certificate is required"))?;
        let certificate = svs_mls::DeviceCertificate::from_proto(&proto).map_err(mls_refusal)?;
        if certificate.name != name {
            return Err(Status::permission_denied(format!(
                "the certificate is for {:?}; this session is {name}",
                certificate.name
            )));
        }
        let binding =
            self.directory.relay.binding(&name).await?.ok_or_else(|| {
                Status::failed_precondition(format!("{name} is not bound to a key"))
            })?;
        let identity = svs_common::identity::parse_public_key(&binding.key_der)
            .map_err(|e| svs_server::status::from_common(e, "directory service"))?;
        certificate.verify(&identity).map_err(mls_refusal)?;
        let devices = self
            .store
            .publish_device(PublishedDevice {
                name,
                device_id: certificate.device_id,
                certificate: certificate.to_proto().encode_to_vec(),
            })
            .await?;
        Ok(Response::new(PublishDeviceResponse { devices }))
    }

    async fn list_devices(
        &self,
        request: Request<ListDevicesRequest>,
    ) -> Result<Response<ListDevicesResponse>, Status> {
        self.caller(&request)?;
        let mut response = ListDevicesResponse::default();
        for name in canonical_names(&request.into_inner().names)? {
            for device in self.store.devices(&name).await? {
                response.devices.push(
                    DeviceCertificate::decode(device.certificate.as_slice())
                        .map_err(|e| Status::internal(format!("stored certificate: {e}")))?,
                );
            }
        }
        Ok(Response::new(response))
    }

    async fn remove_device(
        &self,
        request: Request<RemoveDeviceRequest>,
    ) -> Result<Response<RemoveDeviceResponse>, Status> {
        let name = self.caller(&request)?;
        let device = device_id(&request.into_inner().device_id, "device_id")?;
        let removed = self.store.remove_device(&name, device).await?;
        Ok(Response::new(RemoveDeviceResponse { removed }))
    }

    async fn upload_key_packages(
        &self,
        request: Request<UploadKeyPackagesRequest>,
    ) -> Result<Response<UploadKeyPackagesResponse>, Status> {
        let name = self.caller(&request)?;
        let request = request.into_inner();
        let device = device_id(&request.device_id, "device_id")?;
        if request.key_packages.len() > MAX_KEY_PACKAGES_PER_UPLOAD {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_KEY_PACKAGES_PER_UPLOAD} key packages per upload"
            )));
        }
        let certificate = self.certificate_of(&name, device).await?;
        // Up to 100 signature checks: off the async threads.
        let (packages, last_resort) =
            tokio::task::spawn_blocking(move || check_key_packages(&certificate, &request))
                .await
                .map_err(|e| Status::from(crate::Error::Task(e)))??;
        let held = self
            .store
            .add_key_packages(device, packages, last_resort)
            .await?;
        Ok(Response::new(UploadKeyPackagesResponse { held }))
    }

    async fn claim_key_packages(
        &self,
        request: Request<ClaimKeyPackagesRequest>,
    ) -> Result<Response<ClaimKeyPackagesResponse>, Status> {
        self.caller(&request)?;
        let mut response = ClaimKeyPackagesResponse::default();
        for name in canonical_names(&request.into_inner().names)? {
            let mut found = false;
            for device in self.store.devices(&name).await? {
                if let Some((key_package, last_resort)) =
                    self.store.claim_key_package(device.device_id).await?
                {
                    found = true;
                    response.key_packages.push(ClaimedKeyPackage {
                        device: Some(
                            DeviceCertificate::decode(device.certificate.as_slice()).map_err(
                                |e| Status::internal(format!("stored certificate: {e}")),
                            )?,
                        ),
                        key_package: key_package.into(),
                        last_resort,
                    });
                }
            }
            if !found {
                response.without_key_packages.push(name);
            }
        }
        Ok(Response::new(response))
    }

    async fn post_group_message(
        &self,
        request: Request<PostGroupMessageRequest>,
    ) -> Result<Response<PostGroupMessageResponse>, Status> {
        let name = self.caller(&request)?;
        let request = request.into_inner();
        let from_device = device_id(&request.device_id, "device_id")?;
        self.check_size("message", request.message.len())?;
        self.check_size("welcome", request.welcome.len())?;
        if request.member_devices.len() > MAX_GROUP_DEVICES
            || request.welcome_devices.len() > MAX_GROUP_DEVICES
        {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_GROUP_DEVICES} member_devices and welcome_devices"
            )));
        }
        let framing = framing::read(&request.message).map_err(|_| {
            Status::invalid_argument(
                "message is not an MLSMessage holding a PublicMessage or PrivateMessage",
            )
        })?;
        check_group_id(&framing.group_id)?;
        let kind = match framing.kind {
            Kind::Commit => PostKind::Commit,
            Kind::Application => PostKind::Application,
            // A standalone proposal (svs clients send one to leave a group) is kept like an
            // application message: in the current epoch, from a member; members commit it.
            Kind::Proposal => PostKind::Application,
        };
        let members_after = request
            .member_devices
            .iter()
            .map(|d| device_id(d, "member_devices"))
            .collect::<Result<Vec<_>, _>>()?;
        let welcome = if request.welcome.is_empty() {
            None
        } else {
            if kind != PostKind::Commit || !framing::is_welcome(&request.welcome) {
                return Err(Status::invalid_argument(
                    "welcome must be an MLSMessage holding a Welcome, sent with the commit that adds its devices",
                ));
            }
            let devices = request
                .welcome_devices
                .iter()
                .map(|d| device_id(d, "welcome_devices"))
                .collect::<Result<Vec<_>, _>>()?;
            Some((request.welcome.to_vec(), devices))
        };
        if kind == PostKind::Application && (!members_after.is_empty() || welcome.is_some()) {
            return Err(Status::invalid_argument(
                "member_devices and welcome go only with a commit",
            ));
        }
        self.owned(&name, from_device).await?;
        let group_id = framing.group_id.clone();
        let posted = self
            .store
            .post(Post {
                group_id: framing.group_id,
                epoch: framing.epoch,
                kind,
                from_device,
                message: request.message.to_vec(),
                members_after,
                welcome,
                now_ms: svs_common::time::now_ms(),
            })
            .await?;
        let names = self.owners_of(&posted.devices).await;
        self.directory
            .announce_group_activity(&names, &group_id)
            .await;
        Ok(Response::new(PostGroupMessageResponse {
            seq: posted.seq,
            index: posted.index,
            epoch: posted.epoch,
        }))
    }

    async fn fetch_group(
        &self,
        request: Request<FetchGroupRequest>,
    ) -> Result<Response<FetchGroupResponse>, Status> {
        let name = self.caller(&request)?;
        let request = request.into_inner();
        let device = device_id(&request.device_id, "device_id")?;
        self.owned(&name, device).await?;
        let group_id = request.group_id.to_vec();
        check_group_id(&group_id)?;
        match self.store.is_member(group_id.clone(), device).await? {
            Some(true) => {}
            Some(false) => {
                return Err(Status::permission_denied(format!(
                    "device {} is not a member of group {}",
                    device_id_hex(&device),
                    hex::encode(&group_id)
                )));
            }
            None => {
                return Err(Status::not_found(format!(
                    "no group {} (a group starts with its first commit)",
                    hex::encode(&group_id)
                )));
            }
        }
        let page = self.store.read(group_id, request.after_seq).await?;
        Ok(Response::new(FetchGroupResponse {
            entries: page
                .entries
                .into_iter()
                .map(|e| GroupEntry {
                    seq: e.seq,
                    index: e.index,
                    epoch: e.epoch,
                    commit: e.commit,
                    from_device: e.from_device.to_vec().into(),
                    message: e.message.into(),
                })
                .collect(),
            more: page.more,
            first_seq: page.first_seq,
            first_index: page.first_index,
            epoch: page.epoch,
        }))
    }

    async fn fetch_welcomes(
        &self,
        request: Request<FetchWelcomesRequest>,
    ) -> Result<Response<FetchWelcomesResponse>, Status> {
        let name = self.caller(&request)?;
        let device = device_id(&request.into_inner().device_id, "device_id")?;
        self.owned(&name, device).await?;
        let welcomes = self.store.welcomes(device).await?;
        Ok(Response::new(FetchWelcomesResponse {
            welcomes: welcomes
                .into_iter()
                .map(|w| StoredWelcome {
                    seq: w.seq,
                    welcome: w.welcome.into(),
                    from_device: w.from_device.to_vec().into(),
                })
                .collect(),
        }))
    }

    async fn ack_welcomes(
        &self,
        request: Request<AckWelcomesRequest>,
    ) -> Result<Response<AckWelcomesResponse>, Status> {
        let name = self.caller(&request)?;
        let request = request.into_inner();
        let device = device_id(&request.device_id, "device_id")?;
        self.owned(&name, device).await?;
        let acknowledged = self.store.ack_welcomes(device, request.up_to_seq).await?;
        Ok(Response::new(AckWelcomesResponse { acknowledged }))
    }
}
