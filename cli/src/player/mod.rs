//! The player: receives frames, has every one decoded on the view thread (`view`) and shown in
//! a window (only when a display exists: Qt's highgui aborts the process without one) with an
//! overlay of live figures on `i`, or counted headless; plays the sound (`sound`), whose clock
//! says when each frame shows; keeps what the playback has seen (`watching`), turns keys into
//! Control calls, resumes after a lost connection, and sums up.

mod sound;
mod view;
mod watching;

pub use sound::{DEFAULT_MAX_BUFFERED_SECONDS, SoundChoice, SoundSummary, parse_sound_choice};

use crate::error::CliError;
use crate::stream_client::{Playing, StreamClient};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use svs_common::proto::stream::{AudioCodec, PlayRequest, Resolution, notice, play_response};
use tokio::sync::mpsc;
use view::{ViewItem, Viewer};
use watching::{KeyAction, Watching};

/// How to play.
#[derive(Debug, Clone, Default)]
pub struct PlayOptions {
    /// Never open a window, even with a display.
    pub headless: bool,
    /// Write what arrived to this MJPEG AVI file.
    pub record: Option<PathBuf>,
    /// Print live statistics lines to stderr.
    pub live_stats: bool,
    /// Send notes and progress here instead of writing them to stderr (a full-screen program
    /// that owns the terminal).
    pub reports: Option<ReportTo>,
    /// Refuse pictures of more pixels than this; `None`: `picture::DEFAULT_MAX_PIXELS`.
    pub max_pixels: Option<u64>,
    /// Where the sound goes (the service is asked for sound unless `SoundChoice::None`).
    pub sound: SoundChoice,
    /// Decoded sound held at most, in seconds; `None`: `DEFAULT_MAX_BUFFERED_SECONDS`.
    pub max_sound_buffer_seconds: Option<f64>,
}

/// What a playback tells the program that started it.
#[derive(Debug, Clone, PartialEq)]
pub enum PlayerReport {
    /// Once a second and at the first frame.
    Progress {
        rendition: String,
        position_seconds: f64,
        duration_seconds: f64,
    },
    /// A line a person should read (lost connection, resumed, a refused key press).
    Note(String),
}

/// Where one playback's reports go, tagged with its number.
#[derive(Debug, Clone)]
pub struct ReportTo {
    pub playback: u64,
    pub tx: mpsc::UnboundedSender<(u64, PlayerReport)>,
}

impl PlayOptions {
    /// A note for the person: to `reports` if set, else stderr.
    fn note(&self, text: String) {
        match &self.reports {
            Some(to) => {
                let _ = to.tx.send((to.playback, PlayerReport::Note(text)));
            }
            None => eprintln!("{text}"),
        }
    }

    fn progress(&self, rendition: &str, position_seconds: f64, duration_seconds: f64) {
        if let Some(to) = &self.reports {
            let report = PlayerReport::Progress {
                rendition: rendition.to_string(),
                position_seconds,
                duration_seconds,
            };
            let _ = to.tx.send((to.playback, report));
        }
    }
}

/// One frame as received and decoded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FrameRecord {
    pub index: u64,
    pub pts_seconds: f64,
    pub rendition: &'static str,
    /// Size the service announced.
    pub width: u32,
    pub height: u32,
    /// Size decoded; (0, 0) if the picture did not decode.
    pub decoded_width: u32,
    pub decoded_height: u32,
    /// `jpeg` or `h264`: how this frame came.
    pub codec: &'static str,
    pub keyframe: bool,
    /// Bytes of the picture.
    pub bytes: u64,
    /// When the frame showed, the audio clock minus its time, in ms (with sound only).
    pub av_offset_ms: Option<f64>,
    /// When the frame showed, seconds since the sound output started (its place in a
    /// `--audio wav:` file).
    pub sound_output_seconds: Option<f64>,
}

/// What `svs play --json` prints on its last line.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub video: String,
    pub playback_id: String,
    /// The codec asked for: `h264` or `jpeg`.
    pub codec: String,
    pub frames_received: u64,
    /// JPEG frames that bridged an H.264 playback to its next keyframe (after a start between
    /// keyframes, a switch or a seek).
    pub bridge_frames: u64,
    /// Bytes of pictures received.
    pub bytes_received: u64,
    pub frames_decoded: u64,
    pub frames_skipped: u64,
    pub rendition: String,
    pub width: u32,
    pub height: u32,
    pub time_to_first_frame_ms: f64,
    pub mean_fps: f64,
    pub kbits_per_second: f64,
    pub switches: u32,
    /// Times the playback was resumed on a new connection after losing one.
    pub resumes: u32,
    /// Where the playback stopped (the last frame's time) and how long the video is, in seconds.
    pub position_seconds: f64,
    pub duration_seconds: f64,
    pub p99_lateness_ms: f64,
    /// The sound, when the service sent some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sound: Option<SoundSummary>,
    #[serde(skip)]
    pub frames: Vec<FrameRecord>,
}

/// A position as `m:ss`, or `h:mm:ss` from an hour on.
pub fn clock(seconds: f64) -> String {
    let whole = seconds.max(0.0) as u64;
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Whether a window can be opened (X11 or Wayland).
pub fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Keys the window understands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Key {
    Switch(Resolution),
    TogglePause,
    SeekBy(f64),
    ToggleOverlay,
    /// Louder or softer by this many percentage points.
    Volume(i32),
    ToggleMute,
    Quit,
}

fn key_for(code: i32) -> Option<Key> {
    match code {
        c if c == '1' as i32 => Some(Key::Switch(Resolution::Resolution240p)),
        c if c == '2' as i32 => Some(Key::Switch(Resolution::Resolution720p)),
        c if c == '3' as i32 => Some(Key::Switch(Resolution::Resolution1440p)),
        c if c == 'a' as i32 => Some(Key::Switch(Resolution::Auto)),
        c if c == ' ' as i32 => Some(Key::TogglePause),
        c if c == 'i' as i32 => Some(Key::ToggleOverlay),
        c if c == '9' as i32 => Some(Key::Volume(-10)),
        c if c == '0' as i32 => Some(Key::Volume(10)),
        c if c == 'm' as i32 => Some(Key::ToggleMute),
        c if c == 'q' as i32 || c == 27 => Some(Key::Quit),
        81 | 65361 | 2424832 => Some(Key::SeekBy(-5.0)),
        83 | 65363 | 2555904 => Some(Key::SeekBy(5.0)),
        _ => None,
    }
}

/// Frame records kept for a playback's summary (the first ones; about 100 bytes each). Counts
/// and figures cover every frame; only the per-frame list stops growing here.
pub const MAX_FRAME_RECORDS: usize = 10_000;
/// Lateness samples kept for the p99 (the latest ones).
const MAX_LATENESS_SAMPLES: usize = 10_000;

/// Starts `request` again on a fresh connection, retrying lost connections with backoff (for
/// at most `RESUME_ATTEMPTS` tries); a refusal ends it.
async fn resume_playback(
    client: &mut StreamClient,
    request: &PlayRequest,
) -> Result<Playing, CliError> {
    const RESUME_ATTEMPTS: u32 = 12;
    let mut backoff = crate::backoff::Backoff::default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tried = async {
            *client = client.reconnect().await?;
            client.play(request.clone()).await
        }
        .await;
        match tried {
            Ok(playing) => return Ok(playing),
            Err(e) if attempt < RESUME_ATTEMPTS && e.is_lost_connection() => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Plays one video to the end (or until q, Esc, Ctrl-C), returning the summary.
pub async fn play(
    client: &mut StreamClient,
    request: PlayRequest,
    options: &PlayOptions,
) -> Result<Summary, CliError> {
    let asked = Instant::now();
    let max_buffered = options
        .max_sound_buffer_seconds
        .unwrap_or(DEFAULT_MAX_BUFFERED_SECONDS);
    // Without a sound card `auto` goes on quietly (the summary says why); a file asked for and
    // not written is noted.
    let no_sound_because = |why: String| {
        if matches!(options.sound, SoundChoice::Wav(_)) {
            options.note(format!("! no sound: {why}"));
        }
        Some(why)
    };
    let (prepared, mut no_sound) = if options.sound.wanted() {
        match crate::error::blocking({
            let choice = options.sound.clone();
            move || sound::PreparedSound::open(&choice, max_buffered)
        })
        .await?
        {
            Ok(prepared) => (Some(prepared), None),
            Err(why) => (None, no_sound_because(why)),
        }
    } else {
        (None, None)
    };
    let mut request = request;
    // Sound is asked for only when it can be played.
    request.audio = if prepared.is_some() {
        AudioCodec::Opus
    } else {
        AudioCodec::Unspecified
    } as i32;
    let video = request.video.clone();
    let mut resume = request.clone();
    let Playing {
        mut header,
        mut stream,
    } = client.play(request).await?;
    let sound = match (prepared, &header.audio) {
        (Some(prepared), Some(track)) => match prepared.start(track) {
            Ok(sound) => Some(sound),
            Err(why) => {
                no_sound = no_sound_because(why);
                None
            }
        },
        (Some(prepared), None) => {
            prepared.close();
            no_sound = Some("the video has no sound".into());
            None
        }
        (None, _) => None,
    };
    let (view_tx, view_rx) = mpsc::channel::<ViewItem>(4);
    let (key_tx, mut key_rx) = mpsc::unbounded_channel::<i32>();
    // No window thread (the library used outside the `svs` binary): headless.
    let window = if !options.headless && has_display() {
        crate::window::open(key_tx)
    } else {
        None
    };
    let max_pixels = options
        .max_pixels
        .unwrap_or(crate::picture::DEFAULT_MAX_PIXELS);
    let viewer = Viewer::start(
        view_rx,
        window,
        options.record.clone(),
        max_pixels,
        sound.as_ref().map(sound::Sound::clock),
    );
    let mut watching = Watching::new(asked, video, &header);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // One listener for the whole loop: a Ctrl-C that arrives while an iteration is busy is kept
    // for the next select instead of being lost with a listener made anew each pass.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let outcome: Result<(), CliError> = loop {
        tokio::select! {
            message = stream.message() => {
                let message = match message {
                    Ok(Some(m)) => m,
                    Ok(None) => break Ok(()),
                    Err(status) if crate::error::is_lost(&status) => {
                        // Resume on a new connection at the frame after the last one shown.
                        resume.start_seconds = watching.position + 1.0 / header.fps.max(1.0);
                        options.note(format!("* connection to the stream service lost ({}); reconnecting at {:.1} s…", crate::text::sentence(status.message()), resume.start_seconds));
                        let resumed = tokio::select! {
                            r = resume_playback(client, &resume) => r,
                            _ = &mut ctrl_c => break Ok(()),
                        };
                        match resumed {
                            Ok(playing) => {
                                options.note(format!("* back: playing {} from {:.1} s", resume.video, resume.start_seconds));
                                header = playing.header;
                                stream = playing.stream;
                                watching.resumed();
                                continue;
                            }
                            Err(e) => break Err(e),
                        }
                    }
                    Err(status) => break Err(CliError::stream(status)),
                };
                match message.kind {
                    Some(play_response::Kind::Frame(frame)) => {
                        let item = match watching.frame(frame, &header, options) {
                            Ok(item) => item,
                            Err(e) => break Err(e),
                        };
                        if view_tx.send(item).await.is_err() {
                            break Ok(());
                        }
                    }
                    Some(play_response::Kind::Notice(notice)) => {
                        if let (Some(sound), Some(notice::Kind::State(state))) = (&sound, &notice.kind) {
                            match state.as_str() {
                                "paused" => sound.pause(true).await,
                                "resumed" => sound.pause(false).await,
                                _ => {}
                            }
                        }
                        watching.notice(notice, options);
                    }
                    Some(play_response::Kind::Audio(audio)) => {
                        if let Some(sound) = &sound {
                            sound.packets(audio).await;
                        }
                    }
                    _ => {}
                }
            }
            Some(code) = key_rx.recv() => {
                let Some(key) = key_for(code) else { continue };
                match watching.key(key, &mut resume) {
                    KeyAction::Quit => break Ok(()),
                    KeyAction::Done => {}
                    KeyAction::Sound(key) => match &sound {
                        Some(sound) => options.note(format!("* {}", sound.adjust(key))),
                        None => options.note("* this playback has no sound".into()),
                    },
                    KeyAction::Control(action) => {
                        if let Err(e) = client.control(&header.playback_id, action).await {
                            options.note(format!("! {e}"));
                        }
                    }
                }
            }
            _ = tick.tick() => watching.tick(&header, options),
            _ = &mut ctrl_c => break Ok(()),
        }
    };
    drop(view_tx);
    let decoded = viewer.finish().await?;
    let sound_summary = match sound {
        Some(sound) => Some(sound.finish(asked.elapsed().as_secs_f64()).await?),
        None => no_sound.map(|why| SoundSummary {
            output: "none".into(),
            note: Some(why),
            ..SoundSummary::default()
        }),
    };
    let mut summary = watching.finish(decoded, &header, options);
    if let Some(mut sound_summary) = sound_summary {
        let mut offsets: Vec<f64> = summary
            .frames
            .iter()
            .filter_map(|f| f.av_offset_ms)
            .collect();
        sound_summary.av_offset_p50_ms =
            svs_common::stats::percentile(&mut offsets, 0.5).unwrap_or(0.0);
        let mut absolute: Vec<f64> = offsets.iter().map(|o| o.abs()).collect();
        sound_summary.av_offset_p99_abs_ms =
            svs_common::stats::percentile(&mut absolute, 0.99).unwrap_or(0.0);
        summary.sound = Some(sound_summary);
    }
    outcome.map(|()| summary)
}
