//! The providers a node attaches: its internal one (found by `mode`), the
//! external ones an operator names, and the loop that keeps their
//! advertised capacity fresh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, Mode};
use crate::placement::Manager;
use crate::resource::docker::{DockerProvider, DockerSettings, DockerTls};
use crate::resource::gpu::{GpuProbe, NvmlProbe};
use crate::resource::kubernetes::{KubeSettings, KubernetesProvider};
use crate::resource::{labels, Provider, ProviderKind, ProviderTarget, ResourceError, Resources};

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
        storage_bytes: crate::resource::UNLIMITED,
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
            max_deployments: config.resource_limits.max_deployments,
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
        max_deployments: config.resource_limits.max_deployments,
        labels,
        node_id: node_id.to_string(),
        gpus,
    };
    match DockerProvider::connect(settings).await {
        Ok(p) => {
            info!(endpoint = %p.endpoint(), "internal Docker provider ready");
            Some(Arc::new(p.with_gpu_probe(Arc::new(NvmlProbe))))
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
    req: &ProviderTarget,
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
    let mut labels = req.labels.clone();
    labels.insert(labels::EXTERNAL.into(), "true".into());
    if req.max_deployments == Some(0) {
        return Err(ResourceError::invalid(
            "max_deployments",
            "must be at least 1 (leave it unset for no limit)",
        ));
    }
    let id = format!("{node_id}/{name}");
    match req.kind() {
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
                max_deployments: req.max_deployments,
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
                max_deployments: req.max_deployments,
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
            format!("{:?} is not a provider type: use docker or k8s", req.kind),
        )),
    }
}
