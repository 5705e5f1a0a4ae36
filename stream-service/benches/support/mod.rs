//! What the stream benches share: the real stream-service binary started over TLS with a
//! token, and a viewer that counts what it receives.
#![allow(dead_code)] // each bench uses its own part

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use svs_cli::stream_client::StreamClient;
use svs_common::proto::stream::{Codec, Pacing, PlayRequest, Resolution, play_response};
use svs_test_support::{ChildService, free_port};

pub(crate) struct Service {
    pub data: std::path::PathBuf,
    process: ChildService,
    url: String,
    ca: std::path::PathBuf,
    token: String,
}

/// The real stream-service binary on a free port, with limits raised for hundreds of viewers
/// from one address, nothing warmed (cold figures are cold), and `extra` flags.
pub(crate) async fn start(data: &Path, videos: &Path, extra: &[&str]) -> Service {
    let issuer = svs_common::token::TokenIssuer::load_or_create(
        &data.join("directory/token_key.pem"),
        &data.join("token_public.pem"),
    )
    .unwrap();
    let now = svs_common::time::now_ms();
    let token = issuer
        .issue(&svs_common::token::Claims {
            session_id: [1; 16],
            name: "bench".into(),
            fingerprint: [0; 32],
            issued_at_ms: now,
            expires_at_ms: now + 3_600_000,
        })
        .unwrap();
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_stream-service"));
    command
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .arg("--videos")
        .arg(videos)
        .args([
            "--max-streams",
            "100000",
            "--max-streams-per-session",
            "100000",
            // Hundreds of viewers connect from this one address.
            "--max-connections-per-address",
            "100000",
            "--prewarm-segments",
            "0",
        ])
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("SVS_BENCH_LOG").unwrap_or_else(|_| "warn,symphonia=error".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let process = ChildService::spawn(command, port);
    let url = format!("https://localhost:{port}");
    let ca = data.join("tls/ca.pem");
    svs_common::client::wait_healthy(&url, Some(&ca), Duration::from_secs(10))
        .await
        .expect("service became healthy");
    Service {
        data: data.to_path_buf(),
        process,
        url,
        ca,
        token,
    }
}

impl Service {
    /// CPU seconds the service has used (user + system, from /proc; clock ticks of 10 ms).
    pub(crate) fn cpu_seconds(&self) -> f64 {
        self.process.cpu_seconds()
    }

    pub(crate) async fn client(&self) -> StreamClient {
        StreamClient::connect(&self.url, Some(&self.ca), &self.token)
            .await
            .unwrap()
    }
}

/// What one playback saw.
#[derive(Default)]
pub(crate) struct Seen {
    pub first_frame: Duration,
    /// Per frame: arrival minus the video clock, relative to the best-paced frame.
    pub frames: u64,
    pub skipped: u64,
    pub bytes: u64,
    pub lateness_ms: Vec<f64>,
    pub width: u32,
    pub height: u32,
}

/// Plays `video` from `start_seconds`, up to `max_frames` frames if given, counting what comes.
pub(crate) async fn watch(
    client: &mut StreamClient,
    video: &str,
    resolution: Resolution,
    pacing: Pacing,
    start_seconds: f64,
    codec: Codec,
    max_frames: Option<u64>,
) -> Seen {
    let asked = Instant::now();
    let request = PlayRequest {
        video: video.into(),
        resolution: resolution as i32,
        start_seconds,
        pacing: pacing as i32,
        codec: codec as i32,
        ..Default::default()
    };
    let mut playing = client.play(request).await.unwrap();
    let mut seen = Seen::default();
    let mut anchor: Option<(Instant, f64)> = None;
    while let Ok(Some(message)) = playing.stream.message().await {
        if let Some(play_response::Kind::Frame(f)) = message.kind {
            let now = Instant::now();
            if seen.frames == 0 {
                seen.first_frame = now - asked;
            }
            let (t0, pts0) = *anchor.get_or_insert((now, f.pts_seconds));
            seen.lateness_ms
                .push(((now - t0).as_secs_f64() - (f.pts_seconds - pts0)) * 1000.0);
            seen.frames += 1;
            seen.skipped = f.skipped_total;
            seen.bytes += f.picture_bytes().len() as u64;
            seen.width = f.width;
            seen.height = f.height;
            if max_frames.is_some_and(|m| seen.frames >= m) {
                break;
            }
        }
    }
    // Lateness against the best-paced frame of the run (as `svs play` reports it), so a first
    // frame that came late does not make every later one look early.
    let earliest = seen
        .lateness_ms
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    for v in &mut seen.lateness_ms {
        *v -= earliest;
    }
    seen
}

/// Milliseconds from asking for `request` to its first frame (`None` if none came).
pub(crate) async fn first_frame_ms(client: &mut StreamClient, request: PlayRequest) -> Option<f64> {
    let asked = Instant::now();
    let mut playing = client.play(request).await.unwrap();
    while let Ok(Some(m)) = playing.stream.message().await {
        if matches!(m.kind, Some(play_response::Kind::Frame(_))) {
            return Some(asked.elapsed().as_secs_f64() * 1e3);
        }
    }
    None
}

pub(crate) const RENDITIONS: [(Resolution, &str); 3] = [
    (Resolution::Resolution240p, "240p"),
    (Resolution::Resolution720p, "720p"),
    (Resolution::Resolution1440p, "1440p"),
];
