//! The view thread: decodes every frame (`picture`), waits until its sound is heard when the
//! playback has sound, records to MJPEG AVI on request, draws the overlay of live figures and
//! hands pictures to the window. It never touches the window system itself (the window lives on
//! the window thread, `window`).

use super::MAX_FRAME_RECORDS;
use super::sound::{Position, SoundClock};
use crate::error::CliError;
use crate::picture::PictureDecoder;
use opencv::core::{Mat, Point, Rect, Scalar, Size};
use opencv::prelude::*;
use opencv::{imgproc, videoio};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use svs_common::proto::stream::frame::Picture;
use tokio::sync::mpsc;

/// A frame for the view thread.
pub(super) struct ViewItem {
    /// The frame's time in the video, in seconds.
    pub(super) pts: f64,
    pub(super) picture: Picture,
    pub(super) keyframe: bool,
    /// The size the frame message announced.
    pub(super) size: (u32, u32),
    pub(super) fps: f64,
    /// The window's title: video, rendition, position and duration.
    pub(super) title: String,
    /// Live figures drawn over the picture (`i` toggles them).
    pub(super) overlay: Option<Overlay>,
}

/// What the overlay shows: lines of text and how far through the video the playback is.
#[derive(Debug, Clone)]
pub(super) struct Overlay {
    pub(super) lines: Vec<String>,
    pub(super) progress: f64,
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

/// What the view thread decoded.
#[derive(Debug, Default)]
pub(super) struct Decoded {
    /// The decoded size of the first `MAX_FRAME_RECORDS` frames in order; (0, 0) for one that
    /// did not decode.
    pub(super) sizes: Vec<(u32, u32)>,
    /// Frames decoded in all.
    pub(super) count: u64,
    /// The last frame's decoded size ((0, 0) if it did not decode).
    pub(super) last: (u32, u32),
    /// Pictures refused or failed, and the first reason.
    pub(super) failed: u64,
    pub(super) first_failure: Option<String>,
    /// Where the sound was when each of the first `MAX_FRAME_RECORDS` frames showed (with
    /// sound only).
    pub(super) sound_positions: Vec<Option<Position>>,
}

impl Decoded {
    fn push(&mut self, size: (u32, u32), sound: Option<Position>) {
        if self.sizes.len() < MAX_FRAME_RECORDS {
            self.sizes.push(size);
            self.sound_positions.push(sound);
        }
        self.last = size;
    }
}

/// Longest a frame waits for its sound (sound that stalls must not freeze the picture).
const MAX_SYNC_WAIT: Duration = Duration::from_millis(500);

/// Waits until the sound at `pts` is heard (frames ahead of the sound wait; late ones show at
/// once), and returns where the sound is as the frame shows.
fn wait_for_sound(clock: &SoundClock, pts: f64) -> Option<Position> {
    let deadline = Instant::now() + MAX_SYNC_WAIT;
    loop {
        let waited_enough = Instant::now() >= deadline;
        match clock.position() {
            Some(at) if at.media + 0.001 >= pts || waited_enough => return Some(at),
            Some(at) => {
                std::thread::sleep(Duration::from_secs_f64((pts - at.media).clamp(0.001, 0.01)));
            }
            // No sound heard yet (it is on its way: the service sends it before the first
            // frame, and the output starts within one block).
            None if !waited_enough => {
                std::thread::sleep(Duration::from_millis(2));
            }
            None => return None,
        }
    }
}

/// Decodes (and records, and hands to the window) frames until the channel closes. Runs on its
/// own thread and never touches the window system itself.
fn view_loop(
    mut frames: mpsc::Receiver<ViewItem>,
    window: Option<crate::window::Window>,
    record: Option<PathBuf>,
    max_pixels: u64,
    clock: Option<Arc<SoundClock>>,
) -> Result<Decoded, String> {
    let mut decoded = Decoded::default();
    let mut writer: Option<(videoio::VideoWriter, Size)> = None;
    let mut resized = Mat::default();
    let mut decoder = PictureDecoder::new(max_pixels);
    let mut mat = Mat::default();
    while let Some(item) = frames.blocking_recv() {
        if let Err(e) = decoder.decode(&item.picture, item.keyframe, item.size, &mut mat) {
            decoded.push((0, 0), None);
            decoded.failed += 1;
            decoded.first_failure.get_or_insert(e.0);
            continue;
        }
        decoded.count += 1;
        let sound = clock.as_deref().and_then(|c| wait_for_sound(c, item.pts));
        decoded.push((mat.cols() as u32, mat.rows() as u32), sound);
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
                let mut overlay = overlay.clone();
                if let Some(at) = sound {
                    overlay.lines.push(format!(
                        "sound {:+.0} ms from the picture",
                        (at.media - item.pts) * 1000.0
                    ));
                }
                draw_overlay(&mut image, &overlay)?;
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

/// The view thread, started.
pub(super) struct Viewer(std::thread::JoinHandle<Result<Decoded, String>>);

impl Viewer {
    /// Starts decoding what arrives on `frames` (and showing it in `window`, recording it to
    /// `record`) until the channel closes.
    pub(super) fn start(
        frames: mpsc::Receiver<ViewItem>,
        window: Option<crate::window::Window>,
        record: Option<PathBuf>,
        max_pixels: u64,
        clock: Option<Arc<SoundClock>>,
    ) -> Self {
        Self(std::thread::spawn(move || {
            view_loop(frames, window, record, max_pixels, clock)
        }))
    }

    /// Waits for the thread to finish (close its channel first): what it decoded.
    pub(super) async fn finish(self) -> Result<Decoded, CliError> {
        let thread = self.0;
        crate::error::blocking(move || thread.join())
            .await?
            .map_err(|_| CliError::Internal("the video window thread panicked".into()))?
            .map_err(|e| CliError::Usage(format!("decoding frames: {e}")))
    }
}
