//! The services run in-process on 127.0.0.1:0 with generated TLS (`TestDirectory`,
//! `TestStream`), tokens and demo videos for them, and clients that register through the real
//! client code (`AliceAndBob`).

use clap::Parser;
use directory_service::Config;
use std::path::{Path, PathBuf};
use std::time::Duration;
use svs_cli::home::Home;
use svs_cli::session::{ConnectOptions, Session};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    config: Config,
}

/// Directory config with defaults, a given data dir, and `extra` flags.
pub fn config(data_dir: &Path, extra: &[&str]) -> Config {
    let mut args = vec![
        "directory-service".to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Flags::parse_from(args).config
}

#[derive(Debug)]
pub struct TestDirectory {
    pub url: String,
    pub ca: PathBuf,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), directory_service::Error>>,
}

impl TestDirectory {
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_on(0, data_dir, extra).await
    }

    /// As `start`, on a given port (0: any), so a restart keeps the URL.
    pub async fn start_on(port: u16, data_dir: &Path, extra: &[&str]) -> Self {
        let config = config(data_dir, extra);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(directory_service::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let url = format!("https://localhost:{port}");
        let ca = data_dir.join("tls/ca.pem");
        svs_common::client::wait_healthy(&url, Some(&ca), Duration::from_secs(10))
            .await
            .expect("directory became healthy");
        Self {
            url,
            ca,
            data_dir: data_dir.to_path_buf(),
            stop: Some(stop),
            task,
        }
    }

    /// `count` directory replicas in-process on one `nats`, sharing one token key made under
    /// `root` (each with its own data dir and TLS CA).
    pub async fn replicas(root: &Path, nats: &crate::NatsServer, count: usize) -> Vec<Self> {
        let token_key = root.join("token_key.pem");
        directory_service::new_token_key(&token_key).await.unwrap();
        let mut flags = vec![
            "--nats".to_string(),
            nats.url(),
            "--token-key".into(),
            token_key.display().to_string(),
        ];
        flags.extend(nats.credentials());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut replicas = Vec::new();
        for n in 0..count {
            replicas.push(Self::start(&root.join(format!("replica-{n}")), &flags).await);
        }
        replicas
    }

    pub fn options(&self, name: &str, home: &Path) -> ConnectOptions {
        ConnectOptions {
            directory: self.url.clone(),
            ca: Some(self.ca.clone()),
            name: name.to_string(),
            home: Home::new(home.to_path_buf()),
            key_bits: 2048,
        }
    }

    pub async fn register(&self, name: &str, home: &Path) -> Session {
        Session::register(&self.options(name, home))
            .await
            .unwrap_or_else(|e| panic!("{name} registers: {e}"))
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("directory stops within the drain bound")
            .unwrap()
            .unwrap();
    }
}

#[derive(Parser)]
struct StreamFlags {
    #[command(flatten)]
    config: stream_service::Config,
}

/// A real stream-service on 127.0.0.1:0 with generated TLS.
#[derive(Debug)]
pub struct TestStream {
    pub url: String,
    pub ca: PathBuf,
    pub handle: stream_service::Handle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), stream_service::Error>>,
}

impl TestStream {
    /// Needs `<data_dir>/token_public.pem` (a TestDirectory or `test_issuer` writes it).
    pub async fn start(data_dir: &Path, videos: &Path, extra: &[&str]) -> Self {
        Self::start_on(0, data_dir, videos, extra).await
    }

    /// As `start`, on a given port (0: any), so a restart keeps the URL.
    pub async fn start_on(port: u16, data_dir: &Path, videos: &Path, extra: &[&str]) -> Self {
        let mut args = vec![
            "stream-service".to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--videos".into(),
            videos.display().to_string(),
            "--rescan-secs".into(),
            "1".into(),
        ];
        // Tests count encodes: nothing is warmed unless a test asks for it.
        if !extra.contains(&"--prewarm-segments") {
            args.extend(["--prewarm-segments".into(), "0".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = StreamFlags::parse_from(args).config;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(stream_service::run(
            config,
            listener,
            async move {
                let _ = stopped.await;
            },
            Some(ready_tx),
        ));
        let handle = ready_rx.await.expect("stream-service started");
        let url = format!("https://localhost:{port}");
        let ca = data_dir.join("tls/ca.pem");
        svs_common::client::wait_healthy(&url, Some(&ca), Duration::from_secs(10))
            .await
            .expect("stream-service healthy");
        Self {
            url,
            ca,
            handle,
            stop: Some(stop),
            task,
        }
    }

    /// Segments encoded so far, once the count has stopped moving (an encoder counts a segment
    /// just after its last frame is out, so a viewer can finish a moment before the count).
    pub async fn settled_encodes(&self) -> u64 {
        let mut last = self.handle.cache.counts().encoded;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let now = self.handle.cache.counts().encoded;
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    pub async fn client(&self, token: &str) -> svs_cli::stream_client::StreamClient {
        svs_cli::stream_client::StreamClient::connect(&self.url, Some(&self.ca), token)
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("stream-service stops within the drain bound")
            .unwrap()
            .unwrap();
    }
}

/// Acts as the directory's token issuer: writes `<data_dir>/token_public.pem` and signs tokens.
pub fn test_issuer(data_dir: &Path) -> svs_common::token::TokenIssuer {
    svs_common::token::TokenIssuer::load_or_create(
        &data_dir.join("directory/token_key.pem"),
        &data_dir.join("token_public.pem"),
    )
    .unwrap()
}

/// A token for `name` valid for `valid_ms` from now (negative: already expired).
pub fn token(issuer: &svs_common::token::TokenIssuer, name: &str, valid_ms: i64) -> String {
    let now = svs_common::time::now_ms();
    issuer
        .issue(&svs_common::token::Claims {
            session_id: [7; 16],
            name: name.into(),
            fingerprint: [0; 32],
            issued_at_ms: now,
            expires_at_ms: (now as i64 + valid_ms) as u64,
        })
        .unwrap()
}

/// Seconds and frame rate of the test video (4 s at 15 fps = 60 frames per rendition).
pub const DEMO_SECONDS: f64 = 4.0;
pub const DEMO_FPS: f64 = 15.0;
pub const DEMO_FRAMES: u64 = 60;

/// Writes the demo video (all three renditions) into `dir`, once per test binary run.
pub fn demo_videos(dir: &Path) {
    stream_service::media::make_demo(
        dir,
        "demo",
        DEMO_SECONDS,
        DEMO_FPS,
        &mut stream_service::Progress::hidden(),
    )
    .unwrap();
}

/// A directory and a stream service sharing `<root>/data` (the directory issues the tokens the
/// stream service verifies), with the demo video in `<root>/videos`.
pub async fn start_both(root: &Path) -> (TestDirectory, TestStream) {
    demo_videos(&root.join("videos"));
    start_both_on_videos(root).await
}

/// As `start_both`, with a demo film of its own instead of the shared demo: `name`, `seconds`
/// long at `fps`, with its sound (for what the 4-second demo is too short for).
pub async fn start_both_with_film(
    root: &Path,
    name: &str,
    seconds: f64,
    fps: f64,
) -> (TestDirectory, TestStream) {
    stream_service::media::make_demo(
        &root.join("videos"),
        name,
        seconds,
        fps,
        &mut stream_service::Progress::hidden(),
    )
    .unwrap();
    start_both_on_videos(root).await
}

async fn start_both_on_videos(root: &Path) -> (TestDirectory, TestStream) {
    let data = root.join("data");
    let dir = TestDirectory::start(&data, &[]).await;
    let stream = TestStream::start(&data, &root.join("videos"), &[]).await;
    (dir, stream)
}

/// Alice and Bob registered in `<root>/alice` and `<root>/bob`; Bob subscribed with the roster
/// read, Alice holding Bob's listing (to send to him).
#[derive(Debug)]
pub struct AliceAndBob {
    pub alice: Session,
    pub bob: Session,
    pub bob_events: tonic::Streaming<svs_common::proto::directory::Event>,
    pub bob_inbox: svs_cli::inbox::Inbox,
    pub bob_peer: svs_common::proto::directory::Peer,
}

impl AliceAndBob {
    pub async fn register(dir: &TestDirectory, root: &Path) -> Self {
        let mut alice = dir.register("alice", &root.join("alice")).await;
        let mut bob = dir.register("bob", &root.join("bob")).await;
        let mut bob_events = bob.subscribe().await.unwrap();
        let mut bob_inbox = bob.inbox().unwrap();
        bob.await_roster(&mut bob_events, &mut bob_inbox)
            .await
            .unwrap();
        let bob_peer = listed_peer(&mut alice, "bob").await;
        Self {
            alice,
            bob,
            bob_events,
            bob_inbox,
            bob_peer,
        }
    }
}

/// The peer called `name` as the directory lists it now.
pub async fn listed_peer(session: &mut Session, name: &str) -> svs_common::proto::directory::Peer {
    session
        .list_peers()
        .await
        .unwrap()
        .peers
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} is listed"))
}

/// The next message `session` receives on its subscription, within 20 s.
pub async fn next_message(
    session: &mut Session,
    stream: &mut tonic::Streaming<svs_common::proto::directory::Event>,
    inbox: &mut svs_cli::inbox::Inbox,
) -> svs_cli::inbox::Message {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let items = session.next_incoming(stream, inbox).await.unwrap().unwrap();
            if let Some(svs_cli::inbox::Incoming::Message(m)) = items
                .into_iter()
                .find(|i| matches!(i, svs_cli::inbox::Incoming::Message(_)))
            {
                return m;
            }
        }
    })
    .await
    .expect("a message arrived in time")
}
