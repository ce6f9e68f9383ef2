//! Small concurrency vocabulary shared by the resource plane, placement,
//! security and the API surfaces: one lock per key, and a token bucket.

mod key_lock;
mod token_bucket;

pub use key_lock::{KeyGuard, KeyLocks};
pub use token_bucket::TokenBucket;
