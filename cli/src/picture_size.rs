//! The size a picture claims before anything decodes it: the frame header of a JPEG, the
//! sequence parameter sets of an H.264 access unit. A decoder allocates what the picture claims,
//! so a hostile server could make a client allocate gigabytes with a few bytes; the player
//! compares these sizes with what the stream announced and with its pixel budget first.

/// Width and height in pixels.
pub(crate) type Size = (u32, u32);

/// The size in the first frame header (SOFn) of a JPEG, or `None` if the bytes do not reach one.
/// Walks the marker segments from SOI; stops at the first scan.
pub(crate) fn jpeg(bytes: &[u8]) -> Option<Size> {
    let mut at = 2;
    if bytes.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    loop {
        // Fill bytes (0xFF) may precede a marker.
        while *bytes.get(at)? == 0xFF && *bytes.get(at + 1)? == 0xFF {
            at += 1;
        }
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(at + 1)?;
        at += 2;
        // Markers without a length: TEM and RSTn.
        if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            continue;
        }
        let length = usize::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
        if length < 2 {
            return None;
        }
        let is_frame_header =
            matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_frame_header {
            // length(2) precision(1) height(2) width(2)
            let segment = bytes.get(at..at + 7)?;
            let height = u16::from_be_bytes([segment[3], segment[4]]);
            let width = u16::from_be_bytes([segment[5], segment[6]]);
            return Some((u32::from(width), u32::from(height)));
        }
        // Start of scan or end of image before a frame header: there is none.
        if marker == 0xDA || marker == 0xD9 {
            return None;
        }
        at += length;
    }
}

/// The NAL units of an Annex B byte stream (start codes 00 00 01 or 00 00 00 01), without them.
fn annex_b_units(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= bytes.len() {
        if bytes[i] == 0 && bytes[i + 1] == 0 && bytes[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&next| {
            // The unit ends before the next start code (and its optional leading zero).
            let mut end = next - 3;
            while end > 0 && bytes[end - 1] == 0 {
                end -= 1;
            }
            end
        })
        .chain(std::iter::once(bytes.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(start, end)| start < end)
        .map(move |(start, end)| &bytes[start..end])
}

/// What the sequence parameter sets in an H.264 access unit say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum H264Sizes {
    /// The unit carries no SPS (it decodes with the one before).
    NoSps,
    /// The size of each SPS it carries (after cropping).
    Sps(Vec<Size>),
    /// An SPS that does not parse, or whose size overflows.
    Unreadable(String),
}

/// The sizes the SPS units of an Annex B access unit claim.
pub(crate) fn h264(unit: &[u8]) -> H264Sizes {
    use h264_reader::nal::sps::SeqParameterSet;
    use h264_reader::rbsp::{BitReader, decode_nal};
    const SPS: u8 = 7;
    let mut sizes = Vec::new();
    for nal in annex_b_units(unit) {
        if nal[0] & 0x1F != SPS {
            continue;
        }
        let size = decode_nal(nal)
            .map_err(|e| e.to_string())
            .and_then(|rbsp| {
                SeqParameterSet::from_bits(BitReader::new(&*rbsp)).map_err(|e| format!("{e:?}"))
            })
            .and_then(|sps| sps.pixel_dimensions().map_err(|e| format!("{e:?}")));
        match size {
            Ok(size) => sizes.push(size),
            Err(why) => return H264Sizes::Unreadable(why),
        }
    }
    if sizes.is_empty() {
        H264Sizes::NoSps
    } else {
        H264Sizes::Sps(sizes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A minimal baseline JPEG header claiming `width`×`height` (enough for the size reader).
    fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        // An APP0 segment to skip.
        v.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x06, b'J', b'F', b'I', b'F']);
        v.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x0B, 8]);
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&width.to_be_bytes());
        v.extend_from_slice(&[1, 1, 0x11, 0]);
        v.extend_from_slice(&[0xFF, 0xD9]);
        v
    }

    #[test]
    fn a_jpeg_header_gives_its_size() {
        assert_eq!(jpeg(&jpeg_claiming(30000, 30000)), Some((30000, 30000)));
        assert_eq!(jpeg(&jpeg_claiming(640, 360)), Some((640, 360)));
        assert_eq!(jpeg(b"not a jpeg"), None);
        assert_eq!(jpeg(&[0xFF, 0xD8, 0xFF, 0xD9]), None);
        // Cut short inside the frame header.
        assert_eq!(jpeg(&jpeg_claiming(640, 360)[..12]), None);
    }

    #[test]
    fn an_h264_sps_gives_its_size() {
        // A 64x64 SPS (h264-reader's own test data) as a NAL unit: header 0x67, and an
        // emulation prevention byte wherever two zero bytes are followed by one up to 3.
        let sps = [
            0x67, 0x64, 0x00, 0x0A, 0xAC, 0x72, 0x84, 0x44, 0x26, 0x84, 0x00, 0x00, 0x03, 0x00,
            0x04, 0x00, 0x00, 0x03, 0x00, 0xCA, 0x3C, 0x48, 0x96, 0x11, 0x80,
        ];
        let mut unit = vec![0, 0, 0, 1];
        unit.extend_from_slice(&sps);
        unit.extend_from_slice(&[0, 0, 1, 0x65, 0x88, 0x84]);
        assert_eq!(h264(&unit), H264Sizes::Sps(vec![(64, 64)]));
        assert_eq!(h264(&[0, 0, 1, 0x65, 0x88, 0x84]), H264Sizes::NoSps);
        assert!(matches!(
            h264(&[0, 0, 1, 0x67, 0x42]),
            H264Sizes::Unreadable(_)
        ));
    }
}
