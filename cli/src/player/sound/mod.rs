//! Sound: the Opus packets of a playback decoded on the sound thread (`decode_loop`) into the
//! clock's queue (`clock`), heard through the system's output or written to a WAV file in real
//! time (`output`). The audio clock is the master: the view thread shows each frame when its
//! sound is heard (as ffplay and mpv do by default).

mod clock;
mod output;

pub(crate) use clock::{Position, SoundClock};

use crate::error::CliError;
use std::path::PathBuf;
use std::sync::Arc;
use svs_common::proto::stream::{Audio, AudioCodec, AudioTrack};
use tokio::sync::mpsc;

/// Decoded sound held at most, in seconds (the service sends 0.3 s ahead; a service that sends
/// more is cut off here rather than grow the player's memory).
pub const DEFAULT_MAX_BUFFERED_SECONDS: f64 = 5.0;
/// Samples per channel of one packet: 20 ms at 48 kHz.
const FRAME_SAMPLES: usize = 960;
/// Packets decoded and queued together (1 s).
const PUSH_PACKETS: usize = 50;
/// The most one Opus packet decodes to (120 ms), per channel.
const MAX_PACKET_SAMPLES: usize = 5_760;

/// Where a playback's sound goes (`--audio`).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum SoundChoice {
    /// The system's sound output; without one, no sound (quietly).
    #[default]
    Auto,
    /// No sound asked for.
    None,
    /// Written to this WAV file in real time, as it would be heard.
    Wav(PathBuf),
}

impl SoundChoice {
    /// Whether to ask the service for sound.
    pub fn wanted(&self) -> bool {
        *self != SoundChoice::None
    }
}

/// Parses `--audio`: auto, none, or wav:FILE.
pub fn parse_sound_choice(text: &str) -> Result<SoundChoice, String> {
    match text {
        "auto" => Ok(SoundChoice::Auto),
        "none" | "off" => Ok(SoundChoice::None),
        _ => match text.strip_prefix("wav:") {
            Some(path) if !path.is_empty() => Ok(SoundChoice::Wav(PathBuf::from(path))),
            _ => Err("auto, none, or wav:FILE".into()),
        },
    }
}

/// What the sound did, for the summary.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SoundSummary {
    /// `opus`, or empty when no sound played.
    pub codec: String,
    /// Where it went: `device`, `wav`, or `none` (with the reason in `note`).
    pub output: String,
    /// Why there was no sound, if there was none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub packets: u64,
    /// Mean bit rate of the packets received.
    pub kbits_per_second: f64,
    /// Packets that did not decode (played as silence).
    pub undecodable: u64,
    /// Silence output because sound did not arrive in time, in seconds.
    pub underrun_seconds: f64,
    /// Sound dropped because the service sent more than the player holds, in seconds.
    pub dropped_seconds: f64,
    /// Audio clock minus the shown frame's time (positive: the picture came late), median and
    /// 99th percentile of absolute values, in ms, over the frames the summary records (the first
    /// 10,000).
    pub av_offset_p50_ms: f64,
    pub av_offset_p99_abs_ms: f64,
}

/// What the sound thread is told.
#[derive(Debug)]
enum Command {
    Packets(Audio),
    Pause(bool),
}

/// A playback's sound, running.
#[derive(Debug)]
pub(crate) struct Sound {
    tx: mpsc::Sender<Command>,
    clock: Arc<SoundClock>,
    thread: std::thread::JoinHandle<(u64, u64, u64)>,
    output: output::Output,
    output_kind: &'static str,
}

/// Why a header's sound cannot be played, if it cannot.
fn unplayable(track: &AudioTrack) -> Option<String> {
    let expected = (AudioCodec::Opus as i32, 48_000, 2, FRAME_SAMPLES as u32);
    let got = (
        track.codec,
        track.sample_rate,
        track.channels,
        track.frame_samples,
    );
    (got != expected).then(|| {
        format!(
            "the service offered sound svs cannot play (codec {}, {} Hz, {} channels, {} samples a packet)",
            track.codec, track.sample_rate, track.channels, track.frame_samples
        )
    })
}

/// A sound output opened before the playback is asked for (so a machine that cannot play
/// sound does not ask for any), waiting for the header's track.
#[derive(Debug)]
pub(crate) struct PreparedSound {
    clock: Arc<SoundClock>,
    output: output::Output,
    output_kind: &'static str,
}

impl PreparedSound {
    /// Opens the output `choice` names, holding at most `max_buffered` seconds. `Err` holds the
    /// sentence saying why there is no sound (no device, a file that cannot be written).
    pub(crate) fn open(choice: &SoundChoice, max_buffered: f64) -> Result<Self, String> {
        let clock = Arc::new(SoundClock::new(max_buffered));
        let (output, output_kind) = match choice {
            SoundChoice::None => return Err("sound is off (--audio none)".into()),
            SoundChoice::Auto => (output::device(clock.clone())?, "device"),
            SoundChoice::Wav(path) => (output::wav(path, clock.clone())?, "wav"),
        };
        Ok(Self {
            clock,
            output,
            output_kind,
        })
    }

    /// Starts decoding `track` (the header's). `Err`: a track svs cannot play (the output is
    /// closed).
    pub(crate) fn start(self, track: &AudioTrack) -> Result<Sound, String> {
        if let Some(why) = unplayable(track) {
            self.close();
            return Err(why);
        }
        let decoder = opus::Decoder::new(48_000, opus::Channels::Stereo)
            .map_err(|e| format!("cannot start the Opus decoder: {e}"))?;
        let (tx, rx) = mpsc::channel(64);
        let decoding = self.clock.clone();
        let thread = std::thread::Builder::new()
            .name("svs-sound-decode".into())
            .spawn(move || decode_loop(rx, decoder, &decoding))
            .map_err(|e| e.to_string())?;
        Ok(Sound {
            tx,
            clock: self.clock,
            thread,
            output: self.output,
            output_kind: self.output_kind,
        })
    }

    /// Closes the output unused (the video has no sound), on a thread of its own: stopping
    /// joins the output's thread and finishes a WAV file, which an async caller must not wait
    /// for.
    pub(crate) fn close(self) {
        let output = self.output;
        let _ = std::thread::Builder::new()
            .name("svs-sound-close".into())
            .spawn(move || {
                if let Err(e) = output.stop() {
                    tracing::debug!(error = %e, "closing the sound output");
                }
            });
    }
}

impl Sound {
    /// The clock frames are shown by.
    pub(crate) fn clock(&self) -> Arc<SoundClock> {
        self.clock.clone()
    }

    /// Hands packets to the sound thread.
    pub(crate) async fn packets(&self, audio: Audio) {
        let _ = self.tx.send(Command::Packets(audio)).await;
    }

    /// Applies a volume or mute key; returns a line saying where the sound is now.
    pub(crate) fn adjust(&self, key: super::Key) -> String {
        match key {
            super::Key::ToggleMute if self.clock.toggle_mute() => {
                "sound muted (m again to hear it)".into()
            }
            super::Key::Volume(step) => format!("volume {} %", self.clock.change_volume(step)),
            _ => "sound on".into(),
        }
    }

    /// Pauses or resumes what is heard.
    pub(crate) async fn pause(&self, paused: bool) {
        let _ = self.tx.send(Command::Pause(paused)).await;
    }

    /// Lets what is queued be heard (for at most 2 s), then stops; returns the figures
    /// (`played_seconds`: how long the playback ran, for the bit rate).
    pub(crate) async fn finish(self, played_seconds: f64) -> Result<SoundSummary, CliError> {
        let Sound {
            tx,
            clock,
            thread,
            output,
            output_kind,
        } = self;
        drop(tx);
        let ((packets, bytes, undecodable), stopped) = crate::error::blocking(move || {
            let counts = thread.join().unwrap_or((0, 0, 0));
            clock.end();
            let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while clock.pending_seconds() > 0.0 && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            // The last pull is heard before the output stops.
            std::thread::sleep(std::time::Duration::from_millis(30));
            let stopped = output.stop();
            (counts, stopped.map(|()| clock.losses()))
        })
        .await?;
        let (underrun_seconds, dropped_seconds) = stopped.map_err(CliError::Usage)?;
        Ok(SoundSummary {
            codec: "opus".into(),
            output: output_kind.into(),
            note: None,
            packets,
            kbits_per_second: if played_seconds > 0.0 {
                bytes as f64 * 8.0 / 1000.0 / played_seconds
            } else {
                0.0
            },
            undecodable,
            underrun_seconds,
            dropped_seconds,
            ..SoundSummary::default()
        })
    }
}

/// Decodes packets into the clock until the channel closes. Returns (packets, bytes,
/// undecodable). Each packet becomes exactly 20 ms (a longer one is cut, a bad one is
/// silence), so the timeline stays exact whatever a service sends.
fn decode_loop(
    mut rx: mpsc::Receiver<Command>,
    mut decoder: opus::Decoder,
    clock: &SoundClock,
) -> (u64, u64, u64) {
    let (mut packets, mut bytes, mut undecodable) = (0u64, 0u64, 0u64);
    let mut expected: Option<u64> = None;
    let mut pcm = vec![0.0f32; MAX_PACKET_SAMPLES * 2];
    while let Some(command) = rx.blocking_recv() {
        let audio = match command {
            Command::Pause(paused) => {
                clock.set_paused(paused);
                continue;
            }
            Command::Packets(audio) => audio,
        };
        let mut jump = expected != Some(audio.first_packet);
        if jump {
            let _ = decoder.reset_state();
        }
        // Pushed a second at a time: a message of any length costs a second of samples here.
        let mut decoded = Vec::with_capacity(PUSH_PACKETS * FRAME_SAMPLES * 2);
        for (batch, group) in audio.packets.chunks(PUSH_PACKETS).enumerate() {
            decoded.clear();
            for packet in group {
                packets += 1;
                bytes += packet.len() as u64;
                let samples = match decoder.decode_float(packet, &mut pcm, false) {
                    Ok(n) => n.min(FRAME_SAMPLES),
                    Err(_) => {
                        undecodable += 1;
                        0
                    }
                };
                decoded.extend_from_slice(&pcm[..samples * 2]);
                decoded.resize(decoded.len() + (FRAME_SAMPLES - samples) * 2, 0.0);
            }
            let first = audio
                .first_packet
                .saturating_add((batch * PUSH_PACKETS) as u64);
            clock.push(first as f64 * 0.02, &decoded, jump);
            jump = false;
        }
        expected = audio.first_packet.checked_add(audio.packets.len() as u64);
    }
    (packets, bytes, undecodable)
}
