//! How the cache codes frames: JPEG pictures (OpenCV, each stands alone) or H.264 access units
//! (Cisco's openh264, built from source: BSD-licensed, encoder and decoder in one crate, no
//! system library, unlike libavcodec with GPL x264). H.264 is coded one group of pictures at a
//! time by a fresh encoder: an IDR access unit with SPS and PPS, then P-frames only (baseline
//! profile: no B-frames, so frames leave in display order). A group depends on nothing outside
//! itself, so the cache can code any group of any segment in any order, and the same group
//! always comes out the same. Blocking, like everything that touches OpenCV.

use crate::Error;
use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, QpRange,
    RateControlMode,
};
use openh264::formats::YUVSlices;

/// The codecs a viewer can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Jpeg,
    H264,
}

impl Codec {
    pub fn label(self) -> &'static str {
        match self {
            Codec::Jpeg => "jpeg",
            Codec::H264 => "h264",
        }
    }
}

/// How a cached rendition is coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// JPEG at this quality (1-100): every frame a keyframe.
    /// JPEG at `quality` (0-100): every frame stands alone.
    Jpeg {
        /// 0-100.
        quality: i32,
    },
    /// H.264 at a constant quantiser per group of pictures, a keyframe every `gop` frames
    /// counted from the start of each segment: `qp` (0-51, lower is better), or `flat_qp` for a
    /// group whose keyframe codes under `FLAT_BITS_PER_PIXEL` at `qp` (flat or synthetic
    /// pictures, where a finer quantiser costs little: the idea of x264's CRF, crudely).
    /// H.264 at quantiser `qp` (`flat_qp` for flat pictures), a keyframe every `gop` frames.
    H264 {
        /// Quantiser.
        qp: u8,
        /// Quantiser for flat pictures.
        flat_qp: u8,
        /// Frames per keyframe.
        gop: u32,
    },
}

impl Encoding {
    /// The codec as the protocol names it.
    pub fn codec(self) -> Codec {
        match self {
            Encoding::Jpeg { .. } => Codec::Jpeg,
            Encoding::H264 { .. } => Codec::H264,
        }
    }

    /// Frames from one keyframe to the next (1 for JPEG).
    pub fn keyframe_interval(self) -> u64 {
        match self {
            Encoding::Jpeg { .. } => 1,
            Encoding::H264 { gop, .. } => u64::from(gop.max(1)),
        }
    }

    /// Whether frame `slot` of a segment is a keyframe.
    pub fn is_keyframe(self, slot: usize) -> bool {
        (slot as u64).is_multiple_of(self.keyframe_interval())
    }

    /// Names the settings in cache directory names (a change of settings is a new version).
    pub fn label(self) -> String {
        match self {
            Encoding::Jpeg { quality } => format!("q{quality}"),
            Encoding::H264 { qp, flat_qp, gop } => format!("h264qp{qp}f{flat_qp}g{gop}"),
        }
    }

    /// The suffix of the rendition directory, so both codecs of one rendition keep their own
    /// versions: "" for JPEG (the layout that predates H.264), "-h264".
    pub fn dir_suffix(self) -> &'static str {
        match self {
            Encoding::Jpeg { .. } => "",
            Encoding::H264 { .. } => "-h264",
        }
    }
}

fn cv(context: &'static str) -> impl Fn(opencv::Error) -> Error {
    move |source| Error::OpenCv {
        context: context.into(),
        source,
    }
}

fn h264(context: &'static str) -> impl Fn(openh264::Error) -> Error {
    move |source| Error::H264 { context, source }
}

/// A keyframe coded at the group's `qp` in fewer bits per pixel than this marks a flat group,
/// coded at `flat_qp` instead. Set between the test pattern's keyframes and the fractal's (the
/// codec bench prints them: at QP 24 the 720p and 1440p pattern's take 0.12 and 0.07, at QP 27
/// the fractal's 0.54 to 0.70).
pub(crate) const FLAT_BITS_PER_PIXEL: f64 = 0.15;

/// Codes one run of frames: a single frame for JPEG, one group of pictures for H.264.
pub enum RunEncoder {
    /// JPEG: one frame at a time.
    Jpeg {
        /// imencode parameters (the quality).
        params: Vector<i32>,
        /// The output buffer, reused.
        buffer: Vector<u8>,
    },
    /// H.264: one group of pictures from its keyframe.
    H264 {
        /// Quantiser.
        qp: u8,
        /// Quantiser for flat pictures.
        flat_qp: u8,
        /// Frames per keyframe.
        gop: u32,
        /// Frame rate (for the encoder's rate model).
        fps: f64,
        /// Made at the group's first frame, once its quantiser is chosen.
        encoder: Option<Box<Encoder>>,
        /// The frame in I420, as the encoder takes it.
        yuv: Mat,
    },
}

impl std::fmt::Debug for RunEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunEncoder").finish_non_exhaustive()
    }
}

fn h264_encoder(qp: u8, gop: u32, fps: f64) -> Result<Box<Encoder>, Error> {
    let qp = qp.min(51);
    // A constant quantiser: the rate controller is kept from raising it by a target no frame
    // reaches (so it never skips a frame either), and held to `qp` by the range. Frame skipping
    // stays "on" only because openh264 warns on stderr at every start otherwise.
    let config = EncoderConfig::new()
        .rate_control_mode(RateControlMode::Quality)
        .bitrate(BitRate::from_bps(100_000_000))
        .skip_frames(true)
        .qp(QpRange::new(qp, qp))
        .max_frame_rate(FrameRate::from_hz(fps as f32))
        .intra_frame_period(IntraFramePeriod::from_num_frames(gop.max(1)))
        .scene_change_detect(false);
    Encoder::with_api_config(OpenH264API::from_source(), config)
        .map(Box::new)
        .map_err(h264("starting the H.264 encoder"))
}

/// Codes one frame (BGR, even width and height) as one access unit.
fn encode_h264(encoder: &mut Encoder, frame: &Mat, yuv: &mut Mat) -> Result<Vec<u8>, Error> {
    let (width, height) = (frame.cols() as usize, frame.rows() as usize);
    if width % 2 != 0 || height % 2 != 0 {
        return Err(Error::Media(format!(
            "H.264 needs an even frame size, not {width}x{height}"
        )));
    }
    imgproc::cvt_color_def(frame, yuv, imgproc::COLOR_BGR2YUV_I420)
        .map_err(cv("converting to I420"))?;
    let data = yuv.data_bytes().map_err(cv("reading I420"))?;
    let (luma, chroma) = (width * height, width * height / 4);
    let planes = (
        &data[..luma],
        &data[luma..luma + chroma],
        &data[luma + chroma..luma + 2 * chroma],
    );
    let source = YUVSlices::new(planes, (width, height), (width, width / 2, width / 2));
    let coded = encoder.encode(&source).map_err(h264("H.264 encoding"))?;
    if matches!(coded.frame_type(), FrameType::Skip | FrameType::Invalid) {
        return Err(Error::Media("the H.264 encoder dropped a frame".into()));
    }
    Ok(coded.to_vec())
}

impl RunEncoder {
    /// A new run: for H.264 a fresh encoder whose first frame is an IDR access unit.
    pub fn start(encoding: Encoding, fps: f64) -> Result<Self, Error> {
        Ok(match encoding {
            Encoding::Jpeg { quality } => RunEncoder::Jpeg {
                params: Vector::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, quality]),
                buffer: Vector::new(),
            },
            Encoding::H264 { qp, flat_qp, gop } => RunEncoder::H264 {
                qp,
                flat_qp,
                gop,
                fps,
                encoder: None,
                yuv: Mat::default(),
            },
        })
    }

    /// Starts a new run with the same settings: for H.264 the next frame is coded by a fresh
    /// encoder, as an IDR access unit; JPEG keeps its buffers.
    pub fn restart(&mut self) {
        if let RunEncoder::H264 { encoder, .. } = self {
            *encoder = None;
        }
    }

    /// Codes the next frame of the run (BGR, even width and height for H.264).
    pub fn encode(&mut self, frame: &Mat) -> Result<Vec<u8>, Error> {
        match self {
            RunEncoder::Jpeg { params, buffer } => {
                imgcodecs::imencode(".jpg", frame, buffer, params).map_err(cv("JPEG encoding"))?;
                Ok(buffer.to_vec())
            }
            RunEncoder::H264 {
                qp,
                flat_qp,
                gop,
                fps,
                encoder,
                yuv,
            } => {
                if let Some(encoder) = encoder {
                    return encode_h264(encoder, frame, yuv);
                }
                // The group's keyframe: at `qp`, and again at `flat_qp` if it came out flat.
                let mut chosen = h264_encoder(*qp, *gop, *fps)?;
                let mut unit = encode_h264(&mut chosen, frame, yuv)?;
                let pixels = (frame.cols() as f64 * frame.rows() as f64).max(1.0);
                if *flat_qp < *qp && unit.len() as f64 * 8.0 / pixels < FLAT_BITS_PER_PIXEL {
                    chosen = h264_encoder(*flat_qp, *gop, *fps)?;
                    unit = encode_h264(&mut chosen, frame, yuv)?;
                }
                *encoder = Some(chosen);
                Ok(unit)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{CV_8UC3, Scalar};

    #[test]
    fn a_group_starts_with_sps_pps_and_an_idr_and_goes_on_with_p_frames() {
        let encoding = Encoding::H264 {
            qp: 28,
            flat_qp: 28,
            gop: 4,
        };
        let mut run = RunEncoder::start(encoding, 30.0).unwrap();
        let mut units = Vec::new();
        for i in 0..4 {
            let frame =
                Mat::new_rows_cols_with_default(64, 96, CV_8UC3, Scalar::all(10.0 * i as f64))
                    .unwrap();
            units.push(run.encode(&frame).unwrap());
        }
        // NAL unit types after each 4-byte start code.
        let types = |au: &[u8]| -> Vec<u8> {
            au.windows(5)
                .filter(|w| w[..4] == [0, 0, 0, 1])
                .map(|w| w[4] & 0x1f)
                .collect()
        };
        assert_eq!(types(&units[0]), [7, 8, 5], "SPS, PPS, IDR slice");
        for unit in &units[1..] {
            assert_eq!(types(unit), [1], "one non-IDR slice");
        }
        // What docs/protocol.md shows: constrained baseline SPS first, P slices with
        // nal_ref_idc 3.
        assert_eq!(
            units[0][..7],
            [0, 0, 0, 1, 0x67, 0x42, 0xc0],
            "{:02x?}",
            &units[0][..16]
        );
        assert_eq!(units[1][..5], [0, 0, 0, 1, 0x61], "{:02x?}", &units[1][..8]);
        // A restarted run begins with a keyframe again.
        run.restart();
        let frame = Mat::new_rows_cols_with_default(64, 96, CV_8UC3, Scalar::all(50.0)).unwrap();
        assert_eq!(types(&run.encode(&frame).unwrap()), [7, 8, 5]);
        assert!(encoding.is_keyframe(0) && encoding.is_keyframe(4) && !encoding.is_keyframe(3));
        assert!(Encoding::Jpeg { quality: 80 }.is_keyframe(3));
    }

    /// The keyframe of a group, coded with `qp` 28 and `flat_qp` 20.
    fn keyframe_size(frame: &Mat) -> usize {
        let encoding = Encoding::H264 {
            qp: 28,
            flat_qp: 20,
            gop: 4,
        };
        RunEncoder::start(encoding, 30.0)
            .unwrap()
            .encode(frame)
            .unwrap()
            .len()
    }

    #[test]
    fn a_flat_group_is_coded_finer_and_a_detailed_one_is_not() {
        let flat = Mat::new_rows_cols_with_default(240, 320, CV_8UC3, Scalar::all(90.0)).unwrap();
        let mut noise =
            Mat::new_rows_cols_with_default(240, 320, CV_8UC3, Scalar::all(0.0)).unwrap();
        opencv::core::randu(&mut noise, &Scalar::all(0.0), &Scalar::all(255.0)).unwrap();
        let coarse = |frame: &Mat| {
            let encoding = Encoding::H264 {
                qp: 28,
                flat_qp: 28,
                gop: 4,
            };
            let mut run = RunEncoder::start(encoding, 30.0).unwrap();
            run.encode(frame).unwrap().len()
        };
        assert!(
            keyframe_size(&flat) > coarse(&flat),
            "flat: finer, so bigger"
        );
        assert_eq!(
            keyframe_size(&noise),
            coarse(&noise),
            "detailed: kept at qp"
        );
    }
}
