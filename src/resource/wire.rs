//! Conversions between the resource plane's types and the wire: the
//! `iarnet.resource.v1` messages, and provider records in gossip.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proto::peer::ProviderInfo;
use crate::proto::resource as pb;
use crate::resource::Quantity;

use super::error::ResourceError;
use super::gpu::{GpuInfo, GpuStatus};
use super::lease::{LeaseState, LeaseTerms, LeaseView};
use super::target::ProviderTarget;
use super::types::*;

impl From<Resources> for pb::Resources {
    fn from(r: Resources) -> pb::Resources {
        pb::Resources {
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            gpus: r.gpus,
            storage_bytes: r.storage_bytes,
        }
    }
}

impl From<pb::Resources> for Resources {
    fn from(r: pb::Resources) -> Resources {
        Resources {
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            gpus: r.gpus,
            storage_bytes: r.storage_bytes,
        }
    }
}

impl From<Capacity> for pb::Capacity {
    fn from(c: Capacity) -> pb::Capacity {
        pb::Capacity {
            total: Some(c.total.into()),
            reserved: Some(c.reserved.into()),
            available: Some(c.available().into()),
            max_deployments: c.max_deployments.unwrap_or(0),
            deployments: c.deployments,
        }
    }
}

impl From<pb::Capacity> for Capacity {
    fn from(c: pb::Capacity) -> Capacity {
        Capacity {
            total: c.total.unwrap_or_default().into(),
            reserved: c.reserved.unwrap_or_default().into(),
            max_deployments: Some(c.max_deployments).filter(|m| *m > 0),
            deployments: c.deployments,
        }
    }
}

fn quantity(field: &str, text: &str, millis: bool) -> Result<u64, ResourceError> {
    if text.trim().is_empty() {
        return Ok(0);
    }
    let q = Quantity::parse(text).map_err(|e| {
        ResourceError::invalid(
            field,
            format!("{text:?} is not a quantity ({e}); write it like Kubernetes: \"500m\", \"2\", \"256Mi\""),
        )
    })?;
    let v = if millis { q.milli() } else { q.units_ceil() };
    u64::try_from(v).map_err(|_| ResourceError::invalid(field, format!("{text:?} is too large")))
}

/// The request's `priority` and `priority_value`, each error naming its field.
pub fn priority_from_proto(
    class: &str,
    value: i64,
) -> Result<crate::resource::Priority, ResourceError> {
    crate::resource::Priority::from_parts(class, value).map_err(|why| {
        let field = if why.starts_with("unknown priority") {
            "priority"
        } else {
            "priority_value"
        };
        ResourceError::invalid(field, why)
    })
}

/// A spec from the API or a CallProvider payload; quantities are parsed here.
pub fn spec_from_proto(s: pb::DeploySpec) -> Result<DeploySpec, ResourceError> {
    let mut ports = Vec::new();
    for (i, p) in s.ports.iter().enumerate() {
        let port = |v: u32, what: &str| {
            u16::try_from(v).map_err(|_| {
                ResourceError::invalid(&format!("ports[{i}].{what}"), "must be between 1 and 65535")
            })
        };
        ports.push(PortSpec {
            container: port(p.container, "container")?,
            host: port(p.host, "host")?,
            udp: p.udp,
        });
    }
    let lease =
        LeaseTerms::from_fields(&s.lease_ttl, s.auto_renew, s.max_renewals, &s.lease_holder)?;
    let restart =
        RestartPolicy::parse(&s.restart).map_err(|why| ResourceError::invalid("restart", why))?;
    let reschedule = s
        .reschedule
        .as_ref()
        .map(reschedule_from_proto)
        .transpose()?;
    let spread = crate::resource::Spread::parse(&s.spread, s.max_skew, &s.when_unsatisfiable)
        .map_err(|(field, why)| ResourceError::invalid(field, why))?;
    let replica_of = Some(s.service)
        .filter(|svc| !svc.is_empty())
        .map(|service| crate::resource::ReplicaOf {
            service,
            index: s.replica,
        });
    let priority = priority_from_proto(&s.priority, s.priority_value)?;
    let preemption = crate::resource::PreemptionPolicy::parse(&s.preemption_policy)
        .map_err(|why| ResourceError::invalid("preemption_policy", why))?;
    let stop_after_disconnect_ms = match s.stop_after_disconnect.trim() {
        "" => None,
        text => {
            let d = humantime::parse_duration(text).map_err(|e| {
                ResourceError::invalid(
                    "stop_after_disconnect",
                    format!("{text:?} is not a duration ({e}): write e.g. \"30s\" or \"5m\", or leave it empty to keep running"),
                )
            })?;
            if d < std::time::Duration::from_secs(1) {
                return Err(ResourceError::invalid(
                    "stop_after_disconnect",
                    format!("{text:?} is shorter than 1s: a blip would stop the work; use at least a few gossip rounds"),
                ));
            }
            Some(d.as_millis() as u64)
        }
    };
    let healthcheck = match s.healthcheck {
        Some(h) if !h.test.is_empty() => {
            if !matches!(h.test[0].as_str(), "CMD" | "CMD-SHELL") || h.test.len() < 2 {
                return Err(ResourceError::invalid(
                    "healthcheck.test",
                    "must be [\"CMD\", program, args...] or [\"CMD-SHELL\", \"a shell line\"]",
                ));
            }
            Some(crate::resource::HealthSpec {
                test: h.test,
                interval_ms: h.interval_ms,
                timeout_ms: h.timeout_ms,
                retries: h.retries,
                start_period_ms: h.start_period_ms,
            })
        }
        _ => None,
    };
    let scope = crate::resource::Scope {
        group: swarm_name("group", s.group)?,
        pool: swarm_name("pool", s.pool)?,
        model: swarm_name("requires_model", s.requires_model)?,
    };
    Ok(DeploySpec {
        scope,
        network: Some(s.network).filter(|n| !n.is_empty()),
        aliases: s.aliases,
        healthcheck,
        stop_after_disconnect_ms,
        priority,
        preemptible: s.preemptible,
        preemption,
        lease,
        restart,
        reschedule,
        spread,
        replica_of,
        attempt: s.attempt,
        home: s.home,
        resources: Resources {
            cpu_millis: quantity("cpu", &s.cpu, true)?,
            memory_bytes: quantity("memory", &s.memory, false)?,
            gpus: s.gpu,
            storage_bytes: quantity("storage", &s.storage, false)?,
        },
        request_id: s.request_id,
        name: s.name,
        image: s.image,
        command: s.command,
        args: s.args,
        env: s.env.into_iter().collect(),
        ports,
        gpu_model: Some(s.gpu_model).filter(|m| !m.is_empty()),
        gpu_shared: s.gpu_shared,
        labels: s.labels.into_iter().collect(),
        required_labels: s.required_labels.into_iter().collect(),
    })
}

/// A group, pool or model name of a deploy's scope: empty is none.
fn swarm_name(field: &str, text: String) -> Result<Option<String>, ResourceError> {
    let text = text.trim().to_string();
    if text.is_empty() {
        return Ok(None);
    }
    if !crate::config::valid_model(&text) {
        return Err(ResourceError::invalid(
            field,
            format!("{text:?}: names are 1-63 letters, digits, '-', '_', '.' or ':'"),
        ));
    }
    Ok(Some(text))
}

fn duration_field(field: &str, text: &str, default: u64) -> Result<u64, ResourceError> {
    if text.trim().is_empty() {
        return Ok(default);
    }
    humantime::parse_duration(text.trim())
        .map(|d| d.as_millis() as u64)
        .map_err(|e| {
            ResourceError::invalid(
                field,
                format!("{text:?} is not a duration ({e}): write e.g. \"30s\" or \"1h\""),
            )
        })
}

fn reschedule_from_proto(r: &pb::Reschedule) -> Result<ReschedulePolicy, ResourceError> {
    let d = ReschedulePolicy::default();
    let delay_function = match r.delay_function.trim() {
        "" | "exponential" => DelayFunction::Exponential,
        "constant" => DelayFunction::Constant,
        "fibonacci" => DelayFunction::Fibonacci,
        other => {
            return Err(ResourceError::invalid(
                "reschedule.delay_function",
                format!("{other:?}: use constant, exponential or fibonacci"),
            ))
        }
    };
    let p = ReschedulePolicy {
        attempts: if r.attempts == 0 {
            d.attempts
        } else {
            r.attempts
        },
        interval_ms: duration_field("reschedule.interval", &r.interval, d.interval_ms)?,
        delay_ms: duration_field("reschedule.delay", &r.delay, d.delay_ms)?,
        delay_function,
        max_delay_ms: duration_field("reschedule.max_delay", &r.max_delay, d.max_delay_ms)?,
        unlimited: r.unlimited,
        after_ms: duration_field("reschedule.after", &r.after, d.after_ms)?,
    };
    if p.attempts > 1_000 {
        return Err(ResourceError::invalid(
            "reschedule.attempts",
            "at most 1000 (or set unlimited)",
        ));
    }
    Ok(p)
}

/// The spec as sent to another node (exact amounts, no placement hints).
pub fn spec_to_proto(s: &DeploySpec) -> pb::DeploySpec {
    pb::DeploySpec {
        request_id: s.request_id.clone(),
        name: s.name.clone(),
        image: s.image.clone(),
        command: s.command.clone(),
        args: s.args.clone(),
        env: s.env.clone().into_iter().collect(),
        ports: s
            .ports
            .iter()
            .map(|p| pb::Port {
                container: p.container.into(),
                host: p.host.into(),
                udp: p.udp,
            })
            .collect(),
        cpu: format!("{}m", s.resources.cpu_millis),
        memory: s.resources.memory_bytes.to_string(),
        gpu: s.resources.gpus,
        gpu_model: s.gpu_model.clone().unwrap_or_default(),
        gpu_shared: s.gpu_shared,
        storage: if s.resources.storage_bytes == 0 {
            String::new()
        } else {
            s.resources.storage_bytes.to_string()
        },
        labels: s.labels.clone().into_iter().collect(),
        required_labels: s.required_labels.clone().into_iter().collect(),
        // Exact milliseconds, which humantime reads back as they were.
        lease_ttl: s
            .lease
            .as_ref()
            .map(|l| format!("{}ms", l.ttl_ms))
            .unwrap_or_default(),
        auto_renew: s.lease.as_ref().is_some_and(|l| l.auto_renew),
        max_renewals: s.lease.as_ref().and_then(|l| l.max_renewals),
        lease_holder: s
            .lease
            .as_ref()
            .map(|l| l.holder.clone())
            .unwrap_or_default(),
        restart: match s.restart {
            RestartPolicy::Never => String::new(),
            other => other.text(),
        },
        attempt: s.attempt,
        home: s.home.clone(),
        service: s
            .replica_of
            .as_ref()
            .map(|r| r.service.clone())
            .unwrap_or_default(),
        replica: s.replica_of.as_ref().map_or(0, |r| r.index),
        priority: s.priority.class.as_str().to_string(),
        priority_value: s.priority.value,
        preemptible: s.preemptible,
        stop_after_disconnect: s
            .stop_after_disconnect_ms
            .map(|ms| format!("{ms}ms"))
            .unwrap_or_default(),
        preemption_policy: match s.preemption {
            crate::resource::PreemptionPolicy::Never => String::new(),
            p => p.as_str().to_string(),
        },
        network: s.network.clone().unwrap_or_default(),
        aliases: s.aliases.clone(),
        healthcheck: s.healthcheck.as_ref().map(|h| pb::HealthCheck {
            test: h.test.clone(),
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            retries: h.retries,
            start_period_ms: h.start_period_ms,
        }),
        group: s.scope.group.clone().unwrap_or_default(),
        pool: s.scope.pool.clone().unwrap_or_default(),
        requires_model: s.scope.model.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn unix_ms(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn ms_of(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        (secs * 1000.0) as u64
    } else {
        0
    }
}

pub fn lease_to_proto(l: &LeaseView) -> pb::Lease {
    pb::Lease {
        holder: l.holder.clone(),
        epoch: l.epoch,
        state: l.state.as_str().to_string(),
        seed_state: l.seed_state.clone(),
        ttl_secs: unix_ms(l.terms.ttl_ms),
        auto_renew: l.terms.auto_renew,
        max_renewals: l.terms.max_renewals,
        renewals: l.renewals,
        transitions: l.transitions,
        acquired_unix: unix_ms(l.acquired_ms),
        renewed_unix: l.renewed_ms.map_or(0.0, unix_ms),
        expires_unix: unix_ms(l.expires_ms),
        expires_in_secs: unix_ms(l.remaining_ms),
    }
}

pub fn lease_from_proto(l: pb::Lease) -> LeaseView {
    LeaseView {
        terms: LeaseTerms {
            ttl_ms: ms_of(l.ttl_secs),
            auto_renew: l.auto_renew,
            max_renewals: l.max_renewals,
            holder: l.holder.clone(),
        },
        holder: l.holder,
        epoch: l.epoch,
        acquired_ms: ms_of(l.acquired_unix),
        renewed_ms: Some(ms_of(l.renewed_unix)).filter(|m| *m > 0),
        expires_ms: ms_of(l.expires_unix),
        remaining_ms: ms_of(l.expires_in_secs),
        renewals: l.renewals,
        transitions: l.transitions,
        state: LeaseState::parse(&l.state),
        seed_state: l.seed_state,
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A time sent as Unix seconds; nonsense (negative, NaN, beyond the clock's
/// range) becomes the epoch instead of a panic, since a peer may send it.
pub fn from_unix(secs: f64) -> SystemTime {
    Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .unwrap_or(UNIX_EPOCH)
}

fn detail(s: &DeployState) -> String {
    match s {
        DeployState::Exited(code) => format!("exit code {code}"),
        DeployState::Failed(why)
        | DeployState::Queued(why)
        | DeployState::Expired(why)
        | DeployState::Rescheduling(why) => why.clone(),
        _ => String::new(),
    }
}

fn state_from(name: &str, detail: &str) -> DeployState {
    match name {
        "pulling" => DeployState::Pulling,
        "starting" => DeployState::Starting,
        "running" => DeployState::Running,
        "exited" => DeployState::Exited(
            detail
                .trim_start_matches("exit code ")
                .parse()
                .unwrap_or(-1),
        ),
        "failed" => DeployState::Failed(detail.to_string()),
        "queued" => DeployState::Queued(detail.to_string()),
        "expired" => DeployState::Expired(detail.to_string()),
        "rescheduling" => DeployState::Rescheduling(detail.to_string()),
        "stopped" => DeployState::Stopped,
        _ => DeployState::Pending,
    }
}

pub fn deployment_to_proto(d: &Deployment, owner_id: &str) -> pb::Deployment {
    pb::Deployment {
        id: d.id.clone(),
        request_id: d.request_id.clone(),
        provider_id: d.provider_id.clone(),
        owner_id: owner_id.to_string(),
        image: d.image.clone(),
        resources: Some(d.resources.into()),
        gpus: d.gpus.clone(),
        state: d.state().name().to_string(),
        reason: d.reason(),
        lease: d.lease.as_ref().map(lease_to_proto),
        home_id: String::new(),
        labels: d.labels.clone().into_iter().collect(),
        restarts: d.restarts,
        attempt: d.attempt,
        preemptible: d.preemptible.is_some(),
        priority: d.preemptible.map(|p| p.label()).unwrap_or_default(),
        health: d.health.clone().unwrap_or_default(),
        group: d.group.clone(),
        ports: d
            .ports
            .iter()
            .map(|p| pb::Port {
                container: p.container.into(),
                host: p.host.into(),
                udp: p.udp,
            })
            .collect(),
        attempts: d
            .attempts
            .iter()
            .map(|a| pb::Attempt {
                attempt: a.attempt,
                provider_id: a.provider_id.clone(),
                owner_id: a.owner_id.clone(),
                placed_unix: unix_ms(a.at_ms),
                ended: a.ended.clone(),
            })
            .collect(),
        history: d
            .history
            .iter()
            .map(|c| pb::StateChange {
                state: c.state.name().to_string(),
                detail: detail(&c.state),
                at_unix: unix(c.at),
            })
            .collect(),
    }
}

pub fn deployment_from_proto(d: pb::Deployment) -> Deployment {
    Deployment {
        id: d.id,
        request_id: d.request_id,
        provider_id: d.provider_id,
        image: d.image,
        resources: d.resources.unwrap_or_default().into(),
        gpus: d.gpus,
        history: d
            .history
            .into_iter()
            .map(|c| StateChange {
                state: state_from(&c.state, &c.detail),
                at: from_unix(c.at_unix),
            })
            .collect(),
        lease: d.lease.map(lease_from_proto),
        labels: d.labels.into_iter().collect(),
        restarts: d.restarts,
        attempt: d.attempt,
        home: String::new(),
        preemptible: Some(&d.priority)
            .filter(|_| d.preemptible)
            .map(|p| crate::resource::Priority::from_label(p).unwrap_or_default()),
        stop_after_disconnect_ms: None,
        health: Some(d.health).filter(|h| !h.is_empty()),
        group: d.group,
        ports: d
            .ports
            .iter()
            .map(|p| PortSpec {
                container: u16::try_from(p.container).unwrap_or(0),
                host: u16::try_from(p.host).unwrap_or(0),
                udp: p.udp,
            })
            .collect(),
        attempts: d
            .attempts
            .into_iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                provider_id: a.provider_id,
                owner_id: a.owner_id,
                at_ms: ms_of(a.placed_unix),
                ended: a.ended,
            })
            .collect(),
    }
}

/// Status codes carried in `ProviderInfo.status`.
pub const PROVIDER_HEALTHY: i32 = 1;
pub const PROVIDER_UNHEALTHY: i32 = 2;

/// How a provider is advertised in gossip: identity, kind, health,
/// capacity and labels; never credentials.
pub fn provider_info(d: &ProviderDescriptor) -> ProviderInfo {
    ProviderInfo {
        id: d.id.clone(),
        name: d.name.clone(),
        r#type: d.kind.as_str().to_string(),
        status: if d.healthy {
            PROVIDER_HEALTHY
        } else {
            PROVIDER_UNHEALTHY
        },
        labels: d.labels.clone().into_iter().collect(),
        capacity: Some(d.capacity.into()),
        gpus: d.gpus.iter().map(gpu_to_proto).collect(),
        ..Default::default()
    }
}

pub fn gpu_to_proto(g: &GpuStatus) -> pb::Gpu {
    pb::Gpu {
        index: g.gpu.index,
        uuid: g.gpu.uuid.clone(),
        model: g.gpu.model.clone(),
        memory_bytes: g.gpu.memory_bytes,
        memory_used_bytes: g.gpu.memory_used_bytes,
        utilization_pct: g.gpu.utilization_pct,
        holders: g.holders,
    }
}

pub fn gpu_from_proto(g: &pb::Gpu) -> GpuStatus {
    GpuStatus {
        gpu: GpuInfo {
            index: g.index,
            uuid: g.uuid.clone(),
            model: g.model.clone(),
            memory_bytes: g.memory_bytes,
            memory_used_bytes: g.memory_used_bytes,
            utilization_pct: g.utilization_pct,
        },
        holders: g.holders,
    }
}

/// A provider another node advertises, as a placement candidate.
pub fn candidate_from_gossip(p: &ProviderInfo, owner_addr: &str) -> Candidate {
    Candidate {
        id: p.id.clone(),
        name: p.name.clone(),
        kind: ProviderKind::parse(&p.r#type).unwrap_or(ProviderKind::Memory),
        tier: Tier::Discovered,
        owner_id: p.owner_id.clone(),
        owner_addr: owner_addr.to_string(),
        healthy: p.status == PROVIDER_HEALTHY,
        capacity: p.capacity.unwrap_or_default().into(),
        labels: p.labels.clone().into_iter().collect(),
        version: p.version,
        gpus: p.gpus.iter().map(gpu_from_proto).collect(),
    }
}

/// A provider as `ListProviders` and the `capacity` call answer it; the
/// endpoint is left out (it may name internal hosts).
pub fn provider_entry(c: &Candidate) -> pb::ProviderEntry {
    pb::ProviderEntry {
        id: c.id.clone(),
        name: c.name.clone(),
        r#type: c.kind.as_str().to_string(),
        tier: c.tier.as_str().to_string(),
        owner_id: c.owner_id.clone(),
        healthy: c.healthy,
        capacity: Some(c.capacity.into()),
        labels: c.labels.clone().into_iter().collect(),
        endpoint: String::new(),
        gpus: c.gpus.iter().map(gpu_to_proto).collect(),
    }
}

impl From<pb::RegisterProviderRequest> for ProviderTarget {
    fn from(r: pb::RegisterProviderRequest) -> ProviderTarget {
        ProviderTarget {
            kind: r.r#type,
            name: r.name,
            endpoint: r.endpoint,
            tls_ca: r.tls_ca,
            tls_cert: r.tls_cert,
            tls_key: r.tls_key,
            token: r.token,
            kubeconfig_path: r.kubeconfig_path,
            labels: r.labels.into_iter().collect(),
            max_deployments: Some(r.max_deployments).filter(|m| *m > 0),
        }
    }
}

/// A deploy's progress as a `DeployEvent`.
pub fn progress_to_proto(p: Progress) -> pb::DeployEvent {
    use pb::deploy_event::Event;
    pb::DeployEvent {
        event: Some(match p {
            Progress::State(s) => Event::State(s.name().to_string()),
            Progress::Pull {
                layer,
                status,
                current,
                total,
            } => Event::Pull(pb::PullProgress {
                layer,
                status,
                current,
                total,
            }),
        }),
    }
}

/// The progress a `DeployEvent` carries; None for other events.
pub fn progress_from_proto(e: pb::DeployEvent) -> Option<Progress> {
    use pb::deploy_event::Event;
    match e.event? {
        Event::State(s) => Some(Progress::State(state_from(&s, ""))),
        Event::Pull(p) => Some(Progress::Pull {
            layer: p.layer,
            status: p.status,
            current: p.current,
            total: p.total,
        }),
        _ => None,
    }
}
