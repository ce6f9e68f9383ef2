//! The JSON bodies of the HTTP API, as types: the routes build them from
//! the gRPC answers, and the dashboard renders the same ones.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::proto::admin::ListPeersResponse;
use crate::proto::resource as pb;
use crate::resource::UNLIMITED;

const GIB: f64 = (1u64 << 30) as f64;

/// Amounts in the seed's units (cores, GiB) plus the exact integers.
/// Storage is `null` where it is not accounted (unlimited).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Amounts {
    pub cpu: f64,
    pub memory: f64,
    pub gpu: u32,
    pub storage: Option<f64>,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: Option<u64>,
}

impl From<Option<&pb::Resources>> for Amounts {
    fn from(r: Option<&pb::Resources>) -> Amounts {
        let r = r.cloned().unwrap_or_default();
        let storage = (r.storage_bytes != UNLIMITED).then_some(r.storage_bytes);
        Amounts {
            cpu: r.cpu_millis as f64 / 1000.0,
            memory: r.memory_bytes as f64 / GIB,
            gpu: r.gpus,
            storage: storage.map(|b| b as f64 / GIB),
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            storage_bytes: storage,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityView {
    pub total: Amounts,
    pub reserved: Amounts,
    pub available: Amounts,
    /// The most deployments run at once; null is no limit.
    pub max_deployments: Option<u32>,
    /// Deployments holding a reservation now.
    pub deployments: u32,
}

impl From<Option<&pb::Capacity>> for CapacityView {
    fn from(c: Option<&pb::Capacity>) -> CapacityView {
        let c = c.cloned().unwrap_or_default();
        CapacityView {
            total: c.total.as_ref().into(),
            reserved: c.reserved.as_ref().into(),
            available: c.available.as_ref().into(),
            max_deployments: Some(c.max_deployments).filter(|m| *m > 0),
            deployments: c.deployments,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Units {
    pub cpu: &'static str,
    pub memory: &'static str,
    pub storage: &'static str,
}

/// `GET /resource/capacity`: the node's total at the top, then exact
/// figures for the node and the whole mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityReport {
    #[serde(flatten)]
    pub total: Amounts,
    pub units: Units,
    pub node: CapacityView,
    pub mesh: CapacityView,
    pub providers: u32,
    /// With `?deployments=true`: the mesh's deployments by state, each once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployments: Option<BTreeMap<String, u64>>,
    /// Nodes that did not answer that count in time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_nodes: Vec<String>,
}

impl From<&pb::GetCapacityResponse> for CapacityReport {
    fn from(c: &pb::GetCapacityResponse) -> CapacityReport {
        CapacityReport {
            total: c.node.as_ref().and_then(|n| n.total.as_ref()).into(),
            units: Units {
                cpu: "cores",
                memory: "GiB",
                storage: "GiB (null: not accounted)",
            },
            node: c.node.as_ref().into(),
            mesh: c.mesh.as_ref().into(),
            providers: c.providers,
            deployments: (!c.deployments.is_empty() || !c.missing_nodes.is_empty())
                .then(|| c.deployments.clone().into_iter().collect()),
            missing_nodes: c.missing_nodes.clone(),
        }
    }
}

/// One provider, as `GET /resource/providers` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderView {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub tier: String,
    pub owner_id: String,
    pub endpoint: String,
    /// `active` or `unhealthy`.
    pub status: &'static str,
    pub capacity: CapacityView,
    pub labels: BTreeMap<String, String>,
    /// Its GPUs as the owner last read them; absent without GPUs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuView>,
}

/// One GPU of a provider in `GET /resource/providers`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuView {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_bytes: u64,
    pub memory_used_bytes: u64,
    pub utilization_pct: u32,
    /// Deployments holding it.
    pub holders: u32,
}

impl From<&pb::Gpu> for GpuView {
    fn from(g: &pb::Gpu) -> GpuView {
        GpuView {
            index: g.index,
            uuid: g.uuid.clone(),
            model: g.model.clone(),
            memory_bytes: g.memory_bytes,
            memory_used_bytes: g.memory_used_bytes,
            utilization_pct: g.utilization_pct,
            holders: g.holders,
        }
    }
}

impl From<&pb::ProviderEntry> for ProviderView {
    fn from(p: &pb::ProviderEntry) -> ProviderView {
        ProviderView {
            id: p.id.clone(),
            name: p.name.clone(),
            kind: p.r#type.clone(),
            tier: p.tier.clone(),
            owner_id: p.owner_id.clone(),
            endpoint: p.endpoint.clone(),
            status: if p.healthy { "active" } else { "unhealthy" },
            capacity: p.capacity.as_ref().into(),
            labels: p.labels.clone().into_iter().collect(),
            gpus: p.gpus.iter().map(GpuView::from).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProvidersReport {
    pub providers: Vec<ProviderView>,
}

/// A member's provider in `GET /peer/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeProvider {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: &'static str,
}

/// One member in `GET /peer/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    pub address: String,
    /// `active` for alive members, else the state.
    pub status: String,
    pub state: String,
    pub generation: u64,
    pub incarnation: u64,
    /// RFC 3339; null when never heard from directly.
    pub last_seen: Option<String>,
    pub is_self: bool,
    /// Round-trip times of this node's gossip calls to it: smoothed
    /// (weight 1/8) and p99 of the last 128; null when none measured.
    pub rtt_ms: Option<f64>,
    pub rtt_p99_ms: Option<f64>,
    /// What it advertises: AI models, swarm groups, remote access.
    pub models: Vec<String>,
    pub groups: Vec<String>,
    pub allow_remote: bool,
    pub providers: Vec<NodeProvider>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodesReport {
    pub nodes: Vec<NodeView>,
    pub alive: u32,
    pub suspect: u32,
    pub dead: u32,
    pub left: u32,
}

impl NodesReport {
    /// `known` gives each provider id its type and health; providers of
    /// dead members are not placeable and show as unknown.
    pub fn new(peers: &ListPeersResponse, known: &BTreeMap<String, (&'static str, bool)>) -> Self {
        let nodes = peers
            .peers
            .iter()
            .map(|p| NodeView {
                id: p.id.clone(),
                name: p.name.clone(),
                address: p.addr.clone(),
                status: if p.state == "alive" {
                    "active".to_string()
                } else {
                    p.state.clone()
                },
                state: p.state.clone(),
                generation: p.generation,
                incarnation: p.incarnation,
                last_seen: rfc3339_ago(p.last_heard_secs),
                is_self: p.is_self,
                rtt_ms: Some(p.rtt_ms).filter(|ms| *ms > 0.0),
                rtt_p99_ms: Some(p.rtt_p99_ms).filter(|ms| *ms > 0.0),
                models: p.models.clone(),
                groups: p.groups.clone(),
                allow_remote: p.allow_remote,
                providers: p
                    .providers
                    .iter()
                    .map(|id| {
                        let (kind, healthy) = known.get(id).copied().unwrap_or(("unknown", false));
                        NodeProvider {
                            id: id.clone(),
                            kind,
                            status: if healthy { "active" } else { "unhealthy" },
                        }
                    })
                    .collect(),
            })
            .collect();
        NodesReport {
            nodes,
            alive: peers.alive,
            suspect: peers.suspect,
            dead: peers.dead,
            left: peers.left,
        }
    }
}

fn rfc3339_ago(secs: f64) -> Option<String> {
    if secs < 0.0 {
        return None;
    }
    let at = SystemTime::now().checked_sub(Duration::from_secs_f64(secs))?;
    Some(humantime::format_rfc3339_seconds(at).to_string())
}

/// `POST /peer/nodes`: who answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerAdded {
    pub id: String,
    pub generation: u64,
}

/// `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every error: `{"error": "...", "code": "invalid_argument"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateChangeView {
    pub state: String,
    pub detail: String,
    /// Seconds since the Unix epoch.
    pub at: f64,
}

/// One deployment: `state` and `reason` as in the gRPC `Deployment`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentView {
    pub id: String,
    pub request_id: String,
    /// Empty while it waits in its home's queue.
    pub provider_id: String,
    pub owner_id: String,
    /// The node that placed it and keeps its record; empty when only its
    /// owner answered.
    pub home_id: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: String,
    pub reason: String,
    pub resources: Amounts,
    pub gpus: Vec<String>,
    pub history: Vec<StateChangeView>,
    /// Its lease; null when it holds none.
    pub lease: Option<LeaseJson>,
    /// Restarts its restart policy made.
    pub restarts: u32,
    /// The current placement, and every placement with where it ran and
    /// why it moved on (its owner died, it was preempted).
    pub attempt: u32,
    pub attempts: Vec<AttemptJson>,
    /// Owners may evict it for work that outranks it; `priority` is then
    /// its place in line (`batch:-5`).
    pub preemptible: bool,
    pub priority: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptJson {
    pub attempt: u32,
    pub provider_id: String,
    pub owner_id: String,
    /// Seconds since the Unix epoch.
    pub placed: f64,
    /// Why a later attempt replaced it; empty for the current one.
    pub ended: String,
}

/// A lease as the owner answered for it (instants in Unix seconds on the
/// owner's clock; `expires_in_secs` measured there).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseJson {
    pub holder: String,
    pub epoch: u64,
    /// active, released or expired.
    pub state: String,
    /// LEASED, RELEASING or TERMINATED (seed 004).
    pub seed_state: String,
    pub ttl_secs: f64,
    pub auto_renew: bool,
    pub max_renewals: Option<u32>,
    pub renewals: u32,
    pub transitions: u32,
    pub acquired: f64,
    pub renewed: Option<f64>,
    pub expires: f64,
    pub expires_in_secs: f64,
}

impl From<&pb::Lease> for LeaseJson {
    fn from(l: &pb::Lease) -> LeaseJson {
        LeaseJson {
            holder: l.holder.clone(),
            epoch: l.epoch,
            state: l.state.clone(),
            seed_state: l.seed_state.clone(),
            ttl_secs: l.ttl_secs,
            auto_renew: l.auto_renew,
            max_renewals: l.max_renewals,
            renewals: l.renewals,
            transitions: l.transitions,
            acquired: l.acquired_unix,
            renewed: Some(l.renewed_unix).filter(|r| *r > 0.0),
            expires: l.expires_unix,
            expires_in_secs: l.expires_in_secs,
        }
    }
}

impl From<&pb::Deployment> for DeploymentView {
    fn from(d: &pb::Deployment) -> DeploymentView {
        DeploymentView {
            id: d.id.clone(),
            request_id: d.request_id.clone(),
            provider_id: d.provider_id.clone(),
            owner_id: d.owner_id.clone(),
            home_id: d.home_id.clone(),
            image: d.image.clone(),
            labels: d.labels.clone().into_iter().collect(),
            state: d.state.clone(),
            reason: d.reason.clone(),
            resources: d.resources.as_ref().into(),
            gpus: d.gpus.clone(),
            history: d
                .history
                .iter()
                .map(|h| StateChangeView {
                    state: h.state.clone(),
                    detail: h.detail.clone(),
                    at: h.at_unix,
                })
                .collect(),
            lease: d.lease.as_ref().map(LeaseJson::from),
            restarts: d.restarts,
            attempt: d.attempt,
            attempts: d
                .attempts
                .iter()
                .map(|a| AttemptJson {
                    attempt: a.attempt,
                    provider_id: a.provider_id.clone(),
                    owner_id: a.owner_id.clone(),
                    placed: a.placed_unix,
                    ended: a.ended.clone(),
                })
                .collect(),
            preemptible: d.preemptible,
            priority: d.priority.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentsReport {
    pub deployments: Vec<DeploymentView>,
    /// Mesh scope: the cursor of the next page (`page_token`); null on the last.
    pub next_page_token: Option<String>,
    /// Mesh scope: nodes that did not answer in time.
    pub missing_nodes: Vec<String>,
    pub nodes_answered: u32,
}

impl From<&pb::ListDeploymentsResponse> for DeploymentsReport {
    fn from(l: &pb::ListDeploymentsResponse) -> DeploymentsReport {
        DeploymentsReport {
            deployments: l.deployments.iter().map(DeploymentView::from).collect(),
            next_page_token: Some(l.next_page_token.clone()).filter(|t| !t.is_empty()),
            missing_nodes: l.missing_nodes.clone(),
            nodes_answered: l.nodes_answered,
        }
    }
}

/// One deploy waiting in this node's queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueEntryView {
    pub id: String,
    pub request_id: String,
    pub position: u32,
    pub priority: String,
    pub priority_value: i64,
    pub age_secs: f64,
    pub expires_in_secs: f64,
    /// Always "queued": the key scripts read on every deployment view.
    pub state: &'static str,
    pub reason: String,
    pub image: String,
    pub resources: Amounts,
    pub wait_for_capacity: bool,
}

impl From<&pb::QueueEntry> for QueueEntryView {
    fn from(e: &pb::QueueEntry) -> QueueEntryView {
        QueueEntryView {
            id: e.id.clone(),
            request_id: e.request_id.clone(),
            position: e.position,
            priority: e.priority.clone(),
            priority_value: e.priority_value,
            age_secs: e.age_secs,
            expires_in_secs: e.expires_in_secs,
            state: "queued",
            reason: e.reason.clone(),
            image: e.image.clone(),
            resources: e.resources.as_ref().into(),
            wait_for_capacity: e.wait_for_capacity,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueReport {
    pub entries: Vec<QueueEntryView>,
}
