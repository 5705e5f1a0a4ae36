//! A device's MLS state without any service: groups of several people's devices, forward
//! secrecy, removal, crash-safe state on disk, and refusal of key packages that do not match a
//! certificate.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use svs_mls::{Commit, Device, DeviceCertificate, Error, Event};

struct Person {
    name: &'static str,
    identity: rsa::PrivateKey,
}

impl Person {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            identity: svs_common::identity::generate(2048).expect("key"),
        }
    }

    fn device(&self, dir: &tempfile::TempDir, label: &str) -> Device {
        Device::create(&state_path(dir, label), &self.identity, self.name, 1).expect("device")
    }
}

fn state_path(dir: &tempfile::TempDir, label: &str) -> PathBuf {
    dir.path().join(format!("{label}.mls"))
}

fn claim(device: &mut Device) -> (DeviceCertificate, Vec<u8>) {
    let package = device.key_packages(1).expect("key package").remove(0);
    (device.certificate().clone(), package)
}

/// Applies `commit` made by `author` (accepted) to every other device.
fn deliver(author: &mut Device, group: &[u8], commit: &Commit, others: &mut [&mut Device]) {
    author.commit_accepted(group).expect("merge own commit");
    for other in others {
        match other
            .process(group, &commit.message)
            .expect("process commit")
        {
            Event::Commit { epoch, .. } => assert_eq!(epoch, commit.epoch + 1),
            event => panic!("expected a commit, got {event:?}"),
        }
    }
}

/// alice's device made a group and added bob's; both are in it at epoch 1.
fn alice_and_bob(dir: &tempfile::TempDir) -> (Device, Device, Vec<u8>) {
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    let mut alices = alice.device(dir, "alice");
    let mut bobs = bob.device(dir, "bob");
    let group = alices.create_group().unwrap();
    let commit = alices.add(&group, &[claim(&mut bobs)]).unwrap();
    alices.commit_accepted(&group).unwrap();
    bobs.join(commit.welcome.as_ref().unwrap()).unwrap();
    (alices, bobs, group)
}

fn read(device: &mut Device, group: &[u8], message: &[u8]) -> Vec<u8> {
    match device.process(group, message).expect("process message") {
        Event::Message { body, .. } => body,
        event => panic!("expected a message, got {event:?}"),
    }
}

#[test]
fn certificates_verify_only_under_their_identity() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Person::new("alice");
    let mallory = Person::new("mallory");
    let device = alice.device(&dir, "a");
    let certificate = device.certificate();
    certificate
        .verify(&alice.identity.to_public_key())
        .expect("verifies");
    assert!(
        certificate
            .verify(&mallory.identity.to_public_key())
            .is_err()
    );
    let mut renamed = certificate.clone();
    renamed.name = "mallory".into();
    assert!(renamed.verify(&alice.identity.to_public_key()).is_err());
    let back = DeviceCertificate::from_proto(&certificate.to_proto()).unwrap();
    assert_eq!(&back, certificate);
}

#[test]
fn two_people_three_devices_read_everything_and_agree_on_members() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    let mut phone = alice.device(&dir, "alice-phone");
    let mut laptop = alice.device(&dir, "alice-laptop");
    let mut bobs = bob.device(&dir, "bob");

    let group = phone.create_group().unwrap();
    let commit = phone
        .add(&group, &[claim(&mut laptop), claim(&mut bobs)])
        .unwrap();
    assert_eq!(commit.welcome_devices.len(), 2);
    assert_eq!(commit.members_after.len(), 3);
    phone.commit_accepted(&group).unwrap();
    let welcome = commit.welcome.as_ref().unwrap();
    assert_eq!(laptop.join(welcome).unwrap(), group);
    assert_eq!(bobs.join(welcome).unwrap(), group);

    let members = |d: &Device| {
        let mut m: Vec<_> = d
            .members(&group)
            .unwrap()
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        m.sort();
        m
    };
    assert_eq!(members(&phone), members(&bobs));
    assert_eq!(members(&laptop), members(&bobs));
    assert_eq!(
        phone.epoch_authenticator(&group).unwrap(),
        bobs.epoch_authenticator(&group).unwrap()
    );

    let hello = phone.encrypt(&group, b"hello from the phone").unwrap();
    assert_eq!(read(&mut laptop, &group, &hello), b"hello from the phone");
    assert_eq!(read(&mut bobs, &group, &hello), b"hello from the phone");
    let reply = bobs.encrypt(&group, b"hi alice").unwrap();
    match phone.process(&group, &reply).unwrap() {
        Event::Message { from, body } => {
            assert_eq!(from, bobs.me());
            assert_eq!(body, b"hi alice");
        }
        event => panic!("{event:?}"),
    }
    // A message already read cannot be read again from the current state (its key is gone).
    assert!(laptop.process(&group, &hello).is_err());
}

#[test]
fn a_state_copied_before_an_update_reads_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alices, mut bobs, group) = alice_and_bob(&dir);

    // The attacker copies bob's state file now.
    let stolen = state_path(&dir, "stolen");
    std::fs::copy(state_path(&dir, "bob"), &stolen).unwrap();
    let before = alices.encrypt(&group, b"before").unwrap();
    assert_eq!(read(&mut bobs, &group, &before), b"before");

    let update = bobs.update(&group).unwrap();
    deliver(&mut bobs, &group, &update, &mut [&mut alices]);
    let after = alices.encrypt(&group, b"after the update").unwrap();
    assert_eq!(read(&mut bobs, &group, &after), b"after the update");

    let mut thief = Device::open(&stolen).unwrap();
    // The stolen state follows the update commit only if it could decrypt it: it cannot, as
    // bob's update was made after the copy and its path secrets are for bob's new leaf.
    let _ = thief.process(&group, &update.message);
    assert!(
        thief.process(&group, &after).is_err(),
        "a state copied before the update read a message sent after it"
    );
}

#[test]
fn a_removed_device_reads_nothing_sent_after_its_removal() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    let mut alices = alice.device(&dir, "alice");
    let mut phone = bob.device(&dir, "bob-phone");
    let mut lost = bob.device(&dir, "bob-lost-laptop");
    let group = alices.create_group().unwrap();
    let commit = alices
        .add(&group, &[claim(&mut phone), claim(&mut lost)])
        .unwrap();
    alices.commit_accepted(&group).unwrap();
    phone.join(commit.welcome.as_ref().unwrap()).unwrap();
    lost.join(commit.welcome.as_ref().unwrap()).unwrap();

    let removal = phone.remove(&group, &[lost.me()]).unwrap();
    assert_eq!(removal.members_after.len(), 2);
    phone.commit_accepted(&group).unwrap();
    match alices.process(&group, &removal.message).unwrap() {
        Event::Commit { removed, by, .. } => {
            assert_eq!(removed, vec![lost.me()]);
            assert_eq!(by, phone.me());
        }
        event => panic!("{event:?}"),
    }
    match lost.process(&group, &removal.message).unwrap() {
        Event::Commit { removed_me, .. } => assert!(removed_me),
        event => panic!("{event:?}"),
    }
    let secret = alices
        .encrypt(&group, b"after the laptop was lost")
        .unwrap();
    assert_eq!(
        read(&mut phone, &group, &secret),
        b"after the laptop was lost"
    );
    assert!(lost.process(&group, &secret).is_err());
}

#[test]
fn a_losing_commit_is_dropped_and_the_winner_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alices, mut bobs, group) = alice_and_bob(&dir);

    // Both update at epoch 1; the delivery service takes alice's.
    let winner = alices.update(&group).unwrap();
    let _loser = bobs.update(&group).unwrap();
    alices.commit_accepted(&group).unwrap();
    bobs.commit_lost(&group).unwrap();
    assert!(!bobs.has_pending_commit(&group).unwrap());
    bobs.process(&group, &winner.message).unwrap();
    assert_eq!(alices.epoch(&group).unwrap(), 2);
    assert_eq!(bobs.epoch(&group).unwrap(), 2);
    let retry = bobs.update(&group).unwrap();
    deliver(&mut bobs, &group, &retry, &mut [&mut alices]);
    assert_eq!(
        alices.epoch_authenticator(&group).unwrap(),
        bobs.epoch_authenticator(&group).unwrap()
    );
}

#[test]
fn state_survives_a_restart_and_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    let mut alices = alice.device(&dir, "alice");
    let mut bobs = bob.device(&dir, "bob");
    let group = alices.create_group().unwrap();
    let commit = alices.add(&group, &[claim(&mut bobs)]).unwrap();
    // The process dies here, before the service's answer: the pending commit is on disk.
    drop(alices);
    let mut alices = Device::open(&state_path(&dir, "alice")).unwrap();
    assert!(alices.has_pending_commit(&group).unwrap());
    alices.commit_accepted(&group).unwrap();
    bobs.join(commit.welcome.as_ref().unwrap()).unwrap();
    drop(bobs);
    let mut bobs = Device::open(&state_path(&dir, "bob")).unwrap();
    let message = alices.encrypt(&group, b"still here").unwrap();
    assert_eq!(read(&mut bobs, &group, &message), b"still here");

    let mode = std::fs::metadata(state_path(&dir, "bob"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::set_permissions(
        state_path(&dir, "bob"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert!(matches!(
        Device::open(&state_path(&dir, "bob")),
        Err(Error::Common(svs_common::Error::InsecureFile { .. }))
    ));
    std::fs::write(state_path(&dir, "alice"), b"SVS-MLS-STATE\x01junk").unwrap();
    assert!(matches!(
        Device::open(&state_path(&dir, "alice")),
        Err(Error::DamagedState { .. })
    ));
}

#[test]
fn a_key_package_must_match_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, mallory) = (
        Person::new("alice"),
        Person::new("bob"),
        Person::new("mallory"),
    );
    let mut alices = alice.device(&dir, "alice");
    let mut bobs = bob.device(&dir, "bob");
    let mut mallorys = mallory.device(&dir, "mallory");
    let group = alices.create_group().unwrap();
    // The service hands out mallory's key package under bob's certificate.
    let (bob_certificate, _) = claim(&mut bobs);
    let (_, mallory_package) = claim(&mut mallorys);
    let refused = alices.add(&group, &[(bob_certificate, mallory_package)]);
    assert!(
        matches!(refused, Err(Error::Untrusted { .. })),
        "{refused:?}"
    );
    // A last-resort package is as good as a one-time one, and says what it is.
    let last = bobs.last_resort_key_package().unwrap();
    assert!(svs_mls::key_package::check(bobs.certificate(), &last).unwrap());
    let (certificate, one_time) = claim(&mut bobs);
    assert!(!svs_mls::key_package::check(&certificate, &one_time).unwrap());
    let garbage = alices.add(&group, &[(bobs.certificate().clone(), vec![0; 40])]);
    assert!(matches!(garbage, Err(Error::Untrusted { .. })));
    assert_eq!(alices.epoch(&group).unwrap(), 0);
}

#[test]
fn a_credential_names_only_a_canonical_svs_name() {
    use svs_mls::MemberDevice;
    let good = MemberDevice {
        name: "bob".into(),
        device_id: [3; 16],
    };
    let bytes = good.credential_identity().unwrap();
    assert_eq!(
        MemberDevice::from_credential_identity(&bytes).unwrap(),
        good
    );
    for bad in ["Bob", "bo\u{1b}[2Jb", "", "b o b"] {
        let forged = MemberDevice {
            name: bad.into(),
            device_id: [3; 16],
        };
        let bytes = forged.credential_identity().unwrap();
        assert!(
            MemberDevice::from_credential_identity(&bytes).is_err(),
            "{bad:?} accepted"
        );
    }
    assert!(MemberDevice::from_credential_identity(b"svs1").is_err());
}

#[test]
fn a_message_from_the_old_epoch_is_read_while_a_commit_waits() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alices, mut bobs, group) = alice_and_bob(&dir);
    // alice's update is accepted by the service, but bob's message landed just before it.
    let update = alices.update(&group).unwrap();
    let late = bobs.encrypt(&group, b"sent in the old epoch").unwrap();
    assert_eq!(read(&mut alices, &group, &late), b"sent in the old epoch");
    deliver(&mut alices, &group, &update, &mut [&mut bobs]);
    let next = alices.encrypt(&group, b"new epoch").unwrap();
    assert_eq!(read(&mut bobs, &group, &next), b"new epoch");
}

#[test]
fn messages_are_padded_to_buckets_and_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob, group) = alice_and_bob(&dir);
    let short = alice.encrypt(&group, b"hi").unwrap();
    let longer = alice
        .encrypt(&group, "x".repeat(svs_mls::PADDING_BYTES / 2).as_bytes())
        .unwrap();
    let longest = alice
        .encrypt(&group, "y".repeat(svs_mls::PADDING_BYTES + 1).as_bytes())
        .unwrap();
    assert_eq!(
        short.len(),
        longer.len(),
        "one bucket: the size does not tell"
    );
    assert!(longest.len() >= short.len() + svs_mls::PADDING_BYTES);
    assert_eq!(read(&mut bob, &group, &short), b"hi");
    assert_eq!(
        read(&mut bob, &group, &longer).len(),
        svs_mls::PADDING_BYTES / 2
    );
    // Both ends agree on the group's state: the same room code.
    assert_eq!(
        alice.epoch_authenticator(&group).unwrap(),
        bob.epoch_authenticator(&group).unwrap()
    );
}

#[test]
fn a_member_leaves_by_asking_and_another_commits_its_removal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob, group) = alice_and_bob(&dir);
    let request = bob.leave(&group).unwrap();
    match alice.process(&group, &request).unwrap() {
        Event::Leaving { who } => assert_eq!(who, bob.me()),
        event => panic!("expected a leave request, got {event:?}"),
    }
    assert!(alice.has_pending_leaves(&group).unwrap());
    let commit = alice.commit_leaves(&group).unwrap();
    assert_eq!(commit.members_after, vec![alice.me()]);
    alice.commit_accepted(&group).unwrap();
    assert!(!alice.has_pending_leaves(&group).unwrap());
    assert_eq!(alice.members(&group).unwrap().len(), 1);
    bob.forget(&group).unwrap();
    assert!(bob.epoch(&group).is_err(), "bob keeps nothing of the group");
    // A leave request belongs to its group: another group's member cannot be made to take it.
    let elsewhere = tempfile::tempdir().unwrap();
    let (mut carol, _dave, other) = alice_and_bob(&elsewhere);
    assert!(carol.process(&other, &request).is_err());
}
