//! Relay benchmark: runs the real directory-service binary over TLS on loopback and reports, for
//! 100 and 1,000 subscribed clients (each on its own connection), delivered messages per second
//! (every message durable in the mailbox before Send answers), p50/p99 send-to-receive latency,
//! the service's resident memory per idle subscriber, and how fast a returning client drains
//! 10,000 stored messages. Then the same load side by side against the embedded store, one
//! replica on NATS JetStream and three replicas on NATS (clients spread over them), with the CPU
//! each part spent per delivery.
//! Prints figures; asserts nothing about speed. Run: `cargo bench -p directory-service`.
//! Envelopes are sealed before the timed phase (signing is the client's cost, not the relay's).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use svs_test_support as support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{ChildService, NatsServer, cpu_seconds, free_port, rss_kib};
use svs_common::identity;
use svs_common::proto::directory::directory_client::DirectoryClient;
use svs_common::proto::directory::*;
use svs_common::rsa::PrivateKey;
use svs_common::sealed::{self, SealParams, SealRecipient};
use svs_common::stats::percentile;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);
impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}
type Api = DirectoryClient<InterceptedService<Channel, Bearer>>;

struct Service {
    process: ChildService,
    url: String,
    ca: std::path::PathBuf,
}

/// Where the directory keeps its state.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Embedded,
    /// This many replicas on one nats-server.
    Nats(usize),
}

impl Mode {
    fn label(self) -> String {
        match self {
            Mode::Embedded => "embedded store".into(),
            Mode::Nats(1) => "1 replica on NATS".into(),
            Mode::Nats(n) => format!("{n} replicas on NATS"),
        }
    }
}

/// The directory as deployed for one run: one service, or replicas and their nats-server.
struct Deployment {
    replicas: Vec<Service>,
    nats: Option<NatsServer>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // Replicas first, so none is left complaining that NATS went away.
        self.replicas.clear();
        if let Some(nats) = self.nats.as_mut() {
            nats.stop();
        }
    }
}

impl Deployment {
    async fn start(mode: Mode, data: &Path) -> Self {
        let Mode::Nats(replicas) = mode else {
            return Self {
                replicas: vec![start_service(data, &[]).await],
                nats: None,
            };
        };
        // The NATS compose deploys (docker/nats.conf: a user with a password and svs's streams
        // only), so the figures include what authentication costs.
        let nats = NatsServer::start(&data.join("nats")).await;
        let token_key = data.join("token_key.pem");
        let status = Command::new(env!("CARGO_BIN_EXE_directory-service"))
            .arg("new-token-key")
            .arg(&token_key)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let nats_url = nats.url();
        let token_key = token_key.display().to_string();
        let credentials = nats.credentials();
        let mut started = Vec::new();
        // One after another: the first makes the TLS material the others load.
        for _ in 0..replicas {
            let mut flags = vec!["--nats", &nats_url, "--token-key", &token_key];
            flags.extend(credentials.iter().map(String::as_str));
            started.push(start_service(data, &flags).await);
        }
        Self {
            replicas: started,
            nats: Some(nats),
        }
    }

    /// The replica client `n` uses.
    fn url(&self, n: usize) -> String {
        self.replicas[n % self.replicas.len()].url.clone()
    }

    fn ca(&self) -> std::path::PathBuf {
        self.replicas[0].ca.clone()
    }

    /// With SVS_BENCH_PERF=DIR, samples the services (replicas and nats-server, user and kernel
    /// time) during the timed phase with `perf record` into DIR/<mode>-f<fan-out>.data.
    fn profile(&self, mode: &Mode, fanout: usize, pace: Option<f64>) -> Option<Child> {
        let dir = std::env::var_os("SVS_BENCH_PERF")?;
        let mut pids: Vec<String> = self
            .replicas
            .iter()
            .map(|r| r.process.pid().to_string())
            .collect();
        pids.extend(
            self.nats
                .as_ref()
                .and_then(NatsServer::pid)
                .map(|p| p.to_string()),
        );
        let paced = if pace.is_some() { "-paced" } else { "" };
        let name = format!("{}-f{fanout}{paced}.data", mode.label().replace(' ', "-"));
        let child = Command::new("perf")
            .args(["record", "-q", "-F", "999", "-p", &pids.join(","), "-o"])
            .arg(std::path::Path::new(&dir).join(name))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        std::thread::sleep(Duration::from_millis(300));
        child
    }

    /// Resident KiB of the replicas together.
    fn rss_kib(&self) -> u64 {
        self.replicas
            .iter()
            .filter_map(|r| rss_kib(r.process.pid()))
            .sum()
    }

    /// CPU seconds so far: the replicas together, and nats-server.
    fn cpu_seconds(&self) -> (f64, f64) {
        let replicas = self.replicas.iter().map(|r| r.process.cpu_seconds()).sum();
        let nats = self
            .nats
            .as_ref()
            .and_then(NatsServer::pid)
            .map_or(0.0, cpu_seconds);
        (replicas, nats)
    }
}

async fn start_service(data: &Path, extra: &[&str]) -> Service {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_directory-service"));
    command
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .args(extra)
        .args([
            "--send-rate",
            "1000000000",
            "--send-burst",
            "1000000000",
            // The senders are few names sending as fast as the relay takes: no per-name rate,
            // no per-sender share of a subscriber's mailbox (the figures measure the relay).
            "--send-rate-per-name",
            "1000000000",
            "--send-burst-per-name",
            "1000000000",
            "--mailbox-max-messages-per-sender",
            "1000000000",
            "--mailbox-max-bytes-per-sender",
            "1000000000000",
            "--queue-messages",
            "100000",
        ])
        .args([
            "--queue-bytes",
            "1000000000",
            "--max-used-challenges",
            "100000",
            // 1,000 subscribers register from one address within seconds.
            "--open-call-rate",
            "100000",
            "--open-call-burst",
            "100000",
            "--max-connections-per-address",
            "5000",
            "--max-new-names-per-address-per-hour",
            "1000000",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let process = ChildService::spawn(command, port);
    let url = format!("https://localhost:{port}");
    let ca = data.join("tls/ca.pem");
    svs_common::client::wait_healthy(&url, Some(&ca), Duration::from_secs(10))
        .await
        .expect("service became healthy");
    Service { process, url, ca }
}

#[derive(Clone)]
struct Identity {
    url: String,
    ca: std::path::PathBuf,
    key: Arc<PrivateKey>,
    spki: Arc<Vec<u8>>,
}

async fn register(id: Identity, name: String) -> Api {
    let (key, spki, name) = (&*id.key, id.spki.as_slice(), name.as_str());
    let channel = svs_common::client::connect(&id.url, Some(&id.ca))
        .await
        .unwrap();
    let mut open = DirectoryClient::new(channel.clone());
    let ch = open
        .get_challenge(GetChallengeRequest {
            name: name.into(),
            public_key_der: spki.to_vec().into(),
        })
        .await
        .unwrap()
        .into_inner();
    let sig =
        svs_common::registration::sign(key, &ch.service_id, name, spki, &ch.challenge).unwrap();
    let token = open
        .register(RegisterRequest {
            name: name.into(),
            public_key_der: spki.to_vec().into(),
            challenge: ch.challenge,
            signature: sig.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    DirectoryClient::with_interceptor(channel, Bearer(format!("Bearer {token}").parse().unwrap()))
}

type SentAt = Arc<Mutex<HashMap<[u8; 16], Instant>>>;

/// Subscribes and counts envelopes, recording latency and acknowledging in batches.
/// With `count_all`, every envelope is counted (as a zero latency) whether or not its send was
/// timed.
async fn subscriber(
    mut api: Api,
    sent_at: SentAt,
    latencies: Arc<Mutex<Vec<Duration>>>,
    count_all: bool,
) {
    let mut stream = api
        .subscribe(SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut pending_ack = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(50), stream.message()).await;
        let idle = next.is_err();
        match next {
            Ok(Ok(Some(Event {
                kind: Some(event::Kind::Envelope(e)),
            }))) => {
                let id: [u8; 16] = e.header[5..21].try_into().unwrap();
                match sent_at.lock().unwrap().get(&id) {
                    Some(t) => latencies.lock().unwrap().push(t.elapsed()),
                    None if count_all => latencies.lock().unwrap().push(Duration::ZERO),
                    None => {}
                }
                pending_ack.push(bytes::Bytes::copy_from_slice(&id));
            }
            Ok(Ok(Some(_))) => {}
            Ok(_) => return,
            Err(_) => {}
        }
        if pending_ack.len() >= 256 || (!pending_ack.is_empty() && idle) {
            let ids = std::mem::take(&mut pending_ack);
            let _ = api
                .ack(AckRequest {
                    message_ids: ids,
                    receipt_seqs: vec![],
                })
                .await;
        }
    }
}

/// One configuration. `pace`: total envelopes per second to offer (None: as fast as 32 calls in
/// flight per sender allow).
#[allow(clippy::too_many_arguments)]
async fn run(
    mode: Mode,
    subscribers: usize,
    fanout: usize,
    messages: usize,
    pace: Option<f64>,
    key: &PrivateKey,
    spki: &[u8],
) {
    let data = tempfile::tempdir().unwrap();
    let deployment = Deployment::start(mode, data.path()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base_rss = deployment.rss_kib();

    let sent_at: SentAt = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let identity = |n: usize| Identity {
        url: deployment.url(n),
        ca: deployment.ca(),
        key: Arc::new(key.clone()),
        spki: Arc::new(spki.to_vec()),
    };
    let mut apis = Vec::new();
    for chunk in (0..subscribers).collect::<Vec<_>>().chunks(50) {
        let mut set = tokio::task::JoinSet::new();
        for i in chunk {
            let identity = identity(*i);
            let i = *i;
            set.spawn(async move { (i, register(identity, format!("sub{i}")).await) });
        }
        let mut got = set.join_all().await;
        got.sort_by_key(|(i, _)| *i);
        apis.extend(got.into_iter().map(|(_, a)| a));
    }
    for api in &apis {
        tokio::spawn(subscriber(
            api.clone(),
            sent_at.clone(),
            latencies.clone(),
            false,
        ));
    }
    // Let every subscription settle, then read the idle footprint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = deployment.rss_kib();
    let per_sub_kib = (idle_rss.saturating_sub(base_rss)) as f64 / subscribers as f64;

    // Senders: 4 sessions, envelopes sealed up front.
    let senders = 4;
    let names: Vec<String> = (0..subscribers).map(|i| format!("sub{i}")).collect();
    let sealed = seal_all(key, senders, messages / senders, fanout, &names).await;
    let mut sender_apis = Vec::new();
    for s in 0..senders {
        sender_apis.push(register(identity(s), format!("sender{s}")).await);
    }
    let envelope_bytes = {
        let e = &sealed[0][0];
        e.header.len()
            + e.ciphertext.len()
            + e.signature.len()
            + e.wrapped_keys
                .iter()
                .map(|k| k.wrapped_key.len())
                .sum::<usize>()
    };
    let total_deliveries = sealed.iter().map(|v| v.len()).sum::<usize>() * fanout;

    let profile = deployment.profile(&mode, fanout, pace);
    let start = Instant::now();
    let (cpu_before, nats_before) = deployment.cpu_seconds();
    send_all(sender_apis, sealed, &sent_at, pace).await;
    // Wait until every delivery arrived (or 60 s pass).
    let deadline = Instant::now() + Duration::from_secs(60);
    while latencies.lock().unwrap().len() < total_deliveries && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let (cpu_after, nats_after) = deployment.cpu_seconds();
    if let Some(mut perf) = profile {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(perf.id().to_string())
            .status();
        let _ = perf.wait();
    }
    let service_cpu = cpu_after - cpu_before;
    let nats_cpu = nats_after - nats_before;
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let busy_rss = deployment.rss_kib();
    let paced = pace.map_or("as fast as possible".to_string(), |p| {
        format!("paced {p:.0} envelopes/s")
    });
    println!("{}, {paced}:", mode.label());
    println!(
        "subscribers {subscribers:>5}  fan-out {fanout:>3}  envelope {envelope_bytes:>6} B  delivered {:>6}/{total_deliveries:<6} in {:>6.2} s = {:>8.0} deliveries/s  p50 {:>7.2} ms  p99 {:>7.2} ms  idle RSS/subscriber {:>5.1} KiB  RSS idle {} KiB busy {} KiB  service CPU {:.2} s = {:.0} µs/delivery (ceiling on 2 cores {:.0}/s)",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(&mut lat, 0.50).unwrap_or_default().as_secs_f64() * 1e3,
        percentile(&mut lat, 0.99).unwrap_or_default().as_secs_f64() * 1e3,
        per_sub_kib,
        idle_rss,
        busy_rss,
        service_cpu,
        service_cpu * 1e6 / lat.len().max(1) as f64,
        2.0 * lat.len() as f64 / service_cpu.max(0.01),
    );
    if let Mode::Nats(_) = mode {
        println!(
            "    nats-server CPU {nats_cpu:.2} s = {:.0} µs/delivery; directory + NATS {:.0} µs/delivery",
            nats_cpu * 1e6 / lat.len().max(1) as f64,
            (service_cpu + nats_cpu) * 1e6 / lat.len().max(1) as f64,
        );
    }
}

/// Registers `sender0`..: after sealing, which can take longer than an idle session lives.
async fn register_senders(identity: &Identity, senders: usize) -> Vec<Api> {
    let mut apis = Vec::new();
    for s in 0..senders {
        apis.push(register(identity.clone(), format!("sender{s}")).await);
    }
    apis
}

/// Envelopes from `senders` sessions (`per_sender` each), each to `fanout` of `names` in turn,
/// sealed on blocking threads before any timing starts.
async fn seal_all(
    key: &PrivateKey,
    senders: usize,
    per_sender: usize,
    fanout: usize,
    names: &[String],
) -> Vec<Vec<Envelope>> {
    let pub_key = key.to_public_key();
    let mut handles = Vec::new();
    for s in 0..senders {
        let key = key.clone();
        let pub_key = pub_key.clone();
        let names = names.to_vec();
        handles.push(tokio::task::spawn_blocking(move || {
            let sender = format!("sender{s}");
            (0..per_sender)
                .map(|m| {
                    let first = (s * per_sender + m) * fanout;
                    let recipients: Vec<SealRecipient<'_>> = (0..fanout)
                        .map(|k| SealRecipient {
                            name: &names[(first + k) % names.len()],
                            key: &pub_key,
                        })
                        .collect();
                    sealed::seal(
                        &mut identity::os_rng(),
                        &SealParams {
                            sender: &sender,
                            sender_key: &key,
                            counter: m as u64 + 1,
                            timestamp_ms: svs_common::time::now_ms(),
                            recipients: &recipients,
                        },
                        &[b'm'; 600],
                    )
                    .unwrap()
                })
                .collect()
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Sends every sender's envelopes, 32 in flight per sender, noting when each left.
async fn send_all(
    sender_apis: Vec<Api>,
    sealed: Vec<Vec<Envelope>>,
    sent_at: &SentAt,
    pace: Option<f64>,
) {
    let mut senders = tokio::task::JoinSet::new();
    let count = sender_apis.len() as f64;
    for (api, envelopes) in sender_apis.into_iter().zip(sealed) {
        let sent_at = sent_at.clone();
        senders.spawn(async move {
            let in_flight = Arc::new(tokio::sync::Semaphore::new(32));
            let mut sends = tokio::task::JoinSet::new();
            let mut tick = pace.map(|total| {
                let mut tick =
                    tokio::time::interval(Duration::from_secs_f64(count / total.max(1.0)));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                tick
            });
            for e in envelopes {
                if let Some(tick) = tick.as_mut() {
                    tick.tick().await;
                }
                let permit = in_flight.clone().acquire_owned().await.unwrap();
                let mut api = api.clone();
                let sent_at = sent_at.clone();
                sends.spawn(async move {
                    let _permit = permit;
                    let id: [u8; 16] = e.header[5..21].try_into().unwrap();
                    sent_at.lock().unwrap().insert(id, Instant::now());
                    match api.send(SendRequest { envelope: Some(e) }).await {
                        Ok(_) => true,
                        Err(status) => {
                            // One line per failure kind is enough to see what went wrong.
                            static SHOWN: std::sync::Once = std::sync::Once::new();
                            SHOWN.call_once(|| eprintln!("a send failed: {status:?}"));
                            false
                        }
                    }
                });
            }
            while sends.join_next().await.is_some() {}
        });
    }
    while senders.join_next().await.is_some() {}
}

/// A client returning to 10,000 stored messages: how fast its subscription drains them.
async fn drain(mode: Mode, key: &PrivateKey, spki: &[u8]) {
    const STORED: usize = 10_000;
    let data = tempfile::tempdir().unwrap();
    let deployment = Deployment::start(mode, data.path()).await;
    let identity = Identity {
        url: deployment.url(0),
        ca: deployment.ca(),
        key: Arc::new(key.clone()),
        spki: Arc::new(spki.to_vec()),
    };
    // The returning client claims its name, then is away while the mail arrives.
    let mut away = register(identity.clone(), "returning".into()).await;
    away.quit(QuitRequest {}).await.unwrap();
    let senders = 4;
    let sealed = seal_all(
        key,
        senders,
        STORED / senders,
        1,
        &["returning".to_string()],
    )
    .await;
    let sender_apis = register_senders(&identity, senders).await;
    let stored_at = Instant::now();
    send_all(sender_apis, sealed, &Arc::default(), None).await;
    let store_secs = stored_at.elapsed().as_secs_f64();
    let back = register(identity, "returning".into()).await;
    let received: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let start = Instant::now();
    tokio::spawn(subscriber(back, Arc::default(), received.clone(), true));
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.lock().unwrap().len() < STORED && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let got = received.lock().unwrap().len();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}, mailbox: stored {STORED} messages (durable, fan-out 1) in {store_secs:.2} s = {:.0}/s; the returning client drained {got} in {secs:.2} s = {:.0} messages/s",
        mode.label(),
        STORED as f64 / store_secs,
        got as f64 / secs
    );
}

#[tokio::main]
async fn main() {
    // One 2048-bit key for every load-generator identity keeps set-up short; the relay's work
    // per message (parse, verify, fan out) does not depend on whose key it is.
    let key = PrivateKey::new(&mut identity::os_rng(), 2048).unwrap();
    let spki = identity::public_key_der(&key.to_public_key());
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 4 } else { 1 };
    // SVS_BENCH_LONGER=N sends N times as many messages (for profiling a longer timed phase).
    let longer: usize = std::env::var("SVS_BENCH_LONGER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    println!(
        "directory relay benchmark (2-core machine, load generator on the same machine, TLS on loopback)"
    );
    let only: Option<usize> = match std::env::var_os("SVS_BENCH_MODES") {
        Some(_) => Some(0),
        None => std::env::var("SVS_BENCH_SUBSCRIBERS")
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    for subscribers in [100, 1000]
        .into_iter()
        .filter(|n| only.is_none_or(|o| o == *n))
    {
        let embedded = Mode::Embedded;
        run(
            embedded,
            subscribers,
            1,
            8000 * longer / scale,
            None,
            &key,
            &spki,
        )
        .await;
        run(
            embedded,
            subscribers,
            16,
            2000 * longer / scale,
            None,
            &key,
            &spki,
        )
        .await;
    }
    // Latency at a sustainable rate (about half what the closed loop reached), 1,000 subscribers.
    if only.is_none_or(|o| o == 1000) {
        run(
            Mode::Embedded,
            1000,
            1,
            12_000 / scale,
            Some(6000.0),
            &key,
            &spki,
        )
        .await;
        run(
            Mode::Embedded,
            1000,
            16,
            1_200 / scale,
            Some(600.0),
            &key,
            &spki,
        )
        .await;
    }
    // SVS_BENCH_MODES=embedded,nats1,nats3 picks the side-by-side modes (all by default; set,
    // it skips the rest of the bench, e.g. to profile one mode with perf).
    let modes: Vec<Mode> = match std::env::var("SVS_BENCH_MODES") {
        Ok(list) => list
            .split(',')
            .filter_map(|m| match m.trim() {
                "embedded" => Some(Mode::Embedded),
                "nats1" => Some(Mode::Nats(1)),
                "nats3" => Some(Mode::Nats(3)),
                _ => None,
            })
            .collect(),
        Err(_) => vec![Mode::Embedded, Mode::Nats(1), Mode::Nats(3)],
    };
    for mode in &modes {
        if !matches!(mode, Mode::Nats(3)) {
            drain(*mode, &key, &spki).await;
        }
    }
    // Embedded against NATS side by side: 200 subscribers spread over the replicas, the same
    // envelopes, as fast as possible and then paced for latency.
    println!("\nembedded store against NATS JetStream (one nats-server on this machine):");
    for mode in modes {
        run(mode, 200, 1, 4000 / scale, None, &key, &spki).await;
        run(mode, 200, 16, 1000 / scale, None, &key, &spki).await;
        run(mode, 200, 1, 3000 / scale, Some(1000.0), &key, &spki).await;
    }
}
