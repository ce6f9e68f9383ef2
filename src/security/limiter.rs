//! Token-bucket rate limits keyed by caller (a peer or a token).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::TokenBucket;

/// Keys remembered at most; idle full buckets are dropped first, so a
/// stream of new source addresses cannot grow memory without bound.
const MAX_KEYS: usize = 10_000;

pub struct Limiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

impl Limiter {
    pub fn new(rate: f64, burst: f64) -> Limiter {
        Limiter {
            rate,
            burst,
            buckets: Mutex::default(),
        }
    }

    /// Takes one call from `key`'s bucket; on refusal, how long until one is free.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| !b.is_full_at(now));
            if buckets.len() >= MAX_KEYS {
                // Every bucket is busy: refuse newcomers rather than forget a busy caller.
                return Err(Duration::from_secs_f64(1.0 / self.rate));
            }
        }
        buckets
            .entry(key.to_string())
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now))
            .try_take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_keys_are_independent() {
        let l = Limiter::new(10.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.take("a", t0).unwrap();
        }
        let wait = l.take("a", t0).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        l.take("b", t0).unwrap();
        l.take("a", t0 + Duration::from_millis(100)).unwrap();
        assert!(l.take("a", t0 + Duration::from_millis(100)).is_err());
    }
}
