//! The mesh's deployment directory: any node finds where any deployment
//! lives in one hop, with no central index.
//!
//! ```text
//! ring       consistent hashing over the membership view: whose entry is whose
//! table      the entries this node holds for others (home's and owner's word)
//! registrar  what this node registers where, and when again
//! ```
//!
//! The home of a deployment and its owner each register it with the `K`
//! members the ring maps its id to; a lookup asks those members (one hop,
//! `K` messages at most, whatever the mesh's size), and falls back to
//! asking every member, bounded in fan-out and time, for the rare miss (a
//! lookup racing a membership change, an entry not yet registered). The
//! manager then talks to the home, or to the owner when the home is gone
//! (`manager/anywhere.rs`).

pub mod registrar;
pub mod ring;
pub mod table;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::proto::directory as pb;
use crate::proto::resource as rpb;
use crate::sync::lock;

pub use registrar::{Holding, Registrar, K};
pub use ring::{Member, Ring};
pub use table::{Location, NodeRef, Registrant, Table};

/// Reaches other nodes' `Directory` service.
#[async_trait::async_trait]
pub trait DirectoryCaller: Send + Sync + 'static {
    async fn register(
        &self,
        addr: &str,
        req: pb::RegisterRequest,
        timeout: Duration,
    ) -> Result<pb::RegisterReply, tonic::Status>;
    async fn locate(
        &self,
        addr: &str,
        req: pb::LocateRequest,
        timeout: Duration,
    ) -> Result<pb::LocateReply, tonic::Status>;
    async fn forward(
        &self,
        addr: &str,
        req: pb::ForwardRequest,
        timeout: Duration,
    ) -> Result<rpb::Deployment, tonic::Status>;
    async fn forward_service(
        &self,
        addr: &str,
        req: pb::ForwardServiceRequest,
        timeout: Duration,
    ) -> Result<rpb::Service, tonic::Status>;
    async fn list_local(
        &self,
        addr: &str,
        req: pb::ListLocalRequest,
        timeout: Duration,
    ) -> Result<pb::ListLocalReply, tonic::Status>;
    async fn check(
        &self,
        addr: &str,
        req: pb::CheckRequest,
        timeout: Duration,
    ) -> Result<pb::CheckReply, tonic::Status>;
}

/// The directory state of one node.
#[derive(Default)]
pub struct Directory {
    table: Mutex<Table>,
    registrar: Mutex<Registrar>,
    /// The ring and the view version it was built at: rebuilt only when
    /// the view changed, so a lookup costs no work that grows with the mesh.
    ring: Mutex<Option<(u64, Arc<Ring>)>>,
}

impl Directory {
    /// The ring of the view at `version`; `members` is asked only when the
    /// view changed since the last ring, and the ring is rebuilt only when
    /// its members did.
    pub fn ring(&self, version: u64, members: impl FnOnce() -> Vec<Member>) -> Arc<Ring> {
        let mut cached = lock(&self.ring);
        if let Some((v, ring)) = cached.as_ref() {
            if *v == version {
                return ring.clone();
            }
        }
        let members = members();
        let ring = match cached.as_ref() {
            Some((_, r)) if r.members() == sorted(members.clone()).as_slice() => r.clone(),
            _ => Arc::new(Ring::new(members)),
        };
        *cached = Some((version, ring.clone()));
        ring
    }

    pub fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        lock(&self.table)
    }

    pub fn registrar(&self) -> std::sync::MutexGuard<'_, Registrar> {
        lock(&self.registrar)
    }
}

fn sorted(mut m: Vec<Member>) -> Vec<Member> {
    m.sort();
    m.dedup_by(|a, b| a.id == b.id);
    m
}

fn node_to_proto(n: &NodeRef) -> pb::NodeRef {
    pb::NodeRef {
        id: n.id.clone(),
        addr: n.addr.clone(),
    }
}

fn node_from_proto(n: pb::NodeRef) -> Option<NodeRef> {
    Some(NodeRef {
        id: n.id,
        addr: n.addr,
    })
    .filter(|n| !n.id.is_empty())
}

pub fn location_to_proto(l: &Location, by: Registrant) -> pb::Location {
    pb::Location {
        deployment_id: l.deployment_id.clone(),
        request_id: l.request_id.clone(),
        home: l.home.as_ref().map(node_to_proto),
        owner: l.owner.as_ref().map(node_to_proto),
        provider_id: l.provider_id.clone(),
        provider_name: l.provider_name.clone(),
        provider_kind: l.provider_kind.clone(),
        registrant: by.as_str().to_string(),
    }
}

pub fn location_from_proto(l: pb::Location) -> (Location, Registrant) {
    let by = Registrant::parse(&l.registrant);
    (
        Location {
            deployment_id: l.deployment_id,
            request_id: l.request_id,
            home: l.home.and_then(node_from_proto),
            owner: l.owner.and_then(node_from_proto),
            provider_id: l.provider_id,
            provider_name: l.provider_name,
            provider_kind: l.provider_kind,
        },
        by,
    )
}
