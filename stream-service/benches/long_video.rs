//! Long-video bench: a one-hour video (240p and 720p) and a ten-minute 1440p one, generated once
//! and kept outside the repository (`SVS_BENCH_VIDEOS`, default `~/.cache/svs-bench`), served by
//! the real stream-service binary over TLS with an empty cache. Prints, per rendition, the time
//! to first frame cold and warm at 10 random positions (median and max), the disk used and the
//! service CPU per segment after a viewer watched 5 minutes, and how many viewers at different
//! cold positions the machine serves in real time. Asserts nothing about speed.
//! Run: `cargo bench -p stream-service --bench long_video`.
#![allow(clippy::unwrap_used)] // bench code: a panic is the failure report

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stream_service::Progress;
use stream_service::Rendition;
use support::{Service, watch};
use svs_common::proto::stream::{Codec, Pacing, PlayRequest, Resolution, play_response};
use svs_common::stats::percentile;

const FPS: f64 = 30.0;

/// The bench's videos: name, rendition, seconds.
const VIDEOS: [(&str, Rendition, Resolution, f64); 3] = [
    ("hour", Rendition::P240, Resolution::Resolution240p, 3600.0),
    ("hour", Rendition::P720, Resolution::Resolution720p, 3600.0),
    ("ten", Rendition::P1440, Resolution::Resolution1440p, 600.0),
];

fn videos_dir() -> PathBuf {
    std::env::var_os("SVS_BENCH_VIDEOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home =
                std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
            home.join(".cache/svs-bench")
        })
}

/// Makes what is missing (minutes, once), with a progress bar.
fn make_videos(dir: &Path) {
    for (name, rendition, _, seconds) in VIDEOS {
        if stream_service::media::rendition_path(dir, name, rendition).exists() {
            continue;
        }
        let what = format!("making {name}_{}", rendition.label());
        let mut progress = Progress::on_stderr(&what, (seconds * FPS) as u64);
        stream_service::media::make_demo_rendition(
            dir,
            name,
            rendition,
            seconds,
            FPS,
            &mut progress,
        )
        .unwrap();
        progress.finish();
    }
}

/// A small deterministic generator, so every run uses the same positions.
struct Positions(u64);

impl Positions {
    fn next(&mut self, below: f64) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1_000_000) as f64 / 1_000_000.0 * below
    }
}

/// Time to the first frame of a real-time playback starting at `seconds`.
async fn first_frame(service: &Service, video: &str, resolution: Resolution, seconds: f64) -> f64 {
    let mut client = service.client().await;
    let asked = Instant::now();
    let mut playing = client
        .play(PlayRequest {
            video: video.into(),
            resolution: resolution as i32,
            start_seconds: seconds,
            pacing: Pacing::Realtime as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    while let Ok(Some(m)) = playing.stream.message().await {
        if matches!(m.kind, Some(play_response::Kind::Frame(_))) {
            return asked.elapsed().as_secs_f64() * 1e3;
        }
    }
    panic!("no frame at {seconds} s of {video}");
}

/// Segment files and their bytes under the service's cache.
fn cache_on_disk(service: &Service) -> (u64, u64) {
    fn walk(dir: &Path, found: &mut (u64, u64)) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "seg") {
                found.0 += 1;
                found.1 += entry.metadata().map_or(0, |m| m.len());
            }
        }
    }
    let mut found = (0, 0);
    walk(&service.data.join("cache"), &mut found);
    found
}

fn summary(values: &[f64]) -> String {
    let max = values.iter().copied().fold(0.0, f64::max);
    format!(
        "median {:>6.1} ms, max {:>6.1} ms",
        percentile(&mut values.to_vec(), 0.5).unwrap_or(f64::NAN),
        max
    )
}

#[tokio::main]
async fn main() {
    let dir = videos_dir();
    make_videos(&dir);
    // Extra service flags, e.g. SVS_BENCH_FLAGS="--encoders 1".
    let flags_text = std::env::var("SVS_BENCH_FLAGS").unwrap_or_default();
    let flags: Vec<&str> = flags_text.split_whitespace().collect();
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    println!(
        "long-video bench (2-core machine, viewers on the same machine, TLS on loopback, empty cache, 2 s segments, 2 encoders)"
    );
    let mut positions = Positions(0x5eed_1234_abcd_ef01);

    for (name, rendition, resolution, seconds) in VIDEOS {
        let label = rendition.label();
        if !only.is_empty() && !only.iter().any(|o| o == label) {
            continue;
        }
        let tmp = tempfile::tempdir().unwrap();
        let service = support::start(&tmp.path().join("data"), &dir, &flags).await;
        let starts: Vec<f64> = (0..10).map(|_| positions.next(seconds - 5.0)).collect();
        let mut cold = Vec::new();
        for &at in &starts {
            cold.push(first_frame(&service, name, resolution, at).await);
            // Let the encoders finish what the viewer left, so each start is measured alone.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let mut warm = Vec::new();
        for &at in &starts {
            warm.push(first_frame(&service, name, resolution, at).await);
        }
        println!(
            "{label:>5} {name} ({:.0} min): first frame cold {}; warm {}",
            seconds / 60.0,
            summary(&cold),
            summary(&warm)
        );

        // One viewer watches 5 minutes (as fast as it can) from a cold position.
        let (files_before, _) = cache_on_disk(&service);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let cpu_before = service.cpu_seconds();
        let started = Instant::now();
        let mut client = service.client().await;
        let at = positions.next(seconds - 320.0);
        let seen = watch(
            &mut client,
            name,
            resolution,
            Pacing::AsFastAsPossible,
            at,
            Codec::Jpeg,
            Some((300.0 * FPS) as u64),
        )
        .await;
        let secs = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (files, bytes) = cache_on_disk(&service);
        let segments = files.saturating_sub(files_before).max(1);
        println!(
            "{label:>5}: 5 min watched in {secs:.1} s ({:.1}× real time): {} segments on disk, {:.1} MB ({:.0} MB per hour of video); service CPU {:.0} ms per 2 s segment (decode + JPEG + send)",
            300.0 / secs,
            files,
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / (files as f64 * 2.0) * 3600.0,
            (service.cpu_seconds() - cpu_before) * 1e3 / segments as f64,
        );
        drop(seen);

        // Viewers at different cold positions in real time, 20 s each, on an empty cache.
        drop(service);
        let tmp = tempfile::tempdir().unwrap();
        let service = support::start(&tmp.path().join("data"), &dir, &flags).await;
        let steps: &[usize] = match rendition {
            Rendition::P240 => &[8, 16, 32, 48, 64],
            Rendition::P720 => &[4, 8, 12, 16, 24, 32],
            Rendition::P1440 => &[2, 4, 6, 8, 12],
        };
        for &n in steps {
            let mut tasks = Vec::new();
            for _ in 0..n {
                let mut client = service.client().await;
                let at = positions.next(seconds - 30.0);
                tasks.push(tokio::spawn(async move {
                    watch(
                        &mut client,
                        name,
                        resolution,
                        Pacing::Realtime,
                        at,
                        Codec::Jpeg,
                        Some((20.0 * FPS) as u64),
                    )
                    .await
                }));
            }
            let (mut frames, mut skipped, mut lateness, mut firsts) =
                (0, 0, Vec::new(), Vec::new());
            for t in tasks {
                let seen = t.await.unwrap();
                frames += seen.frames;
                skipped += seen.skipped;
                lateness.extend(seen.lateness_ms);
                firsts.push(seen.first_frame.as_secs_f64() * 1e3);
            }
            let p99 = percentile(&mut lateness, 0.99).unwrap_or(f64::NAN);
            let ok = skipped == 0 && p99 < 1000.0 / FPS;
            println!(
                "{label:>5} × {n:>2} viewers at different cold places, real time: {frames:>5} frames, {skipped:>4} skipped, p99 lateness {p99:>6.1} ms, first frame {} ({})",
                summary(&firsts),
                if ok { "real time" } else { "NOT real time" }
            );
            if !ok {
                break;
            }
        }
    }
}
