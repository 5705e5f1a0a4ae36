//! The on-disk index of a cached rendition: where each frame lies in the frames file and its
//! CRC-32, so that a frames file damaged in place is noticed before any of it is served.
//!
//! `"SVSIDX2\n" | u64 count | count × (u64 offset | u32 length | u32 crc32)`, big-endian; frames
//! lie back to back from offset 0.

const MAGIC: &[u8; 8] = b"SVSIDX2\n";
const ENTRY: usize = 16;

/// One frame's place and checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

impl Entry {
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// The entry for `frame`, appended after `previous`.
pub fn next_entry(previous: Option<&Entry>, frame: &[u8]) -> Entry {
    Entry {
        offset: previous.map_or(0, Entry::end),
        len: frame.len() as u32,
        crc: crc32fast::hash(frame),
    }
}

pub fn encode(index: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + index.len() * ENTRY);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(index.len() as u64).to_be_bytes());
    for e in index {
        out.extend_from_slice(&e.offset.to_be_bytes());
        out.extend_from_slice(&e.len.to_be_bytes());
        out.extend_from_slice(&e.crc.to_be_bytes());
    }
    out
}

/// Parses an index and checks it against a frames file of `frames_len` bytes: every entry in
/// bounds, back to back, the last ending at the end of the file. Never panics.
pub fn decode(raw: &[u8], frames_len: u64) -> Result<Vec<Entry>, String> {
    let rest = raw.strip_prefix(MAGIC).ok_or("not an index (magic)")?;
    let (count, body) = rest.split_at_checked(8).ok_or("truncated count")?;
    let count = u64::from_be_bytes(count.try_into().map_err(|_| "truncated count")?);
    let expected = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(ENTRY))
        .ok_or("entry count out of range")?;
    if body.len() != expected {
        return Err(format!(
            "{} bytes of entries for {count} frames",
            body.len()
        ));
    }
    let mut index = Vec::with_capacity(body.len() / ENTRY);
    let mut expected_offset = 0u64;
    for chunk in body.chunks_exact(ENTRY) {
        let field = |range: std::ops::Range<usize>| chunk.get(range).unwrap_or_default();
        let entry = Entry {
            offset: u64::from_be_bytes(field(0..8).try_into().map_err(|_| "short entry")?),
            len: u32::from_be_bytes(field(8..12).try_into().map_err(|_| "short entry")?),
            crc: u32::from_be_bytes(field(12..16).try_into().map_err(|_| "short entry")?),
        };
        if entry.offset != expected_offset {
            return Err(format!(
                "frame {} is not where the last one ended",
                index.len()
            ));
        }
        expected_offset = entry
            .offset
            .checked_add(u64::from(entry.len))
            .ok_or("frame length out of range")?;
        if expected_offset > frames_len {
            return Err(format!("frame {} ends past the frames file", index.len()));
        }
        index.push(entry);
    }
    if expected_offset != frames_len {
        return Err("the frames file is longer than its index says".into());
    }
    Ok(index)
}

/// The first frame whose bytes do not match their checksum, if any.
pub fn first_damaged(index: &[Entry], frames: &[u8]) -> Option<usize> {
    index.iter().position(|e| {
        let start = usize::try_from(e.offset).ok();
        let end = usize::try_from(e.end()).ok();
        match (start, end) {
            (Some(s), Some(t)) => frames.get(s..t).is_none_or(|b| crc32fast::hash(b) != e.crc),
            _ => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> (Vec<Entry>, Vec<u8>) {
        let frames: Vec<&[u8]> = vec![b"first frame", b"2", b"the third"];
        let mut index: Vec<Entry> = Vec::new();
        for f in &frames {
            let e = next_entry(index.last(), f);
            index.push(e);
        }
        (index, frames.concat())
    }

    #[test]
    fn round_trip_and_damage_found() {
        let (index, mut data) = sample();
        let raw = encode(&index);
        assert_eq!(decode(&raw, data.len() as u64).unwrap(), index);
        assert!(decode(&raw, data.len() as u64 + 1).is_err(), "longer file");
        assert!(decode(&raw, data.len() as u64 - 1).is_err(), "shorter file");
        assert_eq!(first_damaged(&index, &data), None);
        data[11] ^= 0x40; // frame 1 (the one-byte "2"), same length
        assert_eq!(first_damaged(&index, &data), Some(1));
    }

    #[test]
    fn a_count_that_overflows_is_an_error() {
        let mut raw = MAGIC.to_vec();
        raw.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode(&raw, 0).is_err());
        let mut raw = MAGIC.to_vec();
        raw.extend_from_slice(&(u64::MAX / 16 + 1).to_be_bytes());
        assert!(decode(&raw, 0).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512), len in any::<u64>()) {
            let _ = decode(&raw, len);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&raw);
            let _ = decode(&framed, len);
        }

        #[test]
        fn mutated_valid_indexes_never_panic(flip in 0usize..64, bit in 0u8..8, cut in 0usize..64) {
            let (index, data) = sample();
            let mut raw = encode(&index);
            let at = flip % raw.len();
            raw[at] ^= 1 << bit;
            raw.truncate(raw.len().saturating_sub(cut % 8));
            if let Ok(decoded) = decode(&raw, data.len() as u64) {
                let _ = first_damaged(&decoded, &data);
            }
        }
    }
}
