//! RSA identity keys: generation, validation, fingerprints and 0600 PEM files.

use crate::Error;
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey, PublicKey};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Default identity key size in bits.
pub const DEFAULT_KEY_BITS: usize = 3072;
/// Smallest accepted key size in bits.
pub const MIN_KEY_BITS: usize = 2048;
/// Largest accepted key size in bits.
pub const MAX_KEY_BITS: usize = 4096;

/// SHA-256 of a key's SubjectPublicKeyInfo DER.
pub type Fingerprint = [u8; 32];

/// The operating system's cryptographic RNG.
pub fn os_rng() -> rand::rngs::SysRng {
    rand::rngs::SysRng
}

/// `N` bytes from the operating system's RNG (ids, nonces, keys of services).
pub fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut buf = [0u8; N];
    rand::TryRng::try_fill_bytes(&mut os_rng(), &mut buf)
        .map_err(|_| Error::Crypto("the operating system RNG failed".into()))?;
    Ok(buf)
}

/// Generates a new key with e = 65537.
pub fn generate(bits: usize) -> Result<PrivateKey, Error> {
    if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
        return Err(Error::InvalidKey(format!(
            "key size {bits} is outside {MIN_KEY_BITS}..={MAX_KEY_BITS} bits"
        )));
    }
    PrivateKey::new(&mut os_rng(), bits).map_err(|e| Error::Crypto(e.to_string()))
}

/// Parses a DER SubjectPublicKeyInfo and checks size (2048 to 4096 bits) and exponent (65537).
pub fn parse_public_key(der: &[u8]) -> Result<PublicKey, Error> {
    let key = PublicKey::from_public_key_der(der)
        .map_err(|e| Error::InvalidKey(format!("not an RSA SubjectPublicKeyInfo in DER: {e}")))?;
    check_public_key(&key)?;
    Ok(key)
}

/// Checks size and exponent of a public key.
pub fn check_public_key(key: &PublicKey) -> Result<(), Error> {
    let bits = key.n().bit_width() as usize;
    if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
        return Err(Error::InvalidKey(format!(
            "the key has {bits} bits; accepted are {MIN_KEY_BITS} to {MAX_KEY_BITS}"
        )));
    }
    let e = key.e_bytes();
    let e = e
        .iter()
        .skip_while(|b| **b == 0)
        .copied()
        .collect::<Vec<_>>();
    if e != [1, 0, 1] {
        return Err(Error::InvalidKey(
            "the public exponent must be 65537".to_string(),
        ));
    }
    Ok(())
}

/// DER SubjectPublicKeyInfo of a public key.
pub fn public_key_der(key: &PublicKey) -> Vec<u8> {
    key.to_public_key_der()
        .expect("an RSA public key always encodes")
        .into_vec()
}

/// SHA-256 of the SPKI DER.
pub fn fingerprint_der(spki_der: &[u8]) -> Fingerprint {
    Sha256::digest(spki_der).into()
}

/// Fingerprint of a public key.
pub fn fingerprint(key: &PublicKey) -> Fingerprint {
    fingerprint_der(&public_key_der(key))
}

/// Lower-case hex, as carried in protocol messages.
pub fn fingerprint_hex(fpr: &Fingerprint) -> String {
    hex::encode(fpr)
}

/// Hex in groups of four, for people to compare: `3f2a 91c0 …`.
pub fn fingerprint_display(fpr: &Fingerprint) -> String {
    let hex = hex::encode(fpr);
    hex.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("hex is ASCII"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes a private key as PKCS#8 PEM, readable by the owner only (0600), atomically.
pub fn write_private_key(path: &Path, key: &PrivateKey) -> Result<(), Error> {
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| Error::Crypto(e.to_string()))?;
    write_secret_file(path, pem.as_bytes())
}

/// Writes a file with mode 0600 through a temporary file and a rename, creating the directory
/// (mode 0700) if needed.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("writing {}", path.display()), source)
    })
}

/// Creates a directory readable by the owner only (0700) if it does not exist.
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::io(format!("creating {}", dir.display()), source))
}

/// Reads a PKCS#8 PEM private key, refusing files that others can read.
pub fn read_private_key(path: &Path) -> Result<PrivateKey, Error> {
    let meta = std::fs::metadata(path)
        .map_err(|source| Error::io(format!("reading {}", path.display()), source))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecureFile {
            path: path.display().to_string(),
            mode,
        });
    }
    let pem = std::fs::read_to_string(path)
        .map_err(|source| Error::io(format!("reading {}", path.display()), source))?;
    PrivateKey::from_pkcs8_pem(&pem)
        .map_err(|e| Error::InvalidKey(format!("{} is not a PKCS#8 RSA key: {e}", path.display())))
}

/// Loads the key at `path`, or generates one of `bits` bits and stores it there.
/// Returns the key and whether it was newly generated.
pub fn load_or_generate(path: &Path, bits: usize) -> Result<(PrivateKey, bool), Error> {
    if path.exists() {
        return Ok((read_private_key(path)?, false));
    }
    let key = generate(bits)?;
    write_private_key(path, &key)?;
    Ok((key, true))
}

/// Writes a public key as SPKI PEM (world-readable: it is public).
pub fn write_public_key(path: &Path, key: &PublicKey) -> Result<(), Error> {
    let pem = key
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::Crypto(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|source| Error::io(format!("creating {}", dir.display()), source))?;
    }
    std::fs::write(path, pem)
        .map_err(|source| Error::io(format!("writing {}", path.display()), source))
}

/// Reads an SPKI PEM public key.
pub fn read_public_key(path: &Path) -> Result<PublicKey, Error> {
    let pem = std::fs::read_to_string(path)
        .map_err(|source| Error::io(format!("reading {}", path.display()), source))?;
    let key = PublicKey::from_public_key_pem(&pem).map_err(|e| {
        Error::InvalidKey(format!(
            "{} is not an RSA public key in PEM: {e}",
            path.display()
        ))
    })?;
    check_public_key(&key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/alice.pem");
        let (key, fresh) = load_or_generate(&path, 2048).unwrap();
        assert!(fresh);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, fresh) = load_or_generate(&path, 2048).unwrap();
        assert!(!fresh);
        assert_eq!(
            fingerprint(&key.to_public_key()),
            fingerprint(&again.to_public_key())
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_private_key(&path),
            Err(Error::InsecureFile { .. })
        ));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(generate(1024).is_err());
        let key = PrivateKey::new(&mut os_rng(), 1024).unwrap();
        let der = public_key_der(&key.to_public_key());
        let err = parse_public_key(&der).unwrap_err().to_string();
        assert!(err.contains("1024 bits"), "{err}");
    }

    #[test]
    fn display_groups_hex() {
        let shown = fingerprint_display(&[0xab; 32]);
        assert_eq!(shown.split(' ').count(), 16);
        assert!(shown.starts_with("abab abab"));
    }
}
