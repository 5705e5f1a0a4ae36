//! Cluster mode with a real `nats-server -js` (Debian's package; scripts/install-deps.sh installs
//! it) and real directory-service binaries as replicas sharing one data dir for TLS and one token
//! key, driven through the real client code.
#![allow(clippy::unwrap_used)]

use svs_test_support as support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{ChildService, NATS_USER, NatsServer as Nats, free_port, log_file};
use svs_cli::home::Home;
use svs_cli::inbox::Incoming;
use svs_cli::session::{ConnectOptions, ReachState, Session};
use svs_common::proto::directory::Peer;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);
/// Replicas are told this timeout, so a killed one is noticed within seconds.
const REPLICA_TIMEOUT_SECS: &str = "3";

/// A directory-service replica (the real binary); `kill` is SIGKILL.
struct Replica {
    process: ChildService,
    metrics_port: u16,
}

impl Replica {
    fn url(&self) -> String {
        format!("https://localhost:{}", self.process.port)
    }

    /// The replica's Prometheus metrics.
    async fn metrics(&self) -> String {
        support::scrape_metrics(self.metrics_port).await
    }

    fn kill(&mut self) {
        self.process.kill();
    }
}

/// NATS, replicas, and what clients need to reach them.
struct Cluster {
    root: tempfile::TempDir,
    nats: Nats,
    replicas: Vec<Replica>,
    /// Flags every replica gets.
    flags: Vec<String>,
}

impl Cluster {
    async fn start(replicas: usize) -> Self {
        Self::start_with(replicas, &[]).await
    }

    async fn start_with(replicas: usize, flags: &[&str]) -> Self {
        let root = tempfile::tempdir().unwrap();
        let nats = Nats::start(&root.path().join("nats")).await;
        Self::start_on(root, nats, replicas, flags).await
    }

    /// NATS serving TLS with a certificate from the local CA the replicas use (made first in
    /// their data dir), and replicas told to trust that CA.
    async fn start_with_tls_to_nats(replicas: usize) -> Self {
        let root = tempfile::tempdir().unwrap();
        let names = svs_server::tls::default_server_names(&[]);
        let (files, _) =
            svs_server::tls::ensure_generated(&root.path().join("data"), &names).unwrap();
        let tls = vec![
            "--tls".to_string(),
            "--tlscert".into(),
            files.server_cert.display().to_string(),
            "--tlskey".into(),
            files.server_key.display().to_string(),
        ];
        let nats = Nats::start_with(&root.path().join("nats"), tls).await;
        let ca = files.ca_cert.display().to_string();
        Self::start_on(root, nats, replicas, &["--nats-ca", &ca]).await
    }

    async fn start_on(
        root: tempfile::TempDir,
        nats: Nats,
        replicas: usize,
        flags: &[&str],
    ) -> Self {
        let status = Command::new(env!("CARGO_BIN_EXE_directory-service"))
            .arg("new-token-key")
            .arg(root.path().join("token_key.pem"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let mut cluster = Self {
            root,
            nats,
            replicas: Vec::new(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        // One at a time: the first creates the TLS material the others then load.
        for _ in 0..replicas {
            cluster.add_replica().await;
        }
        cluster
    }

    async fn add_replica(&mut self) {
        let port = free_port();
        let metrics_port = free_port();
        let data = self.root.path().join("data");
        let mut command = Command::new(env!("CARGO_BIN_EXE_directory-service"));
        command
            .args(["--data-dir", &data.display().to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--nats", &self.nats.url()])
            .args(self.nats.credentials())
            .arg("--token-key")
            .arg(self.root.path().join("token_key.pem"))
            .args(["--replica-timeout-secs", REPLICA_TIMEOUT_SECS])
            .args(["--presence-batch-ms", "0"])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(&self.flags)
            .stdout(Stdio::null())
            .stderr(log_file(&format!("replica-{port}")));
        let replica = Replica {
            process: ChildService::spawn(command, port),
            metrics_port,
        };
        svs_common::client::wait_healthy(&replica.url(), Some(&self.ca()), WAIT)
            .await
            .expect("replica became healthy");
        self.replicas.push(replica);
    }

    fn ca(&self) -> PathBuf {
        self.root.path().join("data/tls/ca.pem")
    }

    /// Runs one more replica that is expected to stop by itself (it cannot use NATS with these
    /// flags); returns what it wrote on stderr.
    fn replica_that_stops(
        &self,
        flags: &[&str],
        credentials: &[impl AsRef<std::ffi::OsStr>],
    ) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_directory-service"))
            .arg("--data-dir")
            .arg(self.root.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--nats", &self.nats.url()])
            .args(flags)
            .args(credentials)
            .arg("--token-key")
            .arg(self.root.path().join("token_key.pem"))
            .output()
            .unwrap();
        assert!(!output.status.success(), "the replica stopped");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// Options for `name` reaching the replicas `at` (a comma-separated list, tried in order).
    fn options(&self, name: &str, at: &[usize]) -> ConnectOptions {
        let urls: Vec<String> = at.iter().map(|&n| self.replicas[n].url()).collect();
        ConnectOptions {
            directory: urls.join(","),
            ca: Some(self.ca()),
            name: name.to_string(),
            home: Home::new(self.root.path().join("homes").join(name)),
            key_bits: 2048,
        }
    }

    async fn join(&self, name: &str, at: &[usize]) -> Client {
        Client::join(self.options(name, at)).await
    }
}

/// A registered, subscribed client (svs-test-support's) that can register again through the
/// replica list.
struct Client {
    options: ConnectOptions,
    inner: support::client::Client,
}

impl std::ops::Deref for Client {
    type Target = support::client::Client;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl Client {
    async fn join(options: ConnectOptions) -> Self {
        let session = Session::register(&options).await.unwrap();
        let inner = support::client::Client::subscribed(session).await;
        Self { options, inner }
    }

    /// Registers again through the replica list (the first that answers) and subscribes.
    async fn rejoin(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match Session::register(&self.options).await {
                Ok(mut session) => {
                    if let Ok(mut stream) = session.subscribe().await {
                        let inner = &mut self.inner;
                        let roster = session
                            .await_roster(&mut stream, &mut inner.inbox)
                            .await
                            .unwrap();
                        inner.seen.extend(roster);
                        inner.session = session;
                        inner.stream = stream;
                        return;
                    }
                }
                Err(e) => assert!(Instant::now() < deadline, "could not rejoin: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn peer(&mut self, name: &str) -> Peer {
        let listed = self.session.list_peers().await.unwrap();
        match listed.peers.into_iter().find(|p| p.name == name) {
            Some(peer) => peer,
            None => {
                self.until(|i| match i {
                    Incoming::Joined(p, _) if p.name == name => Some(p.clone()),
                    _ => None,
                })
                .await
            }
        }
    }

    async fn message_from(&mut self, from: &str) -> String {
        self.until(|i| match i {
            Incoming::Message(m) if m.from == from => Some(m.text.clone()),
            _ => None,
        })
        .await
    }

    /// As `message_from`, but when the subscription is lost (its replica could not read the
    /// mail from NATS a moment ago) it rejoins, as `svs` does, and the stored message comes
    /// with the new subscription.
    async fn message_from_rejoining(&mut self, from: &str) -> String {
        loop {
            let found = self
                .inner
                .try_until(|i| match i {
                    Incoming::Message(m) if m.from == from => Some(m.text.clone()),
                    _ => None,
                })
                .await;
            match found {
                Ok(text) => return text,
                Err(e) if e.is_worth_retrying() => self.rejoin().await,
                Err(e) => panic!("waiting for a message from {from}: {e}"),
            }
        }
    }

    async fn left(&mut self, name: &str) -> String {
        self.until(|i| match i {
            Incoming::Left { name: n, reason } if n == name => Some(reason.clone()),
            _ => None,
        })
        .await
    }
}

#[tokio::test]
async fn clients_on_two_replicas_see_each_other_message_and_get_receipts() {
    let cluster = Cluster::start(2).await;
    let mut alice = cluster.join("alice", &[0]).await;
    let mut bob = cluster.join("bob", &[1]).await;
    // Presence crosses replicas both ways.
    let bob_peer = alice.peer("bob").await;
    let alice_peer = bob.peer("alice").await;
    assert_eq!(alice_peer.name, "alice");

    let sent = alice
        .session
        .send_text(&[bob_peer], "hello from A")
        .await
        .unwrap();
    assert_eq!(sent.reaches[0].state, ReachState::Delivering);
    assert_eq!(bob.message_from("alice").await, "hello from A");
    // Bob acknowledged it through B; the receipt reaches alice on A.
    let id = hex::encode(sent.message_id);
    alice
        .until(|i| match i {
            Incoming::Delivered { id: got, to } if *got == id && to == "bob" => Some(()),
            _ => None,
        })
        .await;
    let sent = bob
        .session
        .send_text(&[alice_peer], "and back from B")
        .await
        .unwrap();
    assert_eq!(sent.reaches[0].state, ReachState::Delivering);
    assert_eq!(alice.message_from("bob").await, "and back from B");
    // Each replica counted its NATS round trips: the envelope it stored, the names it claimed.
    for replica in &cluster.replicas {
        let metrics = replica.metrics().await;
        for op in ["publish", "kv"] {
            let count = metrics
                .lines()
                .find(|l| {
                    l.starts_with(&format!("svs_directory_nats_seconds_count{{op=\"{op}\"}}"))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
            assert!(
                count.is_some_and(|c| c > 0),
                "{op} round trips counted: {metrics}"
            );
        }
    }

    // Both replicas list the same names.
    for replica in 0..2 {
        let mut carol = cluster.join("carol", &[replica]).await;
        let mut names: Vec<String> = carol
            .session
            .list_peers()
            .await
            .unwrap()
            .peers
            .into_iter()
            .map(|p| p.name)
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["alice", "bob", "carol"],
            "as seen on replica {replica}"
        );
        carol.session.quit().await.unwrap();
        alice.left("carol").await;
    }
}

#[tokio::test]
async fn mail_stored_through_one_replica_is_delivered_through_another() {
    let cluster = Cluster::start(2).await;
    let mut alice = cluster.join("alice", &[0]).await;
    // Dave registers on B and goes offline.
    let mut dave = cluster.join("dave", &[1]).await;
    let dave_peer = alice.peer("dave").await;
    dave.session.quit().await.unwrap();
    alice.left("dave").await;
    drop(dave);

    let mut ids = Vec::new();
    for n in 0..3 {
        let sent = alice
            .session
            .send_text(std::slice::from_ref(&dave_peer), &format!("stored {n}"))
            .await
            .unwrap();
        assert_eq!(sent.reaches[0].state, ReachState::Stored);
        ids.push(hex::encode(sent.message_id));
    }
    // He comes back on A this time, then on B: the mail is there, in order, once.
    let mut dave = cluster.join("dave", &[0]).await;
    for n in 0..3 {
        assert_eq!(dave.message_from("alice").await, format!("stored {n}"));
    }
    // Alice got a receipt for each (live, through the stream every replica follows).
    for id in ids {
        alice
            .until(|i| matches!(i, Incoming::Delivered { id: got, .. } if *got == id).then_some(()))
            .await;
    }
    dave.session.quit().await.unwrap();
    let dave = cluster.join("dave", &[1]).await;
    let again = dave
        .seen
        .iter()
        .filter(|i| matches!(i, Incoming::Message(_) | Incoming::Redelivered))
        .count();
    assert_eq!(again, 0, "acknowledged mail is gone on every replica");
}

#[tokio::test]
async fn one_name_raced_on_two_replicas_is_bound_exactly_once() {
    let cluster = Cluster::start(2).await;
    for round in 0..5 {
        let name = format!("race{round}");
        let mut first = cluster.options(&name, &[0]);
        let mut second = cluster.options(&name, &[1]);
        // Two different keys: each home makes its own.
        first.home = Home::new(cluster.root.path().join(format!("r{round}a")));
        second.home = Home::new(cluster.root.path().join(format!("r{round}b")));
        let (a, b) = tokio::join!(Session::register(&first), Session::register(&second));
        let won = [a.is_ok(), b.is_ok()];
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: exactly one key gets the name ({:?} / {:?})",
            a.as_ref().err(),
            b.as_ref().err()
        );
        let refusal = a.err().or(b.err()).unwrap().to_string();
        assert!(
            refusal.contains("another key") || refusal.contains("taken"),
            "round {round}: {refusal}"
        );
    }
}

#[tokio::test]
async fn a_killed_replica_loses_no_accepted_message_and_its_names_leave() {
    let mut cluster = Cluster::start(2).await;
    // Alice reaches A first, B if A is down; carol only A; bob stays on B.
    let mut alice = cluster.join("alice", &[0, 1]).await;
    let _carol = cluster.join("carol", &[0]).await;
    let mut bob = cluster.join("bob", &[1]).await;
    let bob_peer = alice.peer("bob").await;
    bob.peer("alice").await;
    bob.peer("carol").await;
    let mut killed_at = Instant::now();

    let alice_key = svs_cli::session::load_identity(&alice.options.home, "alice", 2048)
        .unwrap()
        .0;
    let bob_key = svs_common::identity::parse_public_key(&bob_peer.public_key_der).unwrap();
    let mut accepted = Vec::new();
    let started = Instant::now();
    for n in 0..20u64 {
        if n == 10 {
            cluster.replicas[0].kill();
            killed_at = Instant::now();
        }
        let envelope = svs_common::sealed::seal(
            &mut svs_common::identity::os_rng(),
            &svs_common::sealed::SealParams {
                sender: "alice",
                sender_key: &alice_key,
                counter: svs_common::time::now_ms() * 1000 + n,
                timestamp_ms: svs_common::time::now_ms(),
                recipients: &[svs_common::sealed::SealRecipient {
                    name: "bob",
                    key: &bob_key,
                }],
            },
            format!("message {n}").as_bytes(),
        )
        .unwrap();
        // Sent until the directory says OK (or that it has this one already), failing over to B.
        loop {
            match alice.session.send_envelope(envelope.clone()).await {
                Ok(sent) => {
                    accepted.push(format!("message {n}"));
                    assert_eq!(sent.reaches[0].state, ReachState::Delivering);
                    break;
                }
                Err(e) if e.to_string().contains("already accepted") => {
                    accepted.push(format!("message {n}"));
                    break;
                }
                Err(_) => alice.rejoin().await,
            }
        }
    }
    // Carol's only session died with A: bob sees her leave once A's heartbeat is overdue.
    // Alice came back through B; whether bob saw her leave depends on which came first.
    let reason = bob.left("carol").await;
    assert_eq!(reason, "disconnected");
    let noticed = killed_at.elapsed();
    assert!(
        bob.session
            .list_peers()
            .await
            .unwrap()
            .peers
            .iter()
            .any(|p| p.name == "alice")
    );
    // Every accepted message arrives once.
    let got = loop {
        let mut got: HashMap<String, usize> = HashMap::new();
        for item in &bob.seen {
            if let Incoming::Message(m) = item {
                *got.entry(m.text.clone()).or_default() += 1;
            }
        }
        if got.len() >= accepted.len() {
            break got;
        }
        bob.message_from("alice").await;
    };
    let redelivered = bob
        .seen
        .iter()
        .filter(|i| matches!(i, Incoming::Redelivered))
        .count();
    assert_eq!(redelivered, 0);
    for text in &accepted {
        assert_eq!(got.get(text), Some(&1), "{text}");
    }
    eprintln!(
        "a killed replica's names left {noticed:?} after the kill (timeout {REPLICA_TIMEOUT_SECS} s); 20 sends with a failover took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn replicas_report_not_serving_while_nats_is_away_and_recover_without_a_restart() {
    let mut cluster = Cluster::start(2).await;
    let mut alice = cluster.join("alice", &[0]).await;
    let mut bob = cluster.join("bob", &[1]).await;
    let bob_peer = alice.peer("bob").await;
    cluster.nats.stop();
    for replica in &cluster.replicas {
        let deadline = Instant::now() + WAIT;
        loop {
            match svs_common::client::health_check(&replica.url(), Some(&cluster.ca()), "").await {
                Err(e) if e.to_string().contains("NOT_SERVING") => break,
                _ => {
                    assert!(Instant::now() < deadline, "replica still says SERVING");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let refused = alice
        .session
        .send_text(std::slice::from_ref(&bob_peer), "while NATS is away")
        .await;
    assert!(refused.is_err(), "nothing is accepted that cannot be kept");
    // A new name cannot be bound either, and says so at once (it waited for the request
    // timeout and answered CANCELLED).
    let asked = Instant::now();
    let carol = Session::register(&cluster.options("carol", &[0])).await;
    let took = asked.elapsed();
    match carol {
        Err(svs_cli::CliError::Lost(why)) => {
            assert!(why.contains("cannot reach its NATS cluster"), "{why}")
        }
        Err(other) => panic!("UNAVAILABLE expected, got {other:?}"),
        Ok(_) => panic!("a name was bound while NATS was away"),
    }
    assert!(took < Duration::from_secs(5), "answered in {took:?}");
    cluster.nats.run().await;
    for replica in &cluster.replicas {
        svs_common::client::wait_healthy(&replica.url(), Some(&cluster.ca()), WAIT)
            .await
            .expect("replica serves again once NATS is back");
    }
    let sent = alice
        .session
        .send_text(&[bob_peer], "NATS is back")
        .await
        .unwrap();
    assert_eq!(sent.reaches[0].state, ReachState::Delivering);
    // A replica may fail to read from NATS for a moment after it returns (CI saw "NATS did not
    // answer" once): bob then reconnects, as every svs client does, and the message, stored,
    // still reaches him.
    assert_eq!(bob.message_from_rejoining("alice").await, "NATS is back");
}

#[tokio::test]
async fn a_name_with_sessions_on_two_replicas_leaves_only_with_its_last() {
    let cluster = Cluster::start(2).await;
    let mut watcher = cluster.join("watcher", &[0]).await;
    let mut on_a = cluster.join("alice", &[0]).await;
    watcher.peer("alice").await;
    let mut on_b = cluster.join("alice", &[1]).await;
    on_b.peer("watcher").await;
    on_a.session.quit().await.unwrap();
    // Still online through B: a message to her is delivered there, and no `left` was announced.
    let sent = watcher
        .session
        .send_text(&[on_b.peer("alice").await], "still here?")
        .await
        .unwrap();
    assert_eq!(sent.reaches[0].state, ReachState::Delivering);
    assert_eq!(on_b.message_from("watcher").await, "still here?");
    assert!(
        !watcher
            .seen
            .iter()
            .any(|i| matches!(i, Incoming::Left { name, .. } if name == "alice")),
        "alice is still online on B"
    );
    on_b.session.quit().await.unwrap();
    assert_eq!(watcher.left("alice").await, "quit");
}

#[tokio::test]
async fn mailbox_quota_and_expiry_hold_across_replicas() {
    let cluster =
        Cluster::start_with(2, &["--mailbox-max-messages", "2", "--mailbox-ttl", "3s"]).await;
    let mut alice = cluster.join("alice", &[0]).await;
    let mut dave = cluster.join("dave", &[1]).await;
    let dave_peer = alice.peer("dave").await;
    dave.session.quit().await.unwrap();
    alice.left("dave").await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let sent = alice
            .session
            .send_text(std::slice::from_ref(&dave_peer), &format!("kept {n}"))
            .await
            .unwrap();
        assert_eq!(sent.reaches[0].state, ReachState::Stored);
        ids.push(hex::encode(sent.message_id));
    }
    let full = alice
        .session
        .send_text(std::slice::from_ref(&dave_peer), "one too many")
        .await
        .unwrap();
    assert_eq!(full.reaches[0].state, ReachState::Refused);
    assert!(
        full.reaches[0].detail.contains("full"),
        "{}",
        full.reaches[0].detail
    );
    // Nobody reads them: both expire, and alice is told of each exactly once although every
    // replica runs the expiry pass.
    for id in &ids {
        alice
            .until(|i| {
                matches!(i, Incoming::Undelivered { id: got, .. } if got == id).then_some(())
            })
            .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let notices = alice
        .seen
        .iter()
        .filter(|i| matches!(i, Incoming::Undelivered { .. }))
        .count();
    assert_eq!(notices, 2);
}

#[tokio::test]
async fn the_mail_stores_ceiling_holds_in_cluster_mode() {
    // 300 KB for every mailbox together: four messages of 60 KiB, then JetStream refuses more.
    let cluster = Cluster::start_with(2, &["--mail-max-total-bytes", "300000"]).await;
    let mut alice = cluster.join("alice", &[0]).await;
    let mut erin = cluster.join("erin", &[1]).await;
    let erin_peer = alice.peer("erin").await;
    erin.session.quit().await.unwrap();
    alice.left("erin").await;
    let text = "y".repeat(60 * 1024);
    let mut stored = 0;
    let refusal = loop {
        let sent = alice
            .session
            .send_text(std::slice::from_ref(&erin_peer), &text)
            .await
            .unwrap();
        match sent.reaches[0].state {
            ReachState::Stored => stored += 1,
            _ => break sent.reaches[0].detail.clone(),
        }
        assert!(stored <= 5, "more than 300 KB was stored");
    };
    assert!(stored >= 3, "only {stored} stored before the ceiling");
    assert!(
        refusal.contains("holds as much unread mail as it keeps"),
        "{refusal}"
    );
}

#[tokio::test]
async fn replicas_reach_nats_over_tls_and_refuse_a_server_they_cannot_verify() {
    let cluster = Cluster::start_with_tls_to_nats(2).await;
    let mut alice = cluster.join("alice", &[0]).await;
    let mut bob = cluster.join("bob", &[1]).await;
    let bob_peer = alice.peer("bob").await;
    alice
        .session
        .send_text(&[bob_peer], "over TLS to NATS")
        .await
        .unwrap();
    assert_eq!(bob.message_from("alice").await, "over TLS to NATS");
    // Without the CA the replica cannot verify NATS's certificate: it gives up and says why.
    let credentials = cluster.nats.credentials();
    let log = cluster.replica_that_stops(&["--nats-connect-secs", "2"], &credentials);
    assert!(log.contains("cannot reach NATS"), "{log}");
}

#[tokio::test]
async fn nats_admits_only_the_replicas_and_only_to_what_they_use() {
    let cluster = Cluster::start(1).await;
    let mut alice = cluster.join("alice", &[0]).await;
    let bob = cluster.join("bob", &[0]).await;
    drop(bob);
    // Anyone else on the network: no credentials, no connection (it could read every envelope
    // and write a name's key before; now it cannot sign in).
    let anonymous = async_nats::ConnectOptions::new()
        .max_reconnects(Some(1))
        .connect(cluster.nats.url())
        .await;
    let refused = anonymous.expect_err("NATS refuses a client without credentials");
    assert_eq!(
        refused.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{refused}"
    );
    // The replicas' own user may not subscribe to the mail subjects directly (only through the
    // JetStream API, as the replicas do).
    let password = std::fs::read_to_string(cluster.nats.password_file()).unwrap();
    let replica_user =
        async_nats::ConnectOptions::with_user_and_password(NATS_USER.into(), password)
            .connect(cluster.nats.url())
            .await
            .unwrap();
    let mut snooping = replica_user.subscribe("svs.mail.>").await.unwrap();
    replica_user.flush().await.unwrap();
    let bob_peer = alice.peer("bob").await;
    alice
        .session
        .send_text(&[bob_peer], "sealed, while someone listens")
        .await
        .unwrap();
    let next = tokio::time::timeout(
        Duration::from_secs(2),
        futures_util::StreamExt::next(&mut snooping),
    )
    .await;
    assert!(
        !matches!(next, Ok(Some(_))),
        "a plain subscription to svs.mail.> got a message: {next:?}"
    );
    // Nor may it delete the mail stream or make a stream of its own.
    let jetstream = async_nats::jetstream::new(replica_user.clone());
    assert!(
        jetstream.delete_stream("SVS_MAIL").await.is_err(),
        "the replicas' user deleted the mail stream"
    );
    let other = async_nats::jetstream::stream::Config {
        name: "OTHER".into(),
        subjects: vec!["other.>".into()],
        ..Default::default()
    };
    assert!(
        jetstream.create_stream(other).await.is_err(),
        "the replicas' user made another stream"
    );
    // A replica with a wrong password stops at once and says why.
    let wrong = cluster.root.path().join("wrong_password");
    svs_common::identity::write_secret_file(&wrong, b"not-the-password").unwrap();
    let started = Instant::now();
    let wrong = wrong.display().to_string();
    let log = cluster.replica_that_stops(
        &[],
        &["--nats-user", NATS_USER, "--nats-password-file", &wrong],
    );
    assert!(log.contains("refused this replica's credentials"), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "no 30 s of retries for a wrong password"
    );
    assert!(
        !log.contains("not-the-password"),
        "the password is not logged: {log}"
    );
}
