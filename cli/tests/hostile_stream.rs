//! `svs` against a stream service that lies: a real directory (tokens, TLS material) and a
//! hostile Stream server over TLS on 127.0.0.1 sending pictures whose headers claim 30000×30000
//! (9 KB each; decoding one made svs allocate 5 GiB), pictures whose size differs from the one
//! announced, an H.264 SPS for another size, 20,000 frames of junk, and names and errors full of
//! terminal escapes. The real `svs` binary plays, lists and fails against it; its peak memory
//! is read from /proc while it runs.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;
use support::TestDirectory;
use svs_common::proto::stream::stream_server::{Stream, StreamServer};
use svs_common::proto::stream::{
    Audio, AudioCodec, AudioTrack, Codec, ControlRequest, ControlResponse, Frame,
    ListVideosRequest, ListVideosResponse, PlayHeader, PlayRequest, PlayResponse, Rendition,
    Resolution, Video, frame, play_response,
};
use tonic::{Request, Response, Status};

/// Terminal escapes a hostile server would like to reach a terminal: clear screen, OSC 52
/// (write the clipboard), a C1 CSI, BEL.
const ESCAPES: &str = "\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07\u{9b}31m";

/// A JPEG header claiming `width`×`height`, padded with junk to about 9 KB.
fn lying_jpeg(width: u16, height: u16) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 8];
    v.extend_from_slice(&height.to_be_bytes());
    v.extend_from_slice(&width.to_be_bytes());
    v.extend_from_slice(&[1, 1, 0x11, 0]);
    v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 0x3F, 0]);
    v.resize(9 * 1024, 0x5A);
    v.extend_from_slice(&[0xFF, 0xD9]);
    v
}

/// A real 640×360 JPEG.
fn real_jpeg() -> Vec<u8> {
    use opencv::core::{Mat, Scalar, Vector};
    use opencv::prelude::*;
    let image = Mat::new_rows_cols_with_default(360, 640, opencv::core::CV_8UC3, Scalar::all(90.0))
        .unwrap();
    let mut out = Vector::<u8>::new();
    opencv::imgcodecs::imencode_def(".jpg", &image, &mut out).unwrap();
    out.to_vec()
}

/// An Annex B unit whose SPS says 64×64 (h264-reader's test SPS), then a slice.
fn h264_for_another_size() -> Vec<u8> {
    let mut v = vec![0, 0, 0, 1];
    v.extend_from_slice(&[
        0x67, 0x64, 0x00, 0x0A, 0xAC, 0x72, 0x84, 0x44, 0x26, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04,
        0x00, 0x00, 0x03, 0x00, 0xCA, 0x3C, 0x48, 0x96, 0x11, 0x80,
    ]);
    v.extend_from_slice(&[0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x33]);
    v
}

fn frame(index: u64, size: (u32, u32), picture: frame::Picture, keyframe: bool) -> PlayResponse {
    PlayResponse {
        kind: Some(play_response::Kind::Frame(Frame {
            index,
            pts_seconds: index as f64 / 30.0,
            resolution: Resolution::Resolution720p as i32,
            width: size.0,
            height: size.1,
            picture: Some(picture),
            keyframe,
            skipped_before: 0,
            skipped_total: 0,
        })),
    }
}

/// Packets of junk sound `loud` sends at once: 300 s of it, far past what a player holds.
const JUNK_PACKETS: u64 = 15_000;

/// `loud`: a header promising Opus, 300 s of undecodable packets in one message, then a second
/// of real pictures. `odd-sound`: a header promising sound svs cannot play (8 kHz, 5 channels).
fn sound_lies(video: &str) -> Vec<Result<PlayResponse, Status>> {
    let track = if video == "loud" {
        AudioTrack {
            codec: AudioCodec::Opus as i32,
            sample_rate: 48_000,
            channels: 2,
            frame_samples: 960,
            bitrate: 96_000,
        }
    } else {
        AudioTrack {
            codec: AudioCodec::Opus as i32,
            sample_rate: 8_000,
            channels: 5,
            frame_samples: 7,
            bitrate: 1,
        }
    };
    let mut items = vec![Ok(PlayResponse {
        kind: Some(play_response::Kind::Header(PlayHeader {
            playback_id: "sound".into(),
            resolution: Resolution::Resolution720p as i32,
            width: 640,
            height: 360,
            fps: 30.0,
            frame_count: 30,
            adaptive: false,
            codec: Codec::Jpeg as i32,
            keyframe_interval: 1,
            audio: Some(track),
        })),
    })];
    items.push(Ok(PlayResponse {
        kind: Some(play_response::Kind::Audio(Audio {
            first_packet: 0,
            pts_seconds: 0.0,
            packets: (0..JUNK_PACKETS)
                .map(|i| vec![0xFF, (i % 251) as u8, 0x13, 0x37].into())
                .collect(),
        })),
    }));
    let jpeg: bytes::Bytes = real_jpeg().into();
    for i in 0..30 {
        items.push(Ok(frame(
            i,
            (640, 360),
            frame::Picture::Jpeg(jpeg.clone()),
            true,
        )));
    }
    items
}

/// Frames of junk after the lies, to pass the player's per-frame record bound.
const JUNK_FRAMES: u64 = 20_000;

struct Hostile;

type PlayStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<PlayResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Stream for Hostile {
    async fn list_videos(
        &self,
        _: Request<ListVideosRequest>,
    ) -> Result<Response<ListVideosResponse>, Status> {
        Ok(Response::new(ListVideosResponse {
            videos: vec![Video {
                name: format!("evil{ESCAPES}name"),
                renditions: vec![Rendition {
                    resolution: Resolution::Resolution720p as i32,
                    width: 640,
                    height: 360,
                    fps: 30.0,
                    frame_count: 30,
                    duration_seconds: 1.0,
                }],
                has_audio: true,
            }],
        }))
    }

    type PlayStream = PlayStream;

    async fn play(&self, request: Request<PlayRequest>) -> Result<Response<PlayStream>, Status> {
        if request.get_ref().video == "rude" {
            return Err(Status::not_found(format!("no such video{ESCAPES}, sorry")));
        }
        let header = PlayResponse {
            kind: Some(play_response::Kind::Header(PlayHeader {
                playback_id: format!("id{ESCAPES}"),
                resolution: Resolution::Resolution720p as i32,
                width: 640,
                height: 360,
                fps: 30.0,
                frame_count: JUNK_FRAMES + 10,
                adaptive: false,
                codec: Codec::Jpeg as i32,
                keyframe_interval: 1,
                audio: None,
            })),
        };
        let video = request.get_ref().video.clone();
        if video == "loud" || video == "odd-sound" {
            return Ok(Response::new(Box::pin(tokio_stream::iter(sound_lies(
                &video,
            )))));
        }
        let mut items = vec![header];
        // Three that claim 30000x30000 and say so; one that claims it under an honest size.
        for i in 0..3 {
            items.push(frame(
                i,
                (30_000, 30_000),
                frame::Picture::Jpeg(lying_jpeg(30_000, 30_000).into()),
                true,
            ));
        }
        items.push(frame(
            3,
            (640, 360),
            frame::Picture::Jpeg(lying_jpeg(30_000, 30_000).into()),
            true,
        ));
        items.push(frame(
            4,
            (640, 360),
            frame::Picture::H264(h264_for_another_size().into()),
            true,
        ));
        items.push(frame(
            5,
            (640, 360),
            frame::Picture::Jpeg(real_jpeg().into()),
            true,
        ));
        for i in 0..JUNK_FRAMES {
            items.push(frame(
                6 + i,
                (640, 360),
                frame::Picture::Jpeg(vec![0x42; 16].into()),
                true,
            ));
        }
        let stream = async_stream::stream! {
            for item in items {
                yield Ok(item);
            }
            // Stay open a moment so the test reads the client's peak memory while it runs.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn control(
        &self,
        _: Request<ControlRequest>,
    ) -> Result<Response<ControlResponse>, Status> {
        Ok(Response::new(ControlResponse {}))
    }
}

/// Serves `Hostile` over TLS with the directory's generated certificate; returns its URL.
async fn start_hostile(data: &Path) -> String {
    let tls = data.join("tls");
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(tls.join("server.pem")).unwrap(),
        std::fs::read(tls.join("server.key")).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap()
            .add_service(StreamServer::new(Hostile))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("https://localhost:{port}")
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    peak_kib: u64,
}

impl Run {
    /// The JSON summary `--json` prints as the last line.
    fn summary(&self) -> serde_json::Value {
        let last = self.stdout.lines().last().expect("svs printed a summary");
        serde_json::from_str(last).expect("the last line is JSON")
    }
}

async fn svs(dir: &TestDirectory, stream_url: &str, home: &Path, args: &[&str]) -> Run {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_svs"))
        .args(args)
        .env("SVS_DIRECTORY", &dir.url)
        .env("SVS_STREAM", stream_url)
        .env("SVS_CA", &dir.ca)
        .env("SVS_HOME", home)
        .env("SVS_NAME", "viewer")
        .env("SVS_KEY_BITS", "2048")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let watcher = tokio::spawn(async move {
        let mut peak = 0;
        while let Some(kib) = support::process::peak_rss_kib(pid) {
            peak = peak.max(kib);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    });
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("svs finished")
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        peak_kib: watcher.await.unwrap(),
    }
}

fn assert_no_escapes(what: &str, text: &str) {
    for c in ['\x1b', '\x07', '\u{9b}'] {
        assert!(
            !text.contains(c),
            "{what} passed a control character {c:?} through: {text:?}"
        );
    }
}

#[tokio::test]
async fn svs_play_stays_small_and_clean_against_a_lying_stream_service() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = TestDirectory::start(&data, &[]).await;
    let hostile = start_hostile(&data).await;
    let home = tmp.path().join("viewer");

    let run = svs(
        &dir,
        &hostile,
        &home,
        &["play", "big", "--headless", "--json", "--fast"],
    )
    .await;
    println!(
        "svs play against the hostile server: peak RSS {} MiB; stderr: {}",
        run.peak_kib / 1024,
        run.stderr.trim()
    );
    assert!(run.ok, "{}", run.stderr);
    let summary = run.summary();
    assert_eq!(summary["frames_received"], JUNK_FRAMES + 6);
    assert_eq!(summary["frames_decoded"], 1, "only the real JPEG decodes");
    assert!(
        run.stderr.contains("over the budget") && run.stderr.contains("not shown"),
        "the refusal is reported: {}",
        run.stderr
    );
    assert_no_escapes("svs play --json", &run.stdout);
    assert_no_escapes("svs play", &run.stderr);
    // It was 5 GiB with three such frames.
    assert!(
        run.peak_kib < 400 * 1024,
        "svs play peaked at {} MiB",
        run.peak_kib / 1024
    );

    // 300 s of undecodable sound in one message: played as silence, held to 5 s, counted.
    let heard = tmp.path().join("heard.wav");
    let wav = format!("wav:{}", heard.display());
    let run = svs(
        &dir,
        &hostile,
        &home,
        &["play", "loud", "--headless", "--json", "--audio", &wav],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    let summary = run.summary();
    let sound = &summary["sound"];
    assert_eq!(sound["packets"], JUNK_PACKETS, "{summary}");
    // libopus takes a few junk packets as packets; the rest are counted and played as silence.
    assert!(
        sound["undecodable"].as_u64().unwrap() > JUNK_PACKETS * 9 / 10,
        "{summary}"
    );
    assert!(
        sound["dropped_seconds"].as_f64().unwrap() > 290.0,
        "more than the buffer holds is dropped: {summary}"
    );
    assert_eq!(summary["frames_decoded"], 30);
    assert!(
        run.peak_kib < 400 * 1024,
        "svs play peaked at {} MiB with a sound flood",
        run.peak_kib / 1024
    );
    // Sound svs cannot play: pictures only, and the summary says why.
    let run = svs(
        &dir,
        &hostile,
        &home,
        &["play", "odd-sound", "--headless", "--json", "--audio", &wav],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    let summary = run.summary();
    assert_eq!(summary["frames_decoded"], 30);
    assert!(
        summary["sound"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("cannot play")),
        "{summary}"
    );
    assert!(run.stderr.contains("no sound"), "{}", run.stderr);

    let run = svs(&dir, &hostile, &home, &["play", "rude", "--headless"]).await;
    assert!(!run.ok);
    assert!(run.stderr.contains("no such video"), "{}", run.stderr);
    assert_no_escapes("a refused play", &run.stderr);

    let run = svs(&dir, &hostile, &home, &["videos"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stdout.contains("evil"), "{}", run.stdout);
    assert_no_escapes("svs videos", &run.stdout);
    let run = svs(&dir, &hostile, &home, &["videos", "--json"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_no_escapes("svs videos --json", &run.stdout);
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svs_web_passes_no_lying_picture_to_the_page_and_keeps_chatting() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = TestDirectory::start(&data, &[]).await;
    let hostile = start_hostile(&data).await;
    let web = support::SvsWeb::start(
        env!("CARGO_BIN_EXE_svs"),
        &dir,
        Some(&hostile),
        "viewer",
        &tmp.path().join("viewer"),
    );
    let driver = support::Chromedriver::start().await;
    let page = driver.browser().await;
    web.open_in(&page).await;
    let limit = Duration::from_secs(60);

    // The library: the name is text, with no control characters turned into anything; its
    // "poster" claims 30000x30000 and is not shown.
    page.click("#show-library").await;
    page.wait_text("#library .video .name", "evil", limit).await;
    let name = page.text("#library .video .name").await;
    assert!(
        name.starts_with("evil") && name.ends_with("name"),
        "{name:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        page.eval("return document.querySelectorAll('#library img').length")
            .await,
        serde_json::json!(0),
        "a poster that lies about its size reached the page"
    );

    // Playing it: the lying pictures are dropped with a note, the real one is drawn, the flood
    // of junk is counted instead of noted one by one.
    page.click("#library .video").await;
    page.wait_until(
        "the real frame drawn and the lies noted",
        "const s = window.svsPlayer.stats; return s.framesDrawn >= 1 && s.notes.some(n => n.includes('over the budget')) && s.notes.some(n => n.includes('frames dropped so far'))",
        limit,
    )
    .await;
    let stats = page.eval("return window.svsPlayer.stats").await;
    assert!(
        stats["framesReceived"].as_u64().unwrap() <= 10,
        "frames that failed the size check reached the page: {stats}"
    );
    let peak = support::process::peak_rss_kib(web.pid()).unwrap();
    assert!(peak < 300 * 1024, "svs web peaked at {peak} KiB");

    // The chat is still there.
    page.click("#views li[data-view='0']").await;
    page.type_into("#message", "/who").await;
    page.click("#send").await;
    page.wait_text("#entries", "online now", limit).await;
    page.close().await;
    drop(driver);
    dir.stop().await;
}
