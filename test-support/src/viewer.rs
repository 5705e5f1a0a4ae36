//! A viewer that decodes every frame of one playback in order (JPEG or H.264, with the real
//! client decoder) and reads the frame number the demo draws on each.

use svs_common::proto::stream::Frame;

#[derive(Debug)]
pub struct Viewer {
    decoder: svs_cli::picture::PictureDecoder,
    image: opencv::core::Mat,
    /// H.264 has been decoded since the last jump (a JPEG bridge must not come after it).
    h264_since_jump: bool,
}

impl Default for Viewer {
    fn default() -> Self {
        Self::new()
    }
}

impl Viewer {
    pub fn new() -> Self {
        Self {
            decoder: svs_cli::picture::PictureDecoder::default(),
            image: opencv::core::Mat::default(),
            h264_since_jump: false,
        }
    }

    /// The frame's decoded size and the frame number drawn on it.
    pub fn show(&mut self, f: &Frame) -> ((i32, i32), Option<u64>) {
        use opencv::prelude::*;
        self.decoder
            .decode(
                f.picture.as_ref().unwrap(),
                f.keyframe,
                (f.width, f.height),
                &mut self.image,
            )
            .unwrap_or_else(|e| panic!("frame {} does not decode: {e}", f.index));
        (
            (self.image.cols(), self.image.rows()),
            stream_service::media::frame_mark(&self.image),
        )
    }

    /// A switch or seek was announced: JPEG bridge frames may come until the next keyframe.
    pub fn jumped(&mut self) {
        self.h264_since_jump = false;
    }

    /// Shows a frame of an H.264 playback with keyframes every `gop` frames and checks it: it
    /// decodes at `size` showing its own number, a JPEG bridge only between a jump and the
    /// keyframe after it, the first H.264 frame after a jump a keyframe at its place.
    pub fn check_h264(&mut self, f: &Frame, size: (i32, i32), gop: u64) {
        assert_eq!(self.show(f), (size, Some(f.index)), "frame {}", f.index);
        match f.picture.as_ref().unwrap() {
            svs_common::proto::stream::frame::Picture::Jpeg(_) => {
                assert!(!self.h264_since_jump, "frame {}: JPEG after H.264", f.index);
                assert!(
                    !f.index.is_multiple_of(gop),
                    "frame {}: a keyframe bridged",
                    f.index
                );
            }
            svs_common::proto::stream::frame::Picture::H264(_) => {
                if !self.h264_since_jump {
                    assert!(
                        f.keyframe && f.index.is_multiple_of(gop),
                        "frame {}",
                        f.index
                    );
                }
                self.h264_since_jump = true;
            }
        }
    }
}
