//! A token bucket with the clock passed in, so tests drive time by hand.

use std::time::{Duration, Instant};

/// `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    level: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            level: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let since = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + since * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes one token if there is one; otherwise how long until there is.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.level >= 1.0 {
            self.level -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.level) / self.rate))
        }
    }

    /// Takes one token on credit: how long the caller should wait before
    /// acting on it (zero while the bucket has tokens). Paces, never refuses.
    pub fn take_paced(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.level -= 1.0;
        if self.level >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.level / self.rate)
        }
    }

    /// True when the bucket would be full at `now`: nothing is owed.
    pub fn is_full_at(&self, now: Instant) -> bool {
        self.level + now.saturating_duration_since(self.at).as_secs_f64() * self.rate >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        for _ in 0..3 {
            b.try_take(t0).unwrap();
        }
        let wait = b.try_take(t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_ok());
        assert!(!b.is_full_at(t0 + Duration::from_millis(100)));
        assert!(b.is_full_at(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn pacing_owes_time_instead_of_refusing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 2.0, t0);
        assert_eq!(b.take_paced(t0), Duration::ZERO);
        assert_eq!(b.take_paced(t0), Duration::ZERO);
        let wait = b.take_paced(t0);
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(1));
        let more = b.take_paced(t0);
        assert!(more > wait, "the debt grows: {more:?} after {wait:?}");
    }
}
