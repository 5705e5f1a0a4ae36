//! Waiting between attempts: exponential backoff with full jitter, so a restarted service is not
//! hit by every client at once. Used by reconnecting, registering and resuming a playback.

use std::time::Duration;

/// First wait after a failure.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(250);
/// Longest wait between attempts.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(15);

/// Delays that double from `FIRST_DELAY` up to `MAX_DELAY`, each drawn uniformly from
/// [delay/2, delay].
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = FIRST_DELAY
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(MAX_DELAY);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
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
