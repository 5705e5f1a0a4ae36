//! Where sound goes: the system's default output through cpal (its callback pulls from the
//! clock), or a WAV file written in real time by a thread that pulls 10 ms every 10 ms, as a
//! sound card would (what a person would have heard, silence included, for tests).

use super::clock::{CHANNELS, RATE, SoundClock};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A running output; dropping it stops it.
pub(crate) struct Output {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").finish_non_exhaustive()
    }
}

impl Output {
    /// Stops the output and reports what went wrong while it ran.
    pub(crate) fn stop(mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err("the sound output thread panicked".into()),
            None => Ok(()),
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Pulls for a WAV file this often.
const WAV_BLOCK: Duration = Duration::from_millis(10);

/// Writes what is heard to `path` in real time.
pub(crate) fn wav(path: &Path, clock: Arc<SoundClock>) -> Result<Output, String> {
    let spec = hound::WavSpec {
        channels: CHANNELS as u16,
        sample_rate: RATE as u32,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("svs-sound-wav".into())
        .spawn(move || {
            let frames = (RATE * WAV_BLOCK.as_secs_f64()) as usize;
            let mut block = vec![0.0f32; frames * CHANNELS];
            let start = Instant::now();
            let mut blocks: u32 = 0;
            while !stopping.load(Ordering::Relaxed) {
                let due = start + WAV_BLOCK * blocks;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                clock.pull(&mut block, Duration::ZERO);
                for sample in &block {
                    let value = (sample.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16;
                    writer.write_sample(value).map_err(|e| e.to_string())?;
                }
                blocks += 1;
            }
            writer.finalize().map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?;
    Ok(Output {
        stop,
        thread: Some(thread),
    })
}

/// Plays through the system's default output device. Fails (and the caller goes on without
/// sound) when there is none or it cannot take 48 kHz stereo.
pub(crate) fn device(clock: Arc<SoundClock>) -> Result<Output, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    // The stream lives on its own thread: cpal's streams cannot move between threads everywhere.
    let thread = std::thread::Builder::new()
        .name("svs-sound-device".into())
        .spawn(move || {
            let stream = match open_device(clock) {
                Ok(stream) => {
                    let _ = ready_tx.send(Ok(()));
                    stream
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(());
                }
            };
            while !stopping.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(stream);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    match ready_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => Ok(Output {
            stop,
            thread: Some(thread),
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            Err("the sound device did not open within 5 s".into())
        }
    }
}

/// Opens the default output; what ALSA says while it tries is kept from stderr (a machine
/// without sound plays quietly) and added to the reason it failed.
fn open_device(clock: Arc<SoundClock>) -> Result<cpal::Stream, String> {
    #[cfg(target_os = "linux")]
    let said = alsa::Output::local_error_handler().ok();
    let opened = try_open_device(clock);
    #[cfg(target_os = "linux")]
    let opened = opened.map_err(|e| {
        let told = said
            .map(|said| said.borrow().to_string())
            .unwrap_or_default();
        match told.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(line) => format!("{e} ({})", crate::commands::display::printable(line)),
            None => e,
        }
    });
    opened
}

fn try_open_device(clock: Arc<SoundClock>) -> Result<cpal::Stream, String> {
    use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
    let host = cpal::default_host();
    let device = host
        .default_output_device()
        .ok_or_else(|| "no sound output device".to_string())?;
    let config = cpal::StreamConfig {
        channels: CHANNELS as u16,
        sample_rate: RATE as u32,
        buffer_size: cpal::BufferSize::Default,
    };
    let stream = device
        .build_output_stream(
            config,
            move |out: &mut [f32], info: &cpal::OutputCallbackInfo| {
                let stamp = info.timestamp();
                let latency = stamp.playback.duration_since(stamp.callback);
                clock.pull(out, latency);
            },
            |e| tracing::debug!(error = %e, "sound output"),
            None,
        )
        .map_err(|e| format!("cannot open the sound output: {e}"))?;
    stream
        .play()
        .map_err(|e| format!("cannot start the sound output: {e}"))?;
    Ok(stream)
}
