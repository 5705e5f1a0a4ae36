//! Sound bench: the real stream-service binary (release) serving the demo and an ffmpeg-made
//! film (two minutes of x264 at 720p with a keyframe every 10 s and 44.1 kHz AAC stereo sound:
//! chords, noise and a beep every second), with an empty cache. Prints the time to the first
//! sound and the first frame at 10 positions cold and warm (median and max), the Opus bit rate
//! of the film's sound, the service's CPU seconds to encode all of it, and the real player's
//! sound-minus-picture offsets over a real-time playback of the demo at 720p (what the player
//! measured, and each beep's frame against the beep found in what it wrote). Asserts nothing
//! about speed. Needs ffmpeg. Run: `cargo bench -p stream-service --bench sound`.
#![allow(clippy::unwrap_used)] // bench code: a panic is the failure report

mod support;

use std::path::Path;
use std::time::Instant;
use svs_cli::stream_client::StreamClient;
use svs_common::proto::stream::{
    AudioCodec, Codec, Pacing, PlayRequest, Resolution, play_response,
};
use svs_common::stats::percentile;
use svs_test_support::sound::play_and_listen;

const FILM_SECONDS: f64 = 120.0;

fn make_film(videos: &Path) {
    let sound = "aevalsrc='0.15*sin(2*PI*220*t)+0.1*sin(2*PI*277.2*t)+0.08*sin(2*PI*329.6*t)\
                 +0.05*(random(0)-0.5)+if(between(mod(t,1),0.5,0.6),0.4*sin(2*PI*1000*t),0)'\
                 :s=44100:c=stereo";
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args(["-f", "lavfi", "-i", sound])
        .args(["-t", &FILM_SECONDS.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "300"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k"])
        .arg(videos.join("film_720p.mp4"))
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn request(video: &str, start: f64, pacing: Pacing) -> PlayRequest {
    PlayRequest {
        video: video.into(),
        resolution: Resolution::Resolution720p as i32,
        start_seconds: start,
        pacing: pacing as i32,
        codec: Codec::H264 as i32,
        audio: AudioCodec::Opus as i32,
    }
}

/// Time to the first sound and to the first frame of a playback from `start`.
async fn firsts(client: &mut StreamClient, start: f64) -> (f64, f64) {
    let asked = Instant::now();
    let mut playing = client
        .play(request("film", start, Pacing::Realtime))
        .await
        .unwrap();
    let (mut sound, mut frame) = (None, None);
    while sound.is_none() || frame.is_none() {
        let Ok(Some(message)) = playing.stream.message().await else {
            break;
        };
        let at = asked.elapsed().as_secs_f64() * 1000.0;
        match message.kind {
            Some(play_response::Kind::Audio(_)) => {
                sound.get_or_insert(at);
            }
            Some(play_response::Kind::Frame(_)) => {
                frame.get_or_insert(at);
            }
            _ => {}
        }
    }
    (sound.unwrap_or(f64::NAN), frame.unwrap_or(f64::NAN))
}

fn median_max(values: &mut [f64]) -> String {
    let median = percentile(values, 0.5).unwrap_or(f64::NAN);
    let max = values.iter().copied().fold(f64::NAN, f64::max);
    format!("median {median:>6.0} ms, max {max:>6.0} ms")
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let videos = tmp.path().join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    stream_service::media::make_demo(
        &videos,
        "demo",
        10.0,
        30.0,
        &mut stream_service::Progress::hidden(),
    )
    .unwrap();
    make_film(&videos);
    let service = support::start(&tmp.path().join("data"), &videos, &[]).await;
    let mut client = service.client().await;

    // Ten positions, cold then warm.
    let positions: Vec<f64> = (0..10).map(|i| 3.0 + f64::from(i) * 11.3).collect();
    for label in ["cold", "warm"] {
        let (mut sounds, mut frames) = (Vec::new(), Vec::new());
        for &at in &positions {
            let (sound, frame) = firsts(&mut client, at).await;
            sounds.push(sound);
            frames.push(frame);
        }
        println!(
            "film 720p (keyframes 10 s apart), {label}: first sound {}; first frame {}",
            median_max(&mut sounds),
            median_max(&mut frames)
        );
    }

    // The whole film's sound as fast as it goes: bit rate and the service's CPU for it.
    let cpu_before = service.cpu_seconds();
    let mut playing = client
        .play(request("film", 0.0, Pacing::AsFastAsPossible))
        .await
        .unwrap();
    let mut bytes = 0u64;
    let mut packets = 0u64;
    while let Ok(Some(message)) = playing.stream.message().await {
        if let Some(play_response::Kind::Audio(audio)) = message.kind {
            packets += audio.packets.len() as u64;
            bytes += audio.packets.iter().map(|p| p.len() as u64).sum::<u64>();
        }
    }
    let cpu = service.cpu_seconds() - cpu_before;
    println!(
        "film sound: {packets} Opus packets, {:.1} kbit/s (AAC source 128 kbit/s); the service used {cpu:.1} CPU s for the whole playback (sound and 720p pictures, partly cached)",
        bytes as f64 * 8.0 / 1000.0 / (packets as f64 * 0.02)
    );

    // The real player in real time, sound written to a WAV file.
    let heard = play_and_listen(
        &mut client,
        request("demo", 0.0, Pacing::Realtime),
        &tmp.path().join("heard.wav"),
        30.0,
    )
    .await;
    let (summary, onsets) = (&heard.summary, &heard.onsets);
    let sound = summary.sound.clone().unwrap();
    let mut beep_offsets: Vec<f64> = heard.beep_frames.iter().filter_map(|(_, o)| *o).collect();
    println!(
        "player, demo 720p in real time: sound minus picture median {:+.1} ms, p99 |offset| {:.1} ms over {} frames ({} skipped); beep frames against the beeps heard: {} of {}, median {:+.1} ms, worst {:+.1} ms; {:.2} s of silence waiting for sound",
        sound.av_offset_p50_ms,
        sound.av_offset_p99_abs_ms,
        summary.frames_decoded,
        summary.frames_skipped,
        beep_offsets.len(),
        onsets.len(),
        percentile(&mut beep_offsets, 0.5).unwrap_or(f64::NAN),
        beep_offsets
            .iter()
            .copied()
            .fold(0.0f64, |a, b| if b.abs() > a.abs() { b } else { a }),
        sound.underrun_seconds
    );
}
