//! The vocabulary of the resource plane: amounts, capacity, deploy specs and
//! deployments. Pure data, shared by providers, the manager and the wire.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::gpu::GpuStatus;

/// A storage amount that is not accounted: on the wire as the largest
/// `uint64`, shown as absent (`null`, "unlimited") to people.
pub const UNLIMITED: u64 = u64::MAX;

/// An amount of compute. CPU in millicores, memory and storage in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub gpus: u32,
    pub storage_bytes: u64,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        memory_bytes: 0,
        gpus: 0,
        storage_bytes: 0,
    };

    /// True when every dimension of `need` fits in `self`. A storage total
    /// of [`UNLIMITED`] means "not accounted" and fits anything.
    pub fn fits(&self, need: &Resources) -> bool {
        need.cpu_millis <= self.cpu_millis
            && need.memory_bytes <= self.memory_bytes
            && need.gpus <= self.gpus
            && (need.storage_bytes <= self.storage_bytes || self.storage_bytes == UNLIMITED)
    }

    pub fn saturating_add(&self, o: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
            gpus: self.gpus.saturating_add(o.gpus),
            storage_bytes: self.storage_bytes.saturating_add(o.storage_bytes),
        }
    }

    /// `self - o`; storage that is not accounted stays so.
    pub fn saturating_sub(&self, o: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
            gpus: self.gpus.saturating_sub(o.gpus),
            storage_bytes: if self.storage_bytes == UNLIMITED {
                UNLIMITED
            } else {
                self.storage_bytes.saturating_sub(o.storage_bytes)
            },
        }
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu={}m memory={}Mi gpu={}",
            self.cpu_millis,
            self.memory_bytes >> 20,
            self.gpus
        )?;
        if self.storage_bytes != 0 && self.storage_bytes != UNLIMITED {
            write!(f, " storage={}Mi", self.storage_bytes >> 20)?;
        }
        Ok(())
    }
}

/// What a provider has: `total`, of which `reserved` is promised to
/// deployments, and how many deployments it holds against the most it
/// runs at once (seed 004's per-resource concurrency: 1 for a single device).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    pub total: Resources,
    pub reserved: Resources,
    /// The most deployments it runs at once; None is no limit.
    pub max_deployments: Option<u32>,
    /// Deployments holding a reservation now.
    pub deployments: u32,
}

impl Capacity {
    pub fn available(&self) -> Resources {
        self.total.saturating_sub(&self.reserved)
    }

    /// Room for one more deployment under `max_deployments`.
    pub fn has_slot(&self) -> bool {
        self.max_deployments.is_none_or(|m| self.deployments < m)
    }

    /// Could one more deployment needing `need` be admitted now?
    pub fn admits(&self, need: &Resources) -> bool {
        self.has_slot() && self.available().fits(need)
    }

    /// Counts one more deployment needing `need` (a plan's bookkeeping).
    pub fn take(&mut self, need: &Resources) {
        self.reserved = self.reserved.saturating_add(need);
        self.deployments = self.deployments.saturating_add(1);
    }

    /// The sum of two capacities; a limit on either side adds up, and no
    /// limit on one side makes the sum unlimited.
    pub fn plus(&self, o: &Capacity) -> Capacity {
        Capacity {
            total: self.total.saturating_add(&o.total),
            reserved: self.reserved.saturating_add(&o.reserved),
            max_deployments: match (self.max_deployments, o.max_deployments) {
                (Some(a), Some(b)) => Some(a.saturating_add(b)),
                _ => None,
            },
            deployments: self.deployments.saturating_add(o.deployments),
        }
    }
}

/// Where a provider sits relative to this node; earlier tiers are preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// This node's own Docker engine or Kubernetes cluster.
    Internal,
    /// A Docker host or cluster an operator registered on this node.
    External,
    /// Another node's provider, learned by gossip.
    Discovered,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Internal => "internal",
            Tier::External => "external",
            Tier::Discovered => "discovered",
        }
    }
}

/// The kind of backend behind a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Docker,
    Kubernetes,
    /// The in-memory twin used by tests and benchmarks.
    Memory,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Docker => "docker",
            ProviderKind::Kubernetes => "k8s",
            ProviderKind::Memory => "memory",
        }
    }

    pub fn parse(s: &str) -> Option<ProviderKind> {
        match s {
            "docker" => Some(ProviderKind::Docker),
            "k8s" | "kubernetes" => Some(ProviderKind::Kubernetes),
            "memory" => Some(ProviderKind::Memory),
            _ => None,
        }
    }
}

/// A provider's identity and standing, as advertised to the mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderDescriptor {
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
    /// Where the backend is reached (socket path, URL); never credentials.
    pub endpoint: String,
    pub healthy: bool,
    pub capacity: Capacity,
    /// `region`, `zone`, `gpu.model`, …
    pub labels: BTreeMap<String, String>,
    /// Its GPUs as last read (memory in use, utilisation, holders).
    pub gpus: Vec<GpuStatus>,
}

/// A provider placement may choose, as seen from this node: what its
/// owner advertises, its tier, and where the owner is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
    pub tier: Tier,
    pub owner_id: String,
    /// Where the owner is dialled; empty for this node's own providers.
    pub owner_addr: String,
    pub healthy: bool,
    pub capacity: Capacity,
    pub labels: BTreeMap<String, String>,
    /// The owner's version of this entry as gossip carried it (0 for this
    /// node's own): a new one is a change even when the figures match one
    /// seen before, since gossip may skip the states in between.
    pub version: u64,
    /// Its GPUs as the owner last read them.
    pub gpus: Vec<GpuStatus>,
}

impl Candidate {
    /// One of `owner_id`'s own providers, as described now.
    pub fn local(d: &ProviderDescriptor, tier: Tier, owner_id: &str) -> Candidate {
        Candidate {
            id: d.id.clone(),
            name: d.name.clone(),
            kind: d.kind,
            tier,
            owner_id: owner_id.to_string(),
            owner_addr: String::new(),
            healthy: d.healthy,
            capacity: d.capacity,
            labels: d.labels.clone(),
            version: 0,
            gpus: d.gpus.clone(),
        }
    }
}

/// A port to publish: `container` inside, `host` outside (0 = any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub container: u16,
    pub host: u16,
    pub udp: bool,
}

/// What the owner does when a deployment's container exits or dies. The
/// engine restarts it after a delay that doubles from 100 ms (Docker's
/// backoff; the kubelet's CrashLoopBackOff on Kubernetes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Exits are final (the default, and what a batch job wants).
    #[default]
    Never,
    /// Restarts after a non-zero exit, at most `max` times; then `failed`.
    OnFailure { max: u32 },
    /// Restarts after every exit until stopped.
    Always,
}

/// Restarts of `on-failure` when it names no number.
pub const DEFAULT_MAX_RESTARTS: u32 = 3;
/// The most restarts `on-failure:N` may ask for.
pub const MAX_RESTARTS: u32 = 100;

impl RestartPolicy {
    /// `never`, `on-failure`, `on-failure:N` or `always`; empty is never.
    pub fn parse(text: &str) -> Result<RestartPolicy, String> {
        let t = text.trim().to_ascii_lowercase();
        match t.as_str() {
            "" | "never" | "no" => Ok(RestartPolicy::Never),
            "always" => Ok(RestartPolicy::Always),
            "on-failure" => Ok(RestartPolicy::OnFailure {
                max: DEFAULT_MAX_RESTARTS,
            }),
            other => match other.strip_prefix("on-failure:").map(str::parse::<u32>) {
                Some(Ok(max)) if (1..=MAX_RESTARTS).contains(&max) => {
                    Ok(RestartPolicy::OnFailure { max })
                }
                _ => Err(format!(
                    "{text:?} is not a restart policy: use never, on-failure, on-failure:N (N from 1 to {MAX_RESTARTS}) or always"
                )),
            },
        }
    }

    /// As `parse` reads it back.
    pub fn text(&self) -> String {
        match self {
            RestartPolicy::Never => "never".into(),
            RestartPolicy::OnFailure { max } => format!("on-failure:{max}"),
            RestartPolicy::Always => "always".into(),
        }
    }

    /// The state a container that exited with `code` after `restarts`
    /// restarts is in for good: an exhausted `on-failure` is a failure.
    pub fn settle(&self, code: i64, restarts: u32) -> DeployState {
        match self {
            RestartPolicy::OnFailure { max } if code != 0 => DeployState::Failed(format!(
                "exited with code {code} after {restarts} restarts (restart on-failure:{max})"
            )),
            _ => DeployState::Exited(code),
        }
    }
}

/// How the delay between reschedules grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DelayFunction {
    Constant,
    #[default]
    Exponential,
    Fibonacci,
}

/// What a deployment's home does when its owner node is declared dead
/// (Nomad's `reschedule` block): place a replacement elsewhere, after a
/// grace, at most `attempts` times within `interval` (or without limit),
/// waiting `delay` (growing by `delay_function`, up to `max_delay`)
/// between replacements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReschedulePolicy {
    pub attempts: u32,
    pub interval_ms: u64,
    pub delay_ms: u64,
    pub delay_function: DelayFunction,
    pub max_delay_ms: u64,
    pub unlimited: bool,
    /// How long the owner must stay dead first: above the mesh's
    /// detection time, so a slow node is not replaced by mistake.
    pub after_ms: u64,
}

impl Default for ReschedulePolicy {
    /// 3 replacements an hour, 5 s apart and doubling up to 5 min, once the
    /// owner has been dead for 10 s.
    fn default() -> ReschedulePolicy {
        ReschedulePolicy {
            attempts: 3,
            interval_ms: 3_600_000,
            delay_ms: 5_000,
            delay_function: DelayFunction::Exponential,
            max_delay_ms: 300_000,
            unlimited: false,
            after_ms: 10_000,
        }
    }
}

impl ReschedulePolicy {
    /// The wait before replacement number `n` (1 for the first) since the
    /// one before it.
    pub fn delay(&self, n: u32) -> u64 {
        let factor: u64 = match self.delay_function {
            DelayFunction::Constant => 1,
            DelayFunction::Exponential => 1u64 << n.saturating_sub(1).min(32),
            DelayFunction::Fibonacci => {
                let (mut a, mut b) = (1u64, 1u64);
                for _ in 1..n.min(64) {
                    (a, b) = (b, a.saturating_add(b));
                }
                a
            }
        };
        self.delay_ms
            .saturating_mul(factor)
            .min(self.max_delay_ms.max(self.delay_ms))
    }

    /// Whether another replacement may be placed, given when the earlier
    /// ones were (Unix ms).
    pub fn allows(&self, earlier: &[u64], now: u64) -> bool {
        self.unlimited
            || (earlier
                .iter()
                .filter(|at| now.saturating_sub(**at) < self.interval_ms)
                .count() as u32)
                < self.attempts
    }
}

/// What to run and what it needs. Serializable because a queued deploy
/// keeps its whole spec in the home's store until it is placed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeploySpec {
    /// Chosen by the caller; a retry with the same id gets the same deployment.
    pub request_id: String,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<PortSpec>,
    pub resources: Resources,
    /// Only GPUs of this model (substring match on the model name).
    pub gpu_model: Option<String>,
    /// Several deployments may use the same GPU.
    pub gpu_shared: bool,
    /// Labels put on the container.
    pub labels: BTreeMap<String, String>,
    /// Labels the provider must carry (e.g. `region: eu-west`).
    pub required_labels: BTreeMap<String, String>,
    /// A lease: the owner stops it and frees its resources when it runs out.
    #[serde(default)]
    pub lease: Option<super::LeaseTerms>,
    /// What the owner does when its container exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Which placement of the deployment this is (1 first; a replacement
    /// after its owner died is the next), set by its home and carried with
    /// the container, so a node that ran an older one can tell.
    #[serde(default)]
    pub attempt: u32,
    /// The node that placed it (its home), set by the home.
    #[serde(default)]
    pub home: String,
    /// What its home does when its owner node dies; None: nothing (the
    /// record says it was lost).
    #[serde(default)]
    pub reschedule: Option<ReschedulePolicy>,
    /// The service this deployment is a replica of, set by its home.
    #[serde(default)]
    pub replica_of: Option<super::ReplicaOf>,
    /// How the replicas of its service are kept apart.
    #[serde(default)]
    pub spread: Option<super::Spread>,
    /// Its place in line, set by its home from the request; an owner
    /// compares it when it preempts.
    #[serde(default)]
    pub priority: super::Priority,
    /// An owner may evict it for work that outranks it.
    #[serde(default)]
    pub preemptible: bool,
    /// Whether this deploy may evict preemptible work. Its home sets it
    /// only on the pass that asks owners to preempt.
    #[serde(default)]
    pub preemption: super::PreemptionPolicy,
    /// Its owner stops it once its home has been out of reach this long
    /// (ms); None keeps it running.
    #[serde(default)]
    pub stop_after_disconnect_ms: Option<u64>,
    /// A network of the engine to join (made when missing), where the
    /// container answers to `aliases`: how an application's components on
    /// one engine find each other by name.
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A command the engine runs to tell whether it is healthy.
    #[serde(default)]
    pub healthcheck: Option<HealthSpec>,
    /// Where in the swarm it may run: a group's members, a pool, nodes
    /// serving a model.
    #[serde(default)]
    pub scope: Scope,
}

/// Swarm scopes of a deploy; each is matched against the `iarnet.group.*`,
/// `iarnet.pool.*` and `iarnet.model.*` labels a node puts on its
/// providers' candidates (reserved labels, so no provider can claim them).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Scope {
    pub group: Option<String>,
    pub pool: Option<String>,
    pub model: Option<String>,
}

impl Scope {
    pub fn is_empty(&self) -> bool {
        self.group.is_none() && self.pool.is_none() && self.model.is_none()
    }

    /// The candidate labels this scope requires, each with what it means.
    pub fn required(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(g) = &self.group {
            out.push((super::labels::group(g), format!("not in group {g}")));
        }
        if let Some(p) = &self.pool {
            out.push((super::labels::pool(p), format!("not in pool {p}")));
        }
        if let Some(m) = &self.model {
            out.push((super::labels::model(m), format!("without model {m}")));
        }
        out
    }
}

/// A health probe the engine runs inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HealthSpec {
    /// `["CMD", prog, args...]` or `["CMD-SHELL", "a shell line"]`.
    pub test: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

/// The life of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployState {
    /// Nothing can admit it now: it waits in its home's queue, and why.
    Queued(String),
    /// It waited its whole `queue_timeout` and gave up, and why.
    Expired(String),
    /// Its owner node was declared dead: its home places a replacement
    /// (the next attempt) elsewhere, and why it waits if it must.
    Rescheduling(String),
    Pending,
    Pulling,
    Starting,
    Running,
    Exited(i64),
    Failed(String),
    Stopped,
}

impl DeployState {
    pub fn name(&self) -> &'static str {
        match self {
            DeployState::Queued(_) => "queued",
            DeployState::Expired(_) => "expired",
            DeployState::Rescheduling(_) => "rescheduling",
            DeployState::Pending => "pending",
            DeployState::Pulling => "pulling",
            DeployState::Starting => "starting",
            DeployState::Running => "running",
            DeployState::Exited(_) => "exited",
            DeployState::Failed(_) => "failed",
            DeployState::Stopped => "stopped",
        }
    }

    /// No longer holds resources.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            DeployState::Exited(_)
                | DeployState::Failed(_)
                | DeployState::Stopped
                | DeployState::Expired(_)
        )
    }

    /// Why it waits, failed or expired; empty otherwise.
    pub fn reason(&self) -> &str {
        match self {
            DeployState::Queued(why)
            | DeployState::Expired(why)
            | DeployState::Failed(why)
            | DeployState::Rescheduling(why) => why,
            _ => "",
        }
    }
}

impl fmt::Display for DeployState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeployState::Exited(code) => write!(f, "exited({code})"),
            DeployState::Failed(why) => write!(f, "failed: {why}"),
            DeployState::Queued(why) => write!(f, "queued: {why}"),
            DeployState::Expired(why) => write!(f, "expired: {why}"),
            DeployState::Rescheduling(why) => write!(f, "rescheduling: {why}"),
            other => f.write_str(other.name()),
        }
    }
}

/// One state change, with when it was seen.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    pub state: DeployState,
    pub at: SystemTime,
}

/// A deployment as its provider knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// Provider-scoped id (a container name or pod name).
    pub id: String,
    pub request_id: String,
    pub provider_id: String,
    pub image: String,
    pub resources: Resources,
    /// UUIDs of the GPUs assigned to it.
    pub gpus: Vec<String>,
    pub history: Vec<StateChange>,
    /// Its lease, as the owner answered for it; None when it holds none.
    pub lease: Option<super::LeaseView>,
    /// The labels it was deployed with.
    pub labels: BTreeMap<String, String>,
    /// Times its container was restarted by its restart policy.
    pub restarts: u32,
    /// Which placement of the deployment this container is (0: unknown).
    pub attempt: u32,
    /// The node that placed it, as the container says (empty: unknown).
    pub home: String,
    /// Every placement of the deployment, as its home recorded them.
    pub attempts: Vec<AttemptView>,
    /// Its priority when it may be evicted for work that outranks it;
    /// None when it may not.
    pub preemptible: Option<super::Priority>,
    /// Its owner stops it once its home has been out of reach this long (ms).
    pub stop_after_disconnect_ms: Option<u64>,
    /// starting, healthy or unhealthy when it has a health probe.
    pub health: Option<String>,
    /// Its ports as published on the provider's host (`host` 0: not published).
    pub ports: Vec<PortSpec>,
    /// The swarm group it was deployed for (empty: none), so a member that
    /// leaves may be asked to stop the group's work.
    pub group: String,
}

/// One placement of a deployment: where, and why it moved on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub provider_id: String,
    pub owner_id: String,
    /// When it was placed (Unix ms).
    pub at_ms: u64,
    /// Why a later attempt replaced it; empty for the current one.
    #[serde(default)]
    pub ended: String,
}

impl Deployment {
    /// Why it is in its state: why it waits, failed or expired, or that
    /// its lease ended it.
    pub fn reason(&self) -> String {
        let state = self.state();
        match (state.reason(), &self.lease) {
            ("", Some(l)) if state.is_final() => l.ended_reason().unwrap_or_default(),
            (why, _) => why.to_string(),
        }
    }

    pub fn state(&self) -> DeployState {
        self.history
            .last()
            .map(|c| c.state.clone())
            .unwrap_or(DeployState::Pending)
    }

    /// Appends `state` unless it is already the current one.
    pub fn push_state(&mut self, state: DeployState) {
        if self.history.last().map(|c| &c.state) != Some(&state) {
            self.history.push(StateChange {
                state,
                at: SystemTime::now(),
            });
        }
    }
}

/// Progress of a deploy, reported while it runs (image pulls take time).
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    State(DeployState),
    /// An image pull step: layer id, status text, bytes done and total.
    Pull {
        layer: String,
        status: String,
        current: u64,
        total: u64,
    },
}

/// One line of a deployment's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stderr: bool,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_read_and_write_back() {
        for (text, policy) in [
            ("", RestartPolicy::Never),
            ("never", RestartPolicy::Never),
            (
                "on-failure",
                RestartPolicy::OnFailure {
                    max: DEFAULT_MAX_RESTARTS,
                },
            ),
            ("On-Failure:5", RestartPolicy::OnFailure { max: 5 }),
            ("always", RestartPolicy::Always),
        ] {
            assert_eq!(RestartPolicy::parse(text), Ok(policy), "{text}");
            assert_eq!(RestartPolicy::parse(&policy.text()), Ok(policy));
        }
        for bad in [
            "sometimes",
            "on-failure:0",
            "on-failure:101",
            "on-failure:x",
        ] {
            let e = RestartPolicy::parse(bad).unwrap_err();
            assert!(e.contains("on-failure:N"), "{e}");
        }
    }
}
