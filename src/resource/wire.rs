//! Conversions between the resource plane's types and `iarnet.resource.v1`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proto::resource as pb;
use crate::resource::Quantity;

use super::error::ResourceError;
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
        }
    }
}

impl From<pb::Capacity> for Capacity {
    fn from(c: pb::Capacity) -> Capacity {
        Capacity {
            total: c.total.unwrap_or_default().into(),
            reserved: c.reserved.unwrap_or_default().into(),
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
    Ok(DeploySpec {
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
        ..Default::default()
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
        DeployState::Failed(why) => why.clone(),
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
    }
}
