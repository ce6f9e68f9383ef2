//! `iarnet.admin.v1.Admin`: what operators call (grpcurl, scripts).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::config::valid_host_port;
use crate::mesh::{Status as MemberState, Target};
use crate::node::gossip::run_exchange;
use crate::node::shared::Shared;
use crate::proto::admin::admin_server::Admin;
use crate::proto::admin::{
    AddPeerRequest, AddPeerResponse, GetNodeRequest, ListPeersRequest, ListPeersResponse,
    ListProvidersRequest, ListProvidersResponse, NodeInfo, PeerEntry,
};

pub struct AdminApi {
    shared: Arc<Shared>,
}

impl AdminApi {
    pub fn new(shared: Arc<Shared>) -> AdminApi {
        AdminApi { shared }
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn get_node(&self, _: Request<GetNodeRequest>) -> Result<Response<NodeInfo>, Status> {
        let cfg = &self.shared.config;
        let mesh = self.shared.mesh();
        let me = mesh.info();
        Ok(Response::new(NodeInfo {
            id: me.id.to_string(),
            name: me.name.clone(),
            generation: me.generation,
            advertise_addr: me.addr.clone(),
            peer_listen_addr: cfg.peer_listen_addr.to_string(),
            mode: cfg.mode.to_string(),
            initial_peers: cfg.initial_peers.clone(),
            gossip_interval: humantime::format_duration(cfg.gossip.interval).to_string(),
            fanout: cfg.gossip.fanout as u32,
            resource_limits: cfg.resource_limits.to_string(),
            incarnation: mesh.incarnation(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn list_peers(
        &self,
        request: Request<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, Status> {
        let include_tombstones = request.into_inner().include_tombstones;
        let now = self.shared.now();
        let mesh = self.shared.mesh();
        let mut resp = ListPeersResponse::default();
        for e in mesh.view().iter() {
            match e.status {
                MemberState::Alive => resp.alive += 1,
                MemberState::Suspect => resp.suspect += 1,
                MemberState::Dead => resp.dead += 1,
                MemberState::Left => resp.left += 1,
            }
            if e.status.is_tombstone() && !include_tombstones {
                continue;
            }
            let meta = e.providers.as_ref().and_then(|s| s.meta.as_ref());
            let ms = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            resp.peers.push(PeerEntry {
                rtt_ms: ms(self.shared.stats.rtt(&e.info.addr)),
                rtt_p99_ms: ms(self.shared.stats.rtt_p99(&e.info.addr)),
                models: meta.map(|m| m.models.clone()).unwrap_or_default(),
                groups: meta
                    .map(|m| m.groups.iter().map(|g| g.group.clone()).collect())
                    .unwrap_or_default(),
                allow_remote: meta.is_some_and(|m| m.allow_remote),
                id: e.info.id.to_string(),
                name: e.info.name.clone(),
                addr: e.info.addr.clone(),
                generation: e.info.generation,
                incarnation: e.incarnation,
                state: e.status.as_str().to_string(),
                last_heard_secs: e
                    .heard()
                    .map_or(-1.0, |t| now.saturating_sub(t) as f64 / 1000.0),
                providers: e
                    .providers
                    .as_ref()
                    .map(|s| s.providers.iter().map(|p| p.id.clone()).collect())
                    .unwrap_or_default(),
                is_self: e.info.id == mesh.info().id,
            });
        }
        resp.peers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Response::new(resp))
    }

    async fn add_peer(
        &self,
        request: Request<AddPeerRequest>,
    ) -> Result<Response<AddPeerResponse>, Status> {
        let who = crate::security::who(&request);
        let address = request.into_inner().address.trim().to_string();
        if !valid_host_port(&address) {
            return Err(Status::invalid_argument(format!(
                "address {address:?} is not HOST:PORT (e.g. \"192.168.1.101:50051\")"
            )));
        }
        let target = Target {
            addr: address.clone(),
            id: None,
        };
        let answered = run_exchange(&self.shared, target).await;
        self.shared.audit.record(
            "add_peer",
            &who,
            if answered.is_some() {
                "ok"
            } else {
                "unreachable"
            },
            serde_json::json!({"address": address}),
        );
        match answered {
            Some(peer) => Ok(Response::new(AddPeerResponse {
                id: peer.id,
                generation: peer.generation,
            })),
            None => Err(Status::unavailable(format!(
                "no iarnet node answered at {address}: check the address and that its peer port is reachable"
            ))),
        }
    }

    async fn list_providers(
        &self,
        _: Request<ListProvidersRequest>,
    ) -> Result<Response<ListProvidersResponse>, Status> {
        let mut providers = self.shared.mesh().providers();
        providers.sort_by(|a, b| (&a.owner_id, &a.id).cmp(&(&b.owner_id, &b.id)));
        Ok(Response::new(ListProvidersResponse { providers }))
    }
}
