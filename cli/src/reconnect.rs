//! Staying connected: exponential backoff with full jitter between attempts (so a restarted
//! directory is not hit by every client at once), and (re)registering plus subscribing until it
//! works or fails for a reason retrying cannot cure.

use crate::error::CliError;
use crate::session::{ConnectOptions, Session};
use std::time::Duration;
use svs_common::proto::directory::Event;
use tonic::Streaming;

/// First wait after a failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(250);
/// Longest wait between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(15);

/// Delays that double from `FIRST_DELAY` up to `MAX_DELAY`, each drawn uniformly from
/// [delay/2, delay].
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = FIRST_DELAY
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(MAX_DELAY);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        for (n, d) in delays.iter().enumerate() {
            let ceiling = FIRST_DELAY.saturating_mul(1 << n).min(MAX_DELAY);
            assert!(*d >= ceiling / 2 && *d <= ceiling, "attempt {n}: {d:?}");
        }
        assert!(delays[11] >= MAX_DELAY / 2);
    }
}
