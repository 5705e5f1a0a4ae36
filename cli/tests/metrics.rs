//! Prometheus metrics move with what the services do: both real services over TLS, each serving
//! metrics on its own port, scraped over HTTP after registrations, a message, a refused call and
//! a playback. (One test in its own binary: the recorder is process-wide.)
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::time::Duration;
use support::net::free_port;
use support::*;
use svs_cli::player::{self, PlayOptions};
use svs_common::proto::stream::{Pacing, PlayRequest, Resolution};

use support::process::scrape_metrics as scrape;

/// The value of the sample of `name` whose labels include every one of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            l[name.len()..].starts_with([' ', '{']) && labels.iter().all(|want| l.contains(want))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The demo at 240p as fast as possible, in JPEG (no codec named).
fn demo_240p_fast() -> PlayRequest {
    PlayRequest {
        video: "demo".into(),
        resolution: Resolution::Resolution240p as i32,
        start_seconds: 0.0,
        pacing: Pacing::AsFastAsPossible as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn counters_move_with_what_the_services_do() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let videos = tmp.path().join("videos");
    demo_videos(&videos);
    let (dir_port, stream_port) = (free_port(), free_port());
    let dir = TestDirectory::start(
        &data,
        &["--metrics-listen", &format!("127.0.0.1:{dir_port}")],
    )
    .await;
    let stream = TestStream::start(
        &data,
        &videos,
        &["--metrics-listen", &format!("127.0.0.1:{stream_port}")],
    )
    .await;
    let before = scrape(dir_port).await;

    let AliceAndBob {
        mut alice,
        mut bob,
        mut bob_events,
        mut bob_inbox,
        bob_peer,
    } = AliceAndBob::register(&dir, tmp.path()).await;
    alice
        .send_text(std::slice::from_ref(&bob_peer), "counted")
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut bob, &mut bob_events, &mut bob_inbox)
            .await
            .text,
        "counted"
    );
    // The session gauges are updated by the once-a-second sweep.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = scrape(dir_port).await;
    let register = [
        "method=\"/svs.directory.v1.Directory/Register\"",
        "code=\"Ok\"",
    ];
    assert_eq!(
        value(&after, "svs_rpc_total", &register) - value(&before, "svs_rpc_total", &register),
        2.0,
        "two registrations"
    );
    assert_eq!(
        value(
            &after,
            "svs_directory_recipients_total",
            &["outcome=\"OUTCOME_DELIVERING\""]
        ),
        1.0
    );
    assert_eq!(value(&after, "svs_directory_sessions", &[]), 2.0);
    assert_eq!(value(&after, "svs_directory_subscribers", &[]), 1.0);

    // A refused call and a playback on the stream service.
    let channel = svs_common::client::connect(&stream.url, Some(&stream.ca))
        .await
        .unwrap();
    let mut bare = svs_common::proto::stream::stream_client::StreamClient::new(channel);
    let request = demo_240p_fast();
    assert!(bare.play(request.clone()).await.is_err());
    let mut client = stream.client(&alice.token).await;
    let options = PlayOptions {
        headless: true,
        record: None,
        live_stats: false,
        reports: None,
        max_pixels: None,
        sound: svs_cli::player::SoundChoice::None,
        max_sound_buffer_seconds: None,
    };
    let summary = player::play(&mut client, request, &options).await.unwrap();
    assert_eq!(summary.frames_received, DEMO_FRAMES);
    let metrics = scrape(stream_port).await;
    assert_eq!(
        value(
            &metrics,
            "svs_rpc_total",
            &[
                "method=\"/svs.stream.v1.Stream/Play\"",
                "code=\"Unauthenticated\""
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            "svs_stream_frames_sent_total",
            &["rendition=\"240p\""]
        ),
        DEMO_FRAMES as f64
    );
    assert_eq!(value(&metrics, "svs_stream_playbacks_total", &[]), 1.0);
    assert!(
        value(
            &metrics,
            "svs_stream_cache_lookups_total",
            &["found=\"encoder\""]
        ) >= 1.0
    );
    // H.264 from 1.2 s (frame 18): JPEG bridge frames 18-29 up to the keyframe at 30.
    let h264 = PlayRequest {
        start_seconds: 1.2,
        codec: svs_common::proto::stream::Codec::H264 as i32,
        ..demo_240p_fast()
    };
    let summary = player::play(&mut client, h264, &options).await.unwrap();
    assert_eq!(summary.bridge_frames, 12);
    let metrics = scrape(stream_port).await;
    assert_eq!(value(&metrics, "svs_stream_bridge_frames_total", &[]), 12.0);
    stream.stop().await;
    dir.stop().await;
}
