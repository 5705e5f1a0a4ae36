//! Soak: the real services (the release binaries beside this example) on their default limits for
//! a bounded time, under everything at once — clients joining and leaving, messages between
//! online clients, a subscriber that stops reading, a viewer that stops reading, a viewer that
//! keeps watching, and five floods from their own addresses (GetChallenge, TLS connections that
//! never send HTTP/2, TCP sockets that never start TLS, a sender filling an offline person's
//! mailbox while a friend keeps writing to it, calls to made-up methods). Prints a line a minute
//! and a summary; asserts nothing about speed. `make soak` (10 minutes) or
//! `make soak SOAK_MINUTES=2`.
//!
//! Legitimate clients come from 127.0.1.1-250 (spread as real users are); the floods from
//! 127.0.0.2 to .6. All traffic stays on loopback and every loop ends with the run.
#![allow(clippy::unwrap_used)] // a load generator: a panic is the failure report

use svs_test_support as process;
use svs_test_support::net;

use clap::Parser;
use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use svs_cli::home::Home;
use svs_cli::inbox::Incoming;
use svs_cli::session::{ConnectOptions, Session};
use svs_common::identity;
use svs_common::proto::directory::GetChallengeRequest;
use svs_common::proto::directory::Peer;
use svs_common::proto::directory::directory_client::DirectoryClient;
use svs_common::proto::stream::{Pacing, PlayRequest, Resolution};
use svs_common::stats::percentile;

#[derive(Parser, Clone)]
#[command(about = "Soak the real services under churn, traffic, stalled readers and floods")]
struct Args {
    /// How long the load runs.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Clients online at once from joining and leaving (each stays clients / joins-per-sec s).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// New clients per second (each registers, subscribes, reads, quits).
    #[arg(long, default_value_t = 50.0)]
    joins_per_sec: f64,
    /// Messages per second, each to one of the long-lived recipients.
    #[arg(long, default_value_t = 200.0)]
    messages_per_sec: f64,
    /// Long-lived recipients whose every message is counted.
    #[arg(long, default_value_t = 20)]
    recipients: usize,
}

struct Service {
    process: process::ChildService,
    url: String,
}

fn rss_mib(pid: u32) -> f64 {
    process::rss_kib(pid).unwrap_or(0) as f64 / 1024.0
}

fn binary(name: &str) -> PathBuf {
    // target/release/examples/soak → target/release/NAME
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --workspace` first (make soak does)",
        path.display()
    );
    path
}

fn start(name: &str, args: &[&str], log: &Path) -> Service {
    let port = process::free_port();
    let mut command = Command::new(binary(name));
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    Service {
        process: process::ChildService::spawn(command, port),
        url: format!("https://localhost:{port}"),
    }
}

/// Latencies of one minute, in ms.
#[derive(Default)]
struct Minute {
    latencies: Vec<f64>,
}

#[derive(Default)]
struct Stats {
    joined: AtomicU64,
    join_refused: AtomicU64,
    online: AtomicUsize,
    sent_queued: AtomicU64,
    send_refused: AtomicU64,
    received: AtomicU64,
    minutes: Mutex<Vec<Minute>>,
    challenges_answered: AtomicU64,
    challenges_refused: AtomicU64,
    idlers_closed: AtomicU64,
    silent_closed: AtomicU64,
    frames_watched: AtomicU64,
    stalled_cut: Mutex<Option<(f64, String)>>,
    /// The mailbox filler's envelopes stored for the victim, and refused (its share is full).
    filler_stored: AtomicU64,
    filler_refused: AtomicU64,
    /// The victim's friend's messages stored, and refused (must stay 0).
    friend_stored: AtomicU64,
    friend_refused: AtomicU64,
    /// Calls to made-up methods: refused for the per-address budget, refused otherwise.
    made_up_over_budget: AtomicU64,
    made_up_refused: AtomicU64,
}

/// An empty protobuf message, the body of every made-up call.
#[derive(Clone, PartialEq, prost::Message)]
struct Nothing {}

/// How the load generator's legitimate clients reach the directory: its URL and CA, a home
/// directory per client, and a pool of keys (names share keys; generating one per client would
/// cost more than the load itself).
struct Clients {
    url: String,
    ca: PathBuf,
    homes: PathBuf,
    keys: Vec<String>,
}

impl Clients {
    /// A registered session for `name`, client number `n`: from 127.0.1.(n % 250 + 1), with key
    /// `n % 64` of the pool.
    async fn join(&self, name: &str, n: usize) -> Result<Session, String> {
        self.join_from(name, n, legit_address(n)).await
    }

    /// As `join`, from `source`.
    async fn join_from(&self, name: &str, n: usize, source: IpAddr) -> Result<Session, String> {
        let options = ConnectOptions {
            directory: self.url.clone(),
            ca: Some(self.ca.clone()),
            name: name.to_string(),
            home: Home::new(self.homes.join(name)),
            key_bits: 2048,
        };
        let key_path = options.home.key_path(name);
        identity::create_private_dir(key_path.parent().unwrap()).unwrap();
        identity::write_secret_file(&key_path, self.keys[n % self.keys.len()].as_bytes()).unwrap();
        let channel = net::channel_from(source, &self.url, &self.ca).await?;
        Session::register_on(&options, channel)
            .await
            .map_err(|e| format!("{e} ({e:?})"))
    }
}

/// The demo video from its start, in real time.
fn demo(resolution: Resolution) -> PlayRequest {
    PlayRequest {
        video: "demo".into(),
        resolution: resolution as i32,
        start_seconds: 0.0,
        pacing: Pacing::Realtime as i32,
        ..Default::default()
    }
}

fn legit_address(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, (n % 250) as u8 + 1))
}

fn main() {
    // The generator's own RSA work (signing, sealing, opening) on at most two threads, so that
    // its runtime keeps answering keepalives for its thousand connections.
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(soak(Args::parse()));
}

/// What every load shares: the clients, the counters, and when to stop.
struct Load {
    clients: Arc<Clients>,
    stats: Arc<Stats>,
    /// Cleared at the end: every loop stops.
    running: Arc<AtomicBool>,
    started: Instant,
}

/// The running loads, aborted at the end.
type Tasks = Vec<tokio::task::JoinHandle<()>>;

async fn soak(args: Args) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let videos = tmp.path().join("videos");
    let homes = tmp.path().join("homes");
    let status = Command::new(binary("stream-service"))
        .args(["make-demo", "--seconds", "10", "--videos"])
        .arg(&videos)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let metrics_port = process::free_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let dir = start(
        "directory-service",
        &[
            "--metrics-listen",
            &metrics_listen,
            "--data-dir",
            data.to_str().unwrap(),
            // Every join is a new name (c1, c2, ...) from 250 addresses: churn, not a name
            // farm, so the per-address new-name budget is lifted.
            "--max-new-names-per-address-per-hour",
            "1000000",
        ],
        &tmp.path().join("directory.log"),
    );
    let ca = data.join("tls/ca.pem");
    svs_common::client::wait_healthy(&dir.url, Some(&ca), Duration::from_secs(20))
        .await
        .unwrap();
    let stream = start(
        "stream-service",
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--videos",
            videos.to_str().unwrap(),
        ],
        &tmp.path().join("stream.log"),
    );
    svs_common::client::wait_healthy(&stream.url, Some(&ca), Duration::from_secs(20))
        .await
        .unwrap();

    let keys = key_pool().await;
    let stats = Arc::new(Stats {
        minutes: Mutex::new(vec![Minute::default()]),
        ..Stats::default()
    });
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.minutes * 60.0);
    let running = Arc::new(AtomicBool::new(true));
    // Senders stop first, so every accepted message has time to arrive before counting.
    let sending = Arc::new(AtomicBool::new(true));
    let load = Load {
        clients: Arc::new(Clients {
            url: dir.url.clone(),
            ca: ca.clone(),
            homes: homes.clone(),
            keys,
        }),
        stats: stats.clone(),
        running: running.clone(),
        started,
    };
    let mut tasks = Tasks::new();
    let recipients = recipients(&load, args.recipients, &mut tasks).await;
    senders(
        &load,
        &sending,
        &recipients,
        args.messages_per_sec,
        &mut tasks,
    )
    .await;
    stalled_subscriber(&load, &mut tasks).await;
    viewers(&load, &stream.url, &mut tasks).await;
    churn(&load, args.clients, args.joins_per_sec, &mut tasks);
    flood_challenges(&load, &mut tasks);
    flood_idle_connections(&load, &mut tasks);
    flood_mailbox(&load, &mut tasks).await;
    let series_at_start = process::metric_series(&process::scrape_metrics(metrics_port).await);
    flood_made_up_methods(&load, &mut tasks);
    let rss = report_minutes(
        &load,
        args.minutes,
        end,
        dir.process.pid(),
        stream.process.pid(),
    )
    .await;
    // Stop sending, let every accepted message arrive (up to 30 s), then stop everything.
    sending.store(false, Relaxed);
    let grace = Instant::now() + Duration::from_secs(30);
    tokio::time::sleep(Duration::from_secs(1)).await;
    while stats.received.load(Relaxed) < stats.sent_queued.load(Relaxed) && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.store(false, Relaxed);
    for task in tasks {
        task.abort();
    }
    let series_at_end = process::metric_series(&process::scrape_metrics(metrics_port).await);
    let log = std::fs::read_to_string(tmp.path().join("directory.log")).unwrap_or_default();
    print_summary(
        args.minutes,
        &stats,
        &rss,
        (&series_at_start, &series_at_end),
        &log,
    );
}

/// 64 client keys (2048 bits) as PKCS#8 PEM: names share them, since making one per client
/// would cost more than the load itself.
async fn key_pool() -> Vec<String> {
    eprintln!("making a pool of 64 client keys (2048 bits)...");
    futures_join(
        (0..64)
            .map(|_| {
                tokio::task::spawn_blocking(|| {
                    use svs_common::rsa::pkcs8::{EncodePrivateKey, LineEnding};
                    identity::generate(2048)
                        .unwrap()
                        .to_pkcs8_pem(LineEnding::LF)
                        .unwrap()
                        .to_string()
                })
            })
            .collect(),
    )
    .await
}

/// Long-lived recipients `r0`…: every message to them is counted and timed.
async fn recipients(load: &Load, count: usize, tasks: &mut Tasks) -> Arc<Vec<Peer>> {
    let mut recipients: Vec<Peer> = Vec::new();
    for n in 0..count {
        let name = format!("r{n}");
        let mut session = load.clients.join(&name, n).await.unwrap();
        let mut events = session.subscribe().await.unwrap();
        let mut inbox = session.inbox().unwrap();
        session.await_roster(&mut events, &mut inbox).await.unwrap();
        let stats = load.stats.clone();
        let started = load.started;
        tasks.push(tokio::spawn(async move {
            // No timeout around next_incoming: cancelling it between reading an event and
            // processing it would lose that event. The task is aborted at the end instead.
            loop {
                let items = match session.next_incoming(&mut events, &mut inbox).await {
                    Ok(Some(items)) => items,
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("recipient r{n} lost its stream: {e}");
                        break;
                    }
                };
                for item in items {
                    match item {
                        Incoming::Message(m) => {
                            stats.received.fetch_add(1, Relaxed);
                            if let Some(sent_ms) =
                                m.text.split(' ').next().and_then(|t| t.parse::<u64>().ok())
                            {
                                let ms = svs_common::time::now_ms().saturating_sub(sent_ms) as f64;
                                if let Some(minute) = stats.minutes.lock().unwrap().last_mut() {
                                    minute.latencies.push(ms);
                                }
                            }
                        }
                        Incoming::Left { name, reason } if name == "stalled" && n == 0 => {
                            *stats.stalled_cut.lock().unwrap() =
                                Some((started.elapsed().as_secs_f64(), reason));
                        }
                        _ => {}
                    }
                }
            }
        }));
    }
    {
        let mut session = load.clients.join("lister", 0).await.unwrap();
        for peer in session.list_peers().await.unwrap().peers {
            if peer.name.starts_with('r') {
                recipients.push(peer);
            }
        }
        let _ = session.quit().await;
    }
    Arc::new(recipients)
}

/// Eight senders sharing `messages_per_sec` (each within the default 50/s) to the recipients,
/// until `sending` is cleared.
async fn senders(
    load: &Load,
    sending: &Arc<AtomicBool>,
    recipients: &Arc<Vec<Peer>>,
    messages_per_sec: f64,
    tasks: &mut Tasks,
) {
    let senders = 8;
    for s in 0..senders {
        let name = format!("s{s}");
        let mut session = load.clients.join(&name, 100 + s).await.unwrap();
        let mut events = session.subscribe().await.unwrap();
        let stats = load.stats.clone();
        let running = sending.clone();
        let recipients = recipients.clone();
        let every = Duration::from_secs_f64(senders as f64 / messages_per_sec);
        tasks.push(tokio::spawn(async move {
            // Receipts come back on the stream: drain it so this sender is never "too slow".
            let drain =
                tokio::spawn(async move { while let Ok(Some(_)) = events.message().await {} });
            let mut tick = tokio::time::interval(every);
            let mut n = 0usize;
            while running.load(Relaxed) {
                tick.tick().await;
                n += 1;
                let to = &recipients[(n * 7 + s) % recipients.len()];
                let text = format!("{} message {n} from s{s}", svs_common::time::now_ms());
                match session.send_text(std::slice::from_ref(to), &text).await {
                    Ok(sent) if sent.reaches.iter().all(|r| r.accepted()) => {
                        stats.sent_queued.fetch_add(1, Relaxed);
                    }
                    _ => {
                        stats.send_refused.fetch_add(1, Relaxed);
                    }
                }
            }
            drain.abort();
        }));
    }
}

/// A subscriber that stops reading while messages keep coming: kept (its mail waits in its
/// mailbox on disk), never cut for that.
async fn stalled_subscriber(load: &Load, tasks: &mut Tasks) {
    let mut stalled = load.clients.join("stalled", 200).await.unwrap();
    let events = stalled.subscribe().await.unwrap();
    let peer = stalled
        .list_peers()
        .await
        .unwrap()
        .peers
        .into_iter()
        .find(|p| p.name == "stalled")
        .unwrap();
    let mut feeder = load.clients.join("feeder", 201).await.unwrap();
    let running = load.running.clone();
    tasks.push(tokio::spawn(async move {
        let _never_read = events;
        let text = "x".repeat(32 * 1024);
        while running.load(Relaxed) {
            let _ = feeder.send_text(std::slice::from_ref(&peer), &text).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }));
}

/// A viewer that stops reading after the header, and one that keeps watching.
async fn viewers(load: &Load, stream_url: &str, tasks: &mut Tasks) {
    let token = load.clients.join("viewer", 202).await.unwrap().token;
    let mut client =
        svs_cli::stream_client::StreamClient::connect(stream_url, Some(&load.clients.ca), &token)
            .await
            .unwrap();
    let playing = client.play(demo(Resolution::Resolution720p)).await.unwrap();
    let still = load.running.clone();
    tasks.push(tokio::spawn(async move {
        let _never_read = playing;
        while still.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }));
    let mut client =
        svs_cli::stream_client::StreamClient::connect(stream_url, Some(&load.clients.ca), &token)
            .await
            .unwrap();
    let stats = load.stats.clone();
    let running = load.running.clone();
    tasks.push(tokio::spawn(async move {
        while running.load(Relaxed) {
            let Ok(mut playing) = client.play(demo(Resolution::Resolution240p)).await else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            while let Ok(Some(_)) = playing.stream.message().await {
                stats.frames_watched.fetch_add(1, Relaxed);
                if !running.load(Relaxed) {
                    break;
                }
            }
        }
    }));
}

/// Churn: a client joins every 1/`joins_per_sec` s, reads its stream, and quits after its time
/// (about `online` clients online at once).
fn churn(load: &Load, online: usize, joins_per_sec: f64, tasks: &mut Tasks) {
    let (clients, stats, running) = (
        load.clients.clone(),
        load.stats.clone(),
        load.running.clone(),
    );
    let stay = Duration::from_secs_f64(online as f64 / joins_per_sec);
    let every = Duration::from_secs_f64(1.0 / joins_per_sec);
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let mut n = 0usize;
        while running.load(Relaxed) {
            tick.tick().await;
            n += 1;
            let (clients, stats, running) = (clients.clone(), stats.clone(), running.clone());
            tokio::spawn(async move {
                let name = format!("c{n}");
                let joined = clients.join(&name, n).await;
                let mut session = match joined {
                    Ok(s) => s,
                    Err(e) => {
                        if stats.join_refused.fetch_add(1, Relaxed) < 5 {
                            eprintln!("a legitimate registration was refused: {e:?}");
                        }
                        return;
                    }
                };
                let Ok(mut events) = session.subscribe().await else {
                    stats.join_refused.fetch_add(1, Relaxed);
                    return;
                };
                stats.joined.fetch_add(1, Relaxed);
                stats.online.fetch_add(1, Relaxed);
                let until = Instant::now() + stay;
                while Instant::now() < until && running.load(Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(500), events.message()).await {
                        Ok(Ok(Some(_))) | Err(_) => {}
                        _ => break,
                    }
                }
                let _ = session.quit().await;
                stats.online.fetch_sub(1, Relaxed);
                let _ = std::fs::remove_dir_all(clients.homes.join(&name));
            });
        }
    }));
}

/// Flood 1: GetChallenge as fast as one connection goes, from 127.0.0.2.
fn flood_challenges(load: &Load, tasks: &mut Tasks) {
    let (clients, stats, running) = (
        load.clients.clone(),
        load.stats.clone(),
        load.running.clone(),
    );
    tasks.push(tokio::spawn(async move {
        use svs_common::rsa::pkcs8::DecodePrivateKey;
        let key = svs_common::rsa::PrivateKey::from_pkcs8_pem(&clients.keys[63]).unwrap();
        let spki = identity::public_key_der(&key.to_public_key());
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        while running.load(Relaxed) {
            let Ok(channel) = net::channel_from(source, &clients.url, &clients.ca).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut client = DirectoryClient::new(channel);
            let mut n = 0u64;
            while running.load(Relaxed) {
                n += 1;
                let request = GetChallengeRequest {
                    name: format!("flood{n}"),
                    public_key_der: spki.clone().into(),
                };
                match client.get_challenge(request).await {
                    Ok(_) => stats.challenges_answered.fetch_add(1, Relaxed),
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        stats.challenges_refused.fetch_add(1, Relaxed)
                    }
                    Err(_) => break,
                };
            }
        }
    }));
}

/// Floods 2 and 3: connections that hold a slot and send nothing.
fn flood_idle_connections(load: &Load, tasks: &mut Tasks) {
    // Flood 2: 100 TLS connections from 127.0.0.3 that never send HTTP/2, re-opened when closed.
    for _ in 0..100 {
        let (clients, stats, running) = (
            load.clients.clone(),
            load.stats.clone(),
            load.running.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
            while running.load(Relaxed) {
                if let Ok(tls) = net::tls_from(source, &clients.url, &clients.ca).await {
                    net::closed_within(tls, Duration::from_secs(60)).await;
                }
                stats.idlers_closed.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    // Flood 3: 300 TCP sockets from 127.0.0.4 that never start TLS, re-opened when closed.
    for _ in 0..300 {
        let (clients, stats, running) = (
            load.clients.clone(),
            load.stats.clone(),
            load.running.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
            while running.load(Relaxed) {
                if let Ok(tcp) = net::tcp_from(source, net::port_of(&clients.url)).await {
                    net::closed_within(tcp, Duration::from_secs(60)).await;
                }
                stats.silent_closed.fetch_add(1, Relaxed);
                // Re-opened a second after each close, as the slowloris did.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
}

/// Flood 4: a registered sender fills an offline victim's mailbox with 60 KiB messages as fast
/// as its rates let it, from 127.0.0.5; the victim's friend writes every 2 s and must always be
/// stored (the filler's share of the mailbox is full long before the mailbox is).
async fn flood_mailbox(load: &Load, tasks: &mut Tasks) {
    let mut victim = load.clients.join("victim", 7).await.unwrap();
    victim.quit().await.unwrap();
    let mut filler = load
        .clients
        .join_from("filler", 8, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)))
        .await
        .unwrap();
    let mut friend = load.clients.join("friend", 9).await.unwrap();
    let victim = filler.lookup_keys(&["victim".into()]).await.unwrap().peers;
    let (stats_f, running_f, to_victim) =
        (load.stats.clone(), load.running.clone(), victim.clone());
    tasks.push(tokio::spawn(async move {
        let junk = "x".repeat(60 * 1024);
        while running_f.load(Relaxed) {
            match filler.send_text(&to_victim, &junk).await {
                Ok(sent) if sent.reaches[0].accepted() => {
                    stats_f.filler_stored.fetch_add(1, Relaxed)
                }
                _ => stats_f.filler_refused.fetch_add(1, Relaxed),
            };
        }
    }));
    let (stats, running) = (load.stats.clone(), load.running.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        while running.load(Relaxed) {
            tick.tick().await;
            match friend.send_text(&victim, "lunch tomorrow?").await {
                Ok(sent) if sent.reaches[0].accepted() => stats.friend_stored.fetch_add(1, Relaxed),
                _ => stats.friend_refused.fetch_add(1, Relaxed),
            };
        }
    }));
}

/// Flood 5: calls to made-up method paths from 127.0.0.6, half with a forged token, as fast as
/// one connection goes: they must not add metric series.
fn flood_made_up_methods(load: &Load, tasks: &mut Tasks) {
    let (clients, stats, running) = (
        load.clients.clone(),
        load.stats.clone(),
        load.running.clone(),
    );
    tasks.push(tokio::spawn(async move {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
        let mut n = 0u64;
        while running.load(Relaxed) {
            let Ok(channel) = net::channel_from(source, &clients.url, &clients.ca).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut grpc = tonic::client::Grpc::new(channel);
            while running.load(Relaxed) {
                n += 1;
                if grpc.ready().await.is_err() {
                    break;
                }
                let path = format!("/made.up{n}.Service/Method{:x}", n * 7919);
                let Ok(path) = http::uri::PathAndQuery::try_from(path) else {
                    continue;
                };
                let mut request = tonic::Request::new(Nothing {});
                if n.is_multiple_of(2)
                    && let Ok(token) = format!("Bearer svs1.forged{n}.x").parse()
                {
                    request.metadata_mut().insert("authorization", token);
                }
                let codec = tonic_prost::ProstCodec::<Nothing, Nothing>::default();
                match grpc.unary(request, path, codec).await {
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        stats.made_up_over_budget.fetch_add(1, Relaxed)
                    }
                    _ => stats.made_up_refused.fetch_add(1, Relaxed),
                };
            }
        }
    }));
}

/// A line a minute until `end`; the services' RSS at start, middle and end.
async fn report_minutes(
    load: &Load,
    minutes_total: f64,
    end: Instant,
    dir_pid: u32,
    stream_pid: u32,
) -> VecDeque<(f64, f64, f64)> {
    let mut rss: VecDeque<(f64, f64, f64)> = VecDeque::new();
    rss.push_back((0.0, rss_mib(dir_pid), rss_mib(stream_pid)));
    println!(
        "minute | online | joined | join refused | queued | received | p50 ms | p99 ms | directory RSS MiB | stream RSS MiB | challenges answered/refused | idlers closed | silent closed"
    );
    let mut minute = 0;
    let mut middle_taken = false;
    while Instant::now() < end {
        let next = (load.started + Duration::from_secs(60 * (minute + 1))).min(end);
        tokio::time::sleep_until(next.into()).await;
        minute += 1;
        let mut latencies = {
            let mut minutes = load.stats.minutes.lock().unwrap();
            let done = std::mem::take(&mut minutes.last_mut().unwrap().latencies);
            minutes.push(Minute::default());
            done
        };
        latencies.sort_by(|a, b| a.total_cmp(b));
        let (d, s) = (rss_mib(dir_pid), rss_mib(stream_pid));
        let t = load.started.elapsed().as_secs_f64();
        if !middle_taken && t >= minutes_total * 30.0 {
            rss.push_back((t, d, s));
            middle_taken = true;
        }
        println!(
            "{minute:>6} | {:>6} | {:>6} | {:>12} | {:>6} | {:>8} | {:>6.1} | {:>6.1} | {d:>17.1} | {s:>14.1} | {:>10}/{:<10} | {:>13} | {:>13}",
            load.stats.online.load(Relaxed),
            load.stats.joined.load(Relaxed),
            load.stats.join_refused.load(Relaxed),
            load.stats.sent_queued.load(Relaxed),
            load.stats.received.load(Relaxed),
            percentile(&mut latencies, 0.5).unwrap_or(f64::NAN),
            percentile(&mut latencies, 0.99).unwrap_or(f64::NAN),
            load.stats.challenges_answered.load(Relaxed),
            load.stats.challenges_refused.load(Relaxed),
            load.stats.idlers_closed.load(Relaxed),
            load.stats.silent_closed.load(Relaxed),
        );
    }
    rss.push_back((
        load.started.elapsed().as_secs_f64(),
        rss_mib(dir_pid),
        rss_mib(stream_pid),
    ));
    rss
}

/// The soak's figures: losses, refusals, memory, what each flood got, what the directory logged.
fn print_summary(
    minutes: f64,
    stats: &Stats,
    rss: &VecDeque<(f64, f64, f64)>,
    (series_at_start, series_at_end): (&BTreeSet<String>, &BTreeSet<String>),
    log: &str,
) {
    let added: Vec<&String> = series_at_end.difference(series_at_start).collect();
    let queued = stats.sent_queued.load(Relaxed);
    let received = stats.received.load(Relaxed);
    let warn_lines = log.lines().count();
    // What the directory complained about, once per kind (the message after the level).
    let mut kinds: Vec<String> = log
        .lines()
        .filter_map(|l| l.split_once("WARN").or(l.split_once("ERROR")))
        .map(|(_, rest)| {
            rest.chars()
                .filter(|c| !c.is_ascii_digit())
                .take(140)
                .collect()
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    println!();
    println!(
        "soak: {:.1} minutes, default limits, release binaries",
        minutes
    );
    println!(
        "  accepted messages lost: {} (of {queued} queued for long-lived recipients; {} sends refused)",
        queued.saturating_sub(received),
        stats.send_refused.load(Relaxed)
    );
    println!(
        "  legitimate registrations refused: {} (of {} joins)",
        stats.join_refused.load(Relaxed),
        stats.joined.load(Relaxed) + stats.join_refused.load(Relaxed)
    );
    for (label, (t, d, s)) in ["start", "middle", "end"].iter().zip(rss) {
        println!("  RSS at {label} ({t:.0} s): directory {d:.1} MiB, stream {s:.1} MiB");
    }
    match &*stats.stalled_cut.lock().unwrap() {
        Some((t, reason)) => println!("  stalled subscriber left at {t:.0} s ({reason})"),
        None => println!("  stalled subscriber: kept online (its mail waits on disk)"),
    }
    println!(
        "  frames watched by the steady viewer: {}",
        stats.frames_watched.load(Relaxed)
    );
    println!(
        "  GetChallenge flood: {} answered, {} refused; TLS idlers closed {} times; silent sockets closed {} times",
        stats.challenges_answered.load(Relaxed),
        stats.challenges_refused.load(Relaxed),
        stats.idlers_closed.load(Relaxed),
        stats.silent_closed.load(Relaxed)
    );
    println!(
        "  mailbox filler: {} stored for the victim, {} refused; the victim's friend: {} stored, {} refused",
        stats.filler_stored.load(Relaxed),
        stats.filler_refused.load(Relaxed),
        stats.friend_stored.load(Relaxed),
        stats.friend_refused.load(Relaxed)
    );
    println!(
        "  made-up method flood: {} refused for the address budget, {} otherwise; directory metric series {} at its start, {} at the end",
        stats.made_up_over_budget.load(Relaxed),
        stats.made_up_refused.load(Relaxed),
        series_at_start.len(),
        series_at_end.len()
    );
    for series in added {
        println!("    added: {series}");
    }
    println!("  directory log lines at WARN and above: {warn_lines}");
    for kind in kinds.iter().take(12) {
        println!("    {kind}");
    }
}

async fn futures_join<T: Send + 'static>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
