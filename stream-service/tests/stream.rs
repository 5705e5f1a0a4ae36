//! End-to-end tests of stream-service and the player: real service over TLS, real video made and
//! decoded by OpenCV, real client code. Headless: no test touches highgui.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use svs_test_support as support;

use std::time::Duration;
use support::viewer::Viewer;
use support::*;
use svs_cli::player::{self, PlayOptions};
use svs_cli::stream_client::StreamClient;
use svs_common::proto::stream::{
    Codec, Frame, Pacing, PlayRequest, PlayResponse, Resolution, control_request, notice,
    play_response,
};
use tonic::Streaming;

const HEADLESS: PlayOptions = PlayOptions {
    headless: true,
    record: None,
    live_stats: false,
    reports: None,
    max_pixels: None,
    sound: player::SoundChoice::None,
    max_sound_buffer_seconds: None,
};

/// Plays `request` to its end through the real player, without a window.
async fn play_headless(client: &mut StreamClient, request: PlayRequest) -> player::Summary {
    player::play(client, request, &HEADLESS).await.unwrap()
}

fn request(resolution: Resolution, pacing: Pacing) -> PlayRequest {
    PlayRequest {
        video: "demo".into(),
        resolution: resolution as i32,
        start_seconds: 0.0,
        pacing: pacing as i32,
        ..Default::default()
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    videos: std::path::PathBuf,
    issuer: svs_common::token::TokenIssuer,
    stream: TestStream,
}

async fn setup(extra: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let videos = tmp.path().join("videos");
    demo_videos(&videos);
    let issuer = test_issuer(&data);
    let stream = TestStream::start(&data, &videos, extra).await;
    Setup {
        _tmp: tmp,
        videos,
        issuer,
        stream,
    }
}

impl Setup {
    async fn client(&self, name: &str) -> StreamClient {
        self.stream
            .client(&token(&self.issuer, name, 3_600_000))
            .await
    }
}

async fn next(stream: &mut Streaming<PlayResponse>) -> play_response::Kind {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a message in time")
        .expect("no error")
        .expect("stream still open")
        .kind
        .expect("a kind")
}

#[tokio::test]
async fn every_rendition_plays_in_order_at_its_size_and_shares_one_encode() {
    let s = setup(&[]).await;
    let videos = s.client("viewer").await.list_videos().await.unwrap();
    assert_eq!(videos.len(), 1);
    assert_eq!(videos[0].renditions.len(), 3);
    assert_eq!(videos[0].renditions[0].frame_count, DEMO_FRAMES);

    // Three playbacks at once, one per rendition, in real time, decoded by OpenCV.
    let play = |r| {
        let s = &s;
        async move {
            let mut client = s.client("viewer").await;
            play_headless(&mut client, request(r, Pacing::Realtime)).await
        }
    };
    let (p240, p720, p1440) = tokio::join!(
        play(Resolution::Resolution240p),
        play(Resolution::Resolution720p),
        play(Resolution::Resolution1440p)
    );
    for (summary, (w, h)) in [
        (&p240, (426, 240)),
        (&p720, (1280, 720)),
        (&p1440, (2560, 1440)),
    ] {
        assert_eq!(
            summary.frames_received + summary.frames_skipped,
            DEMO_FRAMES,
            "{}",
            summary.rendition
        );
        assert_eq!(summary.frames_decoded, summary.frames_received);
        assert!(
            summary
                .frames
                .iter()
                .all(|f| (f.decoded_width, f.decoded_height) == (w, h)),
            "{} decodes at {w}x{h}",
            summary.rendition
        );
        assert!(
            summary
                .frames
                .windows(2)
                .all(|p| p[1].index > p[0].index && p[1].pts_seconds > p[0].pts_seconds)
        );
        // Paced on the video's clock: 60 frames at 15 fps.
        assert!(
            (summary.mean_fps - DEMO_FPS).abs() < 3.0,
            "{} fps {}",
            summary.rendition,
            summary.mean_fps
        );
    }
    assert_eq!(
        p240.frames_skipped, 0,
        "an idle loopback viewer at 240p keeps up"
    );
    // Two 2-second segments (30 frames each) per rendition.
    assert_eq!(s.stream.settled_encodes().await, 6);

    // A second viewer of a rendition is served from the cache: no new encode.
    let mut client = s.client("second").await;
    let again = play_headless(
        &mut client,
        request(Resolution::Resolution720p, Pacing::AsFastAsPossible),
    )
    .await;
    assert_eq!(again.frames_received, DEMO_FRAMES);
    assert_eq!(s.stream.settled_encodes().await, 6, "no second encode");
    s.stream.stop().await;
}

#[tokio::test]
async fn missing_rendition_and_video_name_what_exists() {
    let s = setup(&[]).await;
    std::fs::copy(
        s.videos.join("demo_240p.mp4"),
        s.videos.join("partial_240p.mp4"),
    )
    .unwrap();
    let mut client = s.client("viewer").await;
    // The rescan (every second) picks the new file up.
    for _ in 0..50 {
        if client
            .list_videos()
            .await
            .unwrap()
            .iter()
            .any(|v| v.name == "partial")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = client.list_videos().await.unwrap();
    let partial = listed
        .iter()
        .find(|v| v.name == "partial")
        .expect("partial listed");
    assert_eq!(partial.renditions.len(), 1);
    let mut req = request(Resolution::Resolution1440p, Pacing::Realtime);
    req.video = "partial".into();
    let err = client
        .play(req)
        .await
        .expect_err("missing rendition refused")
        .to_string();
    assert!(
        err.contains("no 1440p rendition") && err.contains("available: 240p"),
        "{err}"
    );
    let mut req = request(Resolution::Resolution720p, Pacing::Realtime);
    req.video = "nope".into();
    let err = client.play(req).await.err().unwrap().to_string();
    assert!(
        err.contains("no video named") && err.contains("demo"),
        "{err}"
    );
    // A file OpenCV cannot open is skipped, not fatal.
    std::fs::write(s.videos.join("broken_720p.mp4"), b"not a video").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let listed = client.list_videos().await.unwrap();
    assert!(listed.iter().all(|v| v.name != "broken"));
    s.stream.stop().await;
}

#[tokio::test]
async fn missing_expired_and_forged_tokens_are_rejected() {
    let s = setup(&[]).await;
    let expired = s.stream.client(&token(&s.issuer, "viewer", -1000)).await;
    let other_issuer =
        svs_common::token::TokenIssuer::new(svs_common::identity::generate(2048).unwrap());
    let forged = s
        .stream
        .client(&token(&other_issuer, "viewer", 3_600_000))
        .await;
    for (mut client, why) in [(expired, "expired"), (forged, "signature")] {
        let err = client.list_videos().await.expect_err("refused").to_string();
        assert!(err.contains(why), "{err}");
    }
    let channel = svs_common::client::connect(&s.stream.url, Some(&s.stream.ca))
        .await
        .unwrap();
    let mut bare = svs_common::proto::stream::stream_client::StreamClient::new(channel);
    let status = bare
        .play(request(Resolution::Resolution240p, Pacing::Realtime))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    s.stream.stop().await;
}

#[tokio::test]
async fn switch_shows_on_the_next_frame_and_seek_lands_where_asked() {
    let s = setup(&[]).await;
    let mut client = s.client("viewer").await;
    let mut playing = client
        .play(request(Resolution::Resolution240p, Pacing::Realtime))
        .await
        .unwrap();
    let id = playing.header.playback_id.clone();
    assert_eq!((playing.header.width, playing.header.height), (426, 240));
    for _ in 0..3 {
        assert!(matches!(
            next(&mut playing.stream).await,
            play_response::Kind::Frame(_)
        ));
    }
    client
        .control(
            &id,
            control_request::Action::SwitchTo(Resolution::Resolution720p as i32),
        )
        .await
        .unwrap();
    // Frames already queued (at most two) may still be 240p; the notice marks the switch and the
    // very next frame is 720p.
    let mut before_notice = 0;
    loop {
        match next(&mut playing.stream).await {
            play_response::Kind::Frame(f) => {
                assert_eq!(f.height, 240);
                before_notice += 1;
            }
            play_response::Kind::Notice(n) => {
                assert!(matches!(n.kind, Some(notice::Kind::Switched(_))));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        before_notice <= 3,
        "{before_notice} old frames after the switch"
    );
    let play_response::Kind::Frame(f) = next(&mut playing.stream).await else {
        panic!("frame expected")
    };
    let decoded = opencv_size(f.jpeg().expect("a JPEG frame"));
    assert_eq!(
        decoded,
        (1280, 720),
        "the frame after the switch decodes at 720p"
    );

    client
        .control(&id, control_request::Action::SeekSeconds(3.0))
        .await
        .unwrap();
    loop {
        match next(&mut playing.stream).await {
            play_response::Kind::Notice(n) if matches!(&n.kind, Some(notice::Kind::State(s)) if s.starts_with("seeked")) =>
            {
                break;
            }
            _ => {}
        }
    }
    let play_response::Kind::Frame(f) = next(&mut playing.stream).await else {
        panic!("frame expected")
    };
    assert_eq!(
        f.index,
        (3.0 * DEMO_FPS) as u64,
        "the seek lands on frame 45"
    );
    s.stream.stop().await;
}

fn in_h264(mut r: PlayRequest) -> PlayRequest {
    r.codec = Codec::H264 as i32;
    r
}

/// Keyframes come every second: every 15 frames of the demo.
const DEMO_GOP: u64 = DEMO_FPS as u64;

#[tokio::test]
async fn h264_plays_every_rendition_with_a_keyframe_a_second_and_old_clients_still_get_jpeg() {
    let s = setup(&[]).await;
    let mut client = s.client("viewer").await;
    for (resolution, size) in [
        (Resolution::Resolution240p, (426, 240)),
        (Resolution::Resolution720p, (1280, 720)),
        (Resolution::Resolution1440p, (2560, 1440)),
    ] {
        let fast = request(resolution, Pacing::AsFastAsPossible);
        let h264 = play_headless(&mut client, in_h264(fast.clone())).await;
        assert_eq!(h264.codec, "h264");
        assert_eq!(
            (
                h264.frames_received,
                h264.frames_decoded,
                h264.bridge_frames
            ),
            (DEMO_FRAMES, DEMO_FRAMES, 0),
            "{resolution:?}: every frame, decoded, none bridged from a start at 0"
        );
        for (n, f) in h264.frames.iter().enumerate() {
            assert_eq!(f.index, n as u64, "in order");
            assert_eq!(f.codec, "h264");
            assert_eq!(
                (f.decoded_width, f.decoded_height),
                size,
                "frame {}",
                f.index
            );
            assert_eq!(
                f.keyframe,
                f.index.is_multiple_of(DEMO_GOP),
                "frame {}",
                f.index
            );
        }
        // A request that names no codec (every client before H.264) is served JPEG.
        let jpeg = play_headless(&mut client, fast).await;
        assert_eq!(jpeg.codec, "jpeg");
        assert_eq!(jpeg.frames_decoded, DEMO_FRAMES);
        assert!(jpeg.frames.iter().all(|f| f.codec == "jpeg" && f.keyframe));
        assert!(
            jpeg.frames
                .iter()
                .all(|f| (f.decoded_width, f.decoded_height) == size)
        );
        println!(
            "{resolution:?}: H.264 {} bytes, JPEG {} bytes ({:.2})",
            h264.bytes_received,
            jpeg.bytes_received,
            h264.bytes_received as f64 / jpeg.bytes_received as f64
        );
        assert!(
            h264.bytes_received * 2 < jpeg.bytes_received,
            "H.264 is well under half of JPEG's bytes"
        );
    }
    s.stream.stop().await;
}

#[tokio::test]
async fn an_h264_playback_is_recorded_frame_for_frame() {
    use opencv::prelude::*;
    let s = setup(&[]).await;
    let mut client = s.client("viewer").await;
    let path = s.videos.parent().unwrap().join("recorded.avi");
    let options = PlayOptions {
        record: Some(path.clone()),
        ..HEADLESS
    };
    let summary = player::play(
        &mut client,
        in_h264(request(
            Resolution::Resolution240p,
            Pacing::AsFastAsPossible,
        )),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(summary.frames_decoded, DEMO_FRAMES);
    let mut recorded =
        opencv::videoio::VideoCapture::from_file(path.to_str().unwrap(), opencv::videoio::CAP_ANY)
            .unwrap();
    let mut frame = opencv::core::Mat::default();
    let mut index = 0;
    while recorded.read(&mut frame).unwrap() && !frame.empty() {
        assert_eq!((frame.cols(), frame.rows()), (426, 240));
        assert_eq!(
            stream_service::media::frame_mark(&frame),
            Some(index),
            "recorded frame {index} shows itself"
        );
        index += 1;
    }
    assert_eq!(index, DEMO_FRAMES, "every frame recorded");
    s.stream.stop().await;
}

/// Reads and shows frames until the notice `is_it` picks, then returns the frame after it.
async fn frame_after(
    stream: &mut Streaming<PlayResponse>,
    viewer: &mut Viewer,
    is_it: impl Fn(&notice::Kind) -> bool,
) -> Frame {
    loop {
        match next(stream).await {
            play_response::Kind::Frame(f) => {
                viewer.show(&f);
            }
            play_response::Kind::Notice(n) if n.kind.as_ref().is_some_and(&is_it) => break,
            _ => {}
        }
    }
    loop {
        if let play_response::Kind::Frame(f) = next(stream).await {
            return f;
        }
    }
}

/// From `first` (just after a jump), the frames up to the next keyframe must be JPEG, each
/// showing its own number at `size`; the keyframe and the frame after it H.264. Returns the
/// number of JPEG frames that bridged.
async fn bridged_to_keyframe(
    stream: &mut Streaming<PlayResponse>,
    viewer: &mut Viewer,
    first: Frame,
    size: (i32, i32),
) -> u64 {
    let mut frame = first;
    let mut bridged = 0;
    let mut h264_seen = 0;
    while h264_seen < 2 {
        assert_eq!(
            viewer.show(&frame),
            (size, Some(frame.index)),
            "frame {} shows itself at the new size",
            frame.index
        );
        match frame.picture.as_ref().unwrap() {
            svs_common::proto::stream::frame::Picture::Jpeg(_) => {
                assert_eq!(h264_seen, 0, "no JPEG once H.264 resumed");
                assert_ne!(
                    frame.index % DEMO_GOP,
                    0,
                    "a keyframe position needs no bridge"
                );
                bridged += 1;
            }
            svs_common::proto::stream::frame::Picture::H264(_) => {
                if h264_seen == 0 {
                    assert!(frame.keyframe && frame.index.is_multiple_of(DEMO_GOP));
                }
                h264_seen += 1;
            }
        }
        frame = loop {
            if let play_response::Kind::Frame(f) = next(stream).await {
                break f;
            }
        };
    }
    bridged
}

#[tokio::test]
async fn h264_switch_and_seek_show_at_the_next_frame_bridged_by_jpeg_to_the_keyframe() {
    let s = setup(&[]).await;
    let mut client = s.client("viewer").await;
    let mut playing = client
        .play(in_h264(request(
            Resolution::Resolution240p,
            Pacing::Realtime,
        )))
        .await
        .unwrap();
    assert_eq!(playing.header.codec, Codec::H264 as i32);
    assert_eq!(u64::from(playing.header.keyframe_interval), DEMO_GOP);
    let id = playing.header.playback_id.clone();
    let mut viewer = Viewer::new();
    // A few 240p frames, then a switch between two keyframes.
    loop {
        if let play_response::Kind::Frame(f) = next(&mut playing.stream).await {
            assert_eq!(viewer.show(&f), ((426, 240), Some(f.index)));
            if f.index >= 3 {
                break;
            }
        }
    }
    client
        .control(
            &id,
            control_request::Action::SwitchTo(Resolution::Resolution720p as i32),
        )
        .await
        .unwrap();
    let first = frame_after(&mut playing.stream, &mut viewer, |n| {
        matches!(n, notice::Kind::Switched(_))
    })
    .await;
    let after_switch = first.index;
    let bridged = bridged_to_keyframe(&mut playing.stream, &mut viewer, first, (1280, 720)).await;
    assert_eq!(bridged, (DEMO_GOP - after_switch % DEMO_GOP) % DEMO_GOP);

    // A seek to 2.5 s: frame 37, seven frames past a keyframe.
    client
        .control(&id, control_request::Action::SeekSeconds(2.5))
        .await
        .unwrap();
    let first = frame_after(
        &mut playing.stream,
        &mut viewer,
        |n| matches!(n, notice::Kind::State(s) if s.starts_with("seeked")),
    )
    .await;
    assert_eq!(first.index, 37, "the seek lands on frame 37");
    let bridged = bridged_to_keyframe(&mut playing.stream, &mut viewer, first, (1280, 720)).await;
    assert_eq!(bridged, 45 - 37, "JPEG from 37 until the keyframe at 45");
    s.stream.stop().await;
}

fn opencv_size(jpeg: &[u8]) -> (i32, i32) {
    use opencv::prelude::*;
    let mat = opencv::imgcodecs::imdecode(
        &opencv::core::Vector::<u8>::from_slice(jpeg),
        opencv::imgcodecs::IMREAD_COLOR,
    )
    .unwrap();
    (mat.cols(), mat.rows())
}

#[tokio::test]
async fn a_stalled_viewer_skips_instead_of_lagging_and_does_not_slow_another() {
    let s = setup(&[]).await;
    // Warm the cache so both viewers are served the same way.
    let mut warm = s.client("warm").await;
    play_headless(
        &mut warm,
        request(Resolution::Resolution1440p, Pacing::AsFastAsPossible),
    )
    .await;

    let mut stalled = s.client("stalled").await;
    let mut playing = stalled
        .play(request(Resolution::Resolution1440p, Pacing::Realtime))
        .await
        .unwrap();
    let mut steady = s.client("steady").await;
    let steady_play = tokio::spawn(async move {
        play_headless(
            &mut steady,
            request(Resolution::Resolution1440p, Pacing::Realtime),
        )
        .await
    });
    // The stalled viewer reads nothing for 3 of the 4 seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut frames = Vec::new();
    while let Some(message) =
        tokio::time::timeout(Duration::from_secs(10), playing.stream.message())
            .await
            .unwrap()
            .unwrap()
    {
        if let Some(play_response::Kind::Frame(f)) = message.kind {
            frames.push((f.index, f.skipped_total));
        }
    }
    let steady = steady_play.await.unwrap();
    let (last_index, skipped) = *frames.last().unwrap();
    println!(
        "stalled viewer: {} frames, {skipped} skipped; steady viewer: {} frames, {} skipped",
        frames.len(),
        steady.frames_received,
        steady.frames_skipped
    );
    assert!(skipped > 0, "the stalled viewer skipped frames");
    assert_eq!(
        last_index,
        DEMO_FRAMES - 1,
        "and still ended on time at the last frame"
    );
    assert!(
        steady.frames_skipped * 10 <= DEMO_FRAMES,
        "the steady viewer was not slowed: {} skipped",
        steady.frames_skipped
    );
    s.stream.stop().await;
}

#[tokio::test]
async fn a_changed_source_file_rebuilds_its_cache() {
    let s = setup(&[]).await;
    let mut client = s.client("viewer").await;
    let first = play_headless(
        &mut client,
        request(Resolution::Resolution240p, Pacing::AsFastAsPossible),
    )
    .await;
    assert_eq!(first.frames_received, DEMO_FRAMES);
    assert_eq!(s.stream.settled_encodes().await, 2);
    // Replace the 240p file with a shorter one (2 s instead of 4).
    let other = s._tmp.path().join("other");
    stream_service::media::make_demo(
        &other,
        "demo",
        2.0,
        DEMO_FPS,
        &mut stream_service::Progress::hidden(),
    )
    .unwrap();
    std::fs::copy(other.join("demo_240p.mp4"), s.videos.join("demo_240p.mp4")).unwrap();
    for _ in 0..50 {
        let listed = client.list_videos().await.unwrap();
        if listed[0].renditions[0].frame_count == 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = play_headless(
        &mut client,
        request(Resolution::Resolution240p, Pacing::AsFastAsPossible),
    )
    .await;
    assert_eq!(
        second.frames_received, 30,
        "the new file's frames are served"
    );
    assert_eq!(
        s.stream.settled_encodes().await,
        3,
        "the changed source (one segment) was encoded again"
    );
    // Its older version's segments were removed once the new one was cached.
    until_files(&s.stream, 1).await;
    let versions = std::fs::read_dir(s._tmp.path().join("data/cache/demo/240p"))
        .unwrap()
        .count();
    assert_eq!(versions, 1);
    s.stream.stop().await;
}

#[tokio::test]
async fn shutdown_ends_a_running_playback_with_a_status() {
    let s = setup(&["--drain-secs", "2"]).await;
    let mut client = s.client("viewer").await;
    let mut playing = client
        .play(request(Resolution::Resolution240p, Pacing::Realtime))
        .await
        .unwrap();
    next(&mut playing.stream).await;
    let stopping = tokio::spawn(s.stream.stop());
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), playing.stream.message())
            .await
            .unwrap()
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable);
    stopping.await.unwrap();
}

#[tokio::test]
async fn two_playbacks_and_a_chat_exchange_run_side_by_side() {
    use svs_cli::inbox::Incoming;
    let tmp = tempfile::tempdir().unwrap();
    // The real directory issues the tokens stream-service verifies.
    let (dir, stream) = start_both(tmp.path()).await;
    let AliceAndBob {
        mut alice,
        mut bob,
        mut bob_events,
        mut bob_inbox,
        bob_peer,
    } = AliceAndBob::register(&dir, tmp.path()).await;

    let (alice_token, bob_token) = (alice.token.clone(), bob.token.clone());
    let play = |token: String| {
        let stream = &stream;
        async move {
            let mut client = stream.client(&token).await;
            let summary = play_headless(
                &mut client,
                request(Resolution::Resolution720p, Pacing::Realtime),
            )
            .await;
            (summary, std::time::Instant::now())
        }
    };
    let chat = async {
        let mut arrived = Vec::new();
        for i in 0..5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            alice
                .send_text(std::slice::from_ref(&bob_peer), &format!("message {i}"))
                .await
                .unwrap();
            loop {
                let items = tokio::time::timeout(
                    Duration::from_secs(10),
                    bob.next_incoming(&mut bob_events, &mut bob_inbox),
                )
                .await
                .unwrap()
                .unwrap()
                .unwrap();
                if let Some(m) = items.iter().find_map(|i| match i {
                    Incoming::Message(m) => Some(m.clone()),
                    _ => None,
                }) {
                    assert_eq!(m.text, format!("message {i}"));
                    arrived.push(std::time::Instant::now());
                    break;
                }
            }
        }
        arrived
    };
    let ((one, one_end), (two, two_end), arrived) =
        tokio::join!(play(alice_token), play(bob_token), chat);
    assert_eq!(one.frames_received + one.frames_skipped, DEMO_FRAMES);
    assert_eq!(two.frames_received + two.frames_skipped, DEMO_FRAMES);
    assert_eq!(arrived.len(), 5);
    // Every message arrived while both videos were still playing: nothing waited for playback.
    assert!(arrived.iter().all(|t| *t < one_end && *t < two_end));
    stream.stop().await;
    dir.stop().await;
}

#[tokio::test]
async fn ingest_makes_three_renditions_with_the_source_frame_count() {
    let tmp = tempfile::tempdir().unwrap();
    let videos = tmp.path().join("videos");
    demo_videos(&videos);
    let out = tmp.path().join("library");
    let frames = stream_service::media::ingest(
        &videos.join("demo_720p.mp4"),
        &out,
        "talk",
        &mut stream_service::Progress::hidden(),
    )
    .unwrap();
    assert_eq!(frames, DEMO_FRAMES);
    for (label, width, height) in [
        ("240p", 426, 240),
        ("720p", 1280, 720),
        ("1440p", 2560, 1440),
    ] {
        let probe = stream_service::media::probe(&out.join(format!("talk_{label}.mp4"))).unwrap();
        assert_eq!(probe.frame_count, DEMO_FRAMES, "{label}");
        assert_eq!(
            (probe.width, probe.height),
            (width, height),
            "{label} keeps 16:9"
        );
        assert!((probe.fps - DEMO_FPS).abs() < 0.01);
    }
}

#[tokio::test]
async fn the_cache_evicts_least_recently_used_segments_past_its_cap() {
    // A cap of one byte: every segment nobody holds is evicted when the next one is written.
    let s = setup(&["--cache-max-bytes", "1"]).await;
    let mut client = s.client("viewer").await;
    for resolution in [Resolution::Resolution240p, Resolution::Resolution720p] {
        let seen = play_headless(&mut client, request(resolution, Pacing::AsFastAsPossible)).await;
        assert_eq!(seen.frames_received, DEMO_FRAMES);
        assert_eq!(seen.frames_decoded, DEMO_FRAMES);
    }
    let cache_dir = s._tmp.path().join("data/cache/demo");
    assert!(
        !cache_dir.join("240p").exists(),
        "240p was evicted while 720p was written"
    );
    assert!(
        cache_dir.join("720p").exists(),
        "720p, in use when written, stays"
    );
    // Playing 240p again needs new encodes.
    play_headless(
        &mut client,
        request(Resolution::Resolution240p, Pacing::AsFastAsPossible),
    )
    .await;
    assert_eq!(s.stream.settled_encodes().await, 6);
    s.stream.stop().await;
}

/// Plays 240p of `video` as fast as possible and returns how many frames decoded.
async fn play_240p(client: &mut StreamClient, video: &str) -> u64 {
    let mut r = request(Resolution::Resolution240p, Pacing::AsFastAsPossible);
    r.video = video.into();
    let summary = player::play(client, r, &HEADLESS).await.unwrap();
    assert_eq!(summary.frames_decoded, summary.frames_received);
    summary.frames_decoded
}

/// Waits until the cache holds `n` segment files (each is written just after its last frame
/// is served).
async fn until_files(stream: &TestStream, n: usize) {
    for _ in 0..200 {
        if stream.handle.cache.counts().files == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the cache holds {:?}, not {n} files",
        stream.handle.cache.counts()
    );
}

/// Waits until the library lists `n` videos.
async fn until_listed(client: &mut StreamClient, n: usize) {
    for _ in 0..100 {
        if client.list_videos().await.unwrap().len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the library never listed {n} videos");
}

#[tokio::test]
async fn videos_whose_names_share_a_prefix_keep_their_own_caches() {
    let s = setup(&[]).await;
    for name in ["a-b", "a-c"] {
        std::fs::copy(
            s.videos.join("demo_240p.mp4"),
            s.videos.join(format!("{name}_240p.mp4")),
        )
        .unwrap();
    }
    let mut client = s.client("viewer").await;
    until_listed(&mut client, 3).await;
    assert_eq!(play_240p(&mut client, "a-b").await, DEMO_FRAMES);
    assert_eq!(play_240p(&mut client, "a-c").await, DEMO_FRAMES);
    // A segment's file is written just after its last frame is served.
    until_files(&s.stream, 4).await;
    let cache = s._tmp.path().join("data/cache");
    let segments = |video: &str| {
        cache
            .join(video)
            .join("240p")
            .read_dir()
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|version| version.path().read_dir().into_iter().flatten().flatten())
            .filter(|f| f.path().extension().is_some_and(|e| e == "seg"))
            .count()
    };
    assert_eq!(segments("a-b"), 2, "building a-c left a-b's cache alone");
    assert_eq!(segments("a-c"), 2);
    assert_eq!(play_240p(&mut client, "a-b").await, DEMO_FRAMES);
    assert_eq!(
        s.stream.handle.cache.counts().encoded,
        4,
        "a-b was not encoded again"
    );
    s.stream.stop().await;
}

#[tokio::test]
async fn damaged_cache_frames_are_never_served_and_leftovers_are_removed_at_start() {
    damaged_segment_is_encoded_again(Codec::Jpeg, "240p").await;
}

#[tokio::test]
async fn a_damaged_h264_access_unit_in_the_cache_is_detected_and_encoded_again() {
    damaged_segment_is_encoded_again(Codec::H264, "240p-h264").await;
}

/// Plays the demo at 240p in `codec`, damages two frames of the first cached segment (in
/// `cache/demo/<dir>`), restarts, and plays again: every frame must decode.
async fn damaged_segment_is_encoded_again(codec: Codec, dir: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let videos = tmp.path().join("videos");
    demo_videos(&videos);
    let issuer = test_issuer(&data);
    let stream = TestStream::start(&data, &videos, &[]).await;
    let mut client = stream.client(&token(&issuer, "viewer", 3_600_000)).await;
    let mut r = request(Resolution::Resolution240p, Pacing::AsFastAsPossible);
    r.codec = codec as i32;
    let first = play_headless(&mut client, r.clone()).await;
    assert_eq!(first.frames_decoded, DEMO_FRAMES);
    until_files(&stream, 2).await;
    stream.stop().await;

    // Damage two frames of the first segment in place (same length), and leave what a killed
    // build leaves.
    let version = std::fs::read_dir(data.join("cache/demo").join(dir))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let first = version.join("0.seg");
    assert!(version.join("1.seg").exists(), "both segments were kept");
    let mut bytes = std::fs::read(&first).unwrap();
    let len = bytes.len();
    for at in [len / 3, 2 * len / 3] {
        bytes[at] ^= 0xff;
    }
    std::fs::write(&first, &bytes).unwrap();
    let leftover = version.join(".1.seg.999.0.tmp");
    std::fs::write(&leftover, vec![0u8; 4096]).unwrap();

    let stream = TestStream::start(&data, &videos, &[]).await;
    assert!(
        !leftover.exists(),
        "a killed build's temporary file is removed at start"
    );
    let mut client = stream.client(&token(&issuer, "viewer", 3_600_000)).await;
    let summary = play_headless(&mut client, r).await;
    assert_eq!(summary.frames_received, DEMO_FRAMES);
    assert_eq!(
        summary.frames_decoded, DEMO_FRAMES,
        "every frame served decodes: the damaged segment was encoded again"
    );
    let counts = stream.handle.cache.counts();
    assert_eq!(
        (counts.encoded, counts.loaded),
        (1, 1),
        "the damaged segment encoded again, the intact one loaded"
    );
    stream.stop().await;
}

#[tokio::test]
async fn a_fifo_in_the_library_is_skipped_and_scans_go_on() {
    let s = setup(&[]).await;
    let fifo = s.videos.join("x_240p.mp4");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let mut client = s.client("viewer").await;
    // A later file is still noticed: the FIFO did not stop the rescans.
    std::fs::copy(
        s.videos.join("demo_240p.mp4"),
        s.videos.join("late_240p.mp4"),
    )
    .unwrap();
    until_listed(&mut client, 2).await;
    let names: Vec<String> = client
        .list_videos()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["demo", "late"]);
    s.stream.stop().await;

    // After a restart with the FIFO still there, the service serves at once.
    let data = s._tmp.path().join("data");
    let stream = TestStream::start(&data, &s.videos, &[]).await;
    let mut client = stream.client(&token(&s.issuer, "viewer", 3_600_000)).await;
    until_listed(&mut client, 2).await;
    stream.stop().await;
}

#[tokio::test]
async fn an_unknown_video_names_the_closest_few_not_the_whole_library() {
    let s = setup(&[]).await;
    for n in 0..40 {
        std::fs::copy(
            s.videos.join("demo_240p.mp4"),
            s.videos.join(format!("talk{n:02}_240p.mp4")),
        )
        .unwrap();
    }
    let mut client = s.client("viewer").await;
    until_listed(&mut client, 41).await;
    let mut r = request(Resolution::Resolution240p, Pacing::AsFastAsPossible);
    r.video = "talk7".into();
    let status = client.play(r).await.expect_err("unknown video refused");
    let text = status.to_string();
    assert!(text.starts_with("the stream service refused"), "{text}");
    assert!(text.contains("no video named \"talk7\""), "{text}");
    assert!(text.contains("closest of 41"), "{text}");
    assert!(text.contains("talk07"), "{text}");
    assert!(text.len() < 400, "short: {text}");
    s.stream.stop().await;
}

#[tokio::test]
async fn sessions_that_stopped_playing_are_not_remembered() {
    let s = setup(&[]).await;
    for n in 0..12 {
        let mut client = s.client(&format!("viewer{n}")).await;
        assert_eq!(play_240p(&mut client, "demo").await, DEMO_FRAMES);
    }
    // The last playback's task lets go of its entry just after its stream ends.
    for _ in 0..100 {
        if s.stream.handle.sessions_tracked() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.stream.handle.sessions_tracked(), 0);
    s.stream.stop().await;
}

/// Plays 240p in real time on its own task (the test takes the service away meanwhile).
fn play_240p_in_background(
    mut client: StreamClient,
) -> tokio::task::JoinHandle<Result<player::Summary, svs_cli::CliError>> {
    tokio::spawn(async move {
        player::play(
            &mut client,
            request(Resolution::Resolution240p, Pacing::Realtime),
            &HEADLESS,
        )
        .await
    })
}

/// The summary of a background playback, which must end within 30 s.
async fn finished(
    playback: tokio::task::JoinHandle<Result<player::Summary, svs_cli::CliError>>,
) -> player::Summary {
    tokio::time::timeout(Duration::from_secs(30), playback)
        .await
        .expect("the playback ended")
        .unwrap()
        .unwrap()
}

/// One resume, and every frame of the demo once, in order, decoded.
fn assert_resumed_once_with_every_frame(summary: &player::Summary) {
    assert_eq!(summary.resumes, 1);
    let indices: Vec<u64> = summary.frames.iter().map(|f| f.index).collect();
    assert_eq!(
        indices,
        (0..DEMO_FRAMES).collect::<Vec<_>>(),
        "every frame once, in order, across the lost connection"
    );
    assert_eq!(summary.frames_decoded, DEMO_FRAMES);
}

#[tokio::test]
async fn a_playback_resumes_at_the_next_frame_after_the_service_restarts() {
    let s = setup(&[]).await;
    let port: u16 = s.stream.url.rsplit(':').next().unwrap().parse().unwrap();
    let data = s._tmp.path().join("data");
    let client = s.client("viewer").await;
    let playback = play_240p_in_background(client);
    // A second into the four-second video the service goes away and comes back.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.stream.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted = TestStream::start_on(port, &data, &s.videos, &[]).await;
    let summary = finished(playback).await;
    assert_resumed_once_with_every_frame(&summary);
    assert_eq!(summary.duration_seconds, DEMO_SECONDS);
    // Lateness is measured against the earliest arrival of each run: never negative.
    assert!(
        (0.0..2000.0).contains(&summary.p99_lateness_ms),
        "{}",
        summary.p99_lateness_ms
    );
    assert!((summary.position_seconds - (DEMO_FRAMES - 1) as f64 / DEMO_FPS).abs() < 1e-6);
    restarted.stop().await;
}

#[tokio::test]
async fn a_playback_whose_replica_dies_resumes_on_the_next_at_the_frame_it_reached() {
    let s = setup(&[]).await;
    // A second replica of the same library with its own cache, trusting the same token key.
    let data = s._tmp.path().join("data");
    let other_cache = s._tmp.path().join("other-cache");
    let other = TestStream::start(
        &data,
        &s.videos,
        &["--cache-dir", other_cache.to_str().unwrap()],
    )
    .await;
    let token = token(&s.issuer, "viewer", 3_600_000);
    let client = StreamClient::connect(
        &format!("{},{}", s.stream.url, other.url),
        Some(&s.stream.ca),
        &token,
    )
    .await
    .unwrap();
    let playback = play_240p_in_background(client);
    // A second into the four-second video the first replica goes away for good.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.stream.stop().await;
    let summary = finished(playback).await;
    assert_resumed_once_with_every_frame(&summary);
    assert!(
        other.handle.cache.counts().encoded > 0,
        "the second replica served the rest"
    );
    other.stop().await;
}
