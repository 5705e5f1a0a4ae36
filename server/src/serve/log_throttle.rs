//! At most one log line per interval for events an attacker can repeat at will (refused
//! connections, calls over a rate), with a count of the lines left out.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
/// Lets a repeated log line through at most once per period.
pub struct LogThrottle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    /// At most one line per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were left out since the last
    /// one; `None` when this one is left out.
    pub fn check(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, skipped) = &mut *state;
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            *skipped += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_interval_with_the_count_left_out() {
        let throttle = LogThrottle::new(Duration::from_secs(5));
        assert_eq!(throttle.check(), Some(0));
        assert!((0..100).all(|_| throttle.check().is_none()));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(throttle.check(), Some(100));
    }
}
