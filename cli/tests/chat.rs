//! End-to-end tests of the directory and the client: real service, TLS, real client code.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use support::TestDirectory;
use support::client::Client;
use svs_cli::CliError;
use svs_cli::inbox::Incoming;
use svs_cli::session::{ReachState, Session};
use svs_common::proto::directory::{Event, Outcome, event};
use svs_common::{identity, sealed};

fn code(e: CliError) -> String {
    e.to_string()
}

#[tokio::test]
async fn two_clients_exchange_messages_and_receipts_a_third_cannot_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let mut bob = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    let mut carol = Client::join(&dir, "carol", &tmp.path().join("carol")).await;
    let bob_peer = alice.wait_for_peer("bob").await;
    alice.wait_for_peer("carol").await;
    bob.wait_for_peer("alice").await;

    let sent = alice
        .session
        .send_text(&[bob_peer], "hello bob, only you can read this")
        .await
        .unwrap();
    assert_eq!(sent.reaches.len(), 1);
    assert_eq!(
        sent.reaches[0].state,
        ReachState::Delivering,
        "{:?}",
        sent.reaches
    );
    let got = bob.message().await;
    assert_eq!(got.from, "alice");
    assert_eq!(got.text, "hello bob, only you can read this");
    assert_eq!(got.id, hex::encode(sent.message_id));
    let receipt = alice
        .until(|i| match i {
            Incoming::Delivered { id, to } => Some((id.clone(), to.clone())),
            _ => None,
        })
        .await;
    assert_eq!(receipt, (hex::encode(sent.message_id), "bob".to_string()));

    // Bob answers; alice reads it.
    let alice_peer = bob.peer("alice");
    bob.session
        .send_text(&[alice_peer], "hi alice")
        .await
        .unwrap();
    assert_eq!(alice.message().await.text, "hi alice");

    // Carol was online throughout: nothing reached her, and the envelope does not open for her.
    let carol_peer = alice.peer("carol");
    let bob_peer = alice.peer("bob");
    alice
        .session
        .send_text(&[bob_peer, carol_peer], "to both")
        .await
        .unwrap();
    let envelope = carol.raw_envelope().await;
    let header = sealed::verify(
        &envelope,
        &identity::parse_public_key(&alice.peer("alice").public_key_der).unwrap(),
    )
    .unwrap();
    assert_eq!(header.recipients.len(), 2);
    // Carol's key opens only her own wrapped key; swap in bob's name and it fails.
    let carol_key = identity::read_private_key(&tmp.path().join("carol/keys/carol.pem")).unwrap();
    assert!(
        sealed::open(
            &mut identity::os_rng(),
            &envelope,
            &header,
            "bob",
            &carol_key
        )
        .is_err()
    );
    // The earlier message to bob alone never reached carol's stream (the first envelope she saw
    // is the one addressed to her).
    assert!(header.recipients.iter().any(|r| r.name == "carol"));
    dir.stop().await;
}

#[tokio::test]
async fn duplicate_name_is_refused_and_the_first_client_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let mut bob = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    let err = Session::register(&dir.options("ALICE", &tmp.path().join("impostor")))
        .await
        .expect_err("a second alice is refused");
    let text = code(err);
    assert!(text.contains("taken by someone online"), "{text}");
    // The first alice still sends and receives.
    let bob_peer = alice.wait_for_peer("bob").await;
    alice
        .session
        .send_text(&[bob_peer], "still here")
        .await
        .unwrap();
    assert_eq!(bob.message().await.text, "still here");
    dir.stop().await;
}

#[tokio::test]
async fn another_key_cannot_take_an_offline_name_and_bindings_survive_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = TestDirectory::start(&data, &[]).await;
    let mut alice = dir.register("alice", &tmp.path().join("alice")).await;
    alice.quit().await.unwrap();
    let err = Session::register(&dir.options("alice", &tmp.path().join("other")))
        .await
        .err()
        .unwrap();
    assert!(code(err).contains("belongs to another key"));
    dir.stop().await;

    let dir = TestDirectory::start(&data, &[]).await;
    let err = Session::register(&dir.options("alice", &tmp.path().join("other")))
        .await
        .err()
        .unwrap();
    assert!(
        code(err).contains("belongs to another key"),
        "binding survived the restart"
    );
    // The owner's key still works after the restart.
    dir.register("alice", &tmp.path().join("alice")).await;
    dir.stop().await;
}

#[tokio::test]
async fn forged_sender_bad_signature_replay_and_oversize_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let mut bob = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    let bob_peer = alice.wait_for_peer("bob").await;
    let bob_key = identity::parse_public_key(&bob_peer.public_key_der).unwrap();
    let alice_key = identity::read_private_key(&tmp.path().join("alice/keys/alice.pem")).unwrap();
    let seal = |sender: &str, plaintext: &[u8]| {
        sealed::seal(
            &mut identity::os_rng(),
            &sealed::SealParams {
                sender,
                sender_key: &alice_key,
                counter: svs_common::time::now_ms() * 1000,
                timestamp_ms: svs_common::time::now_ms(),
                recipients: &[sealed::SealRecipient {
                    name: "bob",
                    key: &bob_key,
                }],
            },
            plaintext,
        )
        .unwrap()
    };

    // Alice's session claims to be carol.
    let forged = seal("carol", b"I am carol");
    let err = alice.session.send_envelope(forged).await.err().unwrap();
    assert!(code(err).contains("claims to be from carol"));

    // A tampered ciphertext breaks the signature: the relay stores ciphertext without checking
    // signatures (docs/protocol.md, Security); the recipient drops it before decrypting.
    let mut tampered = seal("alice", b"original");
    let mut ct = tampered.ciphertext.to_vec();
    ct[0] ^= 1;
    tampered.ciphertext = ct.into();
    alice.session.send_envelope(tampered).await.unwrap();
    let why = bob
        .until(|i| match i {
            Incoming::Dropped { why, .. } => Some(why.clone()),
            _ => None,
        })
        .await;
    assert!(why.contains("signature does not verify"), "{why}");

    // The relay refuses a resent envelope...
    let once = seal("alice", b"once");
    alice.session.send_envelope(once.clone()).await.unwrap();
    let err = alice
        .session
        .send_envelope(once.clone())
        .await
        .err()
        .unwrap();
    assert!(code(err).contains("already accepted"));
    // ...and a recipient does not show again one that reaches it anyway.
    assert_eq!(bob.message().await.text, "once");
    let mut pins =
        svs_cli::known_peers::KnownPeers::load(tmp.path().join("bob/known_peers")).unwrap();
    let replayed = bob.inbox.handle(
        Event {
            kind: Some(event::Kind::Envelope(once)),
        },
        &mut pins,
    );
    assert!(
        matches!(&replayed[..], [Incoming::Redelivered]),
        "{replayed:?}"
    );

    // 64 KiB + 1 byte of plaintext is over the default limit.
    let big = seal("alice", &vec![b'x'; 64 * 1024 + 1]);
    let err = alice.session.send_envelope(big).await.err().unwrap();
    assert!(
        code(err).contains("the limit is 65536 bytes"),
        "oversize refused"
    );
    assert!(svs_cli::commands::send::check_text(&"x".repeat(64 * 1024 + 1)).is_err());
    assert!(svs_cli::commands::send::check_text(&"x".repeat(64 * 1024)).is_ok());
    dir.stop().await;
}

#[tokio::test]
async fn every_envelope_field_is_bounded_and_a_refusal_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let mut bob = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    let bob_peer = alice.wait_for_peer("bob").await;
    let bob_key = identity::parse_public_key(&bob_peer.public_key_der).unwrap();
    let alice_key = identity::read_private_key(&tmp.path().join("alice/keys/alice.pem")).unwrap();
    let valid = || {
        sealed::seal(
            &mut identity::os_rng(),
            &sealed::SealParams {
                sender: "alice",
                sender_key: &alice_key,
                counter: svs_common::time::now_ms() * 1000,
                timestamp_ms: svs_common::time::now_ms(),
                recipients: &[sealed::SealRecipient {
                    name: "bob",
                    key: &bob_key,
                }],
            },
            b"hello",
        )
        .unwrap()
    };
    // Each field at the largest a ~1 MiB request would let an attacker store before.
    let padded = |bytes: &[u8], to: usize| {
        let mut v = bytes.to_vec();
        v.resize(to, 0);
        bytes::Bytes::from(v)
    };
    type Tamper = Box<dyn Fn(&mut svs_common::proto::directory::Envelope)>;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "signature",
            Box::new(move |e| e.signature = padded(&e.signature, 900_000)),
        ),
        (
            "signature",
            Box::new(|e| e.signature = bytes::Bytes::from_static(b"short")),
        ),
        (
            "wrapped_keys.wrapped_key",
            Box::new(move |e| {
                e.wrapped_keys[0].wrapped_key = padded(&e.wrapped_keys[0].wrapped_key, 513)
            }),
        ),
        (
            "wrapped_keys.recipient",
            Box::new(|e| e.wrapped_keys[0].recipient = "b".repeat(100_000)),
        ),
        (
            "header",
            Box::new(move |e| e.header = padded(&e.header, 500_000)),
        ),
        (
            "wrapped_keys",
            Box::new(|e| {
                let one = e.wrapped_keys[0].clone();
                e.wrapped_keys = vec![one; 257];
            }),
        ),
    ];
    for (field, tamper) in cases {
        let mut envelope = valid();
        tamper(&mut envelope);
        let err = alice.session.send_envelope(envelope).await.err().unwrap();
        let text = code(err);
        assert!(
            text.contains(&format!("envelope's {field} is")),
            "refusal names {field}: {text}"
        );
    }
    // Nothing of it reached bob; a valid envelope still does.
    alice.session.send_envelope(valid()).await.unwrap();
    assert_eq!(bob.message().await.text, "hello");
    dir.stop().await;
}

#[tokio::test]
async fn calls_without_a_valid_token_and_bad_keys_are_refused() {
    use svs_common::proto::directory::directory_client::DirectoryClient;
    use svs_common::proto::directory::{GetChallengeRequest, ListPeersRequest};
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let channel = svs_common::client::connect(&dir.url, Some(&dir.ca))
        .await
        .unwrap();
    let mut bare = DirectoryClient::new(channel.clone());
    let status = bare.list_peers(ListPeersRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut forged = DirectoryClient::with_interceptor(
        channel.clone(),
        svs_cli::session::Bearer::new("svs1.AAAA.BBBB").unwrap(),
    );
    let status = forged.list_peers(ListPeersRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // A quit session's token stops working.
    let mut alice = dir.register("alice", &tmp.path().join("alice")).await;
    let token = alice.token.clone();
    alice.quit().await.unwrap();
    let mut revoked = DirectoryClient::with_interceptor(
        channel.clone(),
        svs_cli::session::Bearer::new(&token).unwrap(),
    );
    let status = revoked.list_peers(ListPeersRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // 1024-bit keys and bad names are refused with a reason.
    let weak = svs_common::rsa::PrivateKey::new(&mut identity::os_rng(), 1024).unwrap();
    let status = bare
        .get_challenge(GetChallengeRequest {
            name: "weak".into(),
            public_key_der: identity::public_key_der(&weak.to_public_key()).into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("1024 bits"),
        "{}",
        status.message()
    );
    let status = bare
        .get_challenge(GetChallengeRequest {
            name: "no spaces".into(),
            public_key_der: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    dir.stop().await;
}

#[tokio::test]
async fn quit_and_dropped_connections_announce_leave() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let mut bob = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    let carol = Client::join(&dir, "carol", &tmp.path().join("carol")).await;
    alice.wait_for_peer("carol").await;
    bob.session.quit().await.unwrap();
    let left = alice
        .until(|i| match i {
            Incoming::Left { name, reason } if name == "bob" => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert_eq!(left, "quit");
    drop(carol);
    let left = alice
        .until(|i| match i {
            Incoming::Left { name, reason } if name == "carol" => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert_eq!(left, "disconnected");
    assert!(alice.inbox.online().iter().all(|p| p.name == "alice"));
    dir.stop().await;
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_delay_others_and_later_gets_everything_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(
        &tmp.path().join("data"),
        &[
            "--queue-messages",
            "8",
            "--send-rate",
            "100000",
            "--send-burst",
            "100000",
        ],
    )
    .await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let mut bob = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    // Carol subscribes and then does not read her stream while 120 messages arrive.
    let mut carol = Client::join(&dir, "carol", &tmp.path().join("carol")).await;
    let bob_peer = alice.wait_for_peer("bob").await;
    let carol_peer = alice.wait_for_peer("carol").await;
    bob.wait_for_peer("carol").await;

    const MESSAGES: usize = 120;
    let mut ids = Vec::new();
    for n in 0..MESSAGES {
        let text = format!("{n:03} {}", "y".repeat(32 * 1024));
        let sent = alice
            .session
            .send_text(&[bob_peer.clone(), carol_peer.clone()], &text)
            .await
            .unwrap();
        // Both are accepted: what does not fit carol's 8-message queue waits on disk.
        assert!(
            sent.reaches
                .iter()
                .all(|r| r.state == ReachState::Delivering),
            "{:?}",
            sent.reaches
        );
        ids.push(hex::encode(sent.message_id));
        // Bob reads as messages arrive.
        assert_eq!(bob.message().await.text, text);
    }
    // Carol reads at last: every message, once, in the order sent.
    let mut got = Vec::new();
    while got.len() < MESSAGES {
        got.push(carol.message().await.id);
    }
    assert_eq!(got, ids);
    dir.stop().await;
}

#[tokio::test]
async fn a_changed_key_is_flagged_and_blocks_sending_until_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = TestDirectory::start(&data, &[]).await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let mut bob = dir.register("bob", &tmp.path().join("bob")).await;
    alice.wait_for_peer("bob").await;
    bob.quit().await.unwrap();
    drop(alice);
    dir.stop().await;
    // An operator frees "bob"; someone registers it with a new key.
    assert!(directory_service::release_name(&data, "bob").await.unwrap());
    let dir = TestDirectory::start(&data, &[]).await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let _new_bob = Client::join(&dir, "bob", &tmp.path().join("new-bob")).await;
    let bob_peer = alice.wait_for_peer("bob").await;
    let err = alice
        .session
        .send_text(std::slice::from_ref(&bob_peer), "are you bob?")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, CliError::KeyChanged { .. }), "{err}");
    alice
        .session
        .pins
        .pin("bob", &bob_peer.public_key_der)
        .unwrap();
    alice
        .session
        .send_text(&[bob_peer], "trusted now")
        .await
        .unwrap();
    dir.stop().await;
}

#[test]
fn outcome_names_are_stable() {
    assert_eq!(Outcome::MailboxFull.as_str_name(), "OUTCOME_MAILBOX_FULL");
    assert_eq!(Outcome::Stored.as_str_name(), "OUTCOME_STORED");
}

/// Forwards TCP to `target` until frozen; then it stops moving bytes without closing anything,
/// like a peer whose network vanished.
async fn freezable_proxy(target: u16) -> (u16, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let freeze = tokio_util::sync::CancellationToken::new();
    let frozen = freeze.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let frozen = frozen.clone();
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(("127.0.0.1", target))
                    .await
                    .unwrap();
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = frozen.cancelled() => {
                        // Hold both sockets open and silent.
                        std::future::pending::<()>().await;
                    }
                }
            });
        }
    });
    (port, freeze)
}

#[tokio::test]
async fn a_silently_vanished_client_is_detected_by_keepalive_and_announced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(
        &tmp.path().join("data"),
        &["--keepalive-secs", "1", "--keepalive-timeout-secs", "2"],
    )
    .await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let port: u16 = dir.url.rsplit(':').next().unwrap().parse().unwrap();
    let (proxy_port, freeze) = freezable_proxy(port).await;
    let mut via_proxy = dir.options("bob", &tmp.path().join("bob"));
    via_proxy.directory = format!("https://localhost:{proxy_port}");
    let mut bob = Session::register(&via_proxy).await.unwrap();
    let _bob_stream = bob.subscribe().await.unwrap();
    alice.wait_for_peer("bob").await;
    let frozen_at = std::time::Instant::now();
    freeze.cancel();
    let reason = alice
        .until(|i| match i {
            Incoming::Left { name, reason } if name == "bob" => Some(reason.clone()),
            _ => None,
        })
        .await;
    println!(
        "bob's silence noticed after {:.1} s",
        frozen_at.elapsed().as_secs_f64()
    );
    assert_eq!(reason, "disconnected");
    dir.stop().await;
}

#[tokio::test]
async fn sending_faster_than_the_rate_limit_is_refused_with_a_sentence() {
    // One message per 50 s: the refusal's "try again in 50 s" is longer than the client waits
    // out by itself (MAX_SEND_RETRY_WAIT), so it reaches the caller at once, as a sentence.
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(
        &tmp.path().join("data"),
        &["--send-rate", "0.02", "--send-burst", "2"],
    )
    .await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let _bob = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    let bob = alice.wait_for_peer("bob").await;
    for _ in 0..2 {
        alice
            .session
            .send_text(std::slice::from_ref(&bob), "within the burst")
            .await
            .unwrap();
    }
    let asked = std::time::Instant::now();
    let err = alice
        .session
        .send_text(std::slice::from_ref(&bob), "one too many")
        .await
        .expect_err("the third message is refused");
    let waited = asked.elapsed();
    assert!(
        code(err).contains("sending too fast"),
        "the third message is refused"
    );
    assert!(
        waited < svs_cli::session::MAX_SEND_RETRY_WAIT,
        "a 50 s wait is not waited out (took {waited:?})"
    );
    dir.stop().await;
}

/// An RNG that hands out a chosen 16-byte value first (the message id `seal` draws first), then
/// the operating system's randomness: lets a test seal an envelope that reuses another's id.
struct ChosenIdRng {
    id: Option<[u8; 16]>,
}

impl rand::TryRng for ChosenIdRng {
    type Error = <rand::rngs::SysRng as rand::TryRng>::Error;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        rand::TryRng::try_next_u32(&mut identity::os_rng())
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        rand::TryRng::try_next_u64(&mut identity::os_rng())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        match self.id.take() {
            Some(id) if dst.len() == 16 => {
                dst.copy_from_slice(&id);
                Ok(())
            }
            _ => rand::TryRng::try_fill_bytes(&mut identity::os_rng(), dst),
        }
    }
}

impl rand::TryCryptoRng for ChosenIdRng {}

#[tokio::test]
async fn a_co_recipient_reusing_a_message_id_cannot_take_the_senders_receipt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let mut bob = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    let mut carol = Client::join(&dir, "carol", &tmp.path().join("carol")).await;
    let bob_peer = alice.wait_for_peer("bob").await;
    let carol_peer = alice.wait_for_peer("carol").await;
    carol.wait_for_peer("bob").await;
    bob.wait_for_peer("carol").await;

    let sent = alice
        .session
        .send_text(&[bob_peer.clone(), carol_peer], "for both of you")
        .await
        .unwrap();
    // Carol learns the id from her copy and, before bob acknowledges, sends bob her own envelope
    // under the same id.
    let copy = carol.raw_envelope().await;
    let id = sealed::Header::decode(&copy.header).unwrap().message_id;
    assert_eq!(id, sent.message_id);
    let carol_key = identity::read_private_key(&tmp.path().join("carol/keys/carol.pem")).unwrap();
    let bob_key = identity::parse_public_key(&bob_peer.public_key_der).unwrap();
    let stolen = sealed::seal(
        &mut ChosenIdRng { id: Some(id) },
        &sealed::SealParams {
            sender: "carol",
            sender_key: &carol_key,
            counter: svs_common::time::now_ms() * 1000,
            timestamp_ms: svs_common::time::now_ms(),
            recipients: &[sealed::SealRecipient {
                name: "bob",
                key: &bob_key,
            }],
        },
        b"same id",
    )
    .unwrap();
    // The relay refuses it: bob's mailbox already holds that id.
    let refused = carol.session.send_envelope(stolen).await.err().unwrap();
    assert!(code(refused).contains("already accepted"));
    // Bob now reads (and acknowledges) both; alice still gets bob's receipt for her message.
    assert_eq!(bob.message().await.text, "for both of you");
    let receipt_for = alice
        .until(|i| match i {
            Incoming::Delivered { id, to } if to == "bob" => Some(id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(receipt_for, hex::encode(sent.message_id));
    dir.stop().await;
}

#[tokio::test]
async fn a_restarted_sender_whose_clock_stepped_back_is_not_taken_for_a_replayer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let mut bob = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    let alice_home = tmp.path().join("alice");
    // An earlier run of alice's whose clock was an hour ahead used this counter.
    let ahead = (svs_common::time::now_ms() + 3_600_000) * 1000;
    std::fs::create_dir_all(alice_home.join("counters")).unwrap();
    std::fs::write(alice_home.join("counters/alice"), ahead.to_string()).unwrap();
    let mut first = dir.register("alice", &alice_home).await;
    let bob_peer = bob.peer("bob");
    first
        .send_text(std::slice::from_ref(&bob_peer), "from the fast clock")
        .await
        .unwrap();
    assert_eq!(bob.message().await.text, "from the fast clock");
    // Alice restarts with her clock right again: her counter continues above the old one.
    drop(first);
    let mut second = dir.register("alice", &alice_home).await;
    second
        .send_text(&[bob_peer], "after the restart")
        .await
        .unwrap();
    assert_eq!(bob.message().await.text, "after the restart");
    let stored: u64 = std::fs::read_to_string(alice_home.join("counters/alice"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        stored,
        ahead + 2,
        "the counter file holds the last counter used"
    );
    dir.stop().await;
}

#[tokio::test]
async fn a_restarted_recipient_still_refuses_an_envelope_it_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let mut bob = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    let bob_peer = alice.wait_for_peer("bob").await;
    bob.wait_for_peer("alice").await;
    alice
        .session
        .send_text(&[bob_peer], "only once")
        .await
        .unwrap();
    let event = Event {
        kind: Some(event::Kind::Envelope(bob.raw_envelope().await)),
    };
    let first = bob
        .session
        .process(event.clone(), &mut bob.inbox)
        .await
        .unwrap();
    assert!(
        matches!(&first[..], [Incoming::Message(m)] if m.text == "only once"),
        "{first:?}"
    );
    // Bob's client restarts (a new session and inbox from the same home) and is handed the
    // same envelope again, as a relay or an attacker replaying it would: not shown again.
    drop(bob);
    let mut again = dir.register("bob", &tmp.path().join("bob")).await;
    let mut inbox = again.inbox().unwrap();
    let replayed = again.process(event, &mut inbox).await.unwrap();
    assert!(replayed.is_empty(), "{replayed:?}");
    let kept = std::fs::read_to_string(tmp.path().join("bob/replay/bob")).unwrap();
    assert!(kept.starts_with("seen alice "), "{kept}");
    dir.stop().await;
}

#[tokio::test]
async fn a_list_of_directories_fails_over_to_the_next_one_that_answers() {
    let tmp = tempfile::tempdir().unwrap();
    // Two directories with their own data, the second trusting the first's CA (as replicas
    // behind one certificate authority would).
    let first = TestDirectory::start(&tmp.path().join("one"), &[]).await;
    let second_data = tmp.path().join("two");
    std::fs::create_dir_all(second_data.join("tls")).unwrap();
    for file in ["ca.pem", "ca.key", "server.pem", "server.key"] {
        std::fs::copy(
            tmp.path().join("one/tls").join(file),
            second_data.join("tls").join(file),
        )
        .unwrap();
    }
    let second = TestDirectory::start(&second_data, &[]).await;
    let mut options = first.options("alice", &tmp.path().join("alice"));
    // Nothing listens on the first address; the list goes on to the next.
    options.directory = format!("https://localhost:1,{},{}", first.url, second.url);
    let connected = svs_cli::reconnect::connect(&options, |_, _| {})
        .await
        .unwrap();
    drop(connected);
    // The first replica goes away: reconnecting lands on the second.
    first.stop().await;
    let mut connected = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        svs_cli::reconnect::connect(&options, |_, _| {}),
    )
    .await
    .expect("failed over in time")
    .unwrap();
    let listed = connected.session.list_peers().await.unwrap();
    assert!(listed.peers.iter().any(|p| p.name == "alice"));
    // With every address down, the error names each one.
    second.stop().await;
    let err = svs_common::client::connect(&options.directory, options.ca.as_deref())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("none of the 3 addresses answered"), "{err}");
    assert!(err.contains("localhost:1"), "{err}");
}

#[tokio::test]
async fn every_message_of_a_session_replayed_in_any_order_on_any_directory_is_refused() {
    const MESSAGES: usize = 40;
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let mut alice = Client::join(&dir, "alice", &tmp.path().join("alice")).await;
    let mut bob = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    let bob_peer = alice.wait_for_peer("bob").await;
    bob.wait_for_peer("alice").await;
    for n in 0..MESSAGES {
        alice
            .session
            .send_text(std::slice::from_ref(&bob_peer), &format!("m{n}"))
            .await
            .unwrap();
    }
    let mut events = Vec::new();
    for _ in 0..MESSAGES {
        events.push(Event {
            kind: Some(event::Kind::Envelope(bob.raw_envelope().await)),
        });
    }
    // First delivery in another order than sent (stride 17 over 40): every one is new, all shown.
    let shuffled: Vec<Event> = (0..MESSAGES)
        .map(|i| events[(i * 17) % MESSAGES].clone())
        .collect();
    let mut shown = Vec::new();
    for event in &shuffled {
        for incoming in bob
            .session
            .process(event.clone(), &mut bob.inbox)
            .await
            .unwrap()
        {
            if let Incoming::Message(m) = incoming {
                shown.push(m.text);
            }
        }
    }
    shown.sort();
    let mut sent: Vec<String> = (0..MESSAGES).map(|n| format!("m{n}")).collect();
    sent.sort();
    assert_eq!(shown, sent, "every message shown once, whatever the order");
    // The whole session again, backwards, to the same client: nothing.
    for event in events.iter().rev() {
        let again = bob
            .session
            .process(event.clone(), &mut bob.inbox)
            .await
            .unwrap();
        assert!(again.is_empty(), "replayed to the same session: {again:?}");
    }
    // Bob restarts and reads through another directory (one that never saw these ids, so its
    // relay cannot refuse them): the client itself refuses every one, in any order.
    drop(bob);
    let other = TestDirectory::start(&tmp.path().join("other"), &[]).await;
    for (n, directory) in [&dir, &other].into_iter().enumerate() {
        let mut sender = Client::join(directory, "alice", &tmp.path().join("alice")).await;
        let mut reader = Client::join(directory, "bob", &tmp.path().join("bob")).await;
        for event in shuffled.iter().rev() {
            let replayed = reader
                .session
                .process(event.clone(), &mut reader.inbox)
                .await
                .unwrap();
            assert!(
                replayed.is_empty(),
                "replayed after a restart: {replayed:?}"
            );
        }
        // The same path still shows what is new: the refusals above are replay protection.
        let to_bob = sender.wait_for_peer("bob").await;
        let fresh = format!("fresh {n}");
        sender.session.send_text(&[to_bob], &fresh).await.unwrap();
        assert_eq!(reader.message().await.text, fresh);
    }
    other.stop().await;
    dir.stop().await;
}
