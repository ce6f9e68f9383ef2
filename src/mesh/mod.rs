//! Membership and provider discovery by gossip.
//!
//! - [`record`]: member records, their ordering, stable hashing.
//! - [`view`]: the member table with an incrementally kept hash.
//! - [`core`]: the sans-IO protocol state machine ([`Mesh`]).
//! - [`intern`]: sharing of immutable records between cores.
//! - [`sim`]: a deterministic in-process simulator of many cores.

pub mod core;
pub mod intern;
pub mod record;
pub mod sim;
pub mod view;

pub use self::core::{Call, Exchange, Identity, Mesh, MeshConfig, Reply, Target};
pub use self::record::{Millis, Status};

#[cfg(test)]
mod tests;
