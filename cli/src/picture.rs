//! Turns the picture a frame message carries (a JPEG, or an H.264 access unit for openh264)
//! into a BGR image for OpenCV. One `PictureDecoder` per playback, on one thread: H.264 frames
//! decode against the ones before them, so they must arrive in order from a keyframe on.

use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use svs_common::proto::stream::frame::Picture;

/// Decodes JPEG and H.264 frames of one playback.
#[derive(Default)]
pub struct PictureDecoder {
    h264: Option<Decoder>,
    /// The H.264 decoder's input may continue from the previous frame (no JPEG, no keyframe
    /// missed since): else a non-keyframe is refused instead of decoded into garbage.
    h264_continues: bool,
    /// The decoded I420 planes laid out for OpenCV.
    i420: Vec<u8>,
}

/// Why a picture did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn cv(context: &'static str) -> impl Fn(opencv::Error) -> DecodeError {
    move |e| DecodeError(format!("{context}: {e}"))
}

impl PictureDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one frame's picture (`keyframe` as the message says) into `out` (BGR).
    pub fn decode(
        &mut self,
        picture: &Picture,
        keyframe: bool,
        out: &mut Mat,
    ) -> Result<(), DecodeError> {
        match picture {
            Picture::Jpeg(jpeg) => {
                self.h264_continues = false;
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
