//! Safety numbers: 60 digits two people compare (read aloud or as a QR code) to check that
//! each has the other's identity key, computed the way Signal computes its safety numbers
//! (libsignal's displayable fingerprint, version 0) over svs's names and SPKI keys.
//! docs/protocol.md gives the exact bytes.

use sha2::{Digest, Sha512};

/// Version prefix of the hash input.
pub const SAFETY_NUMBER_VERSION: u16 = 0;
/// Hash iterations per half (as Signal).
pub const SAFETY_NUMBER_ITERATIONS: usize = 5200;

/// One person's 30 digits: `h0 = SHA-512(u16 version || spki || canonical name)`, then 5200
/// times `h = SHA-512(h || spki)`; the first 30 bytes as six 5-byte big-endian numbers, each
/// mod 100000 written as 5 digits.
pub fn half(name: &str, spki: &[u8]) -> String {
    let mut hasher = Sha512::new();
    hasher.update(SAFETY_NUMBER_VERSION.to_be_bytes());
    hasher.update(spki);
    hasher.update(crate::names::canonical(name).as_bytes());
    let mut hash = hasher.finalize();
    for _ in 0..SAFETY_NUMBER_ITERATIONS {
        let mut hasher = Sha512::new();
        hasher.update(hash);
        hasher.update(spki);
        hash = hasher.finalize();
    }
    hash[..30]
        .chunks(5)
        .map(|chunk| {
            let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", value % 100_000)
        })
        .collect()
}

/// Ten digits for a room's members to compare: the first 10 bytes of the group's epoch
/// authenticator (MLS, RFC 9420 §8.7: equal only for members with the same group state) as two
/// 5-byte big-endian numbers, each mod 100000, written `12345 67890`.
pub fn room_code(epoch_authenticator: &[u8]) -> String {
    epoch_authenticator
        .chunks(5)
        .take(2)
        .map(|chunk| {
            let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", value % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The safety number of two people: both halves, the smaller first, so both compute the same
/// 60 digits.
pub fn safety_number(a_name: &str, a_spki: &[u8], b_name: &str, b_spki: &[u8]) -> String {
    let (a, b) = (half(a_name, a_spki), half(b_name, b_spki));
    if a <= b { a + &b } else { b + &a }
}

/// The digits in twelve groups of five, four groups a line.
pub fn display(number: &str) -> String {
    let groups: Vec<&str> = (0..number.len())
        .step_by(5)
        .map(|i| &number[i..(i + 5).min(number.len())])
        .collect();
    groups
        .chunks(4)
        .map(|line| line.join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_code_is_ten_digits_of_the_authenticator() {
        // 0x0000000001 = 1; 0xffffffffff = 1099511627775 → 27775.
        let mut authenticator = vec![0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff];
        authenticator.extend([7; 22]);
        assert_eq!(room_code(&authenticator), "00001 27775");
    }

    #[test]
    fn both_sides_compute_the_same_number_and_it_changes_with_either_key() {
        let number = safety_number("alice", b"key-a", "bob", b"key-b");
        assert_eq!(number.len(), 60);
        assert!(number.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(number, safety_number("bob", b"key-b", "Alice", b"key-a"));
        assert_ne!(number, safety_number("alice", b"key-a", "bob", b"key-c"));
        assert_ne!(number, safety_number("alice", b"key-x", "bob", b"key-b"));
        assert_ne!(number, safety_number("alice", b"key-a", "carol", b"key-b"));
        assert_eq!(display(&number).lines().count(), 3);
        assert_eq!(display(&number).split_whitespace().count(), 12);
    }

    #[test]
    fn the_published_vector_holds() {
        // docs/protocol.md, Safety numbers: the half of "alice" with the 3-byte key 01 02 03.
        assert_eq!(half("alice", &[1, 2, 3]), VECTOR_HALF);
    }

    const VECTOR_HALF: &str = "210076336453674665650403704111";
}
