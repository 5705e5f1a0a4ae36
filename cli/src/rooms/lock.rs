//! One process at a time changes a device's MLS state: an exclusive lock on a file beside it.

use crate::error::CliError;
use crate::home::Home;
use std::time::Duration;

/// How long to wait for another `svs` of this name to finish with the device.
const LOCK_WAIT: Duration = Duration::from_secs(20);

/// The exclusive lock on a name's MLS state, released when dropped.
#[derive(Debug)]
pub(super) struct DeviceLock {
    _file: std::fs::File,
}

pub(super) async fn lock_device(home: &Home, name: &str) -> Result<DeviceLock, CliError> {
    let path = home.device_lock_path(name);
    crate::error::blocking(move || -> Result<DeviceLock, CliError> {
        if let Some(dir) = path.parent() {
            svs_common::identity::create_private_dir(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(DeviceLock { _file: file }),
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(CliError::Usage(format!(
                        "another svs is using this device's MLS state ({}: {e}); try again when it is done",
                        path.display()
                    )));
                }
            }
        }
    })
    .await?
}
