//! Placement across the mesh: the resource manager ranks this node's own
//! providers and the ones other nodes advertise, and deploys through the
//! best one that admits the request.

pub mod manager;
pub mod proxy;
pub mod rank;
#[cfg(test)]
mod tests;

pub use manager::{Discovery, Manager, Placed};
pub use proxy::{ProviderCaller, RemoteProvider};
pub use rank::{Candidate, Index, Need, Strategy};
