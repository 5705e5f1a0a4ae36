//! The sound waiting to be heard and the audio clock: the decoder pushes 48 kHz stereo samples
//! with their time in the video; the output (a sound card, or a WAV file written in real time)
//! pulls them, silence when there are none or while paused; the view thread asks where in the
//! video the sound being heard now is, and shows each frame when its sound is heard.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Samples per second per channel.
pub(crate) const RATE: f64 = 48_000.0;
/// Interleaved channels.
pub(crate) const CHANNELS: usize = 2;

/// One pull by the output that had sound in it.
#[derive(Debug, Clone, Copy)]
struct Pull {
    at: Instant,
    /// Time in the video of its first frame.
    pts: f64,
    /// Frames of sound (not silence) in it.
    frames: usize,
    /// Frames output before it since the output started (silence included).
    output_before: u64,
    /// How long after being pulled a sample is heard (the device's buffer).
    latency: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// Decoded samples not yet output, interleaved, and the video time of the first.
    pending: VecDeque<f32>,
    pending_pts: f64,
    paused: bool,
    /// Frames output since the output started, silence included.
    output_frames: u64,
    /// Frames of silence output because nothing was decoded in time (after sound began).
    underrun_frames: u64,
    last_sound: Option<Pull>,
    /// No more sound will come (the playback ended): silence from here is not an underrun.
    ended: bool,
    /// Frames dropped because more than the buffer cap arrived.
    dropped_frames: u64,
    /// Loudness in percent (0-150), and whether muted.
    volume: u32,
    muted: bool,
}

/// Where the sound being heard is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Position {
    /// In the video, seconds.
    pub(crate) media: f64,
    /// Since the output started, seconds (silence included): the place in a `wav:` file.
    pub(crate) output: f64,
}

/// The shared sound queue and clock.
#[derive(Debug)]
pub(crate) struct SoundClock {
    state: Mutex<State>,
    max_pending_frames: usize,
}

impl SoundClock {
    /// A clock that holds at most `max_buffered` seconds of decoded sound.
    pub(crate) fn new(max_buffered: f64) -> Self {
        Self {
            state: Mutex::new(State {
                volume: 100,
                ..State::default()
            }),
            max_pending_frames: (max_buffered * RATE) as usize,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues decoded `samples` that start at `pts` in the video. `jump`: they do not follow
    /// what is queued (a seek or a resume): what is queued is dropped.
    pub(crate) fn push(&self, pts: f64, samples: &[f32], jump: bool) {
        let mut state = self.lock();
        if jump || state.pending.is_empty() {
            state.pending.clear();
            state.pending_pts = pts;
        }
        let room = (self.max_pending_frames * CHANNELS).saturating_sub(state.pending.len());
        let taken = samples.len().min(room) / CHANNELS * CHANNELS;
        state.pending.extend(&samples[..taken]);
        state.dropped_frames += ((samples.len() - taken) / CHANNELS) as u64;
    }

    /// Louder or softer by `step` percentage points (0 to 150 %); returns the new loudness.
    pub(crate) fn change_volume(&self, step: i32) -> u32 {
        let mut state = self.lock();
        state.volume = (state.volume as i32 + step).clamp(0, 150) as u32;
        state.muted = false;
        state.volume
    }

    /// Mutes or unmutes (the clock runs on); returns whether muted now.
    pub(crate) fn toggle_mute(&self) -> bool {
        let mut state = self.lock();
        state.muted = !state.muted;
        state.muted
    }

    /// Stops or restarts taking sound (the output plays silence and the clock stands still).
    pub(crate) fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
    }

    /// No more sound will come.
    pub(crate) fn end(&self) {
        self.lock().ended = true;
    }

    /// Fills `out` (interleaved) with the next sound, silence where there is none; `latency`:
    /// how long until what is pulled now is heard.
    pub(crate) fn pull(&self, out: &mut [f32], latency: Duration) {
        let mut state = self.lock();
        let frames = out.len() / CHANNELS;
        let available = if state.paused {
            0
        } else {
            (state.pending.len() / CHANNELS).min(frames)
        };
        let gain = if state.muted {
            0.0
        } else {
            state.volume as f32 / 100.0
        };
        for (slot, sample) in out
            .iter_mut()
            .zip(state.pending.drain(..available * CHANNELS))
        {
            *slot = sample * gain;
        }
        out[available * CHANNELS..].fill(0.0);
        let output_before = state.output_frames;
        if available > 0 {
            state.last_sound = Some(Pull {
                at: Instant::now(),
                pts: state.pending_pts,
                frames: available,
                output_before,
                latency,
            });
            state.pending_pts += available as f64 / RATE;
        }
        if !state.paused && !state.ended && state.last_sound.is_some() && available < frames {
            state.underrun_frames += (frames - available) as u64;
        }
        state.output_frames += frames as u64;
    }

    /// Where the sound heard now is; `None` before any has been heard.
    pub(crate) fn position(&self) -> Option<Position> {
        let state = self.lock();
        let pull = state.last_sound?;
        let heard = pull.at.elapsed().saturating_sub(pull.latency).as_secs_f64();
        let into = heard.min(pull.frames as f64 / RATE);
        Some(Position {
            media: pull.pts + into,
            output: pull.output_before as f64 / RATE + pull.latency.as_secs_f64() + into,
        })
    }

    /// Seconds of decoded sound waiting.
    pub(crate) fn pending_seconds(&self) -> f64 {
        (self.lock().pending.len() / CHANNELS) as f64 / RATE
    }

    /// (underrun seconds, dropped seconds).
    pub(crate) fn losses(&self) -> (f64, f64) {
        let state = self.lock();
        (
            state.underrun_frames as f64 / RATE,
            state.dropped_frames as f64 / RATE,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_in_order_then_silence_and_keeps_time() {
        let clock = SoundClock::new(1.0);
        assert_eq!(clock.position(), None);
        clock.push(10.0, &[0.5; 960 * 2], false);
        let mut out = [1.0f32; 480 * 2];
        clock.pull(&mut out, Duration::ZERO);
        assert!(out.iter().all(|s| *s == 0.5));
        let at = clock.position().expect("sound heard");
        assert!((10.0..10.011).contains(&at.media), "{at:?}");
        clock.pull(&mut out, Duration::ZERO);
        clock.pull(&mut out, Duration::ZERO);
        assert!(
            out.iter().all(|s| *s == 0.0),
            "silence once the sound ran out"
        );
        assert!((clock.losses().0 - 0.01).abs() < 1e-9);
    }

    #[test]
    fn a_jump_drops_what_was_queued_and_pause_stops_the_clock() {
        let clock = SoundClock::new(1.0);
        clock.push(1.0, &[0.1; 4800 * 2], false);
        clock.push(60.0, &[0.2; 4800 * 2], true);
        clock.set_paused(true);
        let mut out = [1.0f32; 480 * 2];
        clock.pull(&mut out, Duration::ZERO);
        assert!(out.iter().all(|s| *s == 0.0));
        assert_eq!(clock.position(), None);
        clock.set_paused(false);
        clock.pull(&mut out, Duration::ZERO);
        assert!(out.iter().all(|s| *s == 0.2));
        assert!(clock.position().expect("heard").media >= 60.0);
    }

    #[test]
    fn volume_scales_and_mute_silences_without_stopping_the_clock() {
        let clock = SoundClock::new(1.0);
        clock.push(0.0, &[0.5; 1920 * 2], false);
        assert_eq!(clock.change_volume(-50), 50);
        let mut out = [0.0f32; 480 * 2];
        clock.pull(&mut out, Duration::ZERO);
        assert!(out.iter().all(|s| (*s - 0.25).abs() < 1e-6));
        assert!(clock.toggle_mute());
        clock.pull(&mut out, Duration::ZERO);
        assert!(out.iter().all(|s| *s == 0.0));
        // The muted pull took the next 10 ms: the clock is there.
        assert!(
            clock.position().expect("heard").media >= 0.0099,
            "muted sound still runs"
        );
        assert_eq!(clock.change_volume(500), 150);
    }

    #[test]
    fn holds_no_more_than_its_cap() {
        let clock = SoundClock::new(0.5);
        clock.push(0.0, &vec![0.1; 48_000 * 2], false);
        assert!((clock.pending_seconds() - 0.5).abs() < 1e-9);
        assert!((clock.losses().1 - 0.5).abs() < 1e-9);
    }
}
