//! One suite every `GroupStore` implementation passes (today: redb).

use super::store::{GroupLimits, GroupStore, Post, PostKind, PublishedDevice};
use crate::Error;
use crate::error::Refusal;
use std::sync::Arc;

/// Small limits, so the suite reaches each of them.
pub(crate) const LIMITS: GroupLimits = GroupLimits {
    max_devices_per_name: 2,
    max_key_packages_per_device: 3,
    max_log_entries_per_group: 24,
    max_welcomes_per_device: 2,
    max_fetch_bytes: 64,
    ttl_ms: 1000,
};

fn device(name: &str, n: u8) -> PublishedDevice {
    PublishedDevice {
        name: name.into(),
        device_id: [n; 16],
        certificate: vec![n; 8],
    }
}

fn post(epoch: u64, kind: PostKind, from: u8, members: &[u8]) -> Post {
    Post {
        group_id: b"group-one".to_vec(),
        epoch,
        kind,
        from_device: [from; 16],
        message: format!("{kind:?} at {epoch} from {from}").into_bytes(),
        members_after: members.iter().map(|m| [*m; 16]).collect(),
        welcome: None,
        now_ms: 1_000,
    }
}

fn refusal<T: std::fmt::Debug>(result: Result<T, Error>) -> Refusal {
    match result {
        Err(Error::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Runs the suite. `open` gives the store over the same data each time (a restart).
pub(crate) async fn check<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn GroupStore>>,
{
    let store = open().await;
    // Devices: owned by one name, at most two per name, re-publishing is not a new device.
    assert_eq!(store.publish_device(device("alice", 1)).await.unwrap(), 1);
    assert_eq!(store.publish_device(device("alice", 2)).await.unwrap(), 2);
    assert_eq!(store.publish_device(device("alice", 1)).await.unwrap(), 2);
    assert!(matches!(
        refusal(store.publish_device(device("alice", 3)).await),
        Refusal::ResourceExhausted(_)
    ));
    assert!(matches!(
        refusal(store.publish_device(device("bob", 1)).await),
        Refusal::AlreadyExists(_)
    ));
    assert_eq!(store.publish_device(device("bob", 9)).await.unwrap(), 1);
    assert_eq!(
        store.device_owner([1; 16]).await.unwrap().as_deref(),
        Some("alice")
    );
    assert_eq!(store.device_owner([7; 16]).await.unwrap(), None);
    assert_eq!(
        store.devices("alice").await.unwrap(),
        vec![device("alice", 1), device("alice", 2)]
    );

    // Key packages: one-time ones once each, oldest first, then the last-resort one, kept.
    assert_eq!(
        store
            .add_key_packages(
                [9; 16],
                vec![b"kp1".to_vec(), b"kp2".to_vec()],
                Some(b"last".to_vec())
            )
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        refusal(
            store
                .add_key_packages([9; 16], vec![b"x".to_vec(), b"y".to_vec()], None)
                .await
        ),
        Refusal::ResourceExhausted(_)
    ));
    assert_eq!(
        store.claim_key_package([9; 16]).await.unwrap(),
        Some((b"kp1".to_vec(), false))
    );
    assert_eq!(
        store.claim_key_package([9; 16]).await.unwrap(),
        Some((b"kp2".to_vec(), false))
    );
    assert_eq!(
        store.claim_key_package([9; 16]).await.unwrap(),
        Some((b"last".to_vec(), true))
    );
    assert_eq!(
        store.claim_key_package([9; 16]).await.unwrap(),
        Some((b"last".to_vec(), true))
    );
    assert_eq!(store.claim_key_package([2; 16]).await.unwrap(), None);

    // A group starts with a commit in epoch 0 and takes exactly one commit per epoch.
    assert!(matches!(
        refusal(store.post(post(0, PostKind::Application, 1, &[])).await),
        Refusal::NotFound(_)
    ));
    assert!(matches!(
        refusal(store.post(post(3, PostKind::Commit, 1, &[1])).await),
        Refusal::NotFound(_)
    ));
    let mut first = post(0, PostKind::Commit, 1, &[1, 9]);
    first.welcome = Some((b"welcome".to_vec(), vec![[9; 16]]));
    let posted = store.post(first).await.unwrap();
    assert_eq!((posted.index, posted.epoch), (1, 1));
    assert_eq!(posted.devices, vec![[1; 16], [9; 16]], "whom to tell");
    let first_seq = posted.seq;
    assert!(matches!(
        refusal(store.post(post(0, PostKind::Commit, 1, &[1, 9])).await),
        Refusal::FailedPrecondition(_)
    ));
    assert!(matches!(
        refusal(store.post(post(1, PostKind::Application, 2, &[])).await),
        Refusal::PermissionDenied(_)
    ));
    assert!(matches!(
        refusal(store.post(post(0, PostKind::Application, 9, &[])).await),
        Refusal::FailedPrecondition(_)
    ));
    let mut to_stranger = post(1, PostKind::Commit, 9, &[1, 9]);
    to_stranger.welcome = Some((b"w".to_vec(), vec![[5; 16]]));
    assert!(matches!(
        refusal(store.post(to_stranger).await),
        Refusal::InvalidArgument(_)
    ));
    let second = store
        .post(post(1, PostKind::Application, 9, &[]))
        .await
        .unwrap();
    assert_eq!((second.index, second.epoch), (2, 1));
    assert!(second.seq > first_seq, "sequence numbers increase");

    // Eight members commit in the same epoch at once: exactly one wins. (All are spawned
    // before any is awaited.)
    let racers: Vec<_> = (0..8)
        .map(|n| {
            let store = store.clone();
            let from = if n % 2 == 0 { 1 } else { 9 };
            tokio::spawn(async move { store.post(post(1, PostKind::Commit, from, &[1, 9])).await })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(posted) => {
                won += 1;
                assert_eq!(posted.epoch, 2);
            }
            Err(e) => assert!(matches!(
                refusal::<()>(Err(e)),
                Refusal::FailedPrecondition(_)
            )),
        }
    }
    assert_eq!(won, 1, "exactly one commit takes epoch 1");

    // The log reads back in order, in pages bounded by bytes.
    let member = |device: u8, group: &'static [u8]| {
        let store = store.clone();
        async move { store.is_member(group.to_vec(), [device; 16]).await.unwrap() }
    };
    assert_eq!(member(9, b"group-one").await, Some(true));
    assert_eq!(member(2, b"group-one").await, Some(false));
    assert_eq!(member(9, b"no-such-group").await, None);
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read(b"group-one".to_vec(), after).await.unwrap();
        assert_eq!(
            (page.first_seq, page.first_index, page.epoch),
            (first_seq, 1, 2)
        );
        assert!(!page.entries.is_empty() || !page.more);
        seen.extend(
            page.entries
                .iter()
                .map(|e| (e.index, e.epoch, e.commit, e.from_device[0])),
        );
        assert!(
            page.entries.iter().all(|e| e.seq > after),
            "in order, after the cursor"
        );
        after = page.entries.last().map_or(after, |e| e.seq);
        if !page.more {
            break;
        }
    }
    assert_eq!(seen.len(), 3);
    assert_eq!(&seen[..2], &[(1, 0, true, 1), (2, 1, false, 9)]);
    assert_eq!((seen[2].0, seen[2].1, seen[2].2), (3, 1, true));

    // Welcomes wait for their device until acknowledged, at most two at once.
    let welcomes = store.welcomes([9; 16]).await.unwrap();
    assert_eq!(welcomes.len(), 1);
    assert_eq!(
        (welcomes[0].welcome.as_slice(), welcomes[0].from_device),
        (&b"welcome"[..], [1; 16])
    );
    assert_eq!(
        store.ack_welcomes([9; 16], welcomes[0].seq).await.unwrap(),
        1
    );
    assert!(store.welcomes([9; 16]).await.unwrap().is_empty());

    // A restart keeps everything.
    drop(store);
    let store = open().await;
    assert_eq!(store.devices("bob").await.unwrap(), vec![device("bob", 9)]);
    assert_eq!(store.read(b"group-one".to_vec(), 0).await.unwrap().epoch, 2);

    // The log is bounded; expiry empties it and says where it starts now.
    let mut refused = None;
    for _ in 0..LIMITS.max_log_entries_per_group {
        if let Err(e) = store.post(post(2, PostKind::Application, 1, &[])).await {
            refused = Some(refusal::<()>(Err(e)));
            break;
        }
    }
    assert!(
        matches!(refused, Some(Refusal::ResourceExhausted(_))),
        "{refused:?}"
    );
    assert!(store.expire(1_001).await.unwrap() >= LIMITS.max_log_entries_per_group);
    let page = store.read(b"group-one".to_vec(), 0).await.unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(page.first_index, LIMITS.max_log_entries_per_group + 1);
    assert!(page.first_seq > after);
    assert!(
        store
            .post(post(2, PostKind::Application, 1, &[]))
            .await
            .is_ok()
    );

    // Removing a device takes its key packages with it; only its owner can.
    assert!(!store.remove_device("bob", [2; 16]).await.unwrap());
    assert!(store.remove_device("bob", [9; 16]).await.unwrap());
    assert_eq!(store.claim_key_package([9; 16]).await.unwrap(), None);
    assert!(store.devices("bob").await.unwrap().is_empty());
    // A removed device stays removed.
    assert!(matches!(
        refusal(store.publish_device(device("bob", 9)).await),
        Refusal::PermissionDenied(_)
    ));
}

#[tokio::test]
async fn the_embedded_store_passes_the_groups_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("names.redb");
    let db = crate::directory::open_db(&path).unwrap();
    check(|| {
        let db = db.clone();
        async move { Arc::new(super::RedbGroups::new(db, LIMITS)) as Arc<dyn GroupStore> }
    })
    .await;
}
