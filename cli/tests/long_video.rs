//! A several-minute video through the segment cache: start at the end, seek backwards and
//! forwards across segments nobody has encoded, switch rendition at an unbuilt position, two
//! viewers sharing segments, eviction under a small cap while viewers play, warming. Every frame
//! is decoded by OpenCV and carries its frame number in its pixels (the demo draws it), so each
//! check is on the picture, not on the index the service claims.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::viewer::Viewer;
use support::*;
use svs_cli::stream_client::StreamClient;
use svs_common::proto::stream::{
    Codec, Frame, Pacing, PlayRequest, PlayResponse, Resolution, control_request, notice,
    play_response,
};
use tonic::Streaming;

/// 2 min 30 s at 8 frames/s: 1,200 frames, 75 segments of 16 frames (2 s) per rendition.
const SECONDS: f64 = 150.0;
const FPS: f64 = 8.0;
const FRAMES: u64 = 1200;
const PER_SEGMENT: u64 = 16;

/// The long demo, made once and kept in the target directory between runs (about a minute).
fn long_videos() -> &'static Path {
    static MADE: OnceLock<PathBuf> = OnceLock::new();
    MADE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("long-demo-v1");
        let made = stream_service::Rendition::ALL
            .iter()
            .all(|r| stream_service::media::rendition_path(&dir, "long", *r).exists());
        if !made {
            stream_service::media::make_demo(
                &dir,
                "long",
                SECONDS,
                FPS,
                &mut stream_service::Progress::hidden(),
            )
            .unwrap();
        }
        dir
    })
}

struct Setup {
    _tmp: tempfile::TempDir,
    issuer: svs_common::token::TokenIssuer,
    stream: TestStream,
}

async fn setup(extra: &[&str]) -> Setup {
    let videos = tokio::task::spawn_blocking(long_videos).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let issuer = test_issuer(&data);
    let stream = TestStream::start(&data, videos, extra).await;
    Setup {
        _tmp: tmp,
        issuer,
        stream,
    }
}

impl Setup {
    async fn client(&self) -> StreamClient {
        self.stream
            .client(&token(&self.issuer, "viewer", 3_600_000))
            .await
    }
}

fn request(resolution: Resolution, start_seconds: f64, pacing: Pacing) -> PlayRequest {
    PlayRequest {
        video: "long".into(),
        resolution: resolution as i32,
        start_seconds,
        pacing: pacing as i32,
        ..Default::default()
    }
}

async fn next(stream: &mut Streaming<PlayResponse>) -> Option<play_response::Kind> {
    tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a message in time")
        .expect("no error")
        .map(|m| m.kind.expect("a kind"))
}

/// Checks a frame the way a viewer sees it: it decodes, at `size`, showing frame `f.index`.
fn check(f: &Frame, size: (i32, i32)) {
    use opencv::prelude::*;
    let image = opencv::imgcodecs::imdecode(
        &opencv::core::Vector::<u8>::from_slice(f.jpeg().expect("a JPEG frame")),
        opencv::imgcodecs::IMREAD_COLOR,
    )
    .unwrap();
    assert_eq!((image.cols(), image.rows()), size, "frame {} size", f.index);
    assert_eq!(
        stream_service::media::read_frame_mark(f.jpeg().expect("a JPEG frame")),
        Some(f.index),
        "frame {} shows its own number",
        f.index
    );
}

/// The next frame, skipping notices; with how long it took.
async fn next_frame(stream: &mut Streaming<PlayResponse>) -> (Frame, Duration) {
    let asked = Instant::now();
    loop {
        match next(stream).await.expect("stream still open") {
            play_response::Kind::Frame(f) => return (f, asked.elapsed()),
            _ => continue,
        }
    }
}

/// Reads up to the notice that starts with `prefix` (frames already queued may come first) and
/// returns the frame after it, with the time from `since`.
async fn frame_after_notice(
    stream: &mut Streaming<PlayResponse>,
    prefix: &str,
    since: Instant,
) -> (Frame, Duration) {
    loop {
        match next(stream).await.expect("stream still open") {
            play_response::Kind::Notice(n) => {
                let text = match n.kind {
                    Some(notice::Kind::State(s)) => s,
                    Some(notice::Kind::Switched(_)) => "switched".into(),
                    other => format!("{other:?}"),
                };
                if text.starts_with(prefix) {
                    let (frame, _) = next_frame(stream).await;
                    return (frame, since.elapsed());
                }
            }
            _ => continue,
        }
    }
}

/// Plays from `start` to the end as fast as possible on a new connection, checking every frame
/// at `size`; returns each frame's index and bytes.
async fn play_to_end(
    s: &Setup,
    resolution: Resolution,
    start: f64,
    size: (i32, i32),
) -> Vec<(u64, usize)> {
    let mut client = s.client().await;
    let mut playing = client
        .play(request(resolution, start, Pacing::AsFastAsPossible))
        .await
        .unwrap();
    let mut frames = Vec::new();
    while let Some(kind) = next(&mut playing.stream).await {
        if let play_response::Kind::Frame(f) = kind {
            check(&f, size);
            frames.push((f.index, f.picture_bytes().len()));
        }
    }
    frames
}

const P240: (i32, i32) = (426, 240);
const P720: (i32, i32) = (1280, 720);
const P1440: (i32, i32) = (2560, 1440);

#[tokio::test]
async fn h264_start_seek_and_switch_anywhere_in_a_long_video_show_the_right_frame() {
    let s = setup(&[]).await;
    let mut client = s.client().await;
    // Keyframes every second: every 8 frames. Start cold 60.5 s in, between two (frame 484).
    let mut r = request(Resolution::Resolution720p, 60.5, Pacing::Realtime);
    r.codec = Codec::H264 as i32;
    let mut playing = client.play(r).await.unwrap();
    assert_eq!(playing.header.keyframe_interval, 8);
    let id = playing.header.playback_id.clone();
    let mut viewer = Viewer::new();
    let (first, _) = next_frame(&mut playing.stream).await;
    assert_eq!(first.index, 484);
    viewer.check_h264(&first, P720, 8);
    let mut bridged = u64::from(first.jpeg().is_some());
    let mut last = first.index;
    // Runs of 12 frames: each decodes at its size showing itself, bridged only to the keyframe.
    let run = async |playing: &mut svs_cli::stream_client::Playing,
                     viewer: &mut Viewer,
                     size: (i32, i32),
                     last: &mut u64,
                     bridged: &mut u64| {
        for _ in 0..12 {
            let (f, _) = next_frame(&mut playing.stream).await;
            viewer.check_h264(&f, size, 8);
            assert!(f.index > *last, "in order");
            *last = f.index;
            *bridged += u64::from(f.jpeg().is_some());
        }
    };
    run(&mut playing, &mut viewer, P720, &mut last, &mut bridged).await;
    assert_eq!(
        bridged, 4,
        "frames 484-487 bridged, H.264 from the keyframe at 488"
    );
    // Forwards to 2:00.25 (frame 962), back to 0:10.5 (frame 84), both cold.
    for (seconds, frame) in [(120.25, 962), (10.5, 84)] {
        client
            .control(&id, control_request::Action::SeekSeconds(seconds))
            .await
            .unwrap();
        let (f, _) = frame_after_notice(&mut playing.stream, "seeked", Instant::now()).await;
        assert_eq!(f.index, frame);
        viewer.jumped();
        viewer.check_h264(&f, P720, 8);
        last = f.index;
        run(&mut playing, &mut viewer, P720, &mut last, &mut bridged).await;
    }
    // Switch to 1440p between keyframes: the next frame is 1440p.
    client
        .control(
            &id,
            control_request::Action::SwitchTo(Resolution::Resolution1440p as i32),
        )
        .await
        .unwrap();
    let (f, _) = frame_after_notice(&mut playing.stream, "switched", Instant::now()).await;
    viewer.jumped();
    viewer.check_h264(&f, P1440, 8);
    assert!(f.index > last, "continues where it was");
    last = f.index;
    run(&mut playing, &mut viewer, P1440, &mut last, &mut bridged).await;
    s.stream.stop().await;
}

#[tokio::test]
async fn start_seek_and_switch_anywhere_land_on_the_right_frame() {
    let s = setup(&[]).await;
    let mut client = s.client().await;
    let listed = client.list_videos().await.unwrap();
    assert_eq!(listed[0].renditions[0].frame_count, FRAMES);

    // Start 60 s in, cold: the first frame is frame 480.
    let started = Instant::now();
    let mut playing = client
        .play(request(Resolution::Resolution720p, 60.0, Pacing::Realtime))
        .await
        .unwrap();
    let id = playing.header.playback_id.clone();
    let (first, _) = next_frame(&mut playing.stream).await;
    let cold_start = started.elapsed();
    assert_eq!(first.index, 480);
    check(&first, P720);
    for _ in 0..5 {
        let (f, _) = next_frame(&mut playing.stream).await;
        check(&f, P720);
    }

    // Forwards across unbuilt segments, then backwards before anything built.
    let mut timings = vec![("start at 1:00", cold_start)];
    for (seconds, label) in [(120.0, "seek to 2:00"), (10.5, "seek to 0:10.5")] {
        let asked = Instant::now();
        client
            .control(&id, control_request::Action::SeekSeconds(seconds))
            .await
            .unwrap();
        let (f, took) = frame_after_notice(&mut playing.stream, "seeked", asked).await;
        assert_eq!(f.index, (seconds * FPS) as u64, "{label}");
        check(&f, P720);
        timings.push((label, took));
        for _ in 0..3 {
            let (f, _) = next_frame(&mut playing.stream).await;
            check(&f, P720);
        }
    }

    // Switch to 1440p at a position nobody has encoded at 1440p: the next frame is 1440p,
    // continuing where the 720p frames were.
    let asked = Instant::now();
    client
        .control(
            &id,
            control_request::Action::SwitchTo(Resolution::Resolution1440p as i32),
        )
        .await
        .unwrap();
    let (f, took) = frame_after_notice(&mut playing.stream, "switched", asked).await;
    check(&f, P1440);
    assert!(
        (84..100).contains(&f.index),
        "continues near 0:10.5: {}",
        f.index
    );
    timings.push(("switch to 1440p", took));
    let mut last = f.index;
    for _ in 0..20 {
        let (f, _) = next_frame(&mut playing.stream).await;
        check(&f, P1440);
        assert!(f.index > last, "in order");
        last = f.index;
    }
    drop(playing);
    for (what, took) in timings {
        println!(
            "{what}: first frame after {:.0} ms",
            took.as_secs_f64() * 1e3
        );
    }

    // Start in the last segment: every frame to the end, in order, at 1440p.
    let frames = play_to_end(&s, Resolution::Resolution1440p, SECONDS - 1.0, P1440).await;
    let indexes: Vec<u64> = frames.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, ((FRAMES - 8)..FRAMES).collect::<Vec<_>>());
    s.stream.stop().await;
}

#[tokio::test]
async fn viewers_at_different_places_share_segments_and_only_theirs_are_encoded() {
    let s = setup(&["--read-ahead-segments", "0"]).await;
    // One viewer plays 1:40 to the end (25 segments), as fast as it can.
    let frames = play_to_end(&s, Resolution::Resolution240p, 100.0, P240).await;
    assert_eq!(frames.len() as u64, FRAMES - 800);
    let after_one = s.stream.settled_encodes().await;
    assert_eq!(after_one, 25, "only the segments it played were encoded");

    // A second viewer inside that range encodes nothing; a third before it encodes its own.
    for (start, new_segments) in [(110.0, 0), (30.0, (800 - 240) / PER_SEGMENT)] {
        let frames = play_to_end(&s, Resolution::Resolution240p, start, P240).await;
        let last = frames.last().map(|(i, _)| *i);
        assert_eq!(last, Some(FRAMES - 1));
        let encoded = s.stream.settled_encodes().await;
        assert_eq!(encoded, after_one + new_segments, "starting at {start} s");
    }
    s.stream.stop().await;
}

/// Bytes of every regular file under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            bytes_under(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[tokio::test]
async fn a_small_cache_evicts_segments_while_two_viewers_play() {
    const CAP: u64 = 2_000_000;
    let s = setup(&["--cache-max-bytes", &CAP.to_string()]).await;
    let play = |start: f64| {
        let s = &s;
        async move {
            let frames = play_to_end(s, Resolution::Resolution720p, start, P720).await;
            let largest_segment = frames
                .chunks(PER_SEGMENT as usize)
                .map(|c| c.iter().map(|(_, bytes)| *bytes as u64).sum::<u64>())
                .max()
                .unwrap_or(0);
            (frames.len() as u64, largest_segment)
        }
    };
    let ((one, seg_one), (two, seg_two)) = tokio::join!(play(110.0), play(40.0));
    assert_eq!(one, FRAMES - 880);
    assert_eq!(two, FRAMES - 320);
    // The last segment is written just after its last frame is out: let the disk settle.
    let cache_dir = s._tmp.path().join("data/cache");
    let deadline = Instant::now() + Duration::from_secs(10);
    while bytes_under(&cache_dir) != s.stream.handle.cache.counts().bytes
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = s.stream.handle.cache.counts();
    let on_disk = bytes_under(&cache_dir);
    let largest = seg_one.max(seg_two) + 4096; // and its header
    println!("{counts:?}; {on_disk} bytes on disk; largest segment about {largest} bytes");
    assert!(
        counts.encoded * largest / 2 > CAP,
        "the viewers encoded more than the cap holds"
    );
    // Eviction never removes a segment a viewer holds (each holds the one it plays and two
    // ahead), so the cap can be exceeded by those, and by nothing else.
    assert!(
        on_disk <= CAP + 6 * largest,
        "{on_disk} bytes on disk with a cap of {CAP}"
    );
    assert_eq!(
        on_disk, counts.bytes,
        "the cache's own count matches the disk"
    );
    s.stream.stop().await;
}

#[tokio::test]
async fn warming_encodes_the_first_segments_of_every_rendition_before_anyone_asks() {
    let s = setup(&["--prewarm-segments", "2"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.stream.handle.cache.counts().files < 12 {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            s.stream.handle.cache.counts()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        s.stream.handle.cache.counts().encoded,
        12,
        "two segments × three renditions × two codecs"
    );
    let mut client = s.client().await;
    for resolution in [
        Resolution::Resolution240p,
        Resolution::Resolution720p,
        Resolution::Resolution1440p,
    ] {
        let started = Instant::now();
        let mut playing = client
            .play(request(resolution, 0.0, Pacing::Realtime))
            .await
            .unwrap();
        let (first, _) = next_frame(&mut playing.stream).await;
        assert_eq!(first.index, 0);
        println!(
            "warm start at {resolution:?}: {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    // Served from disk: the warmed segments were loaded (each start loads its first two in the
    // background), not encoded again (read-ahead may have started on the third).
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.stream.handle.cache.counts().loaded < 3 * 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = s.stream.handle.cache.counts();
    assert_eq!(counts.loaded, 3 * 2, "{counts:?}");
    s.stream.stop().await;
}
