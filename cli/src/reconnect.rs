//! Staying connected: (re)registering plus subscribing, with `Backoff` between attempts, until
//! it works or fails for a reason retrying cannot cure.

use crate::backoff::Backoff;
use crate::error::CliError;
use crate::session::{ConnectOptions, Session};
use std::time::Duration;
use svs_common::proto::directory::Event;
use tonic::Streaming;

/// A session with its event stream.
pub struct Connected {
    pub session: Session,
    pub stream: Streaming<Event>,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected").finish_non_exhaustive()
    }
}

/// Registers and subscribes; lost connections and "not now" refusals (a directory busy with
/// everyone reconnecting at once) are retried with backoff, calling `waiting` with each failure
/// before the wait. Other errors (a refused name, a bad key) end it.
pub async fn connect(
    options: &ConnectOptions,
    mut waiting: impl FnMut(&CliError, Duration),
) -> Result<Connected, CliError> {
    let mut backoff = Backoff::default();
    loop {
        let attempt = async {
            let mut session = Session::register(options).await?;
            let stream = session.subscribe().await?;
            Ok::<_, CliError>(Connected { session, stream })
        }
        .await;
        match attempt {
            Ok(connected) => return Ok(connected),
            Err(e) if e.is_worth_retrying() => {
                let delay = backoff.next_delay();
                waiting(&e, delay);
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}
