//! Reading and writing video files with OpenCV on the service side: probing files, decoding source
//! frames (coding them is `encoder`'s), and writing the demo videos and ingested renditions. All functions block; callers run
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
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: f64,
    /// Frames in the file.
    pub frame_count: u64,
}

fn cv(context: &str) -> impl Fn(opencv::Error) -> Error + '_ {
    move |source| Error::OpenCv {
        context: context.into(),
        source,
    }
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

/// A source decoder that knows which frame comes next, so an encoder thread can keep it between
/// segments: the next segment of the same file needs no
/// seek, any other position is one seek away.
#[derive(Debug)]
pub struct SourceReader {
    path: std::path::PathBuf,
    /// Which version of the file this is (the library's tag): a file replaced in place is a
    /// different source.
    version: String,
    capture: videoio::VideoCapture,
    next: u64,
    frame: Mat,
}

impl SourceReader {
    /// Opens `path`; `version` tells apart files replaced under the same name.
    pub fn open(path: &Path, version: &str) -> Result<Self, Error> {
        Ok(Self {
            path: path.to_path_buf(),
            version: version.to_string(),
            capture: open_capture(path)?,
            next: 0,
            frame: Mat::default(),
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

    /// The next frame (BGR), or `None` at the end.
    pub fn next_frame(&mut self) -> Result<Option<&Mat>, Error> {
        if !self.capture.read(&mut self.frame).map_err(cv("decoding"))? || self.frame.empty() {
            return Ok(None);
        }
        self.next += 1;
        Ok(Some(&self.frame))
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
/// rendition drawn on every frame, and `<name>.wav`, a beep at every whole second. Files are written under a temporary name and renamed. Flat
/// colour compresses well in any codec: `make_detail_demo` is the harder one.
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
    write_demo_sound(dir, name, seconds)
}

/// Writes `<name>.wav`: the demos' sound, a beep at every whole second (`audio::demo`).
fn write_demo_sound(dir: &Path, name: &str, seconds: f64) -> Result<(), Error> {
    crate::audio::demo::write_beeps(&dir.join(format!("{name}.wav")), seconds)
}

/// The fractal the detail demo flies over: the Mandelbrot set's "seahorse valley" (around
/// -0.7436 + 0.1318i, 0.05 across per 1,000 pixels), coloured by escape time, on every core.
fn fractal_texture(width: i32, height: i32) -> Result<Mat, Error> {
    let mut texture = Mat::new_rows_cols_with_default(height, width, CV_8UC3, Scalar::all(0.0))
        .map_err(cv("allocating texture"))?;
    let bytes = texture.data_bytes_mut().map_err(cv("texture"))?;
    let row_bytes = width as usize * 3;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows_each = (height as usize).div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (chunk, rows) in bytes.chunks_mut(rows_each * row_bytes).enumerate() {
            scope.spawn(move || {
                let scale = 0.05 / 1000.0;
                for (r, row) in rows.chunks_mut(row_bytes).enumerate() {
                    let y = (chunk * rows_each + r) as f64;
                    for (x, pixel) in row.chunks_mut(3).enumerate() {
                        let c_re = -0.7436 + (x as f64 - f64::from(width) / 2.0) * scale;
                        let c_im = 0.1318 + (y - f64::from(height) / 2.0) * scale;
                        let (mut re, mut im, mut n) = (0.0f64, 0.0f64, 0u32);
                        while n < 500 && re * re + im * im < 4.0 {
                            (re, im) = (re * re - im * im + c_re, 2.0 * re * im + c_im);
                            n += 1;
                        }
                        let v = f64::from(n);
                        pixel[0] = (128.0 + 127.0 * (v * 0.1).sin()) as u8;
                        pixel[1] = (128.0 + 127.0 * (v * 0.07 + 1.0).sin()) as u8;
                        pixel[2] = (128.0 + 127.0 * (v * 0.05 + 2.0).sin()) as u8;
                    }
                }
            });
        }
    });
    Ok(texture)
}

/// Writes `<name>_240p/720p/1440p.mp4`: a slow zoom, pan and turn over a fractal (fine detail
/// that moves, as in real footage; at 720p JPEG quality 80 needs about 20 Mbit/s for it, twice
/// the test pattern), made at 1440p and scaled down for the other renditions, with the frame
/// number marked along the bottom edge. Compression figures on it are not flattered by flat
/// colour.
pub fn make_detail_demo(
    dir: &Path,
    name: &str,
    seconds: f64,
    fps: f64,
    progress: &mut Progress,
) -> Result<(), Error> {
    let frames = (seconds * fps).round().max(1.0) as i32;
    let top = Rendition::P1440;
    let (width, height) = (width_for(top.height(), 16.0 / 9.0), top.height());
    let texture = fractal_texture(width * 3 / 2, height * 3 / 2)?;
    let mut outputs = RenditionWriters::create(dir, name, fps, 16.0 / 9.0)?;
    let mut frame = Mat::default();
    for i in 0..frames {
        let t = f64::from(i) / fps;
        // Around the texture's centre drifting right, turning 3°/s, zooming in 12 %/s.
        let centre = opencv::core::Point2f::new(
            (texture.cols() / 2) as f32 + (t * 40.0) as f32,
            (texture.rows() / 2) as f32,
        );
        let mut turn = imgproc::get_rotation_matrix_2d(centre, t * 3.0, 1.0 + t * 0.12)
            .map_err(cv("motion"))?;
        *turn.at_2d_mut::<f64>(0, 2).map_err(cv("motion"))? -=
            f64::from(texture.cols() - width) / 2.0;
        *turn.at_2d_mut::<f64>(1, 2).map_err(cv("motion"))? -=
            f64::from(texture.rows() - height) / 2.0;
        imgproc::warp_affine(
            &texture,
            &mut frame,
            &turn,
            Size::new(width, height),
            imgproc::INTER_LINEAR,
            opencv::core::BORDER_REFLECT,
            Scalar::all(0.0),
        )
        .map_err(cv("moving"))?;
        outputs.write(&frame, Some(i as u64))?;
        progress.advance(Rendition::ALL.len() as u64);
    }
    outputs.finish()?;
    write_demo_sound(dir, name, seconds)
}

/// The three renditions of one video being written: each frame resized to each rendition's
/// height (keeping the aspect ratio), files under temporary names until `finish` renames them.
struct RenditionWriters {
    dir: std::path::PathBuf,
    name: String,
    outputs: Vec<(Rendition, Size, std::path::PathBuf, videoio::VideoWriter)>,
    resized: Mat,
}

impl RenditionWriters {
    fn create(dir: &Path, name: &str, fps: f64, aspect: f64) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let mut outputs = Vec::new();
        for rendition in Rendition::ALL {
            let size = Size::new(width_for(rendition.height(), aspect), rendition.height());
            let tmp = dir.join(format!(".{name}_{}.tmp.mp4", rendition.label()));
            outputs.push((rendition, size, tmp.clone(), writer(&tmp, fps, size)?));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            outputs,
            resized: Mat::default(),
        })
    }

    /// Writes `frame` to every rendition, with frame number `mark` drawn on each if given.
    fn write(&mut self, frame: &Mat, mark: Option<u64>) -> Result<(), Error> {
        for (_, size, _, out) in self.outputs.iter_mut() {
            imgproc::resize(
                frame,
                &mut self.resized,
                *size,
                0.0,
                0.0,
                imgproc::INTER_AREA,
            )
            .map_err(cv("resizing"))?;
            if let Some(index) = mark {
                draw_frame_mark(&mut self.resized, size.width, size.height, index)?;
            }
            out.write(&self.resized).map_err(cv("writing frame"))?;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), Error> {
        for (rendition, _, tmp, mut out) in self.outputs {
            out.release().map_err(cv("closing writer"))?;
            let path = rendition_path(&self.dir, &self.name, rendition);
            std::fs::rename(&tmp, &path).map_err(|e| Error::io("writing", &path, e))?;
        }
        Ok(())
    }
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
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
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
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("writing", &path, e))
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
    frame_mark(&image)
}

/// The frame number drawn on a decoded demo frame (BGR or grey), read back from the pixels.
pub fn frame_mark(image: &Mat) -> Option<u64> {
    let mut grey = Mat::default();
    let image = if image.channels() == 3 {
        imgproc::cvt_color_def(image, &mut grey, imgproc::COLOR_BGR2GRAY).ok()?;
        &grey
    } else {
        image
    };
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
    let mut outputs = RenditionWriters::create(dir, name, info.fps, aspect)?;
    let mut frame = Mat::default();
    let mut count = 0u64;
    while capture.read(&mut frame).map_err(cv("decoding"))? && !frame.empty() {
        outputs.write(&frame, None)?;
        count += 1;
        progress.advance(1);
    }
    outputs.finish()?;
    let seconds = count as f64 / info.fps;
    crate::audio::keep_sound(source, &dir.join(format!("{name}.wav")), seconds)?;
    Ok(count)
}
