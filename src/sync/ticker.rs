//! The pace of a worker loop: one round per tick until cancelled.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// `while ticker.tick(&cancel).await { … }` runs a round per tick; a late
/// round delays the next rather than bunching them.
pub struct Ticker(Interval);

impl Ticker {
    pub fn new(every: Duration) -> Ticker {
        let mut i = tokio::time::interval(every);
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticker(i)
    }

    /// Waits for the next tick; false once `cancel` fires.
    pub async fn tick(&mut self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => false,
            _ = self.0.tick() => true,
        }
    }
}
