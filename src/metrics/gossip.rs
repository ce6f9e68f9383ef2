//! Counters a node keeps about its own gossip (read by benches, operators
//! and `/metrics`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Peers whose round-trip times are kept, at most (one entry each).
const MAX_ROUND_TRIPS: usize = 10_000;

#[derive(Debug, Default)]
pub struct Stats {
    pub rounds: AtomicU64,
    pub calls_sent: AtomicU64,
    pub calls_failed: AtomicU64,
    /// Encoded bytes of gossip requests this node sent and responses it returned.
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Round-trip times of answered gossip calls, by peer address.
    round_trips: Mutex<HashMap<String, RoundTrips>>,
}

/// Samples kept per peer for the p99.
const RTT_SAMPLES: usize = 128;

/// One peer's round trips: smoothed, and the last [`RTT_SAMPLES`].
#[derive(Debug, Default)]
struct RoundTrips {
    smoothed: Duration,
    recent: std::collections::VecDeque<Duration>,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub rounds: u64,
    pub calls_sent: u64,
    pub calls_failed: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Folds one answered call's time into the peer's smoothed figure
    /// (weight 1/8, as TCP's SRTT).
    pub fn round_trip(&self, addr: &str, took: Duration) {
        let mut all = self.round_trips.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rtt) = all.get_mut(addr) {
            rtt.smoothed = (rtt.smoothed * 7 + took) / 8;
            if rtt.recent.len() == RTT_SAMPLES {
                rtt.recent.pop_front();
            }
            rtt.recent.push_back(took);
        } else if all.len() < MAX_ROUND_TRIPS {
            all.insert(
                addr.to_string(),
                RoundTrips {
                    smoothed: took,
                    recent: [took].into(),
                },
            );
        }
    }

    /// The p99 of the last 128 round trips to a peer, if it ever answered.
    pub fn rtt_p99(&self, addr: &str) -> Option<Duration> {
        let all = self.round_trips.lock().unwrap_or_else(|e| e.into_inner());
        let mut recent: Vec<Duration> = all.get(addr)?.recent.iter().copied().collect();
        recent.sort_unstable();
        let at = (recent.len() * 99).div_ceil(100).max(1) - 1;
        recent.get(at).copied()
    }

    /// The smoothed round-trip time to a peer, if it ever answered.
    pub fn rtt(&self, addr: &str) -> Option<Duration> {
        let all = self.round_trips.lock().unwrap_or_else(|e| e.into_inner());
        all.get(addr).map(|r| r.smoothed)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            rounds: get(&self.rounds),
            calls_sent: get(&self.calls_sent),
            calls_failed: get(&self.calls_failed),
            bytes_sent: get(&self.bytes_sent),
            bytes_received: get(&self.bytes_received),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_are_smoothed() {
        let s = Stats::default();
        assert_eq!(s.rtt("a:1"), None);
        s.round_trip("a:1", Duration::from_millis(8));
        assert_eq!(s.rtt("a:1"), Some(Duration::from_millis(8)));
        s.round_trip("a:1", Duration::from_millis(16));
        assert_eq!(s.rtt("a:1"), Some(Duration::from_millis(9)));
    }

    #[test]
    fn the_p99_is_over_the_last_samples() {
        let s = Stats::default();
        assert_eq!(s.rtt_p99("a:1"), None);
        for ms in 1..=200u64 {
            s.round_trip("a:1", Duration::from_millis(ms));
        }
        // The last 128 are 73..=200; their p99 is the 127th smallest.
        assert_eq!(s.rtt_p99("a:1"), Some(Duration::from_millis(199)));
        s.round_trip("b:1", Duration::from_millis(5));
        assert_eq!(s.rtt_p99("b:1"), Some(Duration::from_millis(5)));
    }
}
