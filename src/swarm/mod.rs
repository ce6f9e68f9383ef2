//! Swarm groups, resource pools and what a node says of itself (models,
//! remote access): the LAN-swarm half of the mesh (seed 000).
//!
//! # Design note
//!
//! **Everything is owner-written gossip.** A node's models, the groups it
//! joined, the rosters it knows and the pools it carries travel in its
//! provider set's `NodeMeta` (`proto/peer.proto`). They converge like the
//! set, cost nothing while unchanged (the view hash covers them), and
//! disappear with the member.
//!
//! **Groups.** Creating a group is joining it first, with a maximum size.
//! Joining checks the size against the members this node sees. Two joins
//! racing on two nodes can both pass; once both are seen, every node ranks
//! the members the same way (those on the roster first, then by join time
//! and id, `groups::admitted`), the leader writes only the first
//! `max_members` into the roster, and a member ranked beyond withdraws on
//! its own (logged and audited as `swarm.group.withdraw`).
//!
//! **A leader without an election protocol** (Akka Cluster's way). The
//! leader is a deterministic function of the converged view and the
//! group's *roster*, the member list its leader last wrote:
//! - the incumbent keeps office while it is a live member;
//! - otherwise the oldest alive member takes office (joined first, then the
//!   lowest id), once no member is suspected. It writes a roster with a
//!   higher epoch and term, and every member carries the newest roster it
//!   has seen (higher term first, then epoch), so the roster outlives its
//!   writer and a successor's roster wins over epochs its side never saw;
//! - **keep-majority** (Akka's split-brain resolver): a side of a partition
//!   that reaches at most half of the roster's members has no leader (an
//!   exact half keeps it only with the roster's lowest id). A suspected
//!   member counts as reached until it is declared dead, as a suspected
//!   incumbent keeps office, so a passing suspicion costs no leader. Members who
//!   joined since the roster was written count as well, so a leader that
//!   dies before writing them in strands nobody. Members that left the
//!   group or the mesh are not counted. A join that races a partition can
//!   give the joiner's side a majority of what it knows; both sides may
//!   then lead for a while, which is harmless (see below). A leader shrinks the
//!   roster only once the view is converged, so a minority never shrinks
//!   it. When a leader dies, the next one takes office one gossip interval
//!   (and one step) after the death is declared: within the detection time
//!   plus one round. That patience matters after a heal, when the cut-off
//!   side's death reports reach the majority a moment before the leader's
//!   refutation does; without it leadership would move for nothing.
//!
//! **What the leader decides, and why two leaders are harmless.** A deploy
//! with `group: NAME` is placed only on the members' providers. The leader
//! orders these deploys: a member forwards a group deploy to the leader,
//! which places it through its own queue of Lifecycle I (priority classes,
//! then priority, then arrival). Safety never rests on leadership. Owners
//! admit every placement under their own lock, so two leaders during a
//! detection window (or a stale view) can at worst order two queues
//! independently; they can never over-commit a provider. Leadership is for
//! ordering and fairness only.
//!
//! **Pools** have no owner: every node carries every pool, and the newer
//! record wins (`pools.rs`). A pool therefore survives the node that
//! created it. A pool lists node ids or a provider label selector.
//! Deploys with `pool: NAME` are matched through the `iarnet.pool.NAME`
//! label that each node puts on its own providers' candidates.

pub mod groups;
pub mod pools;
pub mod sim;
pub mod state;

#[cfg(test)]
mod sim_tests;

pub use groups::{GroupState, MemberState, Peer};
pub use state::Swarm;

use std::fmt;

/// Why a swarm request was refused; each names what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwarmError {
    Invalid {
        field: String,
        why: String,
    },
    NotFound(String),
    AlreadyExists(String),
    /// A join over the group's maximum.
    Full(String),
    /// The group has no leader now (no majority).
    NoLeader(String),
}

impl SwarmError {
    pub fn invalid(field: &str, why: impl Into<String>) -> SwarmError {
        SwarmError::Invalid {
            field: field.to_string(),
            why: why.into(),
        }
    }
}

impl fmt::Display for SwarmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwarmError::Invalid { field, why } => write!(f, "invalid {field}: {why}"),
            SwarmError::NotFound(m)
            | SwarmError::AlreadyExists(m)
            | SwarmError::Full(m)
            | SwarmError::NoLeader(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for SwarmError {}

impl From<SwarmError> for tonic::Status {
    fn from(e: SwarmError) -> tonic::Status {
        let m = e.to_string();
        match e {
            SwarmError::Invalid { .. } => tonic::Status::invalid_argument(m),
            SwarmError::NotFound(_) => tonic::Status::not_found(m),
            SwarmError::AlreadyExists(_) => tonic::Status::already_exists(m),
            SwarmError::Full(_) => tonic::Status::resource_exhausted(m),
            SwarmError::NoLeader(_) => tonic::Status::unavailable(m),
        }
    }
}

/// The other members of `mesh` as the swarm logic sees them.
pub fn peers_of(mesh: &crate::mesh::Mesh) -> Vec<Peer<'_>> {
    let me = mesh.id();
    mesh.view()
        .iter()
        .filter(|e| *e.info.id != *me)
        .map(|e| Peer {
            id: &e.info.id,
            status: e.status,
            meta: e.providers.as_ref().and_then(|s| s.meta.as_ref()),
        })
        .collect()
}

/// Wall-clock milliseconds since the Unix epoch: what group joins, rosters
/// and pool records are stamped with (they are compared across nodes).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A group or pool name: what deploys and labels carry.
pub fn check_name(field: &str, name: &str) -> Result<(), SwarmError> {
    if crate::config::valid_model(name) {
        Ok(())
    } else {
        Err(SwarmError::invalid(
            field,
            format!(
                "{name:?}: names are 1-63 letters, digits, '-', '_', '.' or ':', e.g. \"gpu-lab\""
            ),
        ))
    }
}
