//! The resource plane: providers that run containers, the capacity they
//! advertise, and placement of deployments across the mesh.
//!
//! ```text
//! types      amounts, capacity, specs, deployments        (pure data)
//! validate   field-by-field spec checks, idempotency keys
//! lease      the lease a deploy asks for, and the owner's view of it
//! ledger     per-provider reservations: admission without over-commit
//! gpu        NVML inventory (and its twin), GPUs assigned by UUID
//! provider   the Provider trait
//! memory     in-memory twin of a provider
//! docker     the Docker engine through bollard
//! kubernetes a cluster through kube
//! ```
//!
//! Every provider does its own admission: it reserves under its lock before
//! creating anything and releases on failure (reserve, then bind). The
//! manager ranks candidates from capacity cached through gossip and simply
//! tries the next one when an owner refuses.

pub mod docker;
pub mod error;
pub mod gpu;
pub mod kubernetes;
pub mod labels;
pub mod lease;
pub mod ledger;
pub mod memory;
mod memory_build;
pub mod priority;
pub mod provider;
pub mod quantity;
pub mod service;
pub mod target;
pub mod types;
pub mod validate;
pub mod wire;

pub use error::ResourceError;
pub use lease::{LeaseState, LeaseTerms, LeaseView};
pub use memory_build::BuiltImage;
pub use priority::{PreemptionPolicy, Priority, PriorityClass};
pub use provider::{BuildLog, ImageBuilder, LogOptions, LogStream, ProgressSink, Provider};
pub use quantity::Quantity;
pub use service::{ReplicaOf, Spread, SpreadKey};
pub use target::ProviderTarget;
pub use types::*;
