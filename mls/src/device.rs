//! One device's MLS state: its certified signature key, its key packages and its groups, saved
//! to disk after every change (see `state`). Every method does CPU work and file I/O: call it
//! from a blocking thread.

use crate::certificate::{DeviceCertificate, DeviceId, MemberDevice};
use crate::error::mls;
use crate::state::Provider;
use crate::{CIPHERSUITE, Error};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::types::SignatureScheme;
use std::path::{Path, PathBuf};
use svs_common::wire::{Reader, Writer};

/// Most key packages one call makes.
pub const MAX_KEY_PACKAGES_PER_CALL: usize = 100;

/// One device's MLS state.
pub struct Device {
    provider: Provider,
    signer: SignatureKeyPair,
    certificate: DeviceCertificate,
    path: PathBuf,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("device", &self.certificate.device())
            .finish_non_exhaustive()
    }
}

/// A commit this device made, waiting for the delivery service to accept it (then
/// `commit_accepted`) or to report that another commit took the epoch (then `commit_lost`).
#[derive(Debug, Clone)]
pub struct Commit {
    /// The MLSMessage holding the commit.
    pub message: Vec<u8>,
    /// The MLSMessage holding the Welcome, when the commit adds devices.
    pub welcome: Option<Vec<u8>>,
    /// The devices the Welcome is for.
    pub welcome_devices: Vec<DeviceId>,
    /// The group's member devices once the commit applies.
    pub members_after: Vec<MemberDevice>,
    /// The epoch the commit was made in (the group moves to `epoch + 1`).
    pub epoch: u64,
}

/// What a message from a group's log did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member asks to leave: a Remove proposal for its own leaf (MLS lets no member commit its
    /// own removal). Kept until a commit removes it; `commit_leaves` makes that commit.
    Leaving {
        /// The device leaving.
        who: MemberDevice,
    },
    /// An application message.
    Message {
        /// The device that sent it (authenticated by MLS).
        from: MemberDevice,
        /// What it said.
        body: Vec<u8>,
    },
    /// A commit moved the group to `epoch`.
    Commit {
        /// The member that made it.
        by: MemberDevice,
        /// Devices it added, with their MLS signature keys (check them against their
        /// certificates).
        added: Vec<(MemberDevice, Vec<u8>)>,
        /// Devices it removed.
        removed: Vec<MemberDevice>,
        /// The group's new epoch.
        epoch: u64,
        /// True when it removed this device: the group is closed for it.
        removed_me: bool,
    },
}

/// A commit that adds no device, as posted.
fn without_welcome(
    commit: &MlsMessageOut,
    members_after: Vec<MemberDevice>,
    epoch: u64,
) -> Result<Commit, Error> {
    Ok(Commit {
        message: commit.to_bytes().map_err(mls("encoding a commit"))?,
        welcome: None,
        welcome_devices: Vec::new(),
        members_after,
        epoch,
    })
}

fn group_id_hex(group_id: &[u8]) -> String {
    hex::encode(group_id)
}

fn member_of(credential: &Credential) -> Result<MemberDevice, Error> {
    MemberDevice::from_credential_identity(credential.serialized_content())
}

/// Application messages are padded to a multiple of this many bytes (RFC 9420 §6.3.1), so the
/// service and NATS see a message's size only to the nearest bucket.
pub const PADDING_BYTES: usize = 256;

fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .padding_size(PADDING_BYTES)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .padding_size(PADDING_BYTES)
        .build()
}

impl Device {
    /// Makes a new device for `name` whose identity key is `identity`, and saves it to `path`
    /// (which must not exist).
    pub fn create(
        path: &Path,
        identity: &rsa::PrivateKey,
        name: &str,
        now_ms: u64,
    ) -> Result<Self, Error> {
        if path.exists() {
            return Err(svs_common::Error::io(
                format!("creating {}", path.display()),
                std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            )
            .into());
        }
        let provider = Provider::default();
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519)
            .map_err(|e| svs_common::Error::Crypto(format!("{e:?}")))?;
        signer
            .store(provider.storage())
            .map_err(mls("storing the signature key"))?;
        let device_id = svs_common::identity::random::<{ crate::DEVICE_ID_LEN }>()?;
        let certificate =
            DeviceCertificate::sign(identity, name, device_id, signer.public().to_vec(), now_ms)?;
        let device = Self {
            provider,
            signer,
            certificate,
            path: path.to_path_buf(),
        };
        device.save()?;
        Ok(device)
    }

    /// Opens the device saved at `path`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let (record, provider) = Provider::load(path)?;
        let damaged = |detail: String| Error::DamagedState {
            path: path.display().to_string(),
            detail,
        };
        let certificate = read_record(&record).map_err(|e| damaged(e.to_string()))?;
        let signer = SignatureKeyPair::read(
            provider.storage(),
            &certificate.signature_key,
            SignatureScheme::ED25519,
        )
        .ok_or_else(|| damaged("its signature key is missing".into()))?;
        Ok(Self {
            provider,
            signer,
            certificate,
            path: path.to_path_buf(),
        })
    }

    /// The certificate the person's identity gave this device.
    pub fn certificate(&self) -> &DeviceCertificate {
        &self.certificate
    }

    /// This device as group members see it.
    pub fn me(&self) -> MemberDevice {
        self.certificate.device()
    }

    fn save(&self) -> Result<(), Error> {
        self.provider
            .save(&self.path, &write_record(&self.certificate)?)
    }

    fn credential(&self) -> Result<CredentialWithKey, Error> {
        Ok(CredentialWithKey {
            credential: BasicCredential::new(self.me().credential_identity()?).into(),
            signature_key: self.signer.public().into(),
        })
    }

    /// Makes `count` one-time key packages (at most `MAX_KEY_PACKAGES_PER_CALL`), keeping
    /// their private keys until a Welcome uses them.
    pub fn key_packages(&mut self, count: usize) -> Result<Vec<Vec<u8>>, Error> {
        let made = (0..count.min(MAX_KEY_PACKAGES_PER_CALL))
            .map(|_| self.key_package(false))
            .collect::<Result<_, _>>()?;
        self.save()?;
        Ok(made)
    }

    /// Makes a last-resort key package (used when the one-time ones run out).
    pub fn last_resort_key_package(&mut self) -> Result<Vec<u8>, Error> {
        let made = self.key_package(true)?;
        self.save()?;
        Ok(made)
    }

    fn key_package(&self, last_resort: bool) -> Result<Vec<u8>, Error> {
        // A key package's extensions must be among its leaf's capabilities (RFC 9420 §10.1).
        let mut builder = KeyPackage::builder().leaf_node_capabilities(Capabilities::new(
            None,
            None,
            Some(&[ExtensionType::LastResort]),
            None,
            None,
        ));
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(
                CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential()?,
            )
            .map_err(mls("making a key package"))?;
        bundle
            .key_package()
            .tls_serialize_detached()
            .map_err(mls("encoding a key package"))
    }

    /// Starts a group with only this device in it; returns its id (16 random bytes).
    pub fn create_group(&mut self) -> Result<Vec<u8>, Error> {
        let group_id = svs_common::identity::random::<16>()?;
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &create_config(),
            GroupId::from_slice(&group_id),
            self.credential()?,
        )
        .map_err(mls("creating a group"))?;
        drop(group);
        self.save()?;
        Ok(group_id.to_vec())
    }

    fn group(&self, group_id: &[u8]) -> Result<MlsGroup, Error> {
        MlsGroup::load(self.provider.storage(), &GroupId::from_slice(group_id))
            .map_err(mls("loading a group"))?
            .filter(MlsGroup::is_active)
            .ok_or_else(|| Error::UnknownGroup(group_id_hex(group_id)))
    }

    /// The group's member devices, with their MLS signature keys.
    pub fn members(&self, group_id: &[u8]) -> Result<Vec<(MemberDevice, Vec<u8>)>, Error> {
        self.group(group_id)?
            .members()
            .map(|m| Ok((member_of(&m.credential)?, m.signature_key)))
            .collect()
    }

    /// The group's current epoch.
    pub fn epoch(&self, group_id: &[u8]) -> Result<u64, Error> {
        Ok(self.group(group_id)?.epoch().as_u64())
    }

    /// A value every member of the group computes alike in this epoch (to compare out of band).
    pub fn epoch_authenticator(&self, group_id: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self
            .group(group_id)?
            .epoch_authenticator()
            .as_slice()
            .to_vec())
    }

    /// Whether this device has a commit waiting for the delivery service's answer.
    pub fn has_pending_commit(&self, group_id: &[u8]) -> Result<bool, Error> {
        Ok(self.group(group_id)?.pending_commit().is_some())
    }

    /// Commits adding one device per claimed key package. Each certificate must already have
    /// been verified against its person's identity key; the key package must be that device's
    /// (its credential names the device and its leaf carries the certified signature key).
    pub fn add(
        &mut self,
        group_id: &[u8],
        claimed: &[(DeviceCertificate, Vec<u8>)],
    ) -> Result<Commit, Error> {
        let mut group = self.group(group_id)?;
        let mut key_packages = Vec::with_capacity(claimed.len());
        for (certificate, bytes) in claimed {
            key_packages.push(crate::key_package::validated(
                certificate,
                bytes,
                self.provider.crypto(),
            )?);
        }
        let mut members_after = self
            .members(group_id)?
            .into_iter()
            .map(|(m, _)| m)
            .collect::<Vec<_>>();
        members_after.extend(claimed.iter().map(|(c, _)| c.device()));
        let epoch = group.epoch().as_u64();
        let (commit, welcome, _) = group
            .add_members(&self.provider, &self.signer, &key_packages)
            .map_err(mls("adding devices"))?;
        self.save()?;
        Ok(Commit {
            message: commit.to_bytes().map_err(mls("encoding a commit"))?,
            welcome: Some(welcome.to_bytes().map_err(mls("encoding a welcome"))?),
            welcome_devices: claimed.iter().map(|(c, _)| c.device_id).collect(),
            members_after,
            epoch,
        })
    }

    /// Commits removing devices from the group.
    pub fn remove(&mut self, group_id: &[u8], devices: &[MemberDevice]) -> Result<Commit, Error> {
        let mut group = self.group(group_id)?;
        let mut leaves = Vec::new();
        let mut members_after = Vec::new();
        for member in group.members() {
            let device = member_of(&member.credential)?;
            if devices.contains(&device) {
                leaves.push(member.index);
            } else {
                members_after.push(device);
            }
        }
        if leaves.len() != devices.len() {
            return Err(Error::Untrusted {
                who: "remove".into(),
                why: "a device to remove is not in the group".into(),
            });
        }
        let epoch = group.epoch().as_u64();
        let (commit, _, _) = group
            .remove_members(&self.provider, &self.signer, &leaves)
            .map_err(mls("removing devices"))?;
        self.save()?;
        without_welcome(&commit, members_after, epoch)
    }

    /// Asks the group to remove this device: a Remove proposal for its own leaf, to post like an
    /// application message. Once the service took it, `forget` the group: another member
    /// commits the removal.
    pub fn leave(&mut self, group_id: &[u8]) -> Result<Vec<u8>, Error> {
        let mut group = self.group(group_id)?;
        let message = group
            .leave_group(&self.provider, &self.signer)
            .map_err(mls("asking to leave"))?;
        self.save()?;
        message.to_bytes().map_err(mls("encoding a leave request"))
    }

    /// Deletes a group and its secrets from this device.
    pub fn forget(&mut self, group_id: &[u8]) -> Result<(), Error> {
        let mut group = self.group(group_id)?;
        group
            .delete(self.provider.storage())
            .map_err(mls("deleting a group"))?;
        self.save()
    }

    /// Whether members asked to leave and no commit has removed them yet.
    pub fn has_pending_leaves(&self, group_id: &[u8]) -> Result<bool, Error> {
        Ok(self.group(group_id)?.pending_proposals().next().is_some())
    }

    /// Commits the removal of the members who asked to leave.
    pub fn commit_leaves(&mut self, group_id: &[u8]) -> Result<Commit, Error> {
        let mut group = self.group(group_id)?;
        if group.pending_proposals().next().is_none() {
            return Err(Error::NothingPending(group_id_hex(group_id)));
        }
        let leaving: Vec<LeafNodeIndex> = group
            .pending_proposals()
            .filter_map(|p| match p.proposal() {
                Proposal::Remove(remove) => Some(remove.removed()),
                _ => None,
            })
            .collect();
        let mut members_after = Vec::new();
        for member in group.members() {
            if !leaving.contains(&member.index) {
                members_after.push(member_of(&member.credential)?);
            }
        }
        let epoch = group.epoch().as_u64();
        let (commit, _, _) = group
            .commit_to_pending_proposals(&self.provider, &self.signer)
            .map_err(mls("removing the devices that left"))?;
        self.save()?;
        without_welcome(&commit, members_after, epoch)
    }

    /// Commits a fresh leaf key for this device (forward secrecy and healing after a
    /// compromise: state copied before the update reads nothing sent after it).
    pub fn update(&mut self, group_id: &[u8]) -> Result<Commit, Error> {
        let mut group = self.group(group_id)?;
        let members_after = self
            .members(group_id)?
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        let epoch = group.epoch().as_u64();
        let bundle = group
            .self_update(
                &self.provider,
                &self.signer,
                openmls::treesync::LeafNodeParameters::default(),
            )
            .map_err(mls("updating this device's leaf"))?;
        self.save()?;
        without_welcome(bundle.commit(), members_after, epoch)
    }

    /// The delivery service accepted this device's pending commit: apply it.
    pub fn commit_accepted(&mut self, group_id: &[u8]) -> Result<(), Error> {
        let mut group = self.group(group_id)?;
        group
            .merge_pending_commit(&self.provider)
            .map_err(mls("applying this device's commit"))?;
        self.save()
    }

    /// Another commit took the epoch: forget this device's pending commit (its keys with it).
    pub fn commit_lost(&mut self, group_id: &[u8]) -> Result<(), Error> {
        let mut group = self.group(group_id)?;
        group
            .clear_pending_commit(self.provider.storage())
            .map_err(mls("dropping a pending commit"))?;
        self.save()
    }

    /// Joins a group from a Welcome; returns the group's id. The caller checks the members'
    /// certificates (`members`) before trusting anything said in it.
    pub fn join(&mut self, welcome: &[u8]) -> Result<Vec<u8>, Error> {
        let message =
            MlsMessageIn::tls_deserialize_exact(welcome).map_err(mls("reading a welcome"))?;
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(Error::Untrusted {
                who: "welcome".into(),
                why: "the message is not a Welcome".into(),
            });
        };
        let group = StagedWelcome::new_from_welcome(&self.provider, &join_config(), welcome, None)
            .map_err(mls("reading a welcome"))?
            .into_group(&self.provider)
            .map_err(mls("joining a group"))?;
        let group_id = group.group_id().as_slice().to_vec();
        self.save()?;
        Ok(group_id)
    }

    /// Encrypts an application message for the group.
    pub fn encrypt(&mut self, group_id: &[u8], body: &[u8]) -> Result<Vec<u8>, Error> {
        let mut group = self.group(group_id)?;
        let message = group
            .create_message(&self.provider, &self.signer, body)
            .map_err(mls("encrypting a message"))?;
        self.save()?;
        message.to_bytes().map_err(mls("encoding a message"))
    }

    /// Processes a message from the group's log (someone else's: a device cannot read its own).
    /// A commit is applied at once.
    pub fn process(&mut self, group_id: &[u8], message: &[u8]) -> Result<Event, Error> {
        let mut group = self.group(group_id)?;
        let protocol = MlsMessageIn::tls_deserialize_exact(message)
            .map_err(mls("reading a group message"))?
            .try_into_protocol_message()
            .map_err(mls("reading a group message"))?;
        let processed = group
            .process_message(&self.provider, protocol)
            .map_err(mls("processing a group message"))?;
        let from = member_of(processed.credential())?;
        let event = match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => Event::Message {
                from,
                body: app.into_bytes(),
            },
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let added = staged
                    .add_proposals()
                    .map(|p| {
                        let leaf = p.add_proposal().key_package().leaf_node();
                        Ok((
                            member_of(leaf.credential())?,
                            leaf.signature_key().as_slice().to_vec(),
                        ))
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                let removed = staged
                    .remove_proposals()
                    .filter_map(|p| group.member(p.remove_proposal().removed()).cloned())
                    .map(|c| member_of(&c))
                    .collect::<Result<Vec<_>, Error>>()?;
                let removed_me = staged.self_removed();
                group
                    .merge_staged_commit(&self.provider, *staged)
                    .map_err(mls("applying a commit"))?;
                Event::Commit {
                    by: from,
                    added,
                    removed,
                    epoch: group.epoch().as_u64(),
                    removed_me,
                }
            }
            ProcessedMessageContent::OwnPendingCommit => {
                group
                    .merge_pending_commit(&self.provider)
                    .map_err(mls("applying this device's commit"))?;
                Event::Commit {
                    by: from,
                    added: Vec::new(),
                    removed: Vec::new(),
                    epoch: group.epoch().as_u64(),
                    removed_me: false,
                }
            }
            ProcessedMessageContent::OwnPrivateMessage => {
                return Err(Error::Untrusted {
                    who: format!("{from}"),
                    why: "this device's own message came back (skip entries from this device)"
                        .into(),
                });
            }
            ProcessedMessageContent::ProposalMessage(queued) => {
                let own_leaf = match queued.sender() {
                    Sender::Member(leaf) => Some(*leaf),
                    _ => None,
                };
                match queued.proposal() {
                    Proposal::Remove(remove) if Some(remove.removed()) == own_leaf => {
                        group
                            .store_pending_proposal(self.provider.storage(), *queued)
                            .map_err(mls("keeping a leave request"))?;
                        Event::Leaving { who: from }
                    }
                    _ => {
                        return Err(Error::Untrusted {
                            who: format!("{from}"),
                            why: "sent a standalone proposal other than leaving, which svs does not use"
                                .into(),
                        });
                    }
                }
            }
            ProcessedMessageContent::ExternalJoinProposalMessage(_) => {
                return Err(Error::Untrusted {
                    who: format!("{from}"),
                    why: "sent an external join proposal, which svs does not use".into(),
                });
            }
        };
        self.save()?;
        Ok(event)
    }
}

fn write_record(certificate: &DeviceCertificate) -> Result<Vec<u8>, Error> {
    Ok(Writer::new("device record")
        .short(certificate.name.as_bytes())
        .raw(&certificate.device_id)
        .short(&certificate.signature_key)
        .u64(certificate.created_ms)
        .medium(&certificate.identity_signature)
        .finish()?)
}

fn read_record(bytes: &[u8]) -> Result<DeviceCertificate, svs_common::Error> {
    let mut reader = Reader::new("device record", bytes);
    let name = reader.short_str()?.to_string();
    let device_id = reader.array::<{ crate::DEVICE_ID_LEN }>()?;
    let signature_key = reader.short()?.to_vec();
    let created_ms = reader.u64()?;
    let len = reader.u16()?;
    let identity_signature = reader.take(usize::from(len))?.to_vec();
    reader.finish()?;
    Ok(DeviceCertificate {
        name,
        device_id,
        signature_key,
        created_ms,
        identity_signature,
    })
}
