//! Mailboxes and several sessions per name, over TLS with the real client code and the real
//! `svs` binary: offline delivery with receipts stored for an offline sender, two sessions of
//! one name, one-shot commands beside a running session, quota and expiry.
#![allow(clippy::unwrap_used)]

mod support;

use support::run::svs;

use std::time::Duration;
use support::TestDirectory;
use support::client::Client;
use svs_cli::inbox::Incoming;
use svs_cli::session::ReachState;

/// Registers `name` once (claiming it) and quits: someone offline with a mailbox.
async fn offline(dir: &TestDirectory, name: &str, home: &std::path::Path) {
    dir.register(name, home).await.quit().await.unwrap();
}

#[tokio::test]
async fn an_offline_recipient_gets_the_message_and_the_offline_sender_gets_the_receipt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let (alice_home, bob_home) = (tmp.path().join("alice"), tmp.path().join("bob"));
    // Bob registers once and goes away.
    offline(&dir, "bob", &bob_home).await;
    // `svs send` to someone offline succeeds and says where the message is.
    let (ok, out, err) = svs(
        &dir,
        &alice_home,
        "alice",
        &["send", "--to", "bob", "are you there?"],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("stored for bob (offline)"), "{out}");
    // Bob comes back: the stored message arrives; his reading acknowledges it.
    let mut bob = Client::join(&dir, "bob", &bob_home).await;
    let got = bob.message().await;
    assert_eq!(
        (got.from.as_str(), got.text.as_str()),
        ("alice", "are you there?")
    );
    // Alice was offline when bob read it: the receipt waits in her mailbox.
    let mut alice = Client::join(&dir, "alice", &alice_home).await;
    let to = alice
        .until(|i| match i {
            Incoming::Delivered { to, id } if *id == got.id => Some(to.clone()),
            _ => None,
        })
        .await;
    assert_eq!(to, "bob");
    dir.stop().await;
}

#[tokio::test]
async fn two_sessions_of_a_name_both_receive_and_one_shot_commands_leave_them_running() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let alice_home = tmp.path().join("alice");
    let mut first = Client::join(&dir, "alice", &alice_home).await;
    let mut second = Client::join(&dir, "alice", &alice_home).await;
    let mut bob = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    // One-shot commands of alice's in another terminal.
    let (ok, out, err) = svs(&dir, &alice_home, "alice", &["who"]).await;
    assert!(ok && out.contains("bob"), "{out}{err}");
    let (ok, out, err) = svs(
        &dir,
        &alice_home,
        "alice",
        &["send", "--to", "bob", "from a script"],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert_eq!(bob.message().await.text, "from a script");
    // Both chat sessions are still there and both get bob's message.
    let alice_peer = bob.wait_for_peer("alice").await;
    let sent = bob
        .session
        .send_text(&[alice_peer], "hello both")
        .await
        .unwrap();
    assert_eq!(sent.reaches[0].state, ReachState::Delivering);
    assert_eq!(first.message().await.text, "hello both");
    assert_eq!(second.message().await.text, "hello both");
    // Nobody saw alice leave.
    first.session.quit().await.unwrap();
    let peers = bob.session.list_peers().await.unwrap().peers;
    assert!(
        peers.iter().any(|p| p.name == "alice"),
        "alice is online while one session is"
    );
    dir.stop().await;
}

#[tokio::test]
async fn a_full_mailbox_refuses_with_a_sentence_and_unread_mail_expires_with_notice() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(
        &tmp.path().join("data"),
        &["--mailbox-max-messages", "2", "--mailbox-ttl", "2s"],
    )
    .await;
    offline(&dir, "bob", &tmp.path().join("bob")).await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let bob = alice
        .session
        .lookup_keys(&["bob".into()])
        .await
        .unwrap()
        .peers;
    for n in 0..2 {
        let sent = alice
            .session
            .send_text(&bob, &format!("m{n}"))
            .await
            .unwrap();
        assert_eq!(sent.reaches[0].state, ReachState::Stored);
    }
    let full = alice.session.send_text(&bob, "one too many").await.unwrap();
    assert_eq!(full.reaches[0].state, ReachState::Refused);
    assert!(
        full.reaches[0].detail.contains("mailbox is full"),
        "{}",
        full.reaches[0].detail
    );
    // Two seconds later the two stored ones expire unread; alice is told for each.
    let mut expired = 0;
    while expired < 2 {
        let reason = alice
            .until(|i| match i {
                Incoming::Undelivered { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .await;
        assert!(reason.contains("expired unread"), "{reason}");
        expired += 1;
    }
    // The box has room again.
    let again = alice.session.send_text(&bob, "after expiry").await.unwrap();
    assert_eq!(again.reaches[0].state, ReachState::Stored);
    tokio::time::sleep(Duration::from_millis(10)).await;
    dir.stop().await;
}

#[tokio::test]
async fn send_to_an_unknown_name_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let (ok, out, err) = svs(
        &dir,
        &tmp.path().join("alice"),
        "alice",
        &["send", "--to", "nobody", "hi"],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(err.contains("nobody is registered as nobody"), "{err}");
    dir.stop().await;
}

#[tokio::test]
async fn send_wait_names_who_has_not_read_it_yet_and_then_reports_the_receipt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let (alice_home, bob_home) = (tmp.path().join("alice"), tmp.path().join("bob"));
    offline(&dir, "bob", &bob_home).await;
    let (ok, out, err) = svs(
        &dir,
        &alice_home,
        "alice",
        &["send", "--to", "bob", "--wait", "1", "read me"],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("stored for bob (offline)"), "{out}");
    assert!(err.contains("bob has not read it yet"), "{err}");
    // With bob reading, the same command sees the receipt and succeeds.
    let mut bob = Client::join(&dir, "bob", &bob_home).await;
    assert_eq!(bob.message().await.text, "read me");
    let reader = tokio::spawn(async move {
        let got = bob.message().await;
        (bob, got.text)
    });
    let (ok, out, err) = svs(
        &dir,
        &alice_home,
        "alice",
        &["send", "--to", "bob", "--wait", "20", "and this one"],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("delivered to bob"), "{out}");
    assert_eq!(reader.await.unwrap().1, "and this one");
    dir.stop().await;
}

#[tokio::test]
async fn one_sender_cannot_close_a_mailbox_and_a_friend_still_gets_through() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(
        &tmp.path().join("data"),
        &["--mailbox-max-messages-per-sender", "5"],
    )
    .await;
    offline(&dir, "bob", &tmp.path().join("bob")).await;
    let mut mallory = Client::join(&dir, "mallory", &tmp.path().join("mallory")).await;
    let bob = mallory
        .session
        .lookup_keys(&["bob".into()])
        .await
        .unwrap()
        .peers;
    for n in 0..5 {
        let sent = mallory
            .session
            .send_text(&bob, &format!("junk {n}"))
            .await
            .unwrap();
        assert_eq!(sent.reaches[0].state, ReachState::Stored);
    }
    let refused = mallory.session.send_text(&bob, "junk 5").await.unwrap();
    assert_eq!(refused.reaches[0].state, ReachState::Refused);
    let detail = &refused.reaches[0].detail;
    assert!(
        detail.contains("bob's mailbox holds 5 unread messages from mallory"),
        "{detail}"
    );
    // Bob's friend is not shut out by mallory's share: the real `svs send` stores it.
    let (ok, out, err) = svs(
        &dir,
        &tmp.path().join("alice"),
        "alice",
        &["send", "--to", "bob", "lunch?"],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("stored for bob (offline)"), "{out}");
    // Bob reads everything; mallory's share is free again.
    let mut bob_back = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    let mut texts = Vec::new();
    while texts.len() < 6 {
        texts.push(bob_back.message().await.text);
    }
    assert!(texts.contains(&"lunch?".to_string()), "{texts:?}");
    bob_back.session.quit().await.unwrap();
    // Acknowledgements are written before quit returns; the share counts them.
    let mut stored = None;
    for _ in 0..50 {
        let sent = mallory.session.send_text(&bob, "after").await.unwrap();
        if sent.reaches[0].state == ReachState::Stored {
            stored = Some(sent);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stored.is_some(),
        "mallory's share was given back once bob read"
    );
    dir.stop().await;
}

#[tokio::test]
async fn a_disk_below_its_reserve_refuses_mail_with_a_sentence_and_still_registers() {
    let tmp = tempfile::tempdir().unwrap();
    // A reserve no disk here has free (1 PiB): every envelope meets it.
    let dir = TestDirectory::start(
        &tmp.path().join("data"),
        &["--min-free-disk-mb", "1073741824"],
    )
    .await;
    offline(&dir, "bob", &tmp.path().join("bob")).await;
    let (ok, out, err) = svs(
        &dir,
        &tmp.path().join("alice"),
        "alice",
        &["send", "--to", "bob", "hello"],
    )
    .await;
    assert!(!ok, "nothing was stored: the send fails\n{out}{err}");
    assert!(
        format!("{out}{err}").contains("the directory's disk is nearly full"),
        "{out}{err}"
    );
    // Registration writes too, but is not mail: a new name still gets in.
    offline(&dir, "carol", &tmp.path().join("carol")).await;
    dir.stop().await;
}
