//! The player: receives frames, decodes every one (`picture`) on its own thread, shows them in a
//! window (only when a display exists: Qt's highgui aborts the process without one; the window
//! itself lives on the window thread, `window`) with an overlay of live figures on `i`, or
//! counts them headless, records to MJPEG AVI on request, turns keys into Control calls, and
//! sums up.

use crate::error::CliError;
use crate::picture::PictureDecoder;
use crate::stream_client::{Playing, StreamClient, codec_label, resolution_label};
use opencv::core::{Mat, Point, Rect, Scalar, Size};
use opencv::prelude::*;
use opencv::{imgproc, videoio};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use svs_common::proto::stream::{
    PlayRequest, Resolution, control_request, frame::Picture, notice, play_response,
};
use tokio::sync::mpsc;

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
        c if c == 'q' as i32 || c == 27 => Some(Key::Quit),
        81 | 65361 | 2424832 => Some(Key::SeekBy(-5.0)),
        83 | 65363 | 2555904 => Some(Key::SeekBy(5.0)),
        _ => None,
    }
}

struct ViewItem {
    picture: Picture,
    keyframe: bool,
    /// The size the frame message announced.
    size: (u32, u32),
    fps: f64,
    /// The window's title: video, rendition, position and duration.
    title: String,
    /// Live figures drawn over the picture (`i` toggles them).
    overlay: Option<Overlay>,
}

/// What the overlay shows: lines of text and how far through the video the playback is.
#[derive(Debug, Clone)]
struct Overlay {
    lines: Vec<String>,
    progress: f64,
}

fn cv(e: opencv::Error) -> String {
    e.to_string()
}

/// Draws `overlay` in the top left corner of `image` and a progress bar along its top edge.
fn draw_overlay(image: &mut Mat, overlay: &Overlay) -> Result<(), String> {
    let (width, height) = (image.cols(), image.rows());
    let scale = (f64::from(height) / 720.0).max(0.4);
    let line = (28.0 * scale) as i32;
    let box_height = line * overlay.lines.len() as i32 + line / 2;
    let mut shade = image
        .roi_mut(Rect::new(0, 0, (width / 2).max(1), box_height.min(height)))
        .map_err(cv)?;
    let copy = shade.try_clone().map_err(cv)?;
    // Darkens the text's background to half, so it reads on any picture.
    copy.convert_to(&mut shade, -1, 0.5, 0.0).map_err(cv)?;
    for (n, text) in overlay.lines.iter().enumerate() {
        imgproc::put_text(
            image,
            text,
            Point::new(line / 3, line * (n as i32 + 1)),
            imgproc::FONT_HERSHEY_SIMPLEX,
            0.7 * scale,
            Scalar::all(255.0),
            (2.0 * scale).max(1.0) as i32,
            imgproc::LINE_AA,
            false,
        )
        .map_err(cv)?;
    }
    let bar = ((f64::from(width) * overlay.progress.clamp(0.0, 1.0)) as i32).max(1);
    imgproc::rectangle(
        image,
        Rect::new(0, 0, bar, (4.0 * scale).max(2.0) as i32),
        Scalar::new(0.0, 200.0, 255.0, 0.0),
        -1,
        imgproc::LINE_8,
        0,
    )
    .map_err(cv)?;
    Ok(())
}

/// Frame records kept for a playback's summary (the first ones; about 100 bytes each). Counts
/// and figures cover every frame; only the per-frame list stops growing here.
pub const MAX_FRAME_RECORDS: usize = 10_000;
/// Lateness samples kept for the p99 (the latest ones).
const MAX_LATENESS_SAMPLES: usize = 10_000;

/// What the view thread decoded.
#[derive(Debug, Default)]
struct Decoded {
    /// The decoded size of the first `MAX_FRAME_RECORDS` frames in order; (0, 0) for one that
    /// did not decode.
    sizes: Vec<(u32, u32)>,
    /// Frames decoded in all.
    count: u64,
    /// The last frame's decoded size ((0, 0) if it did not decode).
    last: (u32, u32),
    /// Pictures refused or failed, and the first reason.
    failed: u64,
    first_failure: Option<String>,
}

impl Decoded {
    fn push(&mut self, size: (u32, u32)) {
        if self.sizes.len() < MAX_FRAME_RECORDS {
            self.sizes.push(size);
        }
        self.last = size;
    }
}

/// Decodes (and records, and hands to the window) frames until the channel closes. Runs on its
/// own thread and never touches the window system itself.
fn view_loop(
    mut frames: mpsc::Receiver<ViewItem>,
    window: Option<crate::window::Window>,
    record: Option<PathBuf>,
    max_pixels: u64,
) -> Result<Decoded, String> {
    let mut decoded = Decoded::default();
    let mut writer: Option<(videoio::VideoWriter, Size)> = None;
    let mut resized = Mat::default();
    let mut decoder = PictureDecoder::new(max_pixels);
    let mut mat = Mat::default();
    while let Some(item) = frames.blocking_recv() {
        if let Err(e) = decoder.decode(&item.picture, item.keyframe, item.size, &mut mat) {
            decoded.push((0, 0));
            decoded.failed += 1;
            decoded.first_failure.get_or_insert(e.0);
            continue;
        }
        decoded.count += 1;
        decoded.push((mat.cols() as u32, mat.rows() as u32));
        if let Some(path) = &record {
            if writer.is_none() {
                let size = mat.size().map_err(cv)?;
                let fourcc = videoio::VideoWriter::fourcc('M', 'J', 'P', 'G').map_err(cv)?;
                let w =
                    videoio::VideoWriter::new(path, fourcc, item.fps, size, true).map_err(cv)?;
                if !w.is_opened().map_err(cv)? {
                    return Err(format!("cannot write {}", path.display()));
                }
                writer = Some((w, size));
            }
            if let Some((w, size)) = writer.as_mut() {
                // A recording keeps the first frame's size across rendition switches.
                if mat.size().map_err(cv)? == *size {
                    w.write(&mat).map_err(cv)?;
                } else {
                    imgproc::resize(&mat, &mut resized, *size, 0.0, 0.0, imgproc::INTER_AREA)
                        .map_err(cv)?;
                    w.write(&resized).map_err(cv)?;
                }
            }
        }
        if let Some(window) = &window {
            // The decoder writes the next picture into a fresh image; this one goes to the window.
            let mut image = std::mem::take(&mut mat);
            if let Some(overlay) = &item.overlay {
                draw_overlay(&mut image, overlay)?;
            }
            if !window.show(image, item.title) {
                break;
            }
        }
    }
    if let Some((mut w, _)) = writer {
        w.release().map_err(cv)?;
    }
    Ok(decoded)
}

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
    let video = request.video.clone();
    let mut resume = request.clone();
    let Playing {
        mut header,
        mut stream,
    } = client.play(request).await?;
    let (view_tx, view_rx) = mpsc::channel::<ViewItem>(4);
    let (key_tx, mut key_rx) = mpsc::unbounded_channel::<i32>();
    // No window thread (the library used outside the `svs` binary): headless.
    let window = if !options.headless && has_display() {
        crate::window::open(key_tx)
    } else {
        None
    };
    let record = options.record.clone();
    let max_pixels = options
        .max_pixels
        .unwrap_or(crate::picture::DEFAULT_MAX_PIXELS);
    let viewer = std::thread::spawn(move || view_loop(view_rx, window, record, max_pixels));
    let mut overlay_on = false;
    let mut shown_fps = 0.0f64;
    let mut shown_kbps = 0.0f64;

    let mut summary = Summary {
        video,
        codec: codec_label(header.codec).to_string(),
        playback_id: crate::text::sentence(&header.playback_id),
        rendition: resolution_label(header.resolution).to_string(),
        ..Summary::default()
    };
    let mut first_frame: Option<Instant> = None;
    let mut last_frame = Instant::now();
    // The clock a frame's lateness is measured on: the first frame of a run (reset by a switch,
    // pause, seek or resume) and the earliest any frame of the run has arrived against it, so a
    // first frame that came late does not make every later one look early.
    let mut anchor: Option<(Instant, f64)> = None;
    let mut earliest_ms: Option<f64> = None;
    let mut lateness = std::collections::VecDeque::with_capacity(MAX_LATENESS_SAMPLES);
    let mut last_size = (0u32, 0u32);
    let mut paused = false;
    let mut position = 0.0f64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut window_frames = 0u64;
    let mut window_bytes = 0u64;
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
                        resume.start_seconds = position + 1.0 / header.fps.max(1.0);
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
                                summary.resumes += 1;
                                anchor = None;
                                earliest_ms = None;
                                continue;
                            }
                            Err(e) => break Err(e),
                        }
                    }
                    Err(status) => break Err(CliError::stream(status)),
                };
                match message.kind {
                    Some(play_response::Kind::Frame(frame)) => {
                        let now = Instant::now();
                        if first_frame.is_none() {
                            first_frame = Some(now);
                            options.progress(resolution_label(frame.resolution), frame.pts_seconds, header.frame_count as f64 / header.fps.max(1.0));
                        }
                        last_frame = now;
                        let (t0, pts0) = *anchor.get_or_insert((now, frame.pts_seconds));
                        let offset_ms = ((now - t0).as_secs_f64() - (frame.pts_seconds - pts0)) * 1000.0;
                        let earliest = earliest_ms.get_or_insert(offset_ms);
                        *earliest = earliest.min(offset_ms);
                        if lateness.len() == MAX_LATENESS_SAMPLES {
                            lateness.pop_front();
                        }
                        lateness.push_back(offset_ms - *earliest);
                        position = frame.pts_seconds;
                        summary.frames_received += 1;
                        summary.frames_skipped = frame.skipped_total;
                        summary.rendition = resolution_label(frame.resolution).to_string();
                        let Some(picture) = frame.picture else {
                            break Err(CliError::Usage(format!("frame {} came without a picture", frame.index)));
                        };
                        let (codec, size) = match &picture {
                            Picture::Jpeg(b) => ("jpeg", b.len() as u64),
                            Picture::H264(b) => ("h264", b.len() as u64),
                        };
                        if codec == "jpeg" && summary.codec == "h264" {
                            summary.bridge_frames += 1;
                        }
                        summary.bytes_received += size;
                        window_frames += 1;
                        window_bytes += size;
                        last_size = (frame.width, frame.height);
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
                            });
                        }
                        let title = format!(
                            "{} — {} — {} / {}",
                            summary.video,
                            summary.rendition,
                            clock(position),
                            clock(header.frame_count as f64 / header.fps.max(1.0))
                        );
                        let duration = header.frame_count as f64 / header.fps.max(1.0);
                        let (width, height) = (frame.width, frame.height);
                        let overlay = overlay_on.then(|| Overlay {
                            lines: vec![
                                format!("{} {}x{} {}", summary.rendition, width, height, if codec == "jpeg" { "JPEG" } else { "H.264" }),
                                format!("{shown_fps:.1} fps  {shown_kbps:.0} kbit/s"),
                                format!("skipped {}  late {:.0} ms", summary.frames_skipped, lateness.back().copied().unwrap_or(0.0)),
                                format!("{} / {}", clock(position), clock(duration)),
                            ],
                            progress: position / duration.max(f64::MIN_POSITIVE),
                        });
                        if view_tx.send(ViewItem { picture, keyframe: frame.keyframe, size: (frame.width, frame.height), fps: header.fps, title, overlay }).await.is_err() {
                            break Ok(());
                        }
                    }
                    Some(play_response::Kind::Notice(n)) => {
                        // The clock restarts after a switch, pause, resume or seek.
                        anchor = None;
                        earliest_ms = None;
                        match n.kind {
                            Some(notice::Kind::Switched(s)) => {
                                summary.switches += 1;
                                if options.live_stats {
                                    eprintln!("switched {} → {} ({})", resolution_label(s.from), resolution_label(s.to), crate::text::sentence(&s.reason));
                                }
                            }
                            Some(notice::Kind::State(state)) if options.live_stats => eprintln!("{}", crate::text::sentence(&state)),
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
            Some(code) = key_rx.recv() => {
                let Some(key) = key_for(code) else { continue };
                let action = match key {
                    Key::Quit => break Ok(()),
                    Key::ToggleOverlay => {
                        overlay_on = !overlay_on;
                        continue;
                    }
                    Key::Switch(r) => {
                        resume.resolution = r as i32;
                        control_request::Action::SwitchTo(r as i32)
                    }
                    Key::TogglePause => {
                        paused = !paused;
                        if paused { control_request::Action::Pause(true) } else { control_request::Action::Resume(true) }
                    }
                    Key::SeekBy(delta) => control_request::Action::SeekSeconds((position + delta).max(0.0)),
                };
                if let Err(e) = client.control(&header.playback_id, action).await {
                    options.note(format!("! {e}"));
                }
            }
            _ = tick.tick() => {
                if options.live_stats && first_frame.is_some() {
                    let late = lateness.back().copied().unwrap_or(0.0);
                    eprintln!(
                        "{:>5.1} fps  {:>7.0} kbit/s  {} {}x{}  skipped {}  late {:.0} ms",
                        window_frames as f64, window_bytes as f64 * 8.0 / 1000.0, summary.rendition,
                        last_size.0, last_size.1,
                        summary.frames_skipped, late
                    );
                }
                if first_frame.is_some() {
                    options.progress(&summary.rendition, position, header.frame_count as f64 / header.fps.max(1.0));
                }
                shown_fps = window_frames as f64;
                shown_kbps = window_bytes as f64 * 8.0 / 1000.0;
                window_frames = 0;
                window_bytes = 0;
            }
            _ = &mut ctrl_c => break Ok(()),
        }
    };
    drop(view_tx);
    let decoded = crate::error::blocking(move || viewer.join())
        .await?
        .map_err(|_| CliError::Internal("the video window thread panicked".into()))?
        .map_err(|e| CliError::Usage(format!("decoding frames: {e}")))?;
    for (record, (w, h)) in summary.frames.iter_mut().zip(&decoded.sizes) {
        record.decoded_width = *w;
        record.decoded_height = *h;
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
    if let Some(first) = first_frame {
        summary.time_to_first_frame_ms = (first - asked).as_secs_f64() * 1000.0;
        let span = (last_frame - first).as_secs_f64();
        if summary.frames_received > 1 && span > 0.0 {
            summary.mean_fps = (summary.frames_received - 1) as f64 / span;
            summary.kbits_per_second = summary.bytes_received as f64 * 8.0 / 1000.0 / span;
        }
    }
    let mut lateness: Vec<f64> = lateness.into();
    summary.p99_lateness_ms = svs_common::stats::percentile(&mut lateness, 0.99).unwrap_or(0.0);
    summary.position_seconds = position;
    summary.duration_seconds = header.frame_count as f64 / header.fps.max(1.0);
    outcome.map(|()| summary)
}
