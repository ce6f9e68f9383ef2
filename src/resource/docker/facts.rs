//! What a container's labels and state say about a deployment.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary, ContainerSummaryStateEnum,
};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::resource::labels;
use crate::resource::types::{DeployState, Resources, RestartPolicy, StateChange};

/// What a container's labels and state say about a deployment.
#[derive(Debug, Clone)]
pub(super) struct Facts {
    /// The deployment id.
    pub(super) key: String,
    /// The container's name on the engine (see `container_name`).
    pub(super) name: String,
    pub(super) request_id: String,
    pub(super) image: String,
    pub(super) resources: Resources,
    pub(super) gpus: Vec<String>,
    pub(super) gpu_shared: bool,
    pub(super) state: DeployState,
    pub(super) created: Option<SystemTime>,
    pub(super) started: Option<SystemTime>,
    pub(super) finished: Option<SystemTime>,
    /// The deployment's own labels (not iarnet's bookkeeping).
    pub(super) labels: std::collections::BTreeMap<String, String>,
    /// Restarts the engine made (inspect only; a listing does not say).
    pub(super) restarts: u32,
    /// Which placement of the deployment, and its home, from the labels.
    pub(super) attempt: u32,
    pub(super) home: String,
    /// Its priority when it may be evicted, from its label.
    pub(super) preemptible: Option<crate::resource::Priority>,
    pub(super) stop_after_disconnect_ms: Option<u64>,
    pub(super) group: String,
    /// Its health probe's verdict (inspect only).
    pub(super) health: Option<String>,
    /// Its ports published on the host (inspect only).
    pub(super) ports: Vec<crate::resource::PortSpec>,
}

impl Facts {
    /// An exited container whose `on-failure` policy gave up is failed:
    /// the engine restarts it otherwise (it reads "restarting" meanwhile).
    fn settled(mut self, labels: &HashMap<String, String>) -> Facts {
        let policy = labels
            .get(labels::RESTART)
            .and_then(|p| RestartPolicy::parse(p).ok())
            .unwrap_or_default();
        if let (DeployState::Exited(code), RestartPolicy::OnFailure { max }) = (&self.state, policy)
        {
            // Exhausted: the engine made exactly `max` restarts.
            self.state = policy.settle(*code, max);
        }
        self
    }

    /// What the container holds in the ledger (shared GPUs are not counted).
    pub(super) fn ledger_need(&self) -> Resources {
        let mut need = self.resources;
        if self.gpu_shared {
            need.gpus = 0;
        }
        need
    }

    pub(super) fn live(&self) -> bool {
        !self.state.is_final()
    }

    pub(super) fn from_labels(
        provider: &str,
        name: &str,
        labels: Option<&HashMap<String, String>>,
        image: String,
        state: DeployState,
    ) -> Option<Facts> {
        let labels = labels?;
        if labels.get(labels::MANAGED).map(String::as_str) != Some("true")
            || labels.get(labels::PROVIDER).map(String::as_str) != Some(provider)
        {
            return None;
        }
        let num = |k: &str| {
            labels
                .get(k)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let gpus: Vec<String> = labels
            .get(labels::GPUS)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        Some(Facts {
            // Up to the provider scope; older releases named it by id alone.
            key: name.split('.').next().unwrap_or(name).to_string(),
            name: name.to_string(),
            request_id: labels.get(labels::REQUEST).cloned().unwrap_or_default(),
            image,
            resources: Resources {
                cpu_millis: num(labels::CPU_MILLIS),
                memory_bytes: num(labels::MEMORY_BYTES),
                gpus: gpus.len() as u32,
                storage_bytes: num(labels::STORAGE_BYTES),
            },
            gpu_shared: labels.get(labels::GPU_SHARED).map(String::as_str) == Some("true"),
            gpus,
            state,
            created: None,
            started: None,
            finished: None,
            labels: labels
                .iter()
                .filter(|(k, _)| !k.starts_with(labels::RESERVED_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            restarts: 0,
            attempt: num(labels::ATTEMPT) as u32,
            home: labels.get(labels::HOME).cloned().unwrap_or_default(),
            preemptible: labels
                .get(labels::PREEMPTIBLE)
                .and_then(|p| crate::resource::Priority::from_label(p)),
            stop_after_disconnect_ms: labels
                .get(labels::STOP_AFTER_DISCONNECT)
                .and_then(|ms| ms.parse().ok()),
            health: None,
            ports: Vec::new(),
            group: labels.get(labels::GROUP).cloned().unwrap_or_default(),
        })
        .map(|f| f.settled(labels))
    }

    pub(super) fn from_inspect(provider: &str, c: &ContainerInspectResponse) -> Option<Facts> {
        let key = c.name.as_deref()?.trim_start_matches('/');
        let config = c.config.as_ref()?;
        let image = config
            .image
            .clone()
            .or_else(|| c.image.clone())
            .unwrap_or_default();
        let st = c.state.as_ref();
        let state = match st.and_then(|s| s.status) {
            None | Some(ContainerStateStatusEnum::EMPTY) => DeployState::Pending,
            Some(ContainerStateStatusEnum::CREATED) => DeployState::Starting,
            Some(ContainerStateStatusEnum::RESTARTING) => DeployState::Starting,
            Some(ContainerStateStatusEnum::RUNNING)
            | Some(ContainerStateStatusEnum::PAUSED)
            | Some(ContainerStateStatusEnum::STOPPING) => DeployState::Running,
            Some(ContainerStateStatusEnum::REMOVING) => DeployState::Stopped,
            Some(ContainerStateStatusEnum::EXITED) => {
                DeployState::Exited(st.and_then(|s| s.exit_code).unwrap_or(-1))
            }
            Some(ContainerStateStatusEnum::DEAD) => DeployState::Failed(
                st.and_then(|s| s.error.clone())
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "the container is dead".into()),
            ),
        };
        let restarts = c
            .restart_count
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
        let mut f = Facts::from_labels(provider, key, config.labels.as_ref(), image, state)?;
        f.restarts = restarts;
        f.health = st
            .and_then(|s| s.health.as_ref())
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none");
        f.ports = published_ports(c);
        f.created = c.created.as_deref().and_then(parse_time);
        f.started = st
            .and_then(|s| s.started_at.as_deref())
            .and_then(parse_time);
        f.finished = st
            .and_then(|s| s.finished_at.as_deref())
            .and_then(parse_time);
        Some(f)
    }

    pub(super) fn from_summary(provider: &str, c: &ContainerSummary) -> Option<Facts> {
        let key = c.names.as_ref()?.first()?.trim_start_matches('/');
        let state = match c.state {
            None | Some(ContainerSummaryStateEnum::EMPTY) => DeployState::Pending,
            Some(ContainerSummaryStateEnum::CREATED)
            | Some(ContainerSummaryStateEnum::RESTARTING) => DeployState::Starting,
            Some(ContainerSummaryStateEnum::RUNNING)
            | Some(ContainerSummaryStateEnum::PAUSED)
            | Some(ContainerSummaryStateEnum::STOPPING) => DeployState::Running,
            Some(ContainerSummaryStateEnum::REMOVING) => DeployState::Stopped,
            Some(ContainerSummaryStateEnum::EXITED) => {
                DeployState::Exited(c.status.as_deref().and_then(exit_code_of).unwrap_or(-1))
            }
            Some(ContainerSummaryStateEnum::DEAD) => {
                DeployState::Failed("the container is dead".into())
            }
        };
        let image = c.image.clone().unwrap_or_default();
        let mut f = Facts::from_labels(provider, key, c.labels.as_ref(), image, state)?;
        f.created = c
            .created
            .and_then(|s| u64::try_from(s).ok())
            .map(|s| UNIX_EPOCH + Duration::from_secs(s));
        Some(f)
    }

    /// A history for a deployment first seen now, from the engine's timestamps.
    pub(super) fn seed_history(&self) -> Vec<StateChange> {
        let now = SystemTime::now();
        let mut h = Vec::new();
        let mut push = |state: DeployState, at: Option<SystemTime>| {
            if h.last().map(|c: &StateChange| &c.state) != Some(&state) {
                h.push(StateChange {
                    state,
                    at: at.unwrap_or(now),
                });
            }
        };
        push(DeployState::Pending, self.created);
        match &self.state {
            DeployState::Pending | DeployState::Starting | DeployState::Pulling => {}
            DeployState::Running => push(DeployState::Running, self.started),
            final_state => {
                if self.started.is_some() {
                    push(DeployState::Running, self.started);
                }
                push(final_state.clone(), self.finished);
            }
        }
        push(self.state.clone(), None);
        h
    }
}

/// A valid Docker container name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), as every
/// deployment id of this provider is.
/// The container's ports and the host ports they are published on.
fn published_ports(c: &ContainerInspectResponse) -> Vec<crate::resource::PortSpec> {
    let Some(ports) = c.network_settings.as_ref().and_then(|n| n.ports.as_ref()) else {
        return Vec::new();
    };
    let mut out: Vec<crate::resource::PortSpec> = ports
        .iter()
        .filter_map(|(key, bindings)| {
            let (n, proto) = key.split_once('/').unwrap_or((key, "tcp"));
            let host = bindings
                .as_ref()
                .and_then(|b| b.iter().find_map(|b| b.host_port.as_deref()?.parse().ok()))
                .unwrap_or(0);
            Some(crate::resource::PortSpec {
                container: n.parse().ok()?,
                host,
                udp: proto == "udp",
            })
        })
        .collect();
    out.sort_by_key(|p| (p.container, p.udp));
    out
}

pub(super) fn is_container_name(s: &str) -> bool {
    s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The exit code in a summary status such as `Exited (137) 3 seconds ago`.
pub(super) fn exit_code_of(status: &str) -> Option<i64> {
    let open = status.find('(')?;
    let close = status[open..].find(')')? + open;
    status[open + 1..close].trim().parse().ok()
}

/// Parses the engine's RFC 3339 timestamps (`2024-05-01T12:00:00.123456789Z`).
/// Go's zero time (`0001-01-01T00:00:00Z`) means "never", as does any time
/// before the epoch or anything that does not parse.
pub(super) fn parse_time(s: &str) -> Option<SystemTime> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    if t.unix_timestamp() < 0 {
        return None;
    }
    Some(SystemTime::from(t))
}
