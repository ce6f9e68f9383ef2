//! Label keys with a meaning to iarnet, in one place.
//!
//! Provider labels travel in gossip and feed placement; workload labels
//! (`iarnet.*`) sit on every container and pod iarnet makes, so a restarted
//! node can rebuild its books from what runs.

/// The model of a provider's GPUs ("NVIDIA H100 80GB HBM3").
pub const GPU_MODEL: &str = "gpu.model";
/// The provider's region (`placement.region`); the geographic strategy reads it.
pub const REGION: &str = "region";
/// The provider's zone (`placement.zone`).
pub const ZONE: &str = "zone";
/// Set to "true" on providers that build images from source: their owner
/// takes build contexts for them (`iarnet.build.v1.ImageBuild`).
pub const BUILDS: &str = "builds";
/// Set to "true" on providers an operator registered (external tier).
pub const EXTERNAL: &str = "external";

/// Labels a spec may not set: they belong to iarnet.
pub const RESERVED_PREFIX: &str = "iarnet.";

/// Put by a node on its providers' candidates: its swarm groups, the pools
/// it belongs to, the models it serves (always "true").
pub fn group(name: &str) -> String {
    format!("iarnet.group.{name}")
}
pub fn pool(name: &str) -> String {
    format!("iarnet.pool.{name}")
}
pub fn model(name: &str) -> String {
    format!("iarnet.model.{name}")
}
/// "true" on every workload iarnet made.
pub const MANAGED: &str = "iarnet.managed";
/// The provider id that made the workload.
pub const PROVIDER: &str = "iarnet.provider";
/// The node that owns that provider.
pub const NODE: &str = "iarnet.node";
/// The request id the deployment came from.
pub const REQUEST: &str = "iarnet.request";
/// The deployment's display name (a Kubernetes annotation).
pub const NAME: &str = "iarnet.name";
/// The reservation a Docker container holds, so books can be rebuilt.
pub const CPU_MILLIS: &str = "iarnet.cpu_millis";
pub const MEMORY_BYTES: &str = "iarnet.memory_bytes";
pub const STORAGE_BYTES: &str = "iarnet.storage_bytes";
pub const GPUS: &str = "iarnet.gpus";
pub const GPU_SHARED: &str = "iarnet.gpu_shared";
/// The deployment's restart policy (`on-failure:3`), so an exit is read right.
pub const RESTART: &str = "iarnet.restart";
/// Which placement of the deployment the container is (`2` after a failover).
pub const ATTEMPT: &str = "iarnet.attempt";
/// The node that placed it, which its owner asks whether it is still current.
pub const HOME: &str = "iarnet.home";
/// The service a replica belongs to, and its index.
pub const SERVICE: &str = "iarnet.service";
pub const REPLICA: &str = "iarnet.replica";
/// Set on preemptible workloads: their priority (`batch:-5`), which an
/// owner compares before it evicts one.
pub const PREEMPTIBLE: &str = "iarnet.preemptible";
/// Milliseconds its home may be out of reach before its owner stops it.
pub const STOP_AFTER_DISCONNECT: &str = "iarnet.stop_after_disconnect_ms";
/// The swarm group a deployment was placed for (`group:` on the deploy).
pub const GROUP: &str = "iarnet.group";
