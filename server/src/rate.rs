//! A token bucket: `rate` tokens a second up to `burst`, on tokio's clock (tests can pause it).
//! Used for the per-address budget of calls without a token and the per-session send rate.

use tokio::time::Instant;

#[derive(Debug, Clone)]
/// A token bucket: `rate` tokens a second up to `burst`.
pub struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A bucket holding `burst` tokens.
    pub fn full(burst: f64) -> Self {
        Self {
            tokens: burst,
            refilled: Instant::now(),
        }
    }

    fn refill(&mut self, rate: f64, burst: f64) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(burst);
        self.refilled = now;
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: f64, burst: f64) -> bool {
        self.refill(rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely (it then says nothing a new one would not).
    pub fn is_full(&self, rate: f64, burst: f64) -> bool {
        self.tokens + self.refilled.elapsed().as_secs_f64() * rate >= burst
    }
}
