//! Finding the demos' beeps in sound: where each starts, from the loudness of 1 ms windows. The
//! demos beep at every whole second (`stream_service`'s demo track), ffmpeg's `sine` source with
//! `beep_factor` too, so sync can be measured from what a player heard.

use std::path::Path;

/// Times (seconds from the first sample) where a beep starts in `mono` at `rate` samples per
/// second: loudness over 0.1 after at least 200 ms under 0.02.
pub fn beep_onsets(mono: &[f32], rate: u32) -> Vec<f64> {
    let window = (rate / 1000).max(1) as usize;
    let mut onsets = Vec::new();
    let mut quiet_windows = usize::MAX / 2;
    for (n, chunk) in mono.chunks(window).enumerate() {
        let rms = (chunk.iter().map(|s| s * s).sum::<f32>() / chunk.len() as f32).sqrt();
        if rms > 0.1 {
            if quiet_windows >= 200 {
                // Refine to the first sample over a tenth of full scale in this window or the one
                // before it.
                let from = n.saturating_sub(1) * window;
                let first = mono[from..(from + 2 * window).min(mono.len())]
                    .iter()
                    .position(|s| s.abs() > 0.1)
                    .map_or(n * window, |i| from + i);
                onsets.push(first as f64 / f64::from(rate));
            }
            quiet_windows = 0;
        } else if rms < 0.02 {
            quiet_windows += 1;
        }
    }
    onsets
}

/// The left channel of a 16-bit or float WAV file, as floats, and its rate.
pub fn read_wav_left(path: &Path) -> (Vec<f32>, u32) {
    let mut reader = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("{} is not a WAV file: {e}", path.display()));
    let spec = reader.spec();
    let channels = spec.channels as usize;
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Int => reader
            .samples::<i32>()
            .map(|s| s.unwrap() as f32 / (1u32 << (spec.bits_per_sample - 1)) as f32)
            .collect(),
        hound::SampleFormat::Float => reader.samples::<f32>().map(|s| s.unwrap()).collect(),
    };
    (
        samples.into_iter().step_by(channels).collect(),
        spec.sample_rate,
    )
}

/// What the real player heard of a playback (written to a WAV file in real time), and where
/// each beep's frame showed in it.
#[derive(Debug)]
pub struct Heard {
    pub summary: svs_cli::player::Summary,
    /// Where each beep starts in what was heard, in seconds.
    pub onsets: Vec<f64>,
    /// For each beep whose frame (number k × fps) was shown: the frame's number and, if it
    /// showed by the sound clock, when it showed minus when its beep was heard, in ms.
    pub beep_frames: Vec<(u64, Option<f64>)>,
}

/// Plays `request` headless through the real player with its sound written to `wav`, then
/// finds the beeps (one at every whole second of a video at `fps`) in what was heard.
pub async fn play_and_listen(
    client: &mut svs_cli::stream_client::StreamClient,
    request: svs_common::proto::stream::PlayRequest,
    wav: &Path,
    fps: f64,
) -> Heard {
    let options = svs_cli::player::PlayOptions {
        headless: true,
        sound: svs_cli::player::SoundChoice::Wav(wav.to_path_buf()),
        ..svs_cli::player::PlayOptions::default()
    };
    let summary = svs_cli::player::play(client, request, &options)
        .await
        .unwrap();
    let (left, rate) = read_wav_left(wav);
    let onsets = beep_onsets(&left, rate);
    let beep_frames = onsets
        .iter()
        .enumerate()
        .filter_map(|(second, onset)| {
            let index = (second as f64 * fps).round() as u64;
            let frame = summary.frames.iter().find(|f| f.index == index)?;
            Some((
                index,
                frame
                    .sound_output_seconds
                    .map(|shown| (shown - onset) * 1000.0),
            ))
        })
        .collect();
    Heard {
        summary,
        onsets,
        beep_frames,
    }
}
