//! The workload lifecycle, sans-IO: state machines fed with events and the
//! time, driven by one worker task each (see `placement`), so they can be
//! simulated and property-tested like the gossip core.
//!
//! - [`priority`]: `interactive` before `batch`, then a value, then age;
//! - [`queue`]: a home's pending deploys, and which to try when capacity grows;
//! - [`lease`]: a deployment's lease on its owner: grant, renew, release, expire;
//! - [`preemption`]: which lower-priority work an owner evicts, and no more.

pub mod lease;
pub mod preemption;
pub mod priority;
pub mod queue;
