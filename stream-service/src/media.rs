//! Everything that touches OpenCV on the service side: probing files, decoding and JPEG-encoding
//! frames, and writing the demo video and ingested renditions. All functions block; callers run
//! them on blocking threads and no OpenCV object leaves the thread that made it.

use crate::Error;
use crate::progress::Progress;
use crate::resolution::Rendition;
use opencv::core::{CV_8UC3, Mat, Point, Rect, Scalar, Size, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc, videoio};
use std::path::Path;

/// What a video file holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub frame_count: u64,
}

fn cv(context: &str) -> impl Fn(opencv::Error) -> Error + '_ {
    move |e| Error::Media(format!("{context}: {e}"))
}

fn open_capture(path: &Path) -> Result<videoio::VideoCapture, Error> {
    let capture = videoio::VideoCapture::from_file(path, videoio::CAP_ANY)
        .map_err(cv(&path.display().to_string()))?;
    if !capture.is_opened().map_err(cv("opening"))? {
        return Err(Error::Media(format!(
            "OpenCV cannot open {}",
            path.display()
        )));
    }
    Ok(capture)
}

/// Reads size, frame rate and frame count.
pub fn probe(path: &Path) -> Result<Probe, Error> {
    let capture = open_capture(path)?;
    let get = |prop| capture.get(prop).map_err(cv("reading properties"));
    let probe = Probe {
        width: get(videoio::CAP_PROP_FRAME_WIDTH)? as u32,
        height: get(videoio::CAP_PROP_FRAME_HEIGHT)? as u32,
        fps: get(videoio::CAP_PROP_FPS)?,
        frame_count: get(videoio::CAP_PROP_FRAME_COUNT)?.max(0.0) as u64,
    };
    if probe.width == 0
        || probe.height == 0
        || probe.frame_count == 0
        || !probe.fps.is_finite()
        || probe.fps <= 0.0
    {
        return Err(Error::Media(format!(
            "{} has no readable video stream",
            path.display()
        )));
    }
    Ok(probe)
}

/// A source decoder that JPEG-encodes the frames it reads, and knows which frame comes next so
/// an encoder thread can keep it between segments: the next segment of the same file needs no
/// seek, any other position is one seek away.
pub struct SourceReader {
    path: std::path::PathBuf,
    /// Which version of the file this is (the library's tag): a file replaced in place is a
    /// different source.
    version: String,
    capture: videoio::VideoCapture,
    next: u64,
    params: Vector<i32>,
    frame: Mat,
    buffer: Vector<u8>,
}

impl SourceReader {
    pub fn open(path: &Path, version: &str, quality: i32) -> Result<Self, Error> {
        Ok(Self {
            path: path.to_path_buf(),
            version: version.to_string(),
            capture: open_capture(path)?,
            next: 0,
            params: Vector::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, quality]),
            frame: Mat::default(),
            buffer: Vector::new(),
        })
    }

    /// Whether this reads `version` of the file at `path`.
    pub fn reads(&self, path: &Path, version: &str) -> bool {
        self.path == path && self.version == version
    }

    /// Positions the decoder so the next frame read is `frame` (OpenCV seeks to a keyframe
    /// before it and decodes forward, so the position is exact).
    pub fn seek(&mut self, frame: u64) -> Result<(), Error> {
        if frame == self.next {
            return Ok(());
        }
        let moved = self
            .capture
            .set(videoio::CAP_PROP_POS_FRAMES, frame as f64)
            .map_err(cv("seeking"))?;
        if !moved {
            return Err(Error::Media(format!(
                "OpenCV cannot seek {} to frame {frame}",
                self.path.display()
            )));
        }
        self.next = frame;
        Ok(())
    }

    /// The next frame as JPEG, or `None` at the end.
    pub fn next_jpeg(&mut self) -> Result<Option<Vec<u8>>, Error> {
        if !self.capture.read(&mut self.frame).map_err(cv("decoding"))? || self.frame.empty() {
            return Ok(None);
        }
        self.next += 1;
        imgcodecs::imencode(".jpg", &self.frame, &mut self.buffer, &self.params)
            .map_err(cv("JPEG encoding"))?;
        Ok(Some(self.buffer.to_vec()))
    }
}

/// Width for `height` keeping `aspect` (width / height), rounded to an even number.
fn width_for(height: i32, aspect: f64) -> i32 {
    ((height as f64 * aspect / 2.0).round() as i32 * 2).max(2)
}

fn writer(path: &Path, fps: f64, size: Size) -> Result<videoio::VideoWriter, Error> {
    let fourcc = videoio::VideoWriter::fourcc('m', 'p', '4', 'v').map_err(cv("fourcc"))?;
    let writer =
        videoio::VideoWriter::new(path, fourcc, fps, size, true).map_err(cv("creating writer"))?;
    if !writer.is_opened().map_err(cv("opening writer"))? {
        return Err(Error::Media(format!(
            "OpenCV cannot write {}",
            path.display()
        )));
    }
    Ok(writer)
}

/// The path of a rendition file in a library directory.
pub fn rendition_path(dir: &Path, name: &str, rendition: Rendition) -> std::path::PathBuf {
    dir.join(format!("{name}_{}.mp4", rendition.label()))
}

/// Writes `<name>_240p/720p/1440p.mp4`: a moving test pattern with the frame number and the
/// rendition drawn on every frame. Files are written under a temporary name and renamed.
pub fn make_demo(
    dir: &Path,
    name: &str,
    seconds: f64,
    fps: f64,
    progress: &mut Progress,
) -> Result<(), Error> {
    for rendition in Rendition::ALL {
        make_demo_rendition(dir, name, rendition, seconds, fps, progress)?;
    }
    Ok(())
}

/// Writes one rendition of the demo (benchmarks make long single-rendition videos with it).
pub fn make_demo_rendition(
    dir: &Path,
    name: &str,
    rendition: Rendition,
    seconds: f64,
    fps: f64,
    progress: &mut Progress,
) -> Result<(), Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Media(format!("creating {}: {e}", dir.display())))?;
    let frames = (seconds * fps).round().max(1.0) as i32;
    let height = rendition.height();
    let width = width_for(height, 16.0 / 9.0);
    let path = rendition_path(dir, name, rendition);
    let tmp = dir.join(format!(".{name}_{}.tmp.mp4", rendition.label()));
    let mut out = writer(&tmp, fps, Size::new(width, height))?;
    for i in 0..frames {
        let frame = test_pattern(width, height, i, frames, rendition.label())?;
        out.write(&frame).map_err(cv("writing frame"))?;
        progress.advance(1);
    }
    out.release().map_err(cv("closing writer"))?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| Error::Media(format!("writing {}: {e}", path.display())))
}

fn test_pattern(
    width: i32,
    height: i32,
    index: i32,
    total: i32,
    label: &str,
) -> Result<Mat, Error> {
    let mut frame = Mat::new_rows_cols_with_default(height, width, CV_8UC3, Scalar::all(16.0))
        .map_err(cv("allocating frame"))?;
    let bars = [
        (255.0, 255.0, 255.0),
        (0.0, 255.0, 255.0),
        (255.0, 255.0, 0.0),
        (0.0, 255.0, 0.0),
        (255.0, 0.0, 255.0),
        (0.0, 0.0, 255.0),
        (255.0, 0.0, 0.0),
    ];
    let bar_w = width / bars.len() as i32;
    for (i, (b, g, r)) in bars.iter().enumerate() {
        let rect = Rect::new(i as i32 * bar_w, 0, bar_w, height * 2 / 3);
        imgproc::rectangle(
            &mut frame,
            rect,
            Scalar::new(*b, *g, *r, 0.0),
            -1,
            imgproc::LINE_8,
            0,
        )
        .map_err(cv("drawing"))?;
    }
    let x = (width - height / 6) * (index % total.max(1)) / total.max(1);
    let center = Point::new(x + height / 12, height * 5 / 6);
    imgproc::circle(
        &mut frame,
        center,
        height / 12,
        Scalar::new(0.0, 200.0, 255.0, 0.0),
        -1,
        imgproc::LINE_AA,
        0,
    )
    .map_err(cv("drawing"))?;
    draw_frame_mark(&mut frame, width, height, index as u64)?;
    let scale = height as f64 / 240.0;
    let text = format!("frame {index} {label}");
    imgproc::put_text(
        &mut frame,
        &text,
        Point::new((10.0 * scale) as i32, (40.0 * scale) as i32),
        imgproc::FONT_HERSHEY_SIMPLEX,
        1.0 * scale,
        Scalar::new(0.0, 0.0, 0.0, 0.0),
        (2.0 * scale).max(1.0) as i32,
        imgproc::LINE_AA,
        false,
    )
    .map_err(cv("drawing"))?;
    Ok(frame)
}

/// Bits of the frame number drawn along the bottom edge of every demo frame.
const MARK_BITS: i32 = 24;

/// Side of one mark square for a frame `width` wide.
fn mark_block(width: i32) -> i32 {
    (width / (2 * MARK_BITS)).max(4)
}

/// Draws the frame number in binary along the bottom edge (a white square for 1, black for 0,
/// most significant bit first), so a test can tell which frame it got from the pixels alone.
fn draw_frame_mark(frame: &mut Mat, width: i32, height: i32, index: u64) -> Result<(), Error> {
    let block = mark_block(width);
    for bit in 0..MARK_BITS {
        let on = (index >> (MARK_BITS - 1 - bit)) & 1 == 1;
        let level = if on { 255.0 } else { 0.0 };
        let rect = Rect::new(bit * block, height - block, block, block);
        imgproc::rectangle(frame, rect, Scalar::all(level), -1, imgproc::LINE_8, 0)
            .map_err(cv("drawing"))?;
    }
    Ok(())
}

/// The frame number drawn on a demo frame (JPEG), read back from the pixels; `None` if the
/// image does not decode.
pub fn read_frame_mark(jpeg: &[u8]) -> Option<u64> {
    let image =
        imgcodecs::imdecode(&Vector::<u8>::from_slice(jpeg), imgcodecs::IMREAD_GRAYSCALE).ok()?;
    let (width, height) = (image.cols(), image.rows());
    if width == 0 || height == 0 {
        return None;
    }
    let block = mark_block(width);
    let mut index = 0u64;
    for bit in 0..MARK_BITS {
        let level = *image
            .at_2d::<u8>(height - block / 2 - 1, bit * block + block / 2)
            .ok()?;
        index = (index << 1) | u64::from(level > 127);
    }
    Some(index)
}

/// Makes the three renditions of `source` (same frame rate and frame count, resized keeping the
/// aspect ratio) as `<name>_<rendition>.mp4` in `dir`.
pub fn ingest(
    source: &Path,
    dir: &Path,
    name: &str,
    progress: &mut Progress,
) -> Result<u64, Error> {
    let info = probe(source)?;
    let mut capture = open_capture(source)?;
    let aspect = info.width as f64 / info.height as f64;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Media(format!("creating {}: {e}", dir.display())))?;
    let mut outputs = Vec::new();
    for rendition in Rendition::ALL {
        let size = Size::new(width_for(rendition.height(), aspect), rendition.height());
        let tmp = dir.join(format!(".{name}_{}.tmp.mp4", rendition.label()));
        outputs.push((rendition, size, tmp.clone(), writer(&tmp, info.fps, size)?));
    }
    let mut frame = Mat::default();
    let mut resized = Mat::default();
    let mut count = 0u64;
    while capture.read(&mut frame).map_err(cv("decoding"))? && !frame.empty() {
        for (_, size, _, out) in outputs.iter_mut() {
            imgproc::resize(&frame, &mut resized, *size, 0.0, 0.0, imgproc::INTER_AREA)
                .map_err(cv("resizing"))?;
            out.write(&resized).map_err(cv("writing frame"))?;
        }
        count += 1;
        progress.advance(1);
    }
    for (rendition, _, tmp, mut out) in outputs {
        out.release().map_err(cv("closing writer"))?;
        let path = rendition_path(dir, name, rendition);
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::Media(format!("writing {}: {e}", path.display())))?;
    }
    Ok(count)
}
