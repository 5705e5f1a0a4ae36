//! The directory's one redb database (`names.redb`: name bindings and mailboxes), and its
//! recovery: after an I/O error (a full disk, say) redb refuses every further transaction until
//! the database is opened again, so the handle is then dropped, callers get UNAVAILABLE, and
//! `recover` (called by the sweeper) re-opens it once a test write succeeds.

use crate::Error;
use crate::error::Refusal;
use redb::{Database, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// A database that re-opens itself after a failure.
#[derive(Debug)]
pub(crate) struct Db {
    path: PathBuf,
    handle: RwLock<Option<Database>>,
    /// Why the database cannot be used, while it cannot.
    broken: Mutex<Option<String>>,
    /// Creates the tables a fresh or re-opened database needs.
    init: fn(&Database) -> Result<(), Error>,
}

/// Maps any redb error to the storage variant, keeping it as the cause.
pub(crate) fn storage(e: impl Into<redb::Error>) -> Error {
    Error::Storage(e.into())
}

fn open_db(path: &Path, init: fn(&Database) -> Result<(), Error>) -> Result<Database, Error> {
    let db = Database::create(path).map_err(|source| Error::OpenDatabase {
        path: path.to_path_buf(),
        source,
    })?;
    init(&db)?;
    Ok(db)
}

impl Db {
    pub(crate) fn open(
        path: &Path,
        init: fn(&Database) -> Result<(), Error>,
    ) -> Result<Self, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| svs_common::Error::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            handle: RwLock::new(Some(open_db(path, init)?)),
            broken: Mutex::new(None),
            init,
        })
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `op` on the open database. A failure marks the database broken (one log line) and
    /// is reported as UNAVAILABLE: the caller may retry once the disk has room again.
    pub(crate) fn with<T>(
        &self,
        op: impl FnOnce(&Database) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let handle = self.handle.read().unwrap_or_else(|p| p.into_inner());
        let Some(database) = handle.as_ref() else {
            return Err(self.unavailable());
        };
        match op(database) {
            Ok(value) => Ok(value),
            Err(e) => {
                drop(handle);
                self.mark_broken(&svs_common::error::with_causes(&e));
                Err(self.unavailable())
            }
        }
    }

    fn unavailable(&self) -> Error {
        let why = self
            .broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "it is being re-opened".into());
        Refusal::Unavailable(format!(
            "the directory cannot use its database right now ({why}); try again shortly"
        ))
        .into()
    }

    fn mark_broken(&self, why: &str) {
        let mut broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        if broken.is_none() {
            tracing::error!(path = %self.path.display(), error = %why,
                "the database failed; registrations and messages are refused and health is NOT_SERVING until it can be written again");
            *broken = Some(why.to_string());
        }
        // Drop the failed handle now: redb refuses everything after an I/O error anyway.
        if let Ok(mut handle) = self.handle.try_write() {
            handle.take();
        }
    }

    /// Whether the database works (false after a failure until `recover` succeeds).
    pub(crate) fn is_healthy(&self) -> bool {
        self.broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Re-opens a broken database and proves it writable. Returns whether it works now.
    pub(crate) fn recover(&self) -> bool {
        if self.is_healthy() {
            return true;
        }
        let mut handle = self.handle.write().unwrap_or_else(|p| p.into_inner());
        handle.take();
        match open_db(&self.path, self.init).and_then(|reopened| {
            probe_write(&reopened)?;
            Ok(reopened)
        }) {
            Ok(reopened) => {
                *handle = Some(reopened);
                *self.broken.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(path = %self.path.display(), "the database works again; serving");
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "the database still cannot be written");
                false
            }
        }
    }
}

/// Bytes the probe writes: enough that the file must grow unless the disk has room, since a
/// tiny write fits in pages the failed transaction left free and proves nothing.
const PROBE_BYTES: usize = 256 * 1024;

/// Writes and then removes a probe row: proof that the disk takes writes again.
fn probe_write(db: &Database) -> Result<(), Error> {
    const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("probe_v2");
    let write = |value: Option<&[u8]>| -> Result<(), Error> {
        let txn = db.begin_write().map_err(storage)?;
        {
            let mut table = txn.open_table(PROBE).map_err(storage)?;
            match value {
                Some(bytes) => {
                    table.insert("probe", bytes).map_err(storage)?;
                }
                None => {
                    table.remove("probe").map_err(storage)?;
                }
            }
        }
        txn.commit().map_err(storage)
    };
    write(Some(&vec![0u8; PROBE_BYTES]))?;
    write(None)
}
