//! The directory under attack from one address while another keeps working: challenge floods,
//! sockets that never speak TLS, TLS connections that never speak HTTP/2, connections that hold
//! no stream, reused challenges and receipts claimed by a co-recipient. Real service over TLS on
//! 127.0.0.1; the attacker connects from 127.0.0.2 (also loopback on Linux), so per-address
//! limits tell the two apart as they would two machines.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use svs_test_support as support;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::net::closed_within;
use support::{TestDirectory, net};
use svs_common::identity;
use svs_common::proto::directory::directory_client::DirectoryClient;
use svs_common::proto::directory::{GetChallengeRequest, RegisterRequest};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tonic::transport::Channel;

const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

async fn channel_from(source: IpAddr, dir: &TestDirectory) -> Channel {
    net::channel_from(source, &dir.url, &dir.ca).await.unwrap()
}

async fn tcp_from(source: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    net::tcp_from(source, port).await
}

async fn tls_from(
    source: IpAddr,
    dir: &TestDirectory,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    net::tls_from(source, &dir.url, &dir.ca).await
}

fn port_of(dir: &TestDirectory) -> u16 {
    net::port_of(&dir.url)
}

/// Registers alice and bob from 127.0.0.1 with the real client code, subscribes both, and has
/// alice send bob one message. Returns how long all of it took.
async fn alice_messages_bob(dir: &TestDirectory, home: &Path, tag: &str) -> Duration {
    let started = Instant::now();
    let (alice_name, bob_name) = (format!("alice{tag}"), format!("bob{tag}"));
    let mut alice = dir.register(&alice_name, &home.join(&alice_name)).await;
    let mut bob = dir.register(&bob_name, &home.join(&bob_name)).await;
    let mut bob_stream = bob.subscribe().await.unwrap();
    let mut bob_inbox = bob.inbox().unwrap();
    bob.await_roster(&mut bob_stream, &mut bob_inbox)
        .await
        .unwrap();
    let bob_peer = support::listed_peer(&mut alice, &bob_name).await;
    let sent = alice.send_text(&[bob_peer], "still here").await.unwrap();
    assert!(sent.reaches[0].accepted(), "{:?}", sent.reaches);
    let text = support::next_message(&mut bob, &mut bob_stream, &mut bob_inbox)
        .await
        .text;
    assert_eq!(text, "still here");
    started.elapsed()
}

#[tokio::test]
async fn a_challenge_flood_from_one_address_does_not_stop_another() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let key = identity::generate(2048).unwrap();
    let spki = identity::public_key_der(&key.to_public_key());

    let mut flooder = DirectoryClient::new(channel_from(ATTACKER, &dir).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (issued, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flood_started = Instant::now();
    let flood = {
        let (stop, issued, refused, spki) =
            (stop.clone(), issued.clone(), refused.clone(), spki.clone());
        tokio::spawn(async move {
            // Bounded: at most 20,000 calls, ending early when the test is done.
            for n in 0..20_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let request = GetChallengeRequest {
                    name: format!("flood{n}"),
                    public_key_der: spki.clone().into(),
                };
                match flooder.get_challenge(request).await {
                    Ok(_) => issued.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    // Let the flood use up its address's budget first.
    while refused.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = alice_messages_bob(&dir, tmp.path(), "").await;
    stop.store(true, Ordering::Relaxed);
    flood.await.unwrap();
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let (issued, refused) = (
        issued.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    println!(
        "during a flood of {} GetChallenge calls from {ATTACKER} ({issued} answered, {refused} refused), \
         two clients registered and exchanged a message in {took:?}",
        issued + refused
    );
    // The default budget: bursts of 60, then 20 calls per second.
    assert!(
        issued as f64 <= 60.0 + 20.0 * flood_secs + 5.0,
        "the flooding address was held to its budget: {issued} answered in {flood_secs:.1} s"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    dir.stop().await;
}

#[tokio::test]
async fn a_used_or_foreign_challenge_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let mut client = DirectoryClient::new(channel_from(ATTACKER, &dir).await);
    let key = identity::generate(2048).unwrap();
    let spki = identity::public_key_der(&key.to_public_key());
    let challenge = |name: &str| GetChallengeRequest {
        name: name.into(),
        public_key_der: spki.clone().into(),
    };
    let issued = client
        .get_challenge(challenge("mallory"))
        .await
        .unwrap()
        .into_inner();
    let register = |name: &str, challenge: &[u8]| {
        let signature =
            svs_common::registration::sign(&key, &issued.service_id, name, &spki, challenge)
                .unwrap();
        RegisterRequest {
            name: name.into(),
            public_key_der: spki.clone().into(),
            challenge: challenge.to_vec().into(),
            signature: signature.into(),
        }
    };
    // Issued for mallory: useless for another name, even correctly signed.
    let err = client
        .register(register("trent", &issued.challenge))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not issued"), "{err:?}");
    // Made up: refused.
    let err = client
        .register(register("mallory", &[7u8; 32]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    // Used once, then refused.
    client
        .register(register("mallory", &issued.challenge))
        .await
        .unwrap();
    let err = client
        .register(register("mallory", &issued.challenge))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("already used"), "{err:?}");
    // A wrong-length challenge is the caller's error.
    let err = client
        .register(register("mallory", &[1u8; 5]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    dir.stop().await;
}

#[tokio::test]
async fn sockets_that_never_speak_tls_or_http2_cannot_lock_others_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(
        &tmp.path().join("data"),
        &[
            "--max-connections",
            "40",
            "--max-connections-per-address",
            "10",
            "--handshake-timeout-secs",
            "1",
        ],
    )
    .await;

    // Slowloris: 30 plain TCP sockets that never start TLS. Ten get a slot, the rest are closed
    // at once; the ten are closed when the handshake deadline passes.
    let mut silent = Vec::new();
    for _ in 0..30 {
        silent.push(tcp_from(ATTACKER, port_of(&dir)).await.unwrap());
    }
    let took = alice_messages_bob(&dir, tmp.path(), "1").await;
    println!("with 30 silent TCP sockets from {ATTACKER}: registered and messaged in {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    for socket in silent {
        assert!(
            closed_within(socket, Duration::from_secs(5)).await,
            "a socket that never started TLS is closed"
        );
    }

    // TLS idlers: a finished TLS handshake, then never the HTTP/2 preface.
    let mut idlers = Vec::new();
    for _ in 0..10 {
        idlers.push(tls_from(ATTACKER, &dir).await.unwrap());
    }
    assert!(
        tls_from(ATTACKER, &dir).await.is_err(),
        "an eleventh connection from the same address is closed at once"
    );
    let took = alice_messages_bob(&dir, tmp.path(), "2").await;
    println!("with 10 TLS idlers from {ATTACKER}: registered and messaged in {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    for idler in idlers {
        assert!(
            closed_within(idler, Duration::from_secs(5)).await,
            "a TLS connection that never sent the HTTP/2 preface is closed"
        );
    }
    dir.stop().await;
}

#[tokio::test]
async fn a_connection_without_streams_is_closed_and_subscriptions_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir =
        TestDirectory::start(&tmp.path().join("data"), &["--idle-connection-secs", "1"]).await;
    // A client that speaks HTTP/2 (preface and an empty SETTINGS frame) and then opens nothing.
    let mut idle = tls_from(ATTACKER, &dir).await.unwrap();
    idle.write_all(svs_server::serve::accept::HTTP2_PREFACE)
        .await
        .unwrap();
    idle.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    idle.flush().await.unwrap();

    let mut alice = dir.register("alice", &tmp.path().join("alice")).await;
    let mut bob = dir.register("bob", &tmp.path().join("bob")).await;
    let mut bob_stream = bob.subscribe().await.unwrap();
    let mut bob_inbox = bob.inbox().unwrap();
    bob.await_roster(&mut bob_stream, &mut bob_inbox)
        .await
        .unwrap();
    let mut alice_stream = alice.subscribe().await.unwrap();
    let mut alice_inbox = alice.inbox().unwrap();
    alice
        .await_roster(&mut alice_stream, &mut alice_inbox)
        .await
        .unwrap();

    assert!(
        closed_within(idle, Duration::from_secs(10)).await,
        "a connection holding no stream was closed"
    );
    // Both subscriptions outlived the idle timeout and still carry messages.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let bob_peer = support::listed_peer(&mut alice, "bob").await;
    alice.send_text(&[bob_peer], "after idle").await.unwrap();
    let got = support::next_message(&mut bob, &mut bob_stream, &mut bob_inbox).await;
    assert_eq!(
        got.text, "after idle",
        "bob's subscription survived the idle timeout"
    );
    dir.stop().await;
}

/// A message whose field 1 is a number where GetChallengeRequest has a string.
#[derive(Clone, PartialEq, prost::Message)]
struct NotAChallengeRequest {
    #[prost(uint64, tag = "1")]
    name: u64,
}

#[tokio::test]
async fn a_body_that_does_not_decode_is_invalid_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let channel = svs_common::client::connect(&dir.url, Some(&dir.ca))
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/svs.directory.v1.Directory/GetChallenge");
    let codec = tonic_prost::ProstCodec::<NotAChallengeRequest, NotAChallengeRequest>::default();
    let err = grpc
        .unary(
            tonic::Request::new(NotAChallengeRequest { name: 7 }),
            path,
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("not a valid protobuf"), "{err:?}");
    dir.stop().await;
}

/// Seals `text` from `sender` (key in `<home>/keys/<sender>.pem`) for `peer`.
fn sealed_for(
    home: &Path,
    sender: &str,
    peer: &svs_common::proto::directory::Peer,
    text: &str,
) -> svs_common::proto::directory::Envelope {
    use svs_common::sealed;
    let key = identity::read_private_key(&home.join(format!("keys/{sender}.pem"))).unwrap();
    let peer_key = identity::parse_public_key(&peer.public_key_der).unwrap();
    sealed::seal(
        &mut identity::os_rng(),
        &sealed::SealParams {
            sender,
            sender_key: &key,
            counter: svs_common::time::now_ms() * 1000,
            timestamp_ms: svs_common::time::now_ms(),
            recipients: &[sealed::SealRecipient {
                name: &peer.name,
                key: &peer_key,
            }],
        },
        text.as_bytes(),
    )
    .unwrap()
}

#[tokio::test]
async fn sessions_do_not_multiply_a_names_rate_and_retryable_refusals_say_when() {
    use svs_cli::session::Bearer;
    use svs_common::proto::directory::SendRequest;
    use tonic_types::StatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(
        &tmp.path().join("data"),
        &[
            "--send-burst-per-name",
            "6",
            "--send-rate-per-name",
            "1",
            "--max-sessions-per-name",
            "2",
        ],
    )
    .await;
    let home = tmp.path().join("alice");
    let mut bob = dir.register("bob", &tmp.path().join("bob")).await;
    let bob_peer = support::listed_peer(&mut bob, "bob").await;
    let one = dir.register("alice", &home).await;
    let two = dir.register("alice", &home).await;
    let channel = svs_common::client::connect(&dir.url, Some(&dir.ca))
        .await
        .unwrap();
    let api = |token: &str| {
        DirectoryClient::with_interceptor(channel.clone(), Bearer::new(token).unwrap())
    };
    let (mut api_one, mut api_two) = (api(&one.token), api(&two.token));
    let send = |text: &str| SendRequest {
        envelope: Some(sealed_for(&home, "alice", &bob_peer, text)),
    };
    // Each session alone is within its own budget (200); the name's budget of 6 is shared.
    for n in 0..3 {
        api_one.send(send(&format!("one {n}"))).await.unwrap();
        api_two.send(send(&format!("two {n}"))).await.unwrap();
    }
    let refused = api_two.send(send("one too many")).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("across all its sessions"),
        "{refused:?}"
    );
    let delay = refused
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a rate refusal says when to retry");
    assert!(delay <= Duration::from_secs(1), "{delay:?}");
    assert!(matches!(
        svs_cli::CliError::from(refused),
        svs_cli::CliError::RefusedForNow { .. }
    ));
    // The client waits as told and gets through.
    tokio::time::sleep(delay).await;
    api_one.send(send("after the wait")).await.unwrap();

    // A final refusal has no delay: the session cap, a message too large.
    let third = svs_cli::session::Session::register(&dir.options("alice", &home))
        .await
        .expect_err("a third session is over the cap");
    assert!(
        matches!(third, svs_cli::CliError::Refused(_)),
        "a cap is final, not retried: {third:?}"
    );
    let big = sealed_for(&home, "alice", &bob_peer, &"x".repeat(64 * 1024 + 1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let refused = api_one
        .send(SendRequest {
            envelope: Some(big),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.get_details_retry_info().is_none(), "{refused:?}");
    dir.stop().await;
}

#[tokio::test]
async fn one_address_claims_only_so_many_new_names_and_returning_names_still_sign_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(
        &tmp.path().join("data"),
        &["--max-new-names-per-address-per-hour", "3"],
    )
    .await;
    let home = tmp.path().join("farm");
    let from_attacker = |name: &str| {
        let options = dir.options(name, &home);
        let dir = &dir;
        async move {
            let channel = channel_from(ATTACKER, dir).await;
            svs_cli::session::Session::register_on(&options, channel).await
        }
    };
    for n in 0..3 {
        from_attacker(&format!("farm{n}"))
            .await
            .unwrap()
            .quit()
            .await
            .unwrap();
    }
    let asked = Instant::now();
    let refused = from_attacker("farm3")
        .await
        .expect_err("a fourth new name is refused");
    let message = refused.to_string();
    assert!(
        message.contains("claimed 3 new names within the hour"),
        "{message}"
    );
    assert!(
        matches!(refused, svs_cli::CliError::RefusedForNow { .. }),
        "{refused:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "a wait of 20 minutes is reported, not retried ({:?})",
        asked.elapsed()
    );
    // A name the address already holds signs in as always; another address is unaffected.
    from_attacker("farm0").await.unwrap().quit().await.unwrap();
    dir.register("alice", &tmp.path().join("alice"))
        .await
        .quit()
        .await
        .unwrap();
    dir.stop().await;

    // Registration closed (0): the names bound before still sign in, a new one is refused, final.
    let closed = TestDirectory::start(
        &tmp.path().join("data"),
        &["--max-new-names-per-address-per-hour", "0"],
    )
    .await;
    closed
        .register("alice", &tmp.path().join("alice"))
        .await
        .quit()
        .await
        .unwrap();
    let refused = svs_cli::session::Session::register(&closed.options("newcomer", &home))
        .await
        .expect_err("a new name is refused while registration is closed");
    assert!(
        matches!(&refused, svs_cli::CliError::Refused(why) if why.contains("takes no new names")),
        "{refused:?}"
    );
    closed.stop().await;
}

#[tokio::test]
async fn a_trusted_proxy_passes_on_each_clients_address_and_no_one_else_can_claim_one() {
    const PROXY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(
        &tmp.path().join("data"),
        &[
            "--proxy-protocol-from",
            "127.0.0.3",
            "--max-new-names-per-address-per-hour",
            "1",
        ],
    )
    .await;
    let home = tmp.path().join("homes");
    let register_as = |client: &'static str, name: &'static str| {
        let options = dir.options(name, &home);
        let (url, ca) = (dir.url.clone(), dir.ca.clone());
        async move {
            let channel = net::channel_via_proxy(PROXY, client.parse().unwrap(), &url, &ca).await?;
            svs_cli::session::Session::register_on(&options, channel)
                .await
                .map_err(|e| e.to_string())
        }
    };
    // Two clients behind one proxy: each has its own budget of one new name.
    register_as("203.0.113.1:40001", "first").await.unwrap();
    let refused = register_as("203.0.113.1:40002", "second")
        .await
        .expect_err("a second new name for 203.0.113.1 is refused");
    assert!(refused.contains("claimed 1 new names"), "{refused}");
    register_as("203.0.113.2:40003", "second").await.unwrap();
    // A connection from the proxy's address without a header is not served.
    let bare = async {
        let channel = net::channel_from(PROXY, &dir.url, &dir.ca).await?;
        let options = dir.options("third", &home);
        svs_cli::session::Session::register_on(&options, channel)
            .await
            .map_err(|e| e.to_string())
    };
    let bare = tokio::time::timeout(Duration::from_secs(15), bare).await;
    assert!(
        matches!(bare, Ok(Err(_))),
        "a proxy connection without a header is closed"
    );
    // Anyone else sending a header is not believed: the header is never read, TLS fails.
    let spoofed = net::channel_via_proxy(
        ATTACKER,
        "203.0.113.3:1".parse().unwrap(),
        &dir.url,
        &dir.ca,
    )
    .await;
    let spoofed = match spoofed {
        Err(e) => Err(e),
        Ok(channel) => {
            let options = dir.options("fourth", &home);
            svs_cli::session::Session::register_on(&options, channel)
                .await
                .map_err(|e| e.to_string())
        }
    };
    assert!(
        spoofed.is_err(),
        "a header from an untrusted address is refused"
    );
    dir.stop().await;
}
