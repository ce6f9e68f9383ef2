//! A running node, as its owner holds it: what it is, what it sees, and
//! how it stops — gracefully, or at once as a crash would.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use super::serve::HEALTH_SERVICES;
use super::shared::Shared;
use super::{gossip, peers};
use crate::api::http::HttpApi;
use crate::config::Config;
use crate::mesh::Status;
use crate::metrics::gossip::StatsSnapshot;
use crate::placement::Manager;
use crate::proto::peer::{Member, ProviderInfo};
use crate::store::Store;

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberSnapshot {
    pub id: String,
    pub name: String,
    pub addr: String,
    pub generation: u64,
    pub incarnation: u64,
    pub status: Status,
    pub providers: Vec<String>,
    pub is_self: bool,
}

/// Owns a running node's tasks; dropping it stops them.
pub struct NodeHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) manager: Arc<Manager>,
    /// Every task of the node stops when this is cancelled.
    pub(super) cancel: CancellationToken,
    /// Cancelled first when the node starts leaving: readiness fails.
    pub(super) draining: CancellationToken,
    pub(super) health: HealthReporter,
    pub(super) tasks: JoinSet<()>,
    pub(super) deploys: TaskTracker,
    pub(super) local_addr: SocketAddr,
    pub(super) http_addr: SocketAddr,
    pub(super) http_api: Arc<HttpApi>,
    pub(super) store: Arc<dyn Store>,
}

impl NodeHandle {
    pub fn id(&self) -> String {
        self.shared.mesh().id().to_string()
    }

    pub fn generation(&self) -> u64 {
        self.shared.mesh().info().generation
    }

    /// The address peers dial.
    pub fn advertise_addr(&self) -> String {
        self.shared.mesh().info().addr.clone()
    }

    /// The address the gRPC server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the HTTP API is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// What `/metrics` would answer now.
    pub async fn metrics(&self) -> String {
        self.shared.metrics.render(&self.http_api.snapshot().await)
    }

    /// The resource manager: providers, placement, deployments.
    pub fn manager(&self) -> &Arc<Manager> {
        &self.manager
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Every member this node holds, tombstones included.
    pub fn members(&self) -> Vec<MemberSnapshot> {
        let mesh = self.shared.mesh();
        let me = mesh.id().to_string();
        let mut out: Vec<MemberSnapshot> = mesh
            .view()
            .iter()
            .map(|e| MemberSnapshot {
                id: e.info.id.to_string(),
                name: e.info.name.clone(),
                addr: e.info.addr.clone(),
                generation: e.info.generation,
                incarnation: e.incarnation,
                status: e.status,
                providers: e
                    .providers
                    .as_ref()
                    .map(|s| s.providers.iter().map(|p| p.id.clone()).collect())
                    .unwrap_or_default(),
                is_self: *e.info.id == *me,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Providers advertised by live members, this node's own included.
    pub fn providers(&self) -> Vec<ProviderInfo> {
        self.shared.mesh().providers()
    }

    /// Replaces the providers this node advertises to the mesh.
    pub fn set_providers(&self, providers: Vec<ProviderInfo>) {
        self.shared.mesh().set_providers(providers);
    }

    /// Contacts `addr` now (the operator's "add peer"); returns who answered.
    pub async fn add_peer(&self, addr: &str) -> Option<Member> {
        gossip::run_exchange(
            &self.shared,
            crate::mesh::Target {
                addr: addr.to_string(),
                id: None,
            },
        )
        .await
    }

    /// Graceful stop: health goes NOT_SERVING, peers are told we leave,
    /// deploys in flight finish, the servers drain; all within `shutdown_grace`.
    pub async fn shutdown(mut self) {
        let grace = self.shared.config.shutdown_grace;
        self.draining.cancel();
        for name in HEALTH_SERVICES {
            self.health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        peers::save(&self.shared, &self.store).await;
        let goodbye = tokio::time::timeout(grace / 2, gossip::say_goodbye(&self.shared));
        if goodbye.await.is_err() {
            warn!("goodbye to peers did not finish within the grace period");
        }
        // Deploys in flight get a moment to finish; what they recorded
        // survives either way, and reconcile settles it at the next start.
        self.deploys.close();
        let _ = tokio::time::timeout(grace / 4, self.deploys.wait()).await;
        self.cancel.cancel();
        let drained = async {
            while self.tasks.join_next().await.is_some() {}
            self.deploys.wait().await;
        };
        if tokio::time::timeout(grace / 4, drained).await.is_err() {
            warn!(grace = ?grace, "tasks did not stop within the grace period; aborting them");
            self.tasks.abort_all();
        }
        self.shared.stop();
        info!("iarnet node stopped");
    }

    /// Stops at once without telling anyone, as a crash would.
    pub fn kill(mut self) {
        self.shared.stop();
        self.cancel.cancel();
        self.tasks.abort_all();
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tasks.abort_all();
    }
}
