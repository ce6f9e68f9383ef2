//! Counters a node keeps about its own gossip (read by benches, operators
//! and `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub rounds: AtomicU64,
    pub calls_sent: AtomicU64,
    pub calls_failed: AtomicU64,
    /// Encoded bytes of gossip requests this node sent and responses it returned.
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
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
