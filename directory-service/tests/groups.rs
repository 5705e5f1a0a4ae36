//! The MLS delivery service end to end: a real directory over TLS (embedded, and two cluster
//! replicas on a real nats-server with the devices spread over both), three devices of two
//! people each keeping its own svs-mls state on disk. Devices are published and checked against their
//! person's identity key, key packages claimed, a group created through a commit and Welcomes,
//! messages read by every other device, two concurrent commits of which exactly one wins and
//! both converge, a removed device shut out, and hostile requests refused. Neither the database
//! nor NATS's store holds plaintext.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use svs_cli::session::Bearer;
use svs_common::proto::directory::directory_client::DirectoryClient;
use svs_common::proto::directory::groups_client::GroupsClient;
use svs_common::proto::directory::*;
use svs_mls::{Device, DeviceCertificate, Event};
use svs_test_support::{NatsServer, TestDirectory};
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

/// One device of one person, with its session and its place in each group's log.
struct Member {
    device: Device,
    groups: GroupsClient<InterceptedService<Channel, Bearer>>,
    /// Sequence number of the last log entry handled.
    cursor: u64,
}

async fn register(
    dir: &TestDirectory,
    name: &str,
    identity: &rsa::PrivateKey,
) -> (Channel, String) {
    let channel = svs_common::client::connect(&dir.url, Some(&dir.ca))
        .await
        .unwrap();
    let mut directory = DirectoryClient::new(channel.clone());
    let spki = svs_common::identity::public_key_der(&identity.to_public_key());
    let challenge = directory
        .get_challenge(GetChallengeRequest {
            name: name.into(),
            public_key_der: spki.clone().into(),
        })
        .await
        .unwrap()
        .into_inner();
    let signature = svs_common::registration::sign(
        identity,
        &challenge.service_id,
        name,
        &spki,
        &challenge.challenge,
    )
    .unwrap();
    let token = directory
        .register(RegisterRequest {
            name: name.into(),
            public_key_der: spki.into(),
            challenge: challenge.challenge,
            signature: signature.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    (channel, token)
}

impl Member {
    async fn new(
        dir: &TestDirectory,
        home: &Path,
        name: &str,
        identity: rsa::PrivateKey,
        label: &str,
    ) -> Self {
        let (channel, token) = register(dir, name, &identity).await;
        let bearer = Bearer::new(&token).unwrap();
        let groups = GroupsClient::with_interceptor(channel, bearer);
        let device =
            Device::create(&home.join(format!("{label}.mls")), &identity, name, 1).unwrap();
        let mut member = Self {
            device,
            groups,
            cursor: 0,
        };
        member
            .groups
            .publish_device(PublishDeviceRequest {
                certificate: Some(member.device.certificate().to_proto()),
            })
            .await
            .unwrap();
        let packages = member.device.key_packages(3).unwrap();
        let last_resort = member.device.last_resort_key_package().unwrap();
        let held = member
            .groups
            .upload_key_packages(UploadKeyPackagesRequest {
                device_id: member.id().into(),
                key_packages: packages.into_iter().map(Into::into).collect(),
                last_resort: last_resort.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .held;
        assert_eq!(held, 3);
        member
    }

    fn id(&self) -> Vec<u8> {
        self.device.certificate().device_id.to_vec()
    }

    /// Claims a key package for every device of `names` but this one, checking each
    /// certificate against the person's identity key (here: the key the test knows).
    async fn claim(
        &mut self,
        names: &[&str],
        identities: &[(&str, rsa::PublicKey)],
    ) -> Vec<(DeviceCertificate, Vec<u8>)> {
        let claimed = self
            .groups
            .claim_key_packages(ClaimKeyPackagesRequest {
                names: names.iter().map(|n| n.to_string()).collect(),
            })
            .await
            .unwrap()
            .into_inner();
        claimed
            .key_packages
            .into_iter()
            .map(|c| {
                let certificate = DeviceCertificate::from_proto(&c.device.unwrap()).unwrap();
                let identity = &identities
                    .iter()
                    .find(|(n, _)| *n == certificate.name)
                    .unwrap()
                    .1;
                certificate.verify(identity).unwrap();
                (certificate, c.key_package.to_vec())
            })
            .filter(|(c, _)| c.device_id.to_vec() != self.id())
            .collect()
    }

    /// Posts a commit; on success applies it, else drops it and returns the refusal.
    async fn post_commit(
        &mut self,
        group: &[u8],
        commit: svs_mls::Commit,
    ) -> Result<u64, tonic::Status> {
        let posted = self
            .groups
            .post_group_message(PostGroupMessageRequest {
                device_id: self.id().into(),
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
        match posted {
            Ok(posted) => {
                self.device.commit_accepted(group).unwrap();
                self.cursor = posted.get_ref().seq;
                Ok(posted.into_inner().seq)
            }
            Err(status) => {
                self.device.commit_lost(group).unwrap();
                Err(status)
            }
        }
    }

    async fn say(&mut self, group: &[u8], text: &str) -> Result<u64, tonic::Status> {
        let message = self.device.encrypt(group, text.as_bytes()).unwrap();
        let posted = self
            .groups
            .post_group_message(PostGroupMessageRequest {
                device_id: self.id().into(),
                message: message.into(),
                ..Default::default()
            })
            .await?;
        Ok(posted.into_inner().seq)
    }

    /// Joins every group a Welcome waits for.
    async fn accept_welcomes(&mut self) -> Vec<Vec<u8>> {
        let welcomes = self
            .groups
            .fetch_welcomes(FetchWelcomesRequest {
                device_id: self.id().into(),
            })
            .await
            .unwrap()
            .into_inner()
            .welcomes;
        let mut joined = Vec::new();
        for welcome in &welcomes {
            joined.push(self.device.join(&welcome.welcome).unwrap());
        }
        if let Some(last) = welcomes.last() {
            self.groups
                .ack_welcomes(AckWelcomesRequest {
                    device_id: self.id().into(),
                    up_to_seq: last.seq,
                })
                .await
                .unwrap();
        }
        joined
    }

    /// Processes the group's log from the cursor: skips this device's own entries and those
    /// from before the epoch it joined in.
    async fn sync(&mut self, group: &[u8]) -> Result<Vec<Event>, tonic::Status> {
        let mut events = Vec::new();
        loop {
            let page = self
                .groups
                .fetch_group(FetchGroupRequest {
                    group_id: group.to_vec().into(),
                    device_id: self.id().into(),
                    after_seq: self.cursor,
                })
                .await?
                .into_inner();
            for entry in &page.entries {
                self.cursor = entry.seq;
                if entry.from_device.as_ref() == self.id().as_slice()
                    || entry.epoch < self.device.epoch(group).unwrap()
                {
                    continue;
                }
                events.push(self.device.process(group, &entry.message).unwrap());
            }
            if !page.more {
                return Ok(events);
            }
        }
    }
}

fn texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { body, .. } => Some(String::from_utf8_lossy(body).into_owned()),
            _ => None,
        })
        .collect()
}

/// What the devices say to each other.
const SAID: [&str; 3] = ["hello from the phone", "hi alice", "the laptop is gone"];

/// Fails if any of `files` holds a line of `SAID` in the clear.
fn assert_no_plaintext(files: impl IntoIterator<Item = PathBuf>) {
    let mut bytes = 0;
    for file in files {
        let stored = std::fs::read(&file).unwrap();
        bytes += stored.len();
        for plaintext in SAID {
            assert!(
                !stored
                    .windows(plaintext.len())
                    .any(|w| w == plaintext.as_bytes()),
                "{plaintext:?} is readable in {}",
                file.display()
            );
        }
    }
    assert!(bytes > 4096, "the store holds the group's log");
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_of_two_people_share_a_group_through_the_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&root.path().join("directory"), &[]).await;
    share_a_group(root.path(), [&dir, &dir, &dir]).await;
    dir.stop().await;
    assert_no_plaintext([root.path().join("directory/directory/names.redb")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_two_cluster_replicas_share_a_group_through_nats() {
    let root = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&root.path().join("nats")).await;
    let mut replicas = TestDirectory::replicas(root.path(), &nats, 2).await;
    let (two, one) = (replicas.pop().unwrap(), replicas.pop().unwrap());
    // alice's devices on one replica, bob on the other: the laptop's and bob's concurrent
    // commits race across replicas.
    share_a_group(root.path(), [&one, &one, &two]).await;
    one.stop().await;
    two.stop().await;
    assert_no_plaintext(files_under(&root.path().join("nats")));
}

/// alice's phone, alice's laptop and bob, each on the directory given.
async fn share_a_group(root: &Path, [phone_dir, laptop_dir, bob_dir]: [&TestDirectory; 3]) {
    let home = root.join("homes");
    let alice_key = svs_common::identity::generate(2048).unwrap();
    let bob_key = svs_common::identity::generate(2048).unwrap();
    let identities = [
        ("alice", alice_key.to_public_key()),
        ("bob", bob_key.to_public_key()),
    ];
    let mut phone = Member::new(phone_dir, &home, "alice", alice_key.clone(), "alice-phone").await;
    let mut laptop = Member::new(laptop_dir, &home, "alice", alice_key, "alice-laptop").await;
    let mut bob = Member::new(bob_dir, &home, "bob", bob_key, "bob").await;

    let listed = phone
        .groups
        .list_devices(ListDevicesRequest {
            names: vec!["alice".into(), "bob".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(listed.len(), 3);

    // The phone makes a group of all three devices.
    let group = phone.device.create_group().unwrap();
    let claimed = phone.claim(&["alice", "bob"], &identities).await;
    assert_eq!(claimed.len(), 2, "the laptop's and bob's key packages");
    let commit = phone.device.add(&group, &claimed).unwrap();
    phone.post_commit(&group, commit).await.unwrap();
    assert_eq!(laptop.accept_welcomes().await, vec![group.clone()]);
    assert_eq!(bob.accept_welcomes().await, vec![group.clone()]);
    assert!(
        bob.accept_welcomes().await.is_empty(),
        "welcomes are gone once acknowledged"
    );

    phone.say(&group, SAID[0]).await.unwrap();
    assert_eq!(
        texts(&laptop.sync(&group).await.unwrap()),
        ["hello from the phone"]
    );
    assert_eq!(
        texts(&bob.sync(&group).await.unwrap()),
        ["hello from the phone"]
    );
    bob.say(&group, "hi alice").await.unwrap();
    assert_eq!(texts(&phone.sync(&group).await.unwrap()), ["hi alice"]);
    assert_eq!(texts(&laptop.sync(&group).await.unwrap()), ["hi alice"]);

    // Bob and the laptop update at once: exactly one commit takes the epoch; the loser applies
    // the winner, commits again, and everyone ends in one epoch with one key schedule.
    let epoch = bob.device.epoch(&group).unwrap();
    let bob_update = bob.device.update(&group).unwrap();
    let laptop_update = laptop.device.update(&group).unwrap();
    let (bob_result, laptop_result) = tokio::join!(
        bob.post_commit(&group, bob_update),
        laptop.post_commit(&group, laptop_update)
    );
    let (winner, loser) = match (bob_result, laptop_result) {
        (Ok(_), Err(status)) => {
            assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
            (&mut bob, &mut laptop)
        }
        (Err(status), Ok(_)) => {
            assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
            (&mut laptop, &mut bob)
        }
        other => panic!("exactly one of two concurrent commits must win: {other:?}"),
    };
    let _ = winner;
    loser.sync(&group).await.unwrap();
    let retry = loser.device.update(&group).unwrap();
    loser.post_commit(&group, retry).await.unwrap();
    for member in [&mut phone, &mut bob, &mut laptop] {
        member.sync(&group).await.unwrap();
        assert_eq!(member.device.epoch(&group).unwrap(), epoch + 2);
    }
    let authenticator = phone.device.epoch_authenticator(&group).unwrap();
    assert_eq!(
        bob.device.epoch_authenticator(&group).unwrap(),
        authenticator
    );
    assert_eq!(
        laptop.device.epoch_authenticator(&group).unwrap(),
        authenticator
    );

    // The laptop is lost: the phone removes it. It can no longer read the group's log, and
    // bob reads what is sent next.
    let removal = phone.device.remove(&group, &[laptop.device.me()]).unwrap();
    phone.post_commit(&group, removal).await.unwrap();
    phone.say(&group, "the laptop is gone").await.unwrap();
    let events = bob.sync(&group).await.unwrap();
    assert!(
        matches!(&events[0], Event::Commit { removed, .. } if removed == &vec![laptop.device.me()])
    );
    assert_eq!(texts(&events), ["the laptop is gone"]);
    let shut_out = laptop.sync(&group).await.unwrap_err();
    assert_eq!(shut_out.code(), tonic::Code::PermissionDenied);
    let stale = laptop.say(&group, "still here?").await.unwrap_err();
    assert_eq!(stale.code(), tonic::Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_with_a_reason() {
    let root = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&root.path().join("directory"), &[]).await;
    let home = root.path().join("homes");
    let alice_key = svs_common::identity::generate(2048).unwrap();
    let mallory_key = svs_common::identity::generate(2048).unwrap();
    let mut alice = Member::new(&dir, &home, "alice", alice_key.clone(), "alice").await;
    let mut mallory = Member::new(&dir, &home, "mallory", mallory_key.clone(), "mallory").await;

    // A certificate for alice signed by mallory's key, or for another name, is refused.
    let forged = DeviceCertificate::sign(&mallory_key, "mallory", [7; 16], vec![1; 32], 1).unwrap();
    let mut claims_alice = forged.clone();
    claims_alice.name = "alice".into();
    let status = mallory
        .groups
        .publish_device(PublishDeviceRequest {
            certificate: Some(claims_alice.to_proto()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let wrong_key =
        DeviceCertificate::sign(&alice_key, "mallory", [8; 16], vec![1; 32], 1).unwrap();
    let status = mallory
        .groups
        .publish_device(PublishDeviceRequest {
            certificate: Some(wrong_key.to_proto()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // Key packages that are not the device's, or not MLS at all.
    let alices_package = alice.device.key_packages(1).unwrap().remove(0);
    for bad in [alices_package, vec![0; 100]] {
        let status = mallory
            .groups
            .upload_key_packages(UploadKeyPackagesRequest {
                device_id: mallory.id().into(),
                key_packages: vec![bad.into()],
                last_resort: Default::default(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }

    // Posting as alice's device, garbage, a proposal-free oversized message, reading a group
    // one is not in.
    let group = alice.device.create_group().unwrap();
    let commit = alice.device.update(&group).unwrap();
    let status = mallory
        .groups
        .post_group_message(PostGroupMessageRequest {
            device_id: alice.id().into(),
            message: commit.message.clone().into(),
            member_devices: vec![alice.id().into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    alice.post_commit(&group, commit).await.unwrap();
    let status = mallory
        .groups
        .post_group_message(PostGroupMessageRequest {
            device_id: mallory.id().into(),
            message: b"not an MLS message".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let status = mallory
        .groups
        .post_group_message(PostGroupMessageRequest {
            device_id: mallory.id().into(),
            message: vec![0; 300 * 1024].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let status = mallory.sync(&group).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    // A message mallory makes in his own group cannot be posted into alice's.
    let own = mallory.device.create_group().unwrap();
    let status = mallory.say(&own, "mine").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    // alice still works.
    alice.say(&group, "fine").await.unwrap();
    dir.stop().await;
}
