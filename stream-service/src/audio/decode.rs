//! Reading a file's sound track: which track a file has (`probe`), and the sound of a window of
//! time decoded to 48 kHz stereo (`window`). symphonia demuxes and decodes, rubato resamples.
//! Both block; callers run them on blocking threads.

use super::{CHANNELS, SAMPLE_RATE};
use crate::Error;
use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use std::fs::File;
use std::path::Path;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_AAC, CODEC_TYPE_NULL, Decoder, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader, SeekMode, SeekTo};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use symphonia::core::units::{Time, TimeBase};

/// A file's sound track as found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TrackInfo {
    /// Samples per second per channel in the file.
    pub(crate) sample_rate: u32,
    /// Channels in the file (mixed to stereo when served).
    pub(crate) channels: u32,
}

/// Samples an AAC encoder puts before the sound (its priming), when the file does not say: the
/// 1,024 of one AAC frame that ffmpeg and most encoders write (symphonia does not read the edit
/// list that records it). Measured: without this, an ffmpeg film's sound came 23 ms late.
const AAC_PRIMING_SAMPLES: u32 = 1_024;

fn failed(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Media(format!("{}: {what}: {e}", path.display()))
}

/// An opened file: its reader, the sound track's id, time base and decoder.
struct Opened {
    reader: Box<dyn FormatReader>,
    track: u32,
    time_base: TimeBase,
    /// Samples the codec puts before the first real one (AAC's priming), to skip.
    delay: u64,
    info: TrackInfo,
    decoder: Box<dyn Decoder>,
}

/// Opens `path` at its first audio track; `None` if it has none.
fn open(path: &Path) -> Result<Option<Opened>, Error> {
    let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let stream = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let probed = match symphonia::default::get_probe().format(
        &hint,
        stream,
        &FormatOptions {
            enable_gapless: true,
            ..Default::default()
        },
        &MetadataOptions::default(),
    ) {
        Ok(probed) => probed,
        // Not a container symphonia reads (an OpenCV mp4v file reads fine; anything else
        // simply has no sound svs can play).
        Err(SymphoniaError::Unsupported(_)) => return Ok(None),
        Err(e) => return Err(failed(path, "reading the container", e)),
    };
    let reader = probed.format;
    let Some(track) = reader.tracks().iter().find(|t| {
        t.codec_params.codec != CODEC_TYPE_NULL
            && t.codec_params.sample_rate.is_some()
            && symphonia::default::get_codecs()
                .get_codec(t.codec_params.codec)
                .is_some()
    }) else {
        return Ok(None);
    };
    let params = track.codec_params.clone();
    let sample_rate = params.sample_rate.unwrap_or(SAMPLE_RATE);
    let channels = params.channels.map_or(2, |c| c.count() as u32);
    if !(8_000..=384_000).contains(&sample_rate) || !(1..=32).contains(&channels) {
        return Err(failed(
            path,
            "sound track",
            format!("{sample_rate} Hz with {channels} channels is not something svs plays"),
        ));
    }
    let decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| failed(path, "opening the sound decoder", e))?;
    Ok(Some(Opened {
        track: track.id,
        time_base: params
            .time_base
            .unwrap_or_else(|| TimeBase::new(1, sample_rate)),
        delay: u64::from(params.delay.unwrap_or(if params.codec == CODEC_TYPE_AAC {
            AAC_PRIMING_SAMPLES
        } else {
            0
        })),
        info: TrackInfo {
            sample_rate,
            channels,
        },
        reader,
        decoder,
    }))
}

/// The sound track of `path`, if it has one symphonia can decode.
pub(crate) fn probe(path: &Path) -> Result<Option<TrackInfo>, Error> {
    Ok(open(path)?.map(|o| o.info))
}

fn seconds(time_base: TimeBase, ts: u64) -> f64 {
    let t = time_base.calc_time(ts);
    t.seconds as f64 + t.frac
}

/// Mixes one frame of `channels` samples to stereo: mono to both sides; more than two channels
/// (symphonia's order: front left, front right, centre, LFE, back left, back right, …) as the
/// front pair with the centre and the back pair at -3 dB, scaled so a full-scale front stays
/// full scale.
fn to_stereo(frame: &[f32]) -> (f32, f32) {
    const HALF_POWER: f32 = std::f32::consts::FRAC_1_SQRT_2;
    match frame {
        [mono] => (*mono, *mono),
        [left, right] => (*left, *right),
        [left, right, centre, rest @ ..] => {
            let (back_left, back_right) = match rest {
                [_lfe, back_left, back_right, ..] => (*back_left, *back_right),
                _ => (0.0, 0.0),
            };
            let scale = 1.0 / (1.0 + 2.0 * HALF_POWER);
            (
                (left + HALF_POWER * (centre + back_left)) * scale,
                (right + HALF_POWER * (centre + back_right)) * scale,
            )
        }
        [] => (0.0, 0.0),
    }
}

/// The sound from `from` seconds (may be negative: silence before the start) for `frames`
/// frames at 48 kHz, stereo interleaved. Past the end of the track it is silence; a packet that
/// does not decode is skipped (as players do).
pub(crate) fn window(path: &Path, from: f64, frames: usize) -> Result<Vec<f32>, Error> {
    let mut out = vec![0.0f32; frames * CHANNELS];
    let Some(mut opened) = open(path)? else {
        return Ok(out);
    };
    let rate = f64::from(opened.info.sample_rate);
    let delay_seconds = opened.delay as f64 / rate;
    let until = from + frames as f64 / f64::from(SAMPLE_RATE);
    // Resampling needs a little sound either side of the window.
    let margin = 0.05;
    if from - margin > 0.0 {
        let target = from - margin + delay_seconds;
        let time = Time::new(target.trunc() as u64, target.fract());
        match opened.reader.seek(
            SeekMode::Accurate,
            SeekTo::Time {
                time,
                track_id: Some(opened.track),
            },
        ) {
            Ok(_) => opened.decoder.reset(),
            // Past the end: silence.
            Err(SymphoniaError::SeekError(_)) => return Ok(out),
            Err(e) => return Err(failed(path, "seeking in the sound track", e)),
        }
    }
    // Decoded stereo at the source rate, from `start` seconds.
    let mut start: Option<f64> = None;
    let mut stereo: Vec<f32> = Vec::new();
    let mut buffer: Option<SampleBuffer<f32>> = None;
    let needed_until = until + margin;
    loop {
        let packet = match opened.reader.next_packet() {
            Ok(packet) => packet,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break;
            }
            Err(SymphoniaError::ResetRequired) => {
                opened.decoder.reset();
                continue;
            }
            Err(e) => return Err(failed(path, "reading the sound track", e)),
        };
        if packet.track_id() != opened.track {
            continue;
        }
        let at = seconds(opened.time_base, packet.ts()) - delay_seconds;
        let decoded = match opened.decoder.decode(&packet) {
            Ok(decoded) => decoded,
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(e) => return Err(failed(path, "decoding the sound track", e)),
        };
        let spec = *decoded.spec();
        let channels = spec.channels.count().max(1);
        let samples = match &mut buffer {
            Some(b) if b.capacity() >= decoded.capacity() * channels => b,
            slot => slot.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
        };
        samples.copy_interleaved_ref(decoded);
        let start_at = *start.get_or_insert(at);
        // Keep the timeline exact: a packet that starts later than what is decoded so far
        // (a gap in the file) is placed at its time.
        let have = stereo.len() / CHANNELS;
        let expected = ((at - start_at) * rate).round();
        if expected > have as f64 + 1.0 {
            let gap = (expected as usize - have).min(rate as usize * 10);
            stereo.resize(stereo.len() + gap * CHANNELS, 0.0);
        }
        for frame in samples.samples().chunks(channels) {
            let (l, r) = to_stereo(frame);
            stereo.push(l);
            stereo.push(r);
        }
        let decoded_until = start_at + (stereo.len() / CHANNELS) as f64 / rate;
        if decoded_until >= needed_until {
            break;
        }
    }
    let Some(start) = start else {
        return Ok(out);
    };
    let resampled = if opened.info.sample_rate == SAMPLE_RATE {
        stereo
    } else {
        resample(&stereo, opened.info.sample_rate).map_err(|e| failed(path, "resampling", e))?
    };
    // Place what was decoded (from `start`) into the window (from `from`).
    let offset = ((start - from) * f64::from(SAMPLE_RATE)).round() as i64;
    let available = resampled.len() / CHANNELS;
    for frame in 0..frames {
        let source = frame as i64 - offset;
        if source >= 0 && (source as usize) < available {
            let s = source as usize * CHANNELS;
            out[frame * CHANNELS..frame * CHANNELS + CHANNELS]
                .copy_from_slice(&resampled[s..s + CHANNELS]);
        }
    }
    Ok(out)
}

/// Resamples interleaved stereo from `rate` to 48 kHz, keeping time zero where it was.
fn resample(stereo: &[f32], rate: u32) -> Result<Vec<f32>, String> {
    let frames = stereo.len() / CHANNELS;
    if frames == 0 {
        return Ok(Vec::new());
    }
    let mut resampler = Fft::<f32>::new(
        rate as usize,
        SAMPLE_RATE as usize,
        1024,
        2,
        CHANNELS,
        FixedSync::Both,
    )
    .map_err(|e| e.to_string())?;
    let input = InterleavedSlice::new(stereo, CHANNELS, frames).map_err(|e| e.to_string())?;
    let capacity = resampler.process_all_needed_output_len(frames);
    let mut output = vec![0.0f32; capacity * CHANNELS];
    let mut adapter =
        InterleavedSlice::new_mut(&mut output, CHANNELS, capacity).map_err(|e| e.to_string())?;
    let (_, written) = resampler
        .process_all_into_buffer(&input, &mut adapter, frames, None)
        .map_err(|e| e.to_string())?;
    output.truncate(written * CHANNELS);
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_to_stereo() {
        assert_eq!(to_stereo(&[0.5]), (0.5, 0.5));
        assert_eq!(to_stereo(&[0.25, -0.25]), (0.25, -0.25));
        let (l, r) = to_stereo(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(l > 0.4 && l <= 1.0 && r == 0.0, "{l} {r}");
    }

    #[test]
    fn resampling_keeps_time_and_pitch() {
        // 1 s of a 1 kHz tone at 44.1 kHz: 48,000 frames out, still 1 kHz (zero crossings).
        let rate = 44_100u32;
        let tone: Vec<f32> = (0..rate)
            .flat_map(|i| {
                let v = (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / rate as f32).sin();
                [v, v]
            })
            .collect();
        let out = resample(&tone, rate).unwrap();
        let frames = out.len() / 2;
        assert!((47_900..=48_100).contains(&frames), "{frames}");
        let left: Vec<f32> = out.iter().step_by(2).copied().collect();
        let crossings = left[4800..43_200]
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        // 0.8 s of 1 kHz: 1,600 crossings.
        assert!((1_590..=1_610).contains(&crossings), "{crossings}");
    }
}
