//! The node's resource plane: its internal provider, the manager, the
//! mesh view the manager places on, and CallProvider to other nodes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, Mode};
use crate::placement::manager::candidate_from_gossip;
use crate::placement::{Candidate, Discovery, Manager, ProviderCaller};
use crate::proto::peer::{ProviderCallRequest, ProviderCallResponse, ProviderInfo};
use crate::resource::docker::{DockerProvider, DockerSettings, DockerTls};
use crate::resource::gpu::{GpuProbe, NvmlProbe};
use crate::resource::kubernetes::{KubeSettings, KubernetesProvider};
use crate::resource::{labels, Provider, ProviderKind, ResourceError, Resources};

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

    fn version(&self) -> u64 {
        self.shared.mesh().view().hash()
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
        let started = std::time::Instant::now();
        request.caller_id = self.shared.mesh().id().to_string();
        let method = request.method.clone();
        let result = self.send(owner_addr, request, timeout).await;
        observe_call(&self.shared, "client", method, &result, started);
        result
    }
}

impl NodeCaller {
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
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "CallProvider to {owner_addr} took longer than {timeout:?}"
            ))),
        }
    }
}

/// Records one CallProvider's latency. Methods are the provider operations
/// ("deploy", "logs", ...); anything else is folded into "other" so a
/// hostile caller cannot grow the label set.
pub fn observe_call<T>(
    shared: &Shared,
    side: &str,
    method: String,
    result: &Result<T, tonic::Status>,
    started: std::time::Instant,
) {
    let method = if crate::placement::manager::PROVIDER_METHODS.contains(&method.as_str()) {
        method
    } else {
        "other".to_string()
    };
    let code = result
        .as_ref()
        .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
    shared
        .metrics
        .provider_call_seconds
        .get_or_create(&crate::metrics::CallLabels {
            side: side.to_string(),
            method,
            code: crate::metrics::code_label(code),
        })
        .observe(started.elapsed().as_secs_f64());
}

/// Labels every provider of this node carries.
pub fn node_labels(config: &Config) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    if let Some(r) = &config.resources.region {
        labels.insert(labels::REGION.to_string(), r.clone());
    }
    if let Some(z) = &config.resources.zone {
        labels.insert(labels::ZONE.to_string(), z.clone());
    }
    labels
}

/// `resource_limits` as amounts; None when unset, u64::MAX in a dimension
/// where the host's total applies.
pub fn limits(config: &Config) -> Option<Resources> {
    let l = &config.resource_limits;
    if l.cpu.is_none() && l.memory.is_none() && l.gpu.is_none() {
        return None;
    }
    Some(Resources {
        cpu_millis: l.cpu.map_or(u64::MAX, |q| q.milli() as u64),
        memory_bytes: l.memory.map_or(u64::MAX, |q| q.units_ceil() as u64),
        gpus: l.gpu.unwrap_or(u32::MAX),
        storage_bytes: u64::MAX,
    })
}

/// Finds the internal provider `mode` asks for; none is not an error: the
/// node still joins the mesh and places on other nodes' providers.
pub async fn detect_internal(config: &Config, node_id: &str) -> Option<Arc<dyn Provider>> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let want_k8s = match config.mode {
        Mode::K8s => true,
        Mode::Standalone => false,
        Mode::Auto => in_cluster,
    };
    if want_k8s {
        let settings = KubeSettings {
            id: format!("{node_id}/k8s"),
            name: "kubernetes".into(),
            namespace: config.resources.k8s_namespace.clone(),
            node_id: node_id.to_string(),
            labels: node_labels(config),
            limits: limits(config),
        };
        match KubernetesProvider::connect_in_cluster(settings).await {
            Ok(p) => return Some(Arc::new(p)),
            Err(e) => warn!(error = %e, "no Kubernetes provider"),
        }
        if config.mode == Mode::K8s {
            return None;
        }
    }
    let gpus = NvmlProbe.inventory();
    let mut labels = node_labels(config);
    if let Some(g) = gpus.first() {
        labels.insert(labels::GPU_MODEL.into(), g.model.clone());
    }
    let gpus = match config.resource_limits.gpu {
        Some(max) => gpus.into_iter().take(max as usize).collect(),
        None => gpus,
    };
    let settings = DockerSettings {
        id: format!("{node_id}/docker"),
        name: "docker".into(),
        endpoint: config.resources.docker_host.clone(),
        tls: None,
        limits: limits(config),
        labels,
        node_id: node_id.to_string(),
        gpus,
    };
    match DockerProvider::connect(settings).await {
        Ok(p) => {
            info!(endpoint = %p.endpoint(), "internal Docker provider ready");
            Some(Arc::new(p))
        }
        Err(e) => {
            let level_is_warn = config.mode == Mode::Standalone;
            if level_is_warn {
                warn!(error = %e, "no Docker provider: this node places on other nodes only");
            } else {
                info!(error = %e, "no Docker engine answered: this node places on other nodes only");
            }
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
/// live connection test. Credentials stay in this process: they are never
/// gossiped, logged or returned.
pub async fn connect_external(
    node_id: &str,
    req: &crate::proto::resource::RegisterProviderRequest,
) -> Result<Arc<dyn Provider>, ResourceError> {
    let name = req.name.trim();
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(ResourceError::invalid(
            "name",
            "must be 1-63 letters, digits, '-', '_' or '.' (it becomes part of the provider id)",
        ));
    }
    let mut labels: BTreeMap<String, String> = req.labels.clone().into_iter().collect();
    labels.insert(labels::EXTERNAL.into(), "true".into());
    let id = format!("{node_id}/{name}");
    match ProviderKind::parse(&req.r#type) {
        Some(ProviderKind::Docker) => {
            if req.endpoint.is_empty() {
                return Err(ResourceError::invalid(
                    "endpoint",
                    "is empty: give the engine's address, e.g. tcp://10.0.0.5:2376",
                ));
            }
            let files = [&req.tls_ca, &req.tls_cert, &req.tls_key];
            let tls = match files.iter().filter(|f| !f.is_empty()).count() {
                0 => None,
                3 => Some(DockerTls {
                    ca: req.tls_ca.clone().into(),
                    cert: req.tls_cert.clone().into(),
                    key: req.tls_key.clone().into(),
                }),
                _ => {
                    return Err(ResourceError::invalid(
                        "tls_ca",
                        "TLS needs all three of tls_ca, tls_cert and tls_key",
                    ))
                }
            };
            let settings = DockerSettings {
                id,
                name: name.to_string(),
                endpoint: Some(req.endpoint.clone()),
                tls,
                limits: None,
                labels,
                node_id: node_id.to_string(),
                gpus: Vec::new(),
            };
            Ok(Arc::new(DockerProvider::connect(settings).await?))
        }
        Some(ProviderKind::Kubernetes) => {
            let settings = KubeSettings {
                id,
                name: name.to_string(),
                namespace: String::new(),
                node_id: node_id.to_string(),
                labels,
                limits: None,
            };
            let p = if !req.kubeconfig_path.is_empty() {
                KubernetesProvider::connect_kubeconfig(&req.kubeconfig_path, settings).await?
            } else if !req.endpoint.is_empty() && !req.token.is_empty() {
                KubernetesProvider::connect_token(&req.endpoint, &req.token, settings).await?
            } else {
                return Err(ResourceError::invalid(
                    "kubeconfig_path",
                    "a Kubernetes provider needs kubeconfig_path, or endpoint and token",
                ));
            };
            Ok(Arc::new(p))
        }
        _ => Err(ResourceError::invalid(
            "type",
            format!("{:?} is not a provider type: use docker or k8s", req.r#type),
        )),
    }
}

impl crate::config::ExternalProvider {
    /// The registration this config entry stands for.
    pub fn as_request(&self) -> crate::proto::resource::RegisterProviderRequest {
        let mut req = crate::proto::resource::RegisterProviderRequest {
            r#type: self.kind.clone(),
            name: self.name.clone(),
            ..Default::default()
        };
        if self.kind == "k8s" {
            req.kubeconfig_path = self.target.clone();
        } else {
            req.endpoint = self.target.clone();
        }
        req
    }
}
