//! The on-disk form of one segment: its frames and a checksum for each, so that a file damaged in
//! place, or torn by a crash, is noticed before any of it is served.
//!
//! ```text
//! "SVSSEG1\n" | u64 first_frame | u32 count | count × (u32 length | u32 crc32 | u32 flags)
//!            | u32 crc32 of every byte before it | the frames, back to back
//! ```
//! Big-endian. `flags` bit 0 marks a keyframe (every JPEG is one; an H.264 segment starts with
//! one); the other bits are zero. The file ends where the last frame ends.

use std::ops::Range;

const MAGIC: &[u8; 8] = b"SVSSEG1\n";
const FIXED: usize = 8 + 8 + 4;
const ENTRY: usize = 12;
/// Flag bit: the frame decodes on its own.
pub(crate) const KEYFRAME: u32 = 1;

/// The header (everything before the frames) of a segment holding `frames`, where frame `n` is
/// a keyframe if `is_keyframe(n)`.
pub(crate) fn header<F: AsRef<[u8]>>(
    first_frame: u64,
    frames: &[F],
    is_keyframe: impl Fn(usize) -> bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED + frames.len() * ENTRY + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&first_frame.to_be_bytes());
    out.extend_from_slice(&(frames.len() as u32).to_be_bytes());
    for (n, frame) in frames.iter().enumerate() {
        let frame = frame.as_ref();
        let flags = if is_keyframe(n) { KEYFRAME } else { 0 };
        out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(frame).to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Why a segment file cannot be served: it is then deleted and encoded again.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Damage {
    #[error("not a segment file (magic)")]
    NotASegment,
    #[error("truncated header")]
    TruncatedHeader,
    #[error("truncated frame table")]
    TruncatedTable,
    #[error("the header does not match its checksum")]
    HeaderChecksum,
    #[error("frame {frame} has unknown flags {flags:#x}")]
    UnknownFlags { frame: usize, flags: u32 },
    #[error("frame {0} ends past the end of the file")]
    FramePastEnd(usize),
    #[error("frame {0} does not match its checksum")]
    FrameChecksum(usize),
    #[error("the file is longer than its frames")]
    TrailingBytes,
    #[error("it starts at frame {found} instead of {expected}")]
    WrongStart { found: u64, expected: u64 },
    #[error("it holds {0} frames")]
    WrongCount(u64),
    #[error("frame {0} is marked as the wrong kind of frame")]
    WrongKind(usize),
}

/// A verified segment: where each frame lies in the file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Verified {
    pub first_frame: u64,
    pub frames: Vec<Range<usize>>,
    /// Which frames are keyframes.
    pub keyframes: Vec<bool>,
}

fn be_u32(raw: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(raw.get(at..at + 4)?.try_into().ok()?))
}

/// Parses a whole segment file and checks everything: header checksum, flags, every frame in
/// bounds and matching its checksum, nothing after the last frame. Never panics.
pub(crate) fn verify(raw: &[u8]) -> Result<Verified, Damage> {
    if raw.get(..8) != Some(MAGIC.as_slice()) {
        return Err(Damage::NotASegment);
    }
    let first_frame = raw
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(Damage::TruncatedHeader)?;
    let count = be_u32(raw, 16).ok_or(Damage::TruncatedHeader)? as usize;
    let table_end = count
        .checked_mul(ENTRY)
        .and_then(|t| t.checked_add(FIXED))
        .filter(|end| end + 4 <= raw.len())
        .ok_or(Damage::TruncatedTable)?;
    let stored_crc = be_u32(raw, table_end).ok_or(Damage::TruncatedTable)?;
    if crc32fast::hash(&raw[..table_end]) != stored_crc {
        return Err(Damage::HeaderChecksum);
    }
    let mut frames = Vec::with_capacity(count);
    let mut keyframes = Vec::with_capacity(count);
    let mut at = table_end + 4;
    for n in 0..count {
        let entry = FIXED + n * ENTRY;
        let (len, crc, flags) = match (
            be_u32(raw, entry),
            be_u32(raw, entry + 4),
            be_u32(raw, entry + 8),
        ) {
            (Some(len), Some(crc), Some(flags)) => (len as usize, crc, flags),
            _ => return Err(Damage::TruncatedTable),
        };
        if flags & !KEYFRAME != 0 {
            return Err(Damage::UnknownFlags { frame: n, flags });
        }
        let end = at
            .checked_add(len)
            .filter(|end| *end <= raw.len())
            .ok_or(Damage::FramePastEnd(n))?;
        if crc32fast::hash(&raw[at..end]) != crc {
            return Err(Damage::FrameChecksum(n));
        }
        frames.push(at..end);
        keyframes.push(flags & KEYFRAME != 0);
        at = end;
    }
    if at != raw.len() {
        return Err(Damage::TrailingBytes);
    }
    Ok(Verified {
        first_frame,
        frames,
        keyframes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let frames: [&[u8]; 3] = [b"first frame", b"2", b"the third"];
        let mut file = header(120, &frames, |n| n != 1);
        for f in frames {
            file.extend_from_slice(f);
        }
        file
    }

    #[test]
    fn round_trip_and_damage_found() {
        let file = sample();
        let verified = verify(&file).unwrap();
        assert_eq!(verified.first_frame, 120);
        let frames: Vec<&[u8]> = verified.frames.iter().map(|r| &file[r.clone()]).collect();
        assert_eq!(frames, [&b"first frame"[..], b"2", b"the third"]);
        assert_eq!(verified.keyframes, [true, false, true]);

        let payload = file.len() - 9 - 1;
        let mut damaged = file.clone();
        damaged[payload] ^= 0x40; // frame 1, the one-byte "2", same length
        assert_eq!(verify(&damaged).unwrap_err(), Damage::FrameChecksum(1));
        let mut header_damaged = file.clone();
        header_damaged[9] ^= 1;
        assert_eq!(verify(&header_damaged).unwrap_err(), Damage::HeaderChecksum);
        assert!(verify(&file[..file.len() - 1]).is_err(), "torn");
        let mut longer = file.clone();
        longer.push(0);
        assert!(verify(&longer).is_err(), "longer");
    }

    #[test]
    fn a_count_that_overflows_is_an_error() {
        let mut raw = MAGIC.to_vec();
        raw.extend_from_slice(&0u64.to_be_bytes());
        raw.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(verify(&raw).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = verify(&raw);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&raw);
            let _ = verify(&framed);
        }

        #[test]
        fn any_flipped_bit_or_cut_is_caught(flip in 0usize..4096, bit in 0u8..8, cut in 0usize..8) {
            let mut raw = sample();
            let at = flip % raw.len();
            raw[at] ^= 1 << bit;
            raw.truncate(raw.len() - cut);
            prop_assert!(verify(&raw).is_err());
        }
    }
}
