//! What a node must not forget across a restart or a crash: its identity,
//! the deployments it placed (with their request ids, providers and status
//! history), the deploys waiting in its queue (whole specs, in order), the
//! leases it keeps as the owner of their providers, the external providers
//! an operator registered, and the peers it last saw alive.
//!
//! ```text
//! mod      the Store trait and its record types
//! redb     the durable store: one file under data_dir (see its module doc)
//! group_commit  concurrent writes share one transaction and one fsync
//! memory   the in-memory twin: tests, benchmarks, embedded nodes
//! ```
//!
//! Records are JSON (serde_json): the types are ours and evolve with
//! `#[serde(default)]` fields, the proto files stay untouched, and a record
//! read out of the file is legible when debugging. The benchmark in
//! `benches/store.rs` measures what that costs in bytes.
//!
//! The trait is synchronous: a write returns once it is durable. Async
//! callers run it on the blocking pool (`spawn_blocking`) so no runtime
//! worker waits on a disk; writes made at the same time share one commit.

mod group_commit;
pub mod memory;
pub mod redb;

#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::lifecycle::lease::Lease;
use crate::lifecycle::priority::Priority;
use crate::resource::{
    DeploySpec, DeployState, Deployment, ProviderKind, Resources, StateChange, Tier,
};

pub use self::group_commit::CommitStats;
pub use self::memory::MemoryStore;
pub use self::redb::RedbStore;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} is in use by another running node (one data_dir per node)")]
    Locked { path: String },
    #[error("cannot open the store at {path}: {error} (set data_dir to a writable directory)")]
    Open { path: String, error: String },
    #[error("store {op} failed: {error}")]
    Backend { op: &'static str, error: String },
    #[error("stored record {key:?} is unreadable: {error}")]
    Corrupt { key: String, error: String },
}

/// Who this node is, as last started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub node_id: String,
    /// The generation of the last start; the next one is greater.
    pub generation: u64,
}

/// An external provider an operator registered. Only references are kept
/// (the Docker URL, the kubeconfig path), never a token or a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRecord {
    pub id: String,
    pub name: String,
    pub kind: String,
    /// Where the backend is reached, credentials stripped.
    pub endpoint: String,
    /// Labels as advertised (not secret).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The most deployments it runs at once, as registered.
    #[serde(default)]
    pub max_deployments: Option<u32>,
}

/// The provider a deployment was sent to, enough to reach it again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOn {
    pub provider_id: String,
    pub provider_name: String,
    pub kind: String,
    pub tier: String,
    pub owner_id: String,
    /// Empty for this node's own providers.
    pub owner_addr: String,
}

impl PlacedOn {
    /// False for a deploy that never left its home's queue.
    pub fn is_placed(&self) -> bool {
        !self.provider_id.is_empty()
    }

    pub fn kind(&self) -> ProviderKind {
        ProviderKind::parse(&self.kind).unwrap_or(ProviderKind::Memory)
    }

    pub fn tier(&self) -> Tier {
        match self.tier.as_str() {
            "internal" => Tier::Internal,
            "external" => Tier::External,
            _ => Tier::Discovered,
        }
    }
}

/// A deployment's state as the store keeps it: the provider's states plus
/// the two the manager passes through (placing, stopping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Stored {
    /// Waiting in this node's queue; its entry is a [`QueuedRecord`].
    Queued {
        reason: String,
    },
    /// Gave up waiting (its queue_timeout passed).
    Expired {
        reason: String,
    },
    /// Its owner died: a replacement is being placed elsewhere.
    Rescheduling {
        reason: String,
    },
    /// Intent written, the provider not yet answered.
    Placing,
    Pending,
    Pulling,
    Starting,
    Running,
    Exited {
        code: i64,
    },
    Failed {
        reason: String,
    },
    /// Stop written, the provider not yet answered.
    Stopping,
    Stopped,
}

impl Stored {
    pub fn from_state(s: &DeployState) -> Stored {
        match s {
            DeployState::Pending => Stored::Pending,
            DeployState::Pulling => Stored::Pulling,
            DeployState::Starting => Stored::Starting,
            DeployState::Running => Stored::Running,
            DeployState::Exited(code) => Stored::Exited { code: *code },
            DeployState::Failed(reason) => Stored::Failed {
                reason: reason.clone(),
            },
            DeployState::Stopped => Stored::Stopped,
            DeployState::Queued(reason) => Stored::Queued {
                reason: reason.clone(),
            },
            DeployState::Expired(reason) => Stored::Expired {
                reason: reason.clone(),
            },
            DeployState::Rescheduling(reason) => Stored::Rescheduling {
                reason: reason.clone(),
            },
        }
    }

    /// The state a client sees; placing and stopping are not among them.
    pub fn to_state(&self) -> Option<DeployState> {
        Some(match self {
            Stored::Placing | Stored::Stopping => return None,
            Stored::Pending => DeployState::Pending,
            Stored::Pulling => DeployState::Pulling,
            Stored::Starting => DeployState::Starting,
            Stored::Running => DeployState::Running,
            Stored::Exited { code } => DeployState::Exited(*code),
            Stored::Failed { reason } => DeployState::Failed(reason.clone()),
            Stored::Stopped => DeployState::Stopped,
            Stored::Queued { reason } => DeployState::Queued(reason.clone()),
            Stored::Expired { reason } => DeployState::Expired(reason.clone()),
            Stored::Rescheduling { reason } => DeployState::Rescheduling(reason.clone()),
        })
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Stored::Exited { .. }
                | Stored::Failed { .. }
                | Stored::Stopped
                | Stored::Expired { .. }
        )
    }
}

/// A deploy waiting in its home's queue: everything needed to place it
/// later without its client, and its place in line. Unlike a deployment
/// record it keeps the whole spec, environment included, until placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedRecord {
    /// The deployment id (its record is `Stored::Queued`).
    pub id: String,
    pub spec: DeploySpec,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub provider_id: Option<String>,
    pub priority: Priority,
    /// Arrival order on this home.
    pub seq: u64,
    pub enqueued_ms: u64,
    /// When it gives up (Unix ms); None waits for ever.
    pub deadline_ms: Option<u64>,
    /// Waits even when nothing in the mesh could ever hold it.
    #[serde(default)]
    pub wait_for_capacity: bool,
}

/// A lease this node keeps as the owner of its deployment's provider. It
/// outlives the container for a while, so that whoever asks learns that the
/// lease ended it rather than that it vanished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The deployment id.
    pub id: String,
    pub provider_id: String,
    pub lease: Lease,
    /// When its container went (stopped after the lease ended, or by a
    /// stop); None while it runs.
    #[serde(default)]
    pub stopped_ms: Option<u64>,
    /// The deployment as it last was, answered once its container is gone.
    #[serde(default)]
    pub last: Option<DeploymentRecord>,
}

/// A service kept by its home: the spec its replicas are made from and how
/// many it should have; each replica is an ordinary deployment record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// The service id: the request id of the deploy that made it.
    pub id: String,
    /// The replicas' spec, less their request id and replica index.
    pub spec: DeploySpec,
    pub replicas: u32,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub provider_id: Option<String>,
    pub priority: Priority,
    pub queue_timeout_ms: u64,
    #[serde(default)]
    pub wait_for_capacity: bool,
    pub created_ms: u64,
    /// Set when the service is stopped: its replicas are stopped too.
    #[serde(default)]
    pub stopped: bool,
}

/// One entry of a deployment's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    #[serde(flatten)]
    pub state: Stored,
    /// Milliseconds since the epoch.
    pub at_ms: u64,
}

/// A deployment this node placed (or adopted), with everything needed to
/// answer for it after a restart and to rebuild its reservation.
///
/// The spec's environment is not kept: it may hold secrets, and a retry
/// brings its own spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// The deployment id (derived from the request id).
    pub id: String,
    pub request_id: String,
    pub image: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    #[serde(default)]
    pub gpus_wanted: u32,
    #[serde(default)]
    pub storage_bytes: u64,
    pub placed_on: PlacedOn,
    /// GPU UUIDs the provider assigned.
    #[serde(default)]
    pub gpus: Vec<String>,
    pub history: Vec<Change>,
    /// Found running with no record of it (made before a crash, or by
    /// another node on our provider) and taken in at reconcile.
    #[serde(default)]
    pub adopted: bool,
    /// The labels it was deployed with.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The current placement's number (0 or 1: the first).
    #[serde(default)]
    pub attempt: u32,
    /// Every placement before and including the current one.
    #[serde(default)]
    pub attempts: Vec<crate::resource::AttemptView>,
    /// The whole spec, kept only for a deployment that may be placed again
    /// elsewhere (a reschedule policy); its environment included, as a
    /// queued deploy's is.
    #[serde(default)]
    pub spec: Option<DeploySpec>,
}

pub fn now_ms() -> u64 {
    millis(SystemTime::now())
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl DeploymentRecord {
    /// A record with no resources and no history yet.
    pub fn new(id: &str, request_id: &str, image: &str, placed_on: PlacedOn) -> DeploymentRecord {
        DeploymentRecord {
            id: id.to_string(),
            request_id: request_id.to_string(),
            image: image.to_string(),
            cpu_millis: 0,
            memory_bytes: 0,
            gpus_wanted: 0,
            storage_bytes: 0,
            placed_on,
            gpus: Vec::new(),
            history: Vec::new(),
            adopted: false,
            labels: Default::default(),
            attempt: 0,
            attempts: Vec::new(),
            spec: None,
        }
    }

    pub fn resources(&self) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes,
            gpus: self.gpus_wanted,
            storage_bytes: self.storage_bytes,
        }
    }

    pub fn set_resources(&mut self, r: Resources) {
        self.cpu_millis = r.cpu_millis;
        self.memory_bytes = r.memory_bytes;
        self.gpus_wanted = r.gpus;
        self.storage_bytes = r.storage_bytes;
    }

    /// The latest state; a record always has one once written.
    pub fn state(&self) -> Stored {
        self.history
            .last()
            .map_or(Stored::Placing, |c| c.state.clone())
    }

    /// Notes placement `n` on `provider` of `owner`: a new attempt, or the
    /// same one tried on another candidate.
    pub fn note_attempt(&mut self, n: u32, provider: &str, owner: &str) {
        self.attempt = n;
        let at_ms = now_ms();
        match self.attempts.last_mut() {
            Some(last) if last.attempt == n => {
                last.provider_id = provider.to_string();
                last.owner_id = owner.to_string();
                last.at_ms = at_ms;
            }
            _ => self.attempts.push(crate::resource::AttemptView {
                attempt: n,
                provider_id: provider.to_string(),
                owner_id: owner.to_string(),
                at_ms,
                ended: String::new(),
            }),
        }
    }

    /// Appends `state` unless it is already the current one.
    pub fn push(&mut self, state: Stored) {
        self.push_at(state, now_ms());
    }

    fn push_at(&mut self, state: Stored, at_ms: u64) {
        if self.history.last().map(|c| &c.state) != Some(&state) {
            self.history.push(Change { state, at_ms });
        }
    }

    /// Folds in what the provider answered: its changes not yet recorded
    /// and not older than the latest recorded one, then its current state
    /// if that still differs (a provider rebuilt after a restart dates its
    /// history from the container, which must not replay over what is
    /// recorded). And its GPUs.
    pub fn observe(&mut self, d: &Deployment) {
        for c in &d.history {
            let (state, at_ms) = (Stored::from_state(&c.state), millis(c.at));
            let known = self
                .history
                .iter()
                .any(|h| h.at_ms == at_ms && h.state == state);
            if known || self.history.last().is_some_and(|h| at_ms < h.at_ms) {
                continue;
            }
            self.push_at(state, at_ms);
        }
        if let Some(last) = d.history.last() {
            self.push(Stored::from_state(&last.state));
        }
        if !d.gpus.is_empty() {
            self.gpus = d.gpus.clone();
        }
        if self.labels.is_empty() && !d.labels.is_empty() {
            self.labels = d.labels.clone();
        }
    }

    /// The deployment as a client sees it, from the record alone.
    pub fn to_deployment(&self) -> Deployment {
        let history = self
            .history
            .iter()
            .filter_map(|c| {
                c.state.to_state().map(|state| StateChange {
                    state,
                    at: UNIX_EPOCH + Duration::from_millis(c.at_ms),
                })
            })
            .collect::<Vec<_>>();
        let mut d = Deployment {
            id: self.id.clone(),
            request_id: self.request_id.clone(),
            provider_id: self.placed_on.provider_id.clone(),
            image: self.image.clone(),
            resources: self.resources(),
            gpus: self.gpus.clone(),
            history: Vec::new(),
            lease: None,
            labels: self.labels.clone(),
            restarts: 0,
            attempt: self.attempt.max(1),
            home: String::new(),
            attempts: self.attempts.clone(),
            preemptible: self
                .spec
                .as_ref()
                .filter(|s| s.preemptible)
                .map(|s| s.priority),
            stop_after_disconnect_ms: self.spec.as_ref().and_then(|s| s.stop_after_disconnect_ms),
            health: None,
            ports: Vec::new(),
            group: self
                .spec
                .as_ref()
                .and_then(|s| s.scope.group.clone())
                .unwrap_or_default(),
        };
        for c in history {
            if d.history.last().map(|h| &h.state) != Some(&c.state) {
                d.history.push(c);
            }
        }
        d
    }
}

/// The node's durable memory. Every write is committed (durable) when it
/// returns Ok.
pub trait Store: Send + Sync + 'static {
    fn identity(&self) -> Result<Option<IdentityRecord>, StoreError>;
    fn set_identity(&self, rec: &IdentityRecord) -> Result<(), StoreError>;

    fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, StoreError>;
    /// Every deployment record, by id.
    fn deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError>;
    /// Inserts or replaces the record with the same id.
    fn put_deployment(&self, rec: &DeploymentRecord) -> Result<(), StoreError>;
    fn remove_deployment(&self, id: &str) -> Result<(), StoreError>;

    /// Every queue entry, in no particular order (the queue orders them).
    fn queued(&self) -> Result<Vec<QueuedRecord>, StoreError>;
    /// Writes a queue entry and its deployment record in one commit.
    fn put_queued(&self, q: &QueuedRecord, rec: &DeploymentRecord) -> Result<(), StoreError>;
    /// Drops a queue entry and, in the same commit, writes what became of
    /// its deployment (placing, expired, stopped).
    fn remove_queued(&self, id: &str, rec: &DeploymentRecord) -> Result<(), StoreError>;

    /// Every lease this node keeps as an owner.
    fn leases(&self) -> Result<Vec<LeaseRecord>, StoreError>;
    /// Writes a lease, and the highest epoch granted so far, in one commit.
    fn put_lease(&self, rec: &LeaseRecord, epoch: u64) -> Result<(), StoreError>;
    fn remove_lease(&self, id: &str) -> Result<(), StoreError>;
    /// The highest lease epoch ever granted here (0 before the first).
    fn lease_epoch(&self) -> Result<u64, StoreError>;

    /// Every service this node is the home of.
    fn services(&self) -> Result<Vec<ServiceRecord>, StoreError>;
    fn put_service(&self, rec: &ServiceRecord) -> Result<(), StoreError>;
    fn remove_service(&self, id: &str) -> Result<(), StoreError>;

    fn providers(&self) -> Result<Vec<ProviderRecord>, StoreError>;
    fn put_provider(&self, rec: &ProviderRecord) -> Result<(), StoreError>;
    fn remove_provider(&self, id: &str) -> Result<(), StoreError>;

    /// Applications kept at this node, as their owner encodes them (the
    /// store sits below the application layer and does not read them).
    fn applications(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    fn put_application(&self, id: &str, doc: &[u8]) -> Result<(), StoreError>;
    fn remove_application(&self, id: &str) -> Result<(), StoreError>;

    /// The addresses of the peers last seen alive.
    fn peers(&self) -> Result<Vec<String>, StoreError>;
    /// Replaces the saved peer addresses.
    fn set_peers(&self, addrs: &[String]) -> Result<(), StoreError>;

    /// This node's swarm groups and the pools it carries, as the swarm
    /// layer encodes them (None before the first save).
    fn swarm(&self) -> Result<Option<Vec<u8>>, StoreError>;
    fn set_swarm(&self, doc: &[u8]) -> Result<(), StoreError>;
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records are plain data and always serialize")
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        error: e.to_string(),
    })
}
