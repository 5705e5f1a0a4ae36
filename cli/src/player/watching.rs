//! What one playback has seen so far: where it is, how late frames arrive against the video's
//! clock, the rate of the last second, and the summary being built. It turns each frame into
//! what the view thread shows and each key into what the stream service is asked.

use super::view::{Decoded, Overlay, ViewItem};
use super::{
    FrameRecord, Key, MAX_FRAME_RECORDS, MAX_LATENESS_SAMPLES, PlayOptions, Summary, clock,
};
use crate::error::CliError;
use crate::stream_client::{codec_label, resolution_label};
use std::collections::VecDeque;
use std::time::Instant;
use svs_common::proto::stream::{
    Frame, Notice, PlayHeader, PlayRequest, control_request, frame::Picture, notice,
};

/// Lateness against the video's clock. Each run (a switch, pause, seek or resume starts one) is
/// measured from its first frame and the earliest any of its frames arrived against it, so a
/// first frame that came late does not make every later one look early.
#[derive(Debug, Default)]
struct Lateness {
    anchor: Option<(Instant, f64)>,
    earliest_ms: Option<f64>,
    /// The latest samples, in ms.
    samples: VecDeque<f64>,
}

impl Lateness {
    fn restart(&mut self) {
        self.anchor = None;
        self.earliest_ms = None;
    }

    fn arrived(&mut self, now: Instant, pts_seconds: f64) {
        let (t0, pts0) = *self.anchor.get_or_insert((now, pts_seconds));
        let offset_ms = ((now - t0).as_secs_f64() - (pts_seconds - pts0)) * 1000.0;
        let earliest = self.earliest_ms.get_or_insert(offset_ms);
        *earliest = earliest.min(offset_ms);
        if self.samples.len() == MAX_LATENESS_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(offset_ms - *earliest);
    }

    fn last_ms(&self) -> f64 {
        self.samples.back().copied().unwrap_or(0.0)
    }

    fn p99_ms(self) -> f64 {
        let mut samples: Vec<f64> = self.samples.into();
        svs_common::stats::percentile(&mut samples, 0.99).unwrap_or(0.0)
    }
}

/// Frames and bytes of the second under way, and the last whole second's figures.
#[derive(Debug, Default)]
struct Rate {
    frames: u64,
    bytes: u64,
    fps: f64,
    kbps: f64,
}

impl Rate {
    fn roll(&mut self) {
        self.fps = self.frames as f64;
        self.kbps = self.bytes as f64 * 8.0 / 1000.0;
        self.frames = 0;
        self.bytes = 0;
    }
}

/// What a key asks of the playback.
pub(super) enum KeyAction {
    Quit,
    /// Handled here (the overlay).
    Done,
    /// Volume or mute, for the sound.
    Sound(Key),
    Control(control_request::Action),
}

/// The state of one playback as the person sees it.
#[derive(Debug)]
pub(super) struct Watching {
    summary: Summary,
    asked: Instant,
    first_frame: Option<Instant>,
    last_frame: Instant,
    lateness: Lateness,
    rate: Rate,
    /// The last frame's announced size.
    last_size: (u32, u32),
    /// The last frame's time in the video, in seconds.
    pub(super) position: f64,
    paused: bool,
    overlay_on: bool,
}

fn duration(header: &PlayHeader) -> f64 {
    header.frame_count as f64 / header.fps.max(1.0)
}

impl Watching {
    /// A playback of `video` asked for at `asked`, answered with `header`.
    pub(super) fn new(asked: Instant, video: String, header: &PlayHeader) -> Self {
        Self {
            summary: Summary {
                video,
                codec: codec_label(header.codec).to_string(),
                playback_id: crate::text::sentence(&header.playback_id),
                rendition: resolution_label(header.resolution).to_string(),
                ..Summary::default()
            },
            asked,
            first_frame: None,
            last_frame: Instant::now(),
            lateness: Lateness::default(),
            rate: Rate::default(),
            last_size: (0, 0),
            position: 0.0,
            paused: false,
            overlay_on: false,
        }
    }

    /// The playback goes on over a new connection: a new run of the clock.
    pub(super) fn resumed(&mut self) {
        self.summary.resumes += 1;
        self.lateness.restart();
    }

    /// Counts a frame and makes what the view thread shows of it.
    pub(super) fn frame(
        &mut self,
        frame: Frame,
        header: &PlayHeader,
        options: &PlayOptions,
    ) -> Result<ViewItem, CliError> {
        let now = Instant::now();
        if self.first_frame.is_none() {
            self.first_frame = Some(now);
            options.progress(
                resolution_label(frame.resolution),
                frame.pts_seconds,
                duration(header),
            );
        }
        self.last_frame = now;
        self.lateness.arrived(now, frame.pts_seconds);
        self.position = frame.pts_seconds;
        let summary = &mut self.summary;
        summary.frames_received += 1;
        summary.frames_skipped = frame.skipped_total;
        summary.rendition = resolution_label(frame.resolution).to_string();
        let Some(picture) = frame.picture else {
            return Err(CliError::Usage(format!(
                "frame {} came without a picture",
                frame.index
            )));
        };
        let (codec, size) = match &picture {
            Picture::Jpeg(b) => ("jpeg", b.len() as u64),
            Picture::H264(b) => ("h264", b.len() as u64),
        };
        if codec == "jpeg" && summary.codec == "h264" {
            summary.bridge_frames += 1;
        }
        summary.bytes_received += size;
        self.rate.frames += 1;
        self.rate.bytes += size;
        self.last_size = (frame.width, frame.height);
        if summary.frames.len() < MAX_FRAME_RECORDS {
            summary.frames.push(FrameRecord {
                index: frame.index,
                pts_seconds: frame.pts_seconds,
                rendition: resolution_label(frame.resolution),
                width: frame.width,
                height: frame.height,
                decoded_width: 0,
                decoded_height: 0,
                codec,
                keyframe: frame.keyframe,
                bytes: size,
                av_offset_ms: None,
                sound_output_seconds: None,
            });
        }
        let duration = duration(header);
        let title = format!(
            "{} — {} — {} / {}",
            summary.video,
            summary.rendition,
            clock(self.position),
            clock(duration)
        );
        let overlay = self.overlay_on.then(|| Overlay {
            lines: vec![
                format!(
                    "{} {}x{} {}",
                    self.summary.rendition,
                    frame.width,
                    frame.height,
                    if codec == "jpeg" { "JPEG" } else { "H.264" }
                ),
                format!("{:.1} fps  {:.0} kbit/s", self.rate.fps, self.rate.kbps),
                format!(
                    "skipped {}  late {:.0} ms",
                    self.summary.frames_skipped,
                    self.lateness.last_ms()
                ),
                format!("{} / {}", clock(self.position), clock(duration)),
            ]
            .into_iter()
            .chain(
                header
                    .audio
                    .as_ref()
                    .map(|track| format!("sound Opus {} kbit/s", track.bitrate / 1000)),
            )
            .collect(),
            progress: self.position / duration.max(f64::MIN_POSITIVE),
        });
        Ok(ViewItem {
            pts: frame.pts_seconds,
            picture,
            keyframe: frame.keyframe,
            size: (frame.width, frame.height),
            fps: header.fps,
            title,
            overlay,
        })
    }

    /// A notice from the service: the clock restarts after a switch, pause, resume or seek.
    pub(super) fn notice(&mut self, notice: Notice, options: &PlayOptions) {
        self.lateness.restart();
        match notice.kind {
            Some(notice::Kind::Switched(s)) => {
                self.summary.switches += 1;
                if options.live_stats {
                    eprintln!(
                        "switched {} → {} ({})",
                        resolution_label(s.from),
                        resolution_label(s.to),
                        crate::text::sentence(&s.reason)
                    );
                }
            }
            Some(notice::Kind::State(state)) if options.live_stats => {
                eprintln!("{}", crate::text::sentence(&state));
            }
            _ => {}
        }
    }

    /// What `key` asks; a switch is also remembered in `resume`, for after a lost connection.
    pub(super) fn key(&mut self, key: Key, resume: &mut PlayRequest) -> KeyAction {
        KeyAction::Control(match key {
            Key::Quit => return KeyAction::Quit,
            Key::Volume(_) | Key::ToggleMute => return KeyAction::Sound(key),
            Key::ToggleOverlay => {
                self.overlay_on = !self.overlay_on;
                return KeyAction::Done;
            }
            Key::Switch(r) => {
                resume.resolution = r as i32;
                control_request::Action::SwitchTo(r as i32)
            }
            Key::TogglePause => {
                self.paused = !self.paused;
                if self.paused {
                    control_request::Action::Pause(true)
                } else {
                    control_request::Action::Resume(true)
                }
            }
            Key::SeekBy(delta) => {
                control_request::Action::SeekSeconds((self.position + delta).max(0.0))
            }
        })
    }

    /// Once a second: the live line (`--stats`), progress for a full-screen program, the rate.
    pub(super) fn tick(&mut self, header: &PlayHeader, options: &PlayOptions) {
        if options.live_stats && self.first_frame.is_some() {
            eprintln!(
                "{:>5.1} fps  {:>7.0} kbit/s  {} {}x{}  skipped {}  late {:.0} ms",
                self.rate.frames as f64,
                self.rate.bytes as f64 * 8.0 / 1000.0,
                self.summary.rendition,
                self.last_size.0,
                self.last_size.1,
                self.summary.frames_skipped,
                self.lateness.last_ms()
            );
        }
        if self.first_frame.is_some() {
            options.progress(&self.summary.rendition, self.position, duration(header));
        }
        self.rate.roll();
    }

    /// The summary, with what the view thread decoded.
    pub(super) fn finish(
        self,
        decoded: Decoded,
        header: &PlayHeader,
        options: &PlayOptions,
    ) -> Summary {
        let mut summary = self.summary;
        for (record, (w, h)) in summary.frames.iter_mut().zip(&decoded.sizes) {
            record.decoded_width = *w;
            record.decoded_height = *h;
        }
        for (record, shown) in summary.frames.iter_mut().zip(&decoded.sound_positions) {
            if let Some(position) = shown {
                record.av_offset_ms = Some((position.media - record.pts_seconds) * 1000.0);
                record.sound_output_seconds = Some(position.output);
            }
        }
        summary.frames_decoded = decoded.count;
        (summary.width, summary.height) = decoded.last;
        if let Some(why) = &decoded.first_failure {
            options.note(format!(
                "! {} picture(s) not shown; the first: {}",
                decoded.failed,
                crate::commands::display::printable(why)
            ));
        }
        if let Some(first) = self.first_frame {
            summary.time_to_first_frame_ms = (first - self.asked).as_secs_f64() * 1000.0;
            let span = (self.last_frame - first).as_secs_f64();
            if summary.frames_received > 1 && span > 0.0 {
                summary.mean_fps = (summary.frames_received - 1) as f64 / span;
                summary.kbits_per_second = summary.bytes_received as f64 * 8.0 / 1000.0 / span;
            }
        }
        summary.p99_lateness_ms = self.lateness.p99_ms();
        summary.position_seconds = self.position;
        summary.duration_seconds = duration(header);
        summary
    }
}
