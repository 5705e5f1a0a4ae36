//! Turns the picture a frame message carries (a JPEG, or an H.264 access unit for openh264)
//! into a BGR image for OpenCV. One `PictureDecoder` per playback, on one thread: H.264 frames
//! decode against the ones before them, so they must arrive in order from a keyframe on.

use crate::picture_size::{self, H264Sizes};
use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use svs_common::proto::stream::frame::Picture;

/// The most pixels a picture may have by default: a little above 2560×1440 (3,686,400), the
/// largest rendition svs serves. `svs play --max-pixels` changes it.
pub const DEFAULT_MAX_PIXELS: u64 = 4_000_000;

/// Decodes JPEG and H.264 frames of one playback. Before decoding, the size a picture claims
/// (JPEG frame header, H.264 SPS) must be the size its frame message announced and within the
/// pixel budget: a decoder allocates what the picture claims.
pub struct PictureDecoder {
    max_pixels: u64,
    h264: Option<Decoder>,
    /// The H.264 decoder's input may continue from the previous frame (no JPEG, no keyframe
    /// missed since): else a non-keyframe is refused instead of decoded into garbage.
    h264_continues: bool,
    /// The decoded I420 planes laid out for OpenCV.
    i420: Vec<u8>,
}

impl std::fmt::Debug for PictureDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PictureDecoder").finish_non_exhaustive()
    }
}

/// Why a picture did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn cv(context: &'static str) -> impl Fn(opencv::Error) -> DecodeError {
    move |e| DecodeError(format!("{context}: {e}"))
}

impl Default for PictureDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PIXELS)
    }
}

/// Refuses a claimed size other than the announced one, or over the budget.
fn check_claimed(
    what: &str,
    claimed: picture_size::Size,
    announced: picture_size::Size,
    max_pixels: u64,
) -> Result<(), DecodeError> {
    let pixels = u64::from(claimed.0) * u64::from(claimed.1);
    if pixels > max_pixels {
        return Err(DecodeError(format!(
            "the {what} claims {}x{} = {pixels} pixels, over the budget of {max_pixels} (--max-pixels); not decoded",
            claimed.0, claimed.1
        )));
    }
    if claimed != announced {
        return Err(DecodeError(format!(
            "the {what} claims {}x{} but the frame announced {}x{}; not decoded",
            claimed.0, claimed.1, announced.0, announced.1
        )));
    }
    Ok(())
}

/// Checks the size a picture claims (the JPEG frame header, each H.264 SPS) against the size its
/// frame message announced and the pixel budget, before anything decodes it (a decoder allocates
/// what the picture claims). A unit without an SPS decodes with the one before and passes.
pub fn check_size(
    picture: &Picture,
    announced: picture_size::Size,
    max_pixels: u64,
) -> Result<(), DecodeError> {
    match picture {
        Picture::Jpeg(jpeg) => {
            let claimed = picture_size::jpeg(jpeg)
                .ok_or_else(|| DecodeError("the JPEG has no frame header".into()))?;
            check_claimed("JPEG", claimed, announced, max_pixels)
        }
        Picture::H264(unit) => match picture_size::h264(unit) {
            H264Sizes::NoSps => Ok(()),
            H264Sizes::Sps(sizes) => sizes
                .into_iter()
                .try_for_each(|size| check_claimed("H.264 SPS", size, announced, max_pixels)),
            H264Sizes::Unreadable(why) => Err(DecodeError(format!(
                "the H.264 SPS does not parse ({why}); not decoded"
            ))),
        },
    }
}

impl PictureDecoder {
    /// A decoder refusing pictures of more than `max_pixels`.
    pub fn new(max_pixels: u64) -> Self {
        Self {
            max_pixels,
            h264: None,
            h264_continues: false,
            i420: Vec::new(),
        }
    }

    /// Decodes one frame's picture (`keyframe` and `announced` size as the frame message says)
    /// into `out` (BGR), after checking the size the picture claims.
    pub fn decode(
        &mut self,
        picture: &Picture,
        keyframe: bool,
        announced: picture_size::Size,
        out: &mut Mat,
    ) -> Result<(), DecodeError> {
        match picture {
            Picture::Jpeg(jpeg) => {
                self.h264_continues = false;
                check_size(picture, announced, self.max_pixels)?;
                *out =
                    imgcodecs::imdecode(&Vector::<u8>::from_slice(jpeg), imgcodecs::IMREAD_COLOR)
                        .map_err(cv("decoding JPEG"))?;
                if out.empty() {
                    return Err(DecodeError("the JPEG does not decode".into()));
                }
                Ok(())
            }
            Picture::H264(unit) => {
                if !keyframe && !self.h264_continues {
                    return Err(DecodeError(
                        "an H.264 frame without the keyframe it depends on".into(),
                    ));
                }
                // A keyframe after a gap (a bridge, a switch, a skip) starts a fresh decoder:
                // nothing before it is needed, and a new size or rendition starts clean.
                if keyframe && !self.h264_continues {
                    self.h264 = None;
                }
                self.h264_continues = false;
                check_size(picture, announced, self.max_pixels)?;
                let decoder = match &mut self.h264 {
                    Some(d) => d,
                    empty => empty.insert(
                        Decoder::new()
                            .map_err(|e| DecodeError(format!("starting H.264 decoder: {e}")))?,
                    ),
                };
                let yuv = decoder
                    .decode(unit)
                    .map_err(|e| DecodeError(format!("decoding H.264: {e}")))?
                    .ok_or_else(|| DecodeError("the H.264 access unit held no picture".into()))?;
                let (width, height) = yuv.dimensions();
                // An SPS sent earlier set this size; it still has to be the announced one.
                check_claimed(
                    "decoded H.264 picture",
                    (width as u32, height as u32),
                    announced,
                    self.max_pixels,
                )?;
                let (y_stride, u_stride, v_stride) = yuv.strides();
                let (half_w, half_h) = (width / 2, height / 2);
                self.i420.clear();
                self.i420.reserve(width * height * 3 / 2);
                for row in yuv.y().chunks(y_stride).take(height) {
                    self.i420.extend_from_slice(&row[..width]);
                }
                for (plane, stride) in [(yuv.u(), u_stride), (yuv.v(), v_stride)] {
                    for row in plane.chunks(stride).take(half_h) {
                        self.i420.extend_from_slice(&row[..half_w]);
                    }
                }
                let planes =
                    Mat::new_rows_cols_with_data(height as i32 * 3 / 2, width as i32, &self.i420)
                        .map_err(cv("laying out I420"))?;
                imgproc::cvt_color_def(&planes, out, imgproc::COLOR_YUV2BGR_I420)
                    .map_err(cv("converting from I420"))?;
                self.h264_continues = true;
                Ok(())
            }
        }
    }
}
