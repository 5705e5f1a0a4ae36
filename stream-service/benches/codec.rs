//! Codec benchmark: JPEG against H.264 on the same content, through the real stream-service
//! binary (TLS on loopback, one encoder thread so cache build speed is one core's), on both
//! demos `make-demo` writes (the flat test pattern and the fine-detail fractal flight), 10 s at
//! 30 fps. For each video, rendition and codec it prints the bit rate, the PSNR of what a viewer
//! decodes against the source frames (luma, OpenCV), the cache build speed (first, cold play as
//! fast as possible), and the client's decode time per frame on one thread; then what a switch
//! or seek costs in extra bytes (JPEG bridge frames to the next keyframe instead of H.264), and
//! time to first frame from the cache. Prints figures; asserts nothing about speed.
//! Run: `cargo bench -p stream-service --bench codec`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use opencv::core::Mat;
use opencv::imgproc;
use std::time::Instant;
use support::{first_frame_ms, watch};
use svs_cli::picture::PictureDecoder;
use svs_common::proto::stream::{Codec, Pacing, PlayRequest, Resolution, play_response};
use svs_common::stats::percentile;

const FPS: f64 = 30.0;
const SECONDS: f64 = 10.0;

/// What one cached playback, decoded frame by frame and compared with the source, gave.
struct Decoded {
    /// Bytes of each frame's picture, in order.
    sizes: Vec<u64>,
    psnr: f64,
    decode_ms: Vec<f64>,
}

fn luma_psnr(a: &Mat, b: &Mat) -> f64 {
    let (mut ga, mut gb) = (Mat::default(), Mat::default());
    imgproc::cvt_color_def(a, &mut ga, imgproc::COLOR_BGR2GRAY).unwrap();
    imgproc::cvt_color_def(b, &mut gb, imgproc::COLOR_BGR2GRAY).unwrap();
    opencv::core::psnr(&ga, &gb, 255.0).unwrap()
}

/// Plays `video` from the cache as fast as possible in `codec`, decoding every frame as
/// `svs play` does and comparing it with the source frame.
async fn decode_and_compare(
    service: &support::Service,
    videos: &std::path::Path,
    video: &str,
    resolution: Resolution,
    label: &str,
    codec: Codec,
) -> Decoded {
    let rendition = stream_service::Rendition::from_label(label).unwrap();
    let path = stream_service::media::rendition_path(videos, video, rendition);
    let mut source = stream_service::media::SourceReader::open(&path, "bench").unwrap();
    let mut client = service.client().await;
    let request = PlayRequest {
        video: video.into(),
        resolution: resolution as i32,
        pacing: Pacing::AsFastAsPossible as i32,
        codec: codec as i32,
        ..Default::default()
    };
    let mut playing = client.play(request).await.unwrap();
    let mut decoder = PictureDecoder::default();
    let mut image = Mat::default();
    let (mut sizes, mut psnr_sum, mut decode_ms) = (Vec::new(), 0.0, Vec::new());
    while let Ok(Some(m)) = playing.stream.message().await {
        let Some(play_response::Kind::Frame(f)) = m.kind else {
            continue;
        };
        let started = Instant::now();
        decoder
            .decode(
                f.picture.as_ref().unwrap(),
                f.keyframe,
                (f.width, f.height),
                &mut image,
            )
            .unwrap();
        decode_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let original = source.next_frame().unwrap().expect("a source frame");
        psnr_sum += luma_psnr(original, &image);
        sizes.push(f.picture_bytes().len() as u64);
    }
    Decoded {
        psnr: psnr_sum / sizes.len().max(1) as f64,
        sizes,
        decode_ms,
    }
}

fn mbits(sizes: &[u64]) -> f64 {
    sizes.iter().sum::<u64>() as f64 * 8.0 / 1e6 / (sizes.len() as f64 / FPS)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let tmp = tempfile::tempdir().unwrap();
    let videos = tmp.path().join("videos");
    let mut progress = stream_service::Progress::hidden();
    stream_service::media::make_demo(&videos, "demo", SECONDS, FPS, &mut progress).unwrap();
    stream_service::media::make_detail_demo(&videos, "detail", SECONDS, FPS, &mut progress)
        .unwrap();
    let service = support::start(&tmp.path().join("data"), &videos, &["--encoders", "1"]).await;
    println!(
        "codec benchmark (2-core machine, one encoder thread, viewer on the same machine, TLS on loopback, 10 s 30 fps, H.264 QP 27 (flat groups 24) / JPEG quality 80)"
    );
    let renditions: &[(Resolution, &str)] = if quick {
        &[(Resolution::Resolution720p, "720p")]
    } else {
        &[
            (Resolution::Resolution240p, "240p"),
            (Resolution::Resolution720p, "720p"),
            (Resolution::Resolution1440p, "1440p"),
        ]
    };
    let mut switch_rows = Vec::new();
    for video in ["demo", "detail"] {
        for &(resolution, label) in renditions {
            let mut results = Vec::new();
            for (codec, name) in [(Codec::Jpeg, "JPEG"), (Codec::H264, "H.264")] {
                let mut client = service.client().await;
                let cpu = service.cpu_seconds();
                let started = Instant::now();
                let cold = watch(
                    &mut client,
                    video,
                    resolution,
                    Pacing::AsFastAsPossible,
                    0.0,
                    codec,
                    None,
                )
                .await;
                let build_fps = cold.frames as f64 / started.elapsed().as_secs_f64();
                let cpu_ms = (service.cpu_seconds() - cpu) * 1e3 / cold.frames as f64;
                let mut d =
                    decode_and_compare(&service, &videos, video, resolution, label, codec).await;
                // Keyframes every second: frames 0, 30, 60, ...
                let keyframe_bits_per_pixel =
                    d.sizes.iter().step_by(FPS as usize).sum::<u64>() as f64 * 8.0
                        / (d.sizes.len().div_ceil(FPS as usize) as f64
                            * f64::from(cold.width)
                            * f64::from(cold.height));
                println!(
                    "{video:>6} {label:>5} {name:>5}: {:>6.2} Mbit/s, PSNR {:>5.2} dB, keyframes {:.3} bits/pixel, cache build {:>5.0} frames/s ({:>4.1} ms service CPU/frame), decode median {:>5.2} ms p99 {:>5.2} ms/frame",
                    mbits(&d.sizes),
                    d.psnr,
                    keyframe_bits_per_pixel,
                    build_fps,
                    cpu_ms,
                    percentile(&mut d.decode_ms.clone(), 0.5).unwrap_or(f64::NAN),
                    percentile(&mut d.decode_ms, 0.99).unwrap_or(f64::NAN),
                );
                results.push(d);
            }
            let (jpeg, h264) = (&results[0], &results[1]);
            println!(
                "{video:>6} {label:>5}: H.264 / JPEG bit rate {:.3} (target <= 0.333), PSNR {:+.2} dB (target >= -2)",
                mbits(&h264.sizes) / mbits(&jpeg.sizes),
                h264.psnr - jpeg.psnr
            );
            // A switch or seek to frame k is bridged with JPEG up to the next keyframe (every
            // second): the extra bytes are those JPEG frames less the H.264 ones they replace.
            let gop = FPS as usize;
            let extra: Vec<f64> = (0..jpeg.sizes.len().min(h264.sizes.len()))
                .map(|k| {
                    let keyframe = k.div_ceil(gop) * gop;
                    (k..keyframe.min(jpeg.sizes.len()))
                        .map(|i| jpeg.sizes[i] as f64 - h264.sizes[i] as f64)
                        .sum()
                })
                .collect();
            let h264_per_second = h264.sizes.iter().sum::<u64>() as f64 / SECONDS;
            let mean = extra.iter().sum::<f64>() / extra.len() as f64;
            let max = extra.iter().copied().fold(0.0, f64::max);
            switch_rows.push(format!(
                "{video:>6} {label:>5}: a switch or seek costs {:>7.0} extra bytes on average ({:.2} s of H.264 at its mean rate), at most {:>7.0}",
                mean,
                mean / h264_per_second,
                max
            ));
        }
    }
    for row in switch_rows {
        println!("{row}");
    }
    // Time to first frame from the cache, H.264: at a keyframe (9 s) and between two (9.5 s,
    // a JPEG bridge frame first).
    for &(resolution, label) in renditions {
        for (start, what) in [(9.0, "at a keyframe"), (9.5, "between keyframes")] {
            let mut firsts = Vec::new();
            for _ in 0..if quick { 5 } else { 20 } {
                let mut client = service.client().await;
                let request = PlayRequest {
                    video: "detail".into(),
                    resolution: resolution as i32,
                    start_seconds: start,
                    pacing: Pacing::AsFastAsPossible as i32,
                    codec: Codec::H264 as i32,
                    ..Default::default()
                };
                firsts.extend(first_frame_ms(&mut client, request).await);
            }
            println!(
                "{label:>5} H.264 first frame from cache {what}: median {:.2} ms, p99 {:.2} ms over {} plays",
                percentile(&mut firsts.clone(), 0.5).unwrap_or(f64::NAN),
                percentile(&mut firsts, 0.99).unwrap_or(f64::NAN),
                firsts.len()
            );
        }
    }
}
