//! Stream benchmark: runs the real stream-service binary over TLS on loopback with a generated
//! 10 s, 30 fps demo video and reports time to first frame (cold and cached), cache build speed,
//! pacing jitter, how many concurrent real-time viewers (one connection each) stay under one
//! frame interval of p99 lateness without skips, aggregate throughput as fast as possible, and
//! bytes per frame against raw BGR, all in JPEG; then real-time viewers in JPEG and in H.264
//! side by side (`benches/codec.rs` compares the codecs' bit rate and quality). Prints figures;
//! asserts nothing about speed.
//! Viewers here count bytes without decoding (decoding hundreds of streams would measure the
//! load generator); `svs play` decodes every frame. Run: `cargo bench -p stream-service`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::time::Instant;
use support::{RENDITIONS, first_frame_ms, watch};
use svs_common::proto::stream::{Codec, Pacing, PlayRequest, Resolution};
use svs_common::stats::percentile;

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let tmp = tempfile::tempdir().unwrap();
    let videos = tmp.path().join("videos");
    stream_service::media::make_demo(
        &videos,
        "demo",
        10.0,
        30.0,
        &mut stream_service::Progress::hidden(),
    )
    .unwrap();
    let service = support::start(&tmp.path().join("data"), &videos, &[]).await;
    println!(
        "stream benchmark (2-core machine, viewers on the same machine, TLS on loopback, 10 s 30 fps demo)"
    );

    // Cold: the first viewer of each rendition triggers the one encode; fast pacing measures the
    // cache build speed.
    for (resolution, label) in RENDITIONS {
        let mut client = service.client().await;
        let started = Instant::now();
        let seen = watch(
            &mut client,
            "demo",
            resolution,
            Pacing::AsFastAsPossible,
            0.0,
            Codec::Jpeg,
            None,
        )
        .await;
        let secs = started.elapsed().as_secs_f64();
        let raw = seen.width as f64 * seen.height as f64 * 3.0;
        let per_frame = seen.bytes as f64 / seen.frames as f64;
        println!(
            "{label:>5}: first frame cold {:>6.1} ms; cache build {:>6.1} frames/s; {:>8.0} B/frame vs raw BGR {:>9.0} B = {:>5.1}x fewer",
            seen.first_frame.as_secs_f64() * 1e3,
            seen.frames as f64 / secs,
            per_frame,
            raw,
            raw / per_frame
        );
    }
    // Cached: time to first frame over repeated plays (new connection each).
    for (resolution, label) in RENDITIONS {
        let mut firsts = Vec::new();
        for _ in 0..if quick { 5 } else { 20 } {
            let mut client = service.client().await;
            let request = PlayRequest {
                video: "demo".into(),
                resolution: resolution as i32,
                start_seconds: 9.0,
                pacing: Pacing::AsFastAsPossible as i32,
                ..Default::default()
            };
            firsts.extend(first_frame_ms(&mut client, request).await);
        }
        println!(
            "{label:>5}: first frame from cache (connected client) median {:.2} ms, p99 {:.2} ms over {} plays",
            percentile(&mut firsts.clone(), 0.5).unwrap_or(f64::NAN),
            percentile(&mut firsts, 0.99).unwrap_or(f64::NAN),
            firsts.len()
        );
    }
    // Pacing jitter of one real-time viewer.
    {
        let mut client = service.client().await;
        let mut seen = watch(
            &mut client,
            "demo",
            Resolution::Resolution720p,
            Pacing::Realtime,
            5.0,
            Codec::Jpeg,
            None,
        )
        .await;
        let mut jitter: Vec<f64> = seen.lateness_ms.iter().map(|v| v.abs()).collect();
        println!(
            "pacing, one 720p viewer: {} frames, p50 |offset| {:.2} ms, p99 {:.2} ms, skipped {}",
            seen.frames,
            percentile(&mut jitter.clone(), 0.5).unwrap_or(f64::NAN),
            percentile(&mut jitter, 0.99).unwrap_or(f64::NAN),
            seen.skipped
        );
        seen.lateness_ms.clear();
    }
    // Aggregate throughput, as fast as possible, 8 viewers of 720p.
    {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let mut client = service.client().await;
            tasks.push(tokio::spawn(async move {
                watch(
                    &mut client,
                    "demo",
                    Resolution::Resolution720p,
                    Pacing::AsFastAsPossible,
                    0.0,
                    Codec::Jpeg,
                    None,
                )
                .await
                .bytes
            }));
        }
        let mut total = 0u64;
        for t in tasks {
            total += t.await.unwrap();
        }
        println!(
            "as fast as possible, 8 viewers of 720p: {:.0} MB/s aggregate",
            total as f64 / 1e6 / started.elapsed().as_secs_f64()
        );
    }
    // Concurrent real-time viewers, 5 s each, one connection each.
    let steps: [(Resolution, &str, &[usize]); 3] = [
        (Resolution::Resolution240p, "240p", &[100, 250, 500, 1000]),
        (Resolution::Resolution720p, "720p", &[100, 200, 400, 600]),
        (Resolution::Resolution1440p, "1440p", &[25, 50, 100, 200]),
    ];
    for (codec, (resolution, label, counts)) in [Codec::Jpeg, Codec::H264]
        .into_iter()
        .flat_map(|codec| steps.iter().map(move |step| (codec, *step)))
    {
        let label = format!(
            "{label} {}",
            if codec == Codec::H264 {
                "H.264"
            } else {
                "JPEG"
            }
        );
        for &n in counts.iter().take(if quick { 2 } else { counts.len() }) {
            let mut clients = Vec::with_capacity(n);
            for _ in 0..n {
                clients.push(service.client().await);
            }
            let mut tasks = Vec::new();
            for mut client in clients {
                tasks.push(tokio::spawn(async move {
                    watch(
                        &mut client,
                        "demo",
                        resolution,
                        Pacing::Realtime,
                        5.0,
                        codec,
                        None,
                    )
                    .await
                }));
            }
            let mut lateness = Vec::new();
            let (mut frames, mut skipped) = (0u64, 0u64);
            for t in tasks {
                let seen = t.await.unwrap();
                frames += seen.frames;
                skipped += seen.skipped;
                lateness.extend(seen.lateness_ms);
            }
            let p99 = percentile(&mut lateness, 0.99).unwrap_or(f64::NAN);
            let ok = p99 < 1000.0 / 30.0 && skipped == 0;
            println!(
                "{label:>11} x {n:>4} real-time viewers: {frames:>6} frames, {skipped:>5} skipped, p99 lateness {p99:>7.1} ms ({})",
                if ok {
                    "within one frame"
                } else {
                    "NOT within one frame"
                }
            );
            if !ok {
                break;
            }
        }
    }
}
