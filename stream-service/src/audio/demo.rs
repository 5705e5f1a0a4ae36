//! Sound files svs writes beside the renditions, as 48 kHz stereo WAV: the demos' track, a
//! 1 kHz beep of 100 ms at every whole second (when frame number `k × fps` shows), silence
//! between, so a test or a person can tell whether sound and picture are in sync; and the sound
//! of a file being ingested (`keep_sound`), which OpenCV's rendition files cannot carry.

use super::{CHANNELS, SAMPLE_RATE};
use crate::Error;
use std::path::Path;

/// Pitch of the beeps.
pub(crate) const BEEP_HZ: f64 = 1_000.0;
/// Length of each beep.
pub(crate) const BEEP_SECONDS: f64 = 0.1;

/// The sample (one channel) at `t` seconds.
fn sample(t: f64) -> f32 {
    let into = t.fract();
    if into >= BEEP_SECONDS {
        return 0.0;
    }
    // 5 ms ramps at both ends: no click.
    let ramp = (into / 0.005).min((BEEP_SECONDS - into) / 0.005).min(1.0);
    (0.5 * ramp * (2.0 * std::f64::consts::PI * BEEP_HZ * into).sin()) as f32
}

/// Writes a 48 kHz stereo WAV file to `path` through a temporary file renamed at the end;
/// `fill` is handed the writer and writes the samples.
fn write_wav(
    path: &Path,
    fill: impl FnOnce(&mut dyn FnMut(f32) -> Result<(), String>) -> Result<(), Error>,
) -> Result<(), Error> {
    let spec = hound::WavSpec {
        channels: CHANNELS as u16,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("sound");
    let partial = path.with_file_name(format!(".{file_name}.partial"));
    let failed = |e: String| Error::Media(format!("writing {}: {e}", partial.display()));
    let mut writer = hound::WavWriter::create(&partial, spec).map_err(|e| failed(e.to_string()))?;
    let filled = fill(&mut |sample: f32| {
        let value = (sample.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16;
        writer.write_sample(value).map_err(|e| e.to_string())
    });
    let finished = filled.and_then(|()| writer.finalize().map_err(|e| failed(e.to_string())));
    match finished {
        Ok(()) => std::fs::rename(&partial, path).map_err(|e| Error::io("renaming", &partial, e)),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Writes `seconds` of the beep track to `path`.
pub(crate) fn write_beeps(path: &Path, seconds: f64) -> Result<(), Error> {
    write_wav(path, |put| {
        let frames = (seconds * f64::from(SAMPLE_RATE)).round() as u64;
        for n in 0..frames {
            let value = sample(n as f64 / f64::from(SAMPLE_RATE));
            for _ in 0..CHANNELS {
                put(value).map_err(Error::Media)?;
            }
        }
        Ok(())
    })
}

/// Seconds of sound decoded at a time while ingesting.
const KEEP_WINDOW_SECONDS: f64 = 30.0;

/// Writes the first `seconds` of `source`'s sound track to `path` (blocking). Returns whether
/// it had one (without one, nothing is written).
pub(crate) fn keep_sound(source: &Path, path: &Path, seconds: f64) -> Result<bool, Error> {
    if super::decode::probe(source)?.is_none() {
        return Ok(false);
    }
    write_wav(path, |put| {
        let mut at = 0.0;
        while at < seconds {
            let length = KEEP_WINDOW_SECONDS.min(seconds - at);
            let frames = (length * f64::from(SAMPLE_RATE)).round() as usize;
            for sample in super::decode::window(source, at, frames)? {
                put(sample).map_err(Error::Media)?;
            }
            at += frames as f64 / f64::from(SAMPLE_RATE);
        }
        Ok(())
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beeps_at_whole_seconds_only() {
        let loud = |from: f64, to: f64| {
            (0..480)
                .map(|i| from + (to - from) * f64::from(i) / 480.0)
                .map(|t| sample(t).abs())
                .fold(0.0f32, f32::max)
        };
        assert!(loud(2.01, 2.09) > 0.4);
        assert!(loud(2.11, 2.99) == 0.0);
        assert!(loud(0.0, 0.004) < 0.4);
    }
}
