//! A device's MLS state on disk: openmls's key-value storage plus svs's own record of the
//! device, written whole through a temporary file and a rename (mode 0600) after every change,
//! so a crash leaves either the old state or the new one, never half of each. Keys openmls
//! deletes (consumed key packages, used message keys, past epochs) are gone from the file at
//! the next write.

use crate::Error;
use openmls_rust_crypto::{MemoryStorage, RustCrypto};
use openmls_traits::OpenMlsProvider;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use svs_common::wire::{Reader, Writer};

/// Magic and version at the start of a state file.
const STATE_MAGIC: &[u8] = b"SVS-MLS-STATE\x01";

/// openmls's crypto with a storage svs can write to disk.
#[derive(Debug, Default)]
pub(crate) struct Provider {
    crypto: RustCrypto,
    storage: MemoryStorage,
}

impl OpenMlsProvider for Provider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}

impl Provider {
    /// Writes `record` (svs's own) and the whole storage to `path`, atomically.
    pub(crate) fn save(&self, path: &Path, record: &[u8]) -> Result<(), Error> {
        let values = self
            .storage
            .values
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut entries: Vec<_> = values.iter().collect();
        entries.sort();
        let mut writer = Writer::new("device state");
        writer
            .raw(STATE_MAGIC)
            .long(record)
            .u64(entries.len() as u64);
        for (key, value) in entries {
            writer.long(key).long(value);
        }
        let bytes = zeroize::Zeroizing::new(writer.finish()?);
        svs_common::identity::write_secret_file(path, &bytes)?;
        Ok(())
    }

    /// Reads a state file: svs's record and a provider holding the storage.
    pub(crate) fn load(path: &Path) -> Result<(Vec<u8>, Self), Error> {
        let display = path.display().to_string();
        let meta = std::fs::metadata(path)
            .map_err(|e| svs_common::Error::io(format!("reading {display}"), e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(svs_common::Error::InsecureFile {
                path: display,
                mode,
            }
            .into());
        }
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| svs_common::Error::io(format!("reading {display}"), e))?,
        );
        let damaged = |e: svs_common::Error| Error::DamagedState {
            path: display.clone(),
            detail: e.to_string(),
        };
        let mut reader = Reader::new("device state", &bytes);
        reader.expect(STATE_MAGIC).map_err(damaged)?;
        let record = reader.long().map_err(damaged)?.to_vec();
        let count = reader.u64().map_err(damaged)?;
        let mut values = HashMap::new();
        for _ in 0..count {
            let key = reader.long().map_err(damaged)?.to_vec();
            let value = reader.long().map_err(damaged)?.to_vec();
            values.insert(key, value);
        }
        reader.finish().map_err(damaged)?;
        let provider = Self::default();
        *provider
            .storage
            .values
            .write()
            .unwrap_or_else(|p| p.into_inner()) = values;
        Ok((record, provider))
    }
}
