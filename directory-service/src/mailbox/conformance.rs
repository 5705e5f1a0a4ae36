//! One suite every `Mailboxes` implementation passes: the embedded redb store here, the
//! JetStream store in `cluster::mail` (against a real nats-server). A store gets the same
//! answers whichever backend keeps it; what differs (per-sender shares are kept only by the
//! embedded store) is tested beside that implementation.

use super::{Committed, Mailboxes, NewEnvelope, NewReceipt, Placement, Quotas, encode_envelope};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use svs_common::proto::directory::{DeliveryReceipt, Envelope, Event, event};
use svs_common::sealed::{Header, HeaderRecipient};
use svs_common::time::now_ms;

/// The quotas the suite runs with: three messages a mailbox, everything else roomy.
pub(crate) const QUOTAS: Quotas = Quotas {
    ttl_ms: 60_000,
    max_messages: 3,
    max_bytes: 1 << 20,
    max_messages_per_sender: 1000,
    max_bytes_per_sender: 1 << 20,
    max_total_bytes: 1 << 30,
    min_free_disk_bytes: 0,
    remember_ids_ms: 600_000,
};

/// An envelope as the relay hands it over: a real header, so a store that reads it back parses it.
fn envelope(id: u8, sender: &str, to: &[&str]) -> NewEnvelope {
    let header = Header {
        message_id: [id; 16],
        sender: sender.into(),
        sender_fingerprint: [1; 32],
        counter: u64::from(id),
        timestamp_ms: now_ms(),
        recipients: to
            .iter()
            .map(|name| HeaderRecipient {
                name: name.to_string(),
                fingerprint: [2; 32],
            })
            .collect(),
        nonce: [3; 12],
        key_commitment: [4; 32],
    };
    let envelope = Envelope {
        header: header.encode().expect("a valid header").into(),
        ciphertext: vec![id; 64].into(),
        ..Default::default()
    };
    NewEnvelope {
        message_id: [id; 16],
        sender: sender.into(),
        timestamp_ms: header.timestamp_ms,
        recipients: to.iter().map(|s| s.to_string()).collect(),
        encoded: encode_envelope(&envelope),
        event: Event {
            kind: Some(event::Kind::Envelope(envelope)),
        },
    }
}

fn receipt(owner: &str, id: u8, recipient: &str) -> NewReceipt {
    NewReceipt {
        owner: owner.into(),
        event: Event {
            kind: Some(event::Kind::Delivered(DeliveryReceipt {
                message_id: Bytes::copy_from_slice(&[id; 16]),
                recipient: recipient.into(),
                stored_seq: 0,
            })),
        },
    }
}

fn stored_seq(placement: &Placement) -> u64 {
    match placement {
        Placement::Stored { seq } => *seq,
        other => panic!("expected the envelope stored, got {other:?}"),
    }
}

fn message_id(event: &Event) -> Option<u8> {
    match &event.kind {
        Some(event::Kind::Envelope(e)) => Header::decode(&e.header).ok().map(|h| h.message_id[0]),
        _ => None,
    }
}

/// Waits (up to 10 s) until the sink has seen `count` items.
async fn sunk(seen: &Mutex<Vec<Committed>>, count: usize) -> Vec<Committed> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = seen.lock().expect("sink lock").clone();
        if now.len() >= count || tokio::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the suite. `open` gives the store over the same backing data each time it is called (a
/// reopen after a restart), created with `QUOTAS`.
pub(crate) async fn check<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Mailboxes>>,
{
    let mail = open().await;
    let seen: Arc<Mutex<Vec<Committed>>> = Arc::default();
    let sink = seen.clone();
    mail.set_sink(Arc::new(move |committed| {
        sink.lock().expect("sink lock").extend(committed)
    }));

    // Stored once per recipient, in increasing order per name; last_seq follows.
    let placed = mail
        .store_envelope(envelope(1, "alice", &["bob", "carol"]))
        .await
        .expect("store");
    assert_eq!(placed.len(), 2, "one placement per recipient");
    let first = stored_seq(&placed[0]);
    stored_seq(&placed[1]);
    let second = stored_seq(
        &mail
            .store_envelope(envelope(2, "alice", &["bob"]))
            .await
            .unwrap()[0],
    );
    assert!(
        second > first,
        "sequence numbers grow per name: {first} then {second}"
    );

    // The same message id again is a duplicate, not a second copy.
    let again = mail
        .store_envelope(envelope(1, "alice", &["bob"]))
        .await
        .unwrap();
    assert_eq!(again, [Placement::Duplicate]);

    // The mailbox holds three; the fourth is refused with a sentence.
    stored_seq(
        &mail
            .store_envelope(envelope(3, "dave", &["bob"]))
            .await
            .unwrap()[0],
    );
    let full = mail
        .store_envelope(envelope(4, "dave", &["bob"]))
        .await
        .unwrap();
    assert!(
        matches!(&full[0], Placement::Full(why) if !why.sentence.is_empty()),
        "a fourth message is over the mailbox's three: {full:?}"
    );

    // The sink saw each stored item once, for its owner, each linked to the one before.
    let committed = sunk(&seen, 4).await;
    let bobs: Vec<&Committed> = committed.iter().filter(|c| c.owner == "bob").collect();
    assert_eq!(
        bobs.len(),
        3,
        "bob's three items reached the sink once each"
    );
    assert_eq!(bobs[0].prev_seq, 0);
    assert_eq!(bobs[1].prev_seq, bobs[0].seq);
    assert_eq!(bobs[2].prev_seq, bobs[1].seq);
    assert_eq!(mail.last_seq("bob"), bobs[2].seq);

    // Reading: everything in order, then only what follows a sequence number.
    let page = mail.read("bob", 0, 10).await.unwrap();
    let ids: Vec<_> = page.items.iter().map(|(_, e)| message_id(e)).collect();
    assert_eq!(ids, [Some(1), Some(2), Some(3)]);
    assert!(page.scanned_to >= bobs[2].seq);
    let rest = mail.read("bob", page.items[0].0, 10).await.unwrap();
    assert_eq!(rest.items.len(), 2);
    let limited = mail.read("bob", 0, 1).await.unwrap();
    assert_eq!(limited.items.len(), 1, "at most `limit` items");
    assert!(mail.read("nobody", 0, 10).await.unwrap().items.is_empty());

    // Acknowledging removes the envelope and says whose it was; it makes room.
    let acked = mail.ack("bob", vec![[1; 16]], vec![]).await.unwrap();
    assert_eq!(acked.envelopes.len(), 1);
    assert_eq!(acked.envelopes[0].sender, "alice");
    assert_eq!(acked.envelopes[0].owner, "bob");
    assert_eq!(acked.envelopes[0].message_id, [1; 16]);
    let ids: Vec<_> = mail
        .read("bob", 0, 10)
        .await
        .unwrap()
        .items
        .iter()
        .map(|(_, e)| message_id(e))
        .collect();
    assert_eq!(ids, [Some(2), Some(3)]);
    stored_seq(
        &mail
            .store_envelope(envelope(5, "dave", &["bob"]))
            .await
            .unwrap()[0],
    );
    // A read id stays a duplicate while ids are remembered.
    assert_eq!(
        mail.store_envelope(envelope(1, "alice", &["bob"]))
            .await
            .unwrap(),
        [Placement::Duplicate]
    );
    // Acknowledging what is not there removes nothing.
    let none = mail.ack("bob", vec![[99; 16]], vec![]).await.unwrap();
    assert!(none.envelopes.is_empty());

    // Receipts wait in their owner's mailbox, read back with the sequence they are acked by.
    mail.store_receipts(vec![receipt("alice", 1, "bob")])
        .await
        .unwrap();
    let page = mail.read("alice", 0, 10).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let (seq, event) = &page.items[0];
    match &event.kind {
        Some(event::Kind::Delivered(d)) => {
            assert_eq!(
                d.stored_seq, *seq,
                "a stored receipt carries its sequence number"
            );
            assert_eq!(d.recipient, "bob");
        }
        other => panic!("expected a receipt, got {other:?}"),
    }
    let acked = mail.ack("alice", vec![], vec![*seq]).await.unwrap();
    assert_eq!(acked.receipts, 1);
    assert!(mail.read("alice", 0, 10).await.unwrap().items.is_empty());

    // What is held survives a reopen: same items, same sequence numbers.
    let before = mail.read("bob", 0, 10).await.unwrap();
    drop(mail);
    let mail = open().await;
    let after = mail.read("bob", 0, 10).await.unwrap();
    let seqs = |page: &super::Page| page.items.iter().map(|(s, _)| *s).collect::<Vec<_>>();
    assert_eq!(seqs(&after), seqs(&before), "the same items after a reopen");
    assert_eq!(
        mail.last_seq("bob"),
        *seqs(&after).last().expect("bob has mail")
    );
    assert_eq!(
        mail.store_envelope(envelope(2, "alice", &["bob"]))
            .await
            .unwrap(),
        [Placement::Duplicate]
    );

    // Expiry removes what is past the TTL and names the unread envelopes.
    let expired = mail.expire(now_ms() + QUOTAS.ttl_ms + 1_000).await.unwrap();
    let mut removed: Vec<_> = expired
        .iter()
        .map(|r| (r.owner.clone(), r.message_id[0]))
        .collect();
    removed.sort();
    let expect: Vec<(String, u8)> = vec![
        ("bob".into(), 2),
        ("bob".into(), 3),
        ("bob".into(), 5),
        ("carol".into(), 1),
    ];
    assert_eq!(removed, expect);
    assert!(mail.read("bob", 0, 10).await.unwrap().items.is_empty());
    assert!(mail.read("carol", 0, 10).await.unwrap().items.is_empty());
    // Nothing more is due.
    assert!(
        mail.expire(now_ms() + QUOTAS.ttl_ms + 1_000)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_embedded_store_passes_the_mailbox_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("names.redb");
    check(|| {
        let path = path.clone();
        async move {
            let db = crate::directory::open_db(&path).unwrap();
            Arc::new(super::RedbMailboxes::open(db, QUOTAS).unwrap()) as Arc<dyn Mailboxes>
        }
    })
    .await;
}
