//! Placement across the mesh, split by stage the way a scheduler is:
//!
//! ```text
//! feasible   filters: fits, labels, GPU model, health, a pinned provider
//! rank       strategies order what is feasible, over an index of the view
//! registry   this node's providers, what it advertises, the cached index
//! place      the loop: rank, record the intent, deploy, try the next
//! book       durable deployment records and the lookups that find them
//! pending    the home's queue of deploys that wait for capacity
//! leases     the leases this node keeps as an owner, durable, fenced
//! leased     this node's providers wrapped so every path keeps the leases
//! call       CallProvider: the proxy to other nodes' providers, and serving
//! directory  where every deployment in the mesh lives: a ring of locators
//! manager    assembles the stages; answers status, logs, stop and listing;
//!            its queue worker unblocks waiting deploys when capacity grows,
//!            its lease worker stops what ran out of lease
//! ```

mod book;
pub mod call;
pub mod directory;
pub mod feasible;
mod leased;
pub mod leases;
pub mod manager;
mod pending;
mod place;
mod place_preempt;
mod place_spread;
pub mod preempting;
pub mod rank;
pub mod registry;
pub mod reserving;
pub mod spread;
#[cfg(test)]
mod tests;

pub use crate::resource::Candidate;
pub use call::proxy::RemoteProvider;
pub use call::{ProviderCaller, ProviderMethod};
pub use feasible::Need;
pub use manager::{Manager, PlaceOptions, Placed};
pub use pending::QueueEntry;
pub use rank::{Index, Strategy};
pub use registry::Discovery;
