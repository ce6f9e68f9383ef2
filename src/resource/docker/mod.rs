//! The Docker engine as a provider (bollard).
//!
//! Every container iarnet makes is named after its request and its
//! provider (`<validate::deployment_id(request_id)>.<8 hex of the provider
//! id>`, see `container_name`) and carries its own books in labels:
//!
//! ```text
//! iarnet.managed=true          iarnet.provider=<provider id>   iarnet.node=<node id>
//! iarnet.request=<request id>  iarnet.cpu_millis=<n>           iarnet.memory_bytes=<n>
//! iarnet.gpus=<uuid,uuid>      iarnet.gpu_shared=<bool>        iarnet.storage_bytes=<n> (when set)
//! ```
//!
//! The name makes deploys idempotent (a retry finds the container, a racing
//! twin gets a name conflict) while providers sharing one engine keep apart
//! (a deployment moved from one to the other is two containers); the labels let a restarted node rebuild its
//! ledger and GPU assignments from the engine alone. A container that has
//! exited holds nothing: its reservation is released as soon as it is seen
//! exited, like a terminated Pod.
//!
//! Admission is the same as in the in-memory twin: reserve in the ledger
//! and assign GPUs under the books' lock, then create; release on failure.
//!
//! `connect` reaches and negotiates with the engine, `facts` reads what a
//! container's labels and state say, `books` keeps the reservations in line
//! with the engine, `containers` makes and removes containers, `logs`
//! splits the engine's log frames, and `provider` is the `Provider` impl.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bollard::errors::Error as EngineError;
use bollard::{ClientVersion, Docker};

use super::error::ResourceError;
use super::gpu::{GpuInfo, GpuProbe, GpuRefresh};
use super::types::Resources;
use crate::sync::KeyLocks;
use books::Books;
use connect::{chain, is_connection_error};

mod books;
mod build;
mod connect;
mod containers;
mod facts;
mod logs;
mod provider;
pub use containers::HOST_ALIAS;
#[cfg(test)]
mod tests;

/// Where the engine is when no endpoint is configured and `DOCKER_HOST` is unset.
pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// Seconds a request to the engine may take before it counts as unreachable.
const ENGINE_TIMEOUT_S: u64 = 120;
/// Seconds `stop` gives a container between SIGTERM and SIGKILL.
const STOP_GRACE_S: i32 = 2;
/// How long a create may wait on a name another create holds.
const NAME_RACE_WAIT: Duration = Duration::from_secs(30);
/// The oldest API version asked for when the engine refuses the default.
const FLOOR_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 24,
};

/// Client certificates for a TLS endpoint (`tcp://host:2376`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to reach an engine and what to offer from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DockerSettings {
    /// Stable provider id, unique in the mesh; also labels the containers.
    pub id: String,
    pub name: String,
    /// `unix:///path` or `tcp://host:port`; None = `DOCKER_HOST` or the local socket.
    pub endpoint: Option<String>,
    pub tls: Option<DockerTls>,
    /// What to offer; None = the host's totals from `docker info` (NCPU, MemTotal).
    pub limits: Option<Resources>,
    /// The most deployments it runs at once; None is no limit.
    pub max_deployments: Option<u32>,
    /// Advertised labels (`region`, `zone`, …); `gpu.model` is added when GPUs exist.
    pub labels: BTreeMap<String, String>,
    /// The node this provider belongs to (labels its containers).
    pub node_id: String,
    /// GPUs of the engine's host, assigned to containers by UUID.
    pub gpus: Vec<GpuInfo>,
}

/// A Docker engine, reached through bollard, as an iarnet provider.
pub struct DockerProvider {
    id: String,
    name: String,
    node_id: String,
    /// Where the engine is, without credentials.
    endpoint: String,
    labels: BTreeMap<String, String>,
    docker: Docker,
    books: Mutex<Books>,
    /// Re-reads the GPUs on each describe, when the host has any.
    gpu_refresh: Option<GpuRefresh>,
    /// One lock per deployment key: deploys and stops of the same request
    /// run one at a time, different requests in parallel.
    key_locks: KeyLocks,
}

impl std::fmt::Debug for DockerProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerProvider")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl DockerProvider {
    /// The engine client (for callers that need more than the trait).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The engine's endpoint as advertised (never credentials).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Re-reads its GPUs from `probe` each time it is described (the
    /// node's refresh loop): memory in use and utilisation reach its
    /// record, and a GPU the probe stops seeing is no longer offered.
    /// Without GPUs at start there is nothing to follow.
    pub fn with_gpu_probe(mut self, probe: std::sync::Arc<dyn GpuProbe>) -> DockerProvider {
        let refresh = GpuRefresh::new(probe, &self.books().gpus);
        if refresh.follows_any() {
            self.gpu_refresh = Some(refresh);
        }
        self
    }

    pub(super) fn not_found(&self, id: &str) -> ResourceError {
        ResourceError::NotFound(format!(
            "deployment {id:?} not found on provider {}",
            self.id
        ))
    }

    /// Maps an engine error met while doing `what`.
    pub(super) fn engine_error(&self, what: &str, e: EngineError) -> ResourceError {
        match e {
            EngineError::DockerResponseServerError {
                status_code: 404,
                message,
            } => ResourceError::NotFound(format!("{what}: {message}")),
            EngineError::DockerResponseServerError {
                status_code,
                message,
            } => ResourceError::Backend(format!(
                "{what}: the engine answered {status_code}: {message}"
            )),
            e if is_connection_error(&e) => ResourceError::Unavailable {
                provider: self.id.clone(),
                reason: format!("{what}: the engine at {}: {}", self.endpoint, chain(&e)),
            },
            e => ResourceError::Backend(format!("{what}: {}", chain(&e))),
        }
    }
}
