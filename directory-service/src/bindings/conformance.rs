//! One suite every `NameBindings` implementation passes: redb here, the NATS key-value bucket in
//! `cluster::kv_bindings` (against a real nats-server).

use super::{Claim, NameBindings};
use std::sync::Arc;

/// Runs the suite. `open` gives the store over the same backing data each time it is called (a
/// restart, or another replica).
pub(crate) async fn check<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn NameBindings>>,
{
    let names = open().await;
    assert_eq!(names.get("alice").await.unwrap(), None);
    assert_eq!(names.claim("alice", b"key-a").await.unwrap(), Claim::New);
    assert_eq!(names.claim("alice", b"key-a").await.unwrap(), Claim::Ours);
    assert_eq!(
        names.claim("alice", b"key-b").await.unwrap(),
        Claim::OtherKey
    );
    assert_eq!(
        names.get("alice").await.unwrap().as_deref(),
        Some(&b"key-a"[..])
    );
    // Any valid canonical name round-trips (the cluster encodes names into NATS keys).
    assert_eq!(names.claim("a.b-c_d", b"key-d").await.unwrap(), Claim::New);
    assert_eq!(
        names.get("a.b-c_d").await.unwrap().as_deref(),
        Some(&b"key-d"[..])
    );

    // Eight keys claim one free name at once: exactly one wins, and everyone sees the winner.
    let claims = (0..8u8).map(|n| {
        let names = names.clone();
        tokio::spawn(async move { (n, names.claim("carol", &[n; 32]).await.unwrap()) })
    });
    let mut winners = Vec::new();
    for claim in claims {
        let (n, claim) = claim.await.unwrap();
        if claim == Claim::New {
            winners.push(n);
        } else {
            assert_eq!(claim, Claim::OtherKey);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim of a free name wins");
    assert_eq!(
        names.get("carol").await.unwrap(),
        Some(vec![winners[0]; 32])
    );

    let mut all = names.all().await.unwrap();
    all.sort();
    let expect: Vec<(String, Vec<u8>)> = vec![
        ("a.b-c_d".into(), b"key-d".to_vec()),
        ("alice".into(), b"key-a".to_vec()),
        ("carol".into(), vec![winners[0]; 32]),
    ];
    assert_eq!(all, expect);

    // Bindings survive a reopen; a released name is free for another key.
    drop(names);
    let names = open().await;
    assert_eq!(
        names.claim("alice", b"key-b").await.unwrap(),
        Claim::OtherKey
    );
    assert!(names.release("alice").await.unwrap());
    assert!(!names.release("alice").await.unwrap(), "released once only");
    assert_eq!(names.get("alice").await.unwrap(), None);
    assert_eq!(names.claim("alice", b"key-b").await.unwrap(), Claim::New);
    let names = open().await;
    assert_eq!(
        names.get("alice").await.unwrap().as_deref(),
        Some(&b"key-b"[..])
    );
}

#[tokio::test]
async fn the_embedded_store_passes_the_names_suite() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::directory::open_db(&dir.path().join("names.redb")).unwrap();
    check(|| {
        let db = db.clone();
        async move { Arc::new(super::RedbBindings::new(db)) as Arc<dyn NameBindings> }
    })
    .await;
}
