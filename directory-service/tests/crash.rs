//! The real directory-service binary killed with SIGKILL and restarted on the same data dir:
//! a message whose Send returned OK is delivered exactly once afterwards, and a running
//! `svs listen` (the real command code) reconnects by itself and receives what follows.
#![allow(clippy::unwrap_used)]

use svs_test_support as support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::free_port;
use svs_cli::commands::Global;
use svs_cli::commands::listen::ListenArgs;
use svs_cli::home::Home;
use svs_cli::inbox::Incoming;
use svs_cli::session::{ConnectOptions, ReachState, Session};

/// The real binary on a fixed port; `kill` is SIGKILL.
struct Directory {
    child: Child,
    port: u16,
    data: PathBuf,
}

impl Directory {
    async fn start(data: &Path, port: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_directory-service"))
            .args(["--data-dir", &data.display().to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let dir = Self {
            child,
            port,
            data: data.to_path_buf(),
        };
        svs_common::client::wait_healthy(&dir.url(), Some(&dir.ca()), Duration::from_secs(20))
            .await
            .expect("directory became healthy");
        dir
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn ca(&self) -> PathBuf {
        self.data.join("tls/ca.pem")
    }

    fn options(&self, name: &str, home: &Path) -> ConnectOptions {
        ConnectOptions {
            directory: self.url(),
            ca: Some(self.ca()),
            name: name.into(),
            home: Home::new(home.to_path_buf()),
            key_bits: 2048,
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Messages arriving on `session` within `within`.
async fn messages_within(session: &mut Session, within: Duration) -> Vec<String> {
    let mut stream = session.subscribe().await.unwrap();
    let mut inbox = session.inbox().unwrap();
    let mut texts = Vec::new();
    let _ = tokio::time::timeout(within, async {
        while let Ok(Some(items)) = session.next_incoming(&mut stream, &mut inbox).await {
            for item in items {
                if let Incoming::Message(m) = item {
                    texts.push(m.text);
                }
            }
        }
    })
    .await;
    texts
}

#[tokio::test]
async fn a_message_accepted_before_a_kill_9_is_delivered_exactly_once_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let dir = Directory::start(&data, port).await;
    // Bob registers once (claiming his name) and leaves.
    let mut bob = Session::register(&dir.options("bob", &tmp.path().join("bob")))
        .await
        .unwrap();
    bob.quit().await.unwrap();
    let mut alice = Session::register(&dir.options("alice", &tmp.path().join("alice")))
        .await
        .unwrap();
    let bob_peer = alice.lookup_keys(&["bob".into()]).await.unwrap().peers;
    let sent = alice
        .send_text(&bob_peer, "kept through a crash")
        .await
        .unwrap();
    assert_eq!(
        sent.reaches[0].state,
        ReachState::Stored,
        "{:?}",
        sent.reaches
    );
    // OK came back: the envelope is on disk. Kill the process without any chance to flush.
    dir.kill();
    let dir = Directory::start(&data, port).await;
    let mut bob = Session::register(&dir.options("bob", &tmp.path().join("bob")))
        .await
        .unwrap();
    let texts = messages_within(&mut bob, Duration::from_secs(3)).await;
    assert_eq!(texts, ["kept through a crash"]);
    // Acknowledged: a later session of bob's finds nothing.
    let mut later = Session::register(&dir.options("bob", &tmp.path().join("bob")))
        .await
        .unwrap();
    assert!(
        messages_within(&mut later, Duration::from_secs(2))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn listen_reconnects_by_itself_across_a_restart_and_gets_both_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let dir = Directory::start(&data, port).await;
    let global = Global {
        directory: dir.url(),
        stream: "https://localhost:1".into(),
        ca: Some(dir.ca()),
        name: Some("bob".into()),
        home: Some(tmp.path().join("bob")),
        key_bits: 2048,
        rooms_poll_secs: svs_cli::rooms::DEFAULT_ROOMS_POLL_SECS,
    };
    let listen = tokio::spawn(async move {
        svs_cli::commands::listen::run(
            &global,
            ListenArgs {
                count: Some(2),
                timeout: Some(90),
                json: false,
                rooms: false,
            },
        )
        .await
    });
    let alice_home = tmp.path().join("alice");
    let mut alice = Session::register(&dir.options("alice", &alice_home))
        .await
        .unwrap();
    // Wait until bob is listening, then send the first message.
    let bob_peer = loop {
        let peers = alice.list_peers().await.unwrap().peers;
        if let Some(bob) = peers.into_iter().find(|p| p.name == "bob") {
            break bob;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    alice
        .send_text(std::slice::from_ref(&bob_peer), "before the restart")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    dir.kill();
    let dir = Directory::start(&data, port).await;
    let mut alice = Session::register(&dir.options("alice", &alice_home))
        .await
        .unwrap();
    alice
        .send_text(&[bob_peer], "after the restart")
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(60), listen)
        .await
        .expect("listen finished")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}
