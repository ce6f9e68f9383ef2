//! The mesh as placement sees it: the providers live members advertise,
//! publishing this node's own, the live members (the directory's ring),
//! and CallProvider, the directory and image builds over the node's channels.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::shared::Shared;
use crate::mesh::view::Entry;
use crate::metrics::calls::{observe_call, Side};
use crate::placement::call::build::{BuildCaller, BuildEvents};
use crate::placement::directory::{DirectoryCaller, Member};
use crate::placement::{Discovery, ProviderCaller, ProviderMethod};
use crate::proto::build::BuildRequest;
use crate::proto::directory as dpb;
use crate::proto::peer::{ProviderCallRequest, ProviderCallResponse, ProviderInfo};
use crate::proto::resource as rpb;
use crate::resource::wire::candidate_from_gossip;
use crate::resource::Candidate;
use crate::sync::lock;

pub struct NodeDiscovery {
    pub shared: Arc<Shared>,
}

impl NodeDiscovery {
    /// Providers other live members advertise, as gossip carried them.
    fn discovered_bare(&self) -> Vec<Candidate> {
        let mesh = self.shared.mesh();
        let me = mesh.id().to_string();
        mesh.view()
            .iter()
            .filter(|e| *e.info.id != *me)
            .flat_map(advertised)
            .collect()
    }
}

/// The candidates a live member's providers make.
fn advertised(e: &Entry) -> Vec<Candidate> {
    match &e.providers {
        Some(set) if !e.status.is_tombstone() => set
            .providers
            .iter()
            .map(|p| candidate_from_gossip(p, &e.info.addr))
            .collect(),
        _ => Vec::new(),
    }
}

impl Discovery for NodeDiscovery {
    fn discovered(&self) -> Vec<Candidate> {
        let mut found = self.discovered_bare();
        super::swarm::decorate(&self.shared, &mut found);
        found
    }

    fn decorate(&self, candidates: &mut [Candidate]) {
        super::swarm::decorate(&self.shared, candidates);
    }

    fn publish(&self, providers: Vec<ProviderInfo>) {
        self.shared.mesh().set_providers(providers);
    }
    fn caller(&self) -> Arc<dyn ProviderCaller> {
        Arc::new(NodeCaller {
            shared: self.shared.clone(),
        })
    }

    fn version(&self) -> u64 {
        self.shared.mesh().view().hash()
    }

    fn feed_position(&self) -> Option<u64> {
        self.shared.mesh().view().placement_position()
    }

    fn changed_owners(&self, after: u64) -> Option<(u64, Vec<String>)> {
        let (at, ids) = self.shared.mesh().view().placement_changes(after)?;
        Some((at, ids.iter().map(|id| id.to_string()).collect()))
    }

    fn discovered_from(&self, owner: &str) -> Vec<Candidate> {
        let mut found = {
            let mesh = self.shared.mesh();
            if owner == mesh.id() {
                return Vec::new();
            }
            mesh.view().get(owner).map(advertised).unwrap_or_default()
        };
        super::swarm::decorate(&self.shared, &mut found);
        found
    }

    fn decorations_version(&self) -> u64 {
        lock(&self.shared.swarm).pools_stamp()
    }

    fn members(&self) -> Vec<Member> {
        let mesh = self.shared.mesh();
        mesh.view()
            .iter()
            .filter(|e| !e.status.is_tombstone())
            .map(|e| Member {
                id: e.info.id.to_string(),
                addr: e.info.addr.clone(),
                generation: e.info.generation,
            })
            .collect()
    }

    fn directory(&self) -> Option<Arc<dyn DirectoryCaller>> {
        Some(Arc::new(NodeCaller {
            shared: self.shared.clone(),
        }))
    }

    fn builds(&self) -> Option<Arc<dyn BuildCaller>> {
        Some(Arc::new(NodeCaller {
            shared: self.shared.clone(),
        }))
    }
}

/// CallProvider over the node's pooled channels.
pub struct NodeCaller {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl ProviderCaller for NodeCaller {
    async fn call(
        &self,
        owner_addr: &str,
        mut request: ProviderCallRequest,
        timeout: Duration,
    ) -> Result<ProviderCallResponse, tonic::Status> {
        let started = Instant::now();
        request.caller_id = self.shared.mesh().id().to_string();
        let method = ProviderMethod::label(&request.method);
        let result = self.send(owner_addr, request, timeout).await;
        observe_call(&self.shared.metrics, Side::Client, method, &result, started);
        result
    }
}

/// A unary directory call with a deadline, counted like CallProvider.
macro_rules! directory_call {
    ($self:ident, $addr:ident, $req:ident, $timeout:ident, $method:ident, $label:literal) => {{
        let started = Instant::now();
        let result = async {
            let mut client = $self.shared.pool.directory($addr)?;
            let mut r = tonic::Request::new($req);
            r.set_timeout($timeout);
            match tokio::time::timeout($timeout, client.$method(r)).await {
                Ok(r) => r
                    .map(tonic::Response::into_inner)
                    .map_err(|s| unreachable($addr, s)),
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "{} to {} took longer than {:?}",
                    $label, $addr, $timeout
                ))),
            }
        }
        .await;
        observe_call(
            &$self.shared.metrics,
            Side::Client,
            $label,
            &result,
            started,
        );
        result
    }};
}

#[async_trait::async_trait]
impl DirectoryCaller for NodeCaller {
    async fn register(
        &self,
        addr: &str,
        req: dpb::RegisterRequest,
        timeout: Duration,
    ) -> Result<dpb::RegisterReply, tonic::Status> {
        directory_call!(self, addr, req, timeout, register, "directory.register")
    }

    async fn locate(
        &self,
        addr: &str,
        req: dpb::LocateRequest,
        timeout: Duration,
    ) -> Result<dpb::LocateReply, tonic::Status> {
        directory_call!(self, addr, req, timeout, locate, "directory.locate")
    }

    async fn forward(
        &self,
        addr: &str,
        req: dpb::ForwardRequest,
        timeout: Duration,
    ) -> Result<rpb::Deployment, tonic::Status> {
        directory_call!(self, addr, req, timeout, forward, "directory.forward")
    }

    async fn forward_service(
        &self,
        addr: &str,
        req: dpb::ForwardServiceRequest,
        timeout: Duration,
    ) -> Result<rpb::Service, tonic::Status> {
        directory_call!(
            self,
            addr,
            req,
            timeout,
            forward_service,
            "directory.forward_service"
        )
    }

    async fn list_local(
        &self,
        addr: &str,
        req: dpb::ListLocalRequest,
        timeout: Duration,
    ) -> Result<dpb::ListLocalReply, tonic::Status> {
        directory_call!(self, addr, req, timeout, list_local, "directory.list")
    }

    async fn check(
        &self,
        addr: &str,
        req: dpb::CheckRequest,
        timeout: Duration,
    ) -> Result<dpb::CheckReply, tonic::Status> {
        directory_call!(self, addr, req, timeout, check, "directory.check")
    }
}

#[async_trait::async_trait]
impl BuildCaller for NodeCaller {
    async fn build(
        &self,
        owner_addr: &str,
        requests: Vec<BuildRequest>,
    ) -> Result<BuildEvents, tonic::Status> {
        let started = Instant::now();
        let result = self.open_build(owner_addr, requests).await;
        let opened = result.as_ref().map(|_| ()).map_err(Clone::clone);
        observe_call(
            &self.shared.metrics,
            Side::Client,
            "build",
            &opened,
            started,
        );
        result
    }
}

impl NodeCaller {
    async fn open_build(
        &self,
        owner_addr: &str,
        requests: Vec<BuildRequest>,
    ) -> Result<BuildEvents, tonic::Status> {
        let mut client = self.shared.pool.builds(owner_addr)?;
        let request = tonic::Request::new(tokio_stream::iter(requests));
        let events = client
            .build(request)
            .await
            .map_err(|s| unreachable(owner_addr, s))?
            .into_inner();
        let addr = owner_addr.to_string();
        Ok(events
            .map(move |e| e.map_err(|s| unreachable(&addr, s)))
            .boxed())
    }

    async fn send(
        &self,
        owner_addr: &str,
        request: ProviderCallRequest,
        timeout: Duration,
    ) -> Result<ProviderCallResponse, tonic::Status> {
        let mut client = self.shared.pool.client(owner_addr)?;
        let mut req = tonic::Request::new(request);
        req.set_timeout(timeout);
        match tokio::time::timeout(timeout, client.call_provider(req)).await {
            Ok(r) => r
                .map(tonic::Response::into_inner)
                .map_err(|s| unreachable(owner_addr, s)),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "CallProvider to {owner_addr} took longer than {timeout:?}"
            ))),
        }
    }
}

/// A call that broke in transport (the peer died mid-call, its connection
/// reset) is UNAVAILABLE, as with a peer that never answered: callers then
/// fall back or try elsewhere. tonic reports such breaks as INTERNAL or
/// UNKNOWN with the transport error as source; a status the peer sent back
/// has none.
fn unreachable(addr: &str, status: tonic::Status) -> tonic::Status {
    use std::error::Error as _;
    match status.code() {
        tonic::Code::Internal | tonic::Code::Unknown if status.source().is_some() => {
            tonic::Status::unavailable(format!("{addr} broke off the call: {}", status.message()))
        }
        _ => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_broken_in_transport_is_unavailable_and_a_peers_answer_is_kept() {
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert_eq!(broken.code(), tonic::Code::Unknown);
        let s = unreachable("10.0.0.1:7000", broken);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("10.0.0.1:7000"), "{}", s.message());

        let answered = tonic::Status::internal("provider backend error: disk full");
        let s = unreachable("10.0.0.1:7000", answered);
        assert_eq!(
            (s.code(), s.message()),
            (tonic::Code::Internal, "provider backend error: disk full")
        );
    }
}
