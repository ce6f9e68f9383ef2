//! Small concurrency vocabulary shared by the resource plane, placement,
//! security and the API surfaces: one lock per key, a token bucket, a
//! worker loop's ticker, and a poison-tolerant mutex lock.

mod key_lock;
mod ticker;
mod token_bucket;

pub use key_lock::{KeyGuard, KeyLocks};
pub use ticker::Ticker;
pub use token_bucket::TokenBucket;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m` even if a holder panicked: the state behind these mutexes is
/// kept consistent between statements, so a panic leaves nothing half-done.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
