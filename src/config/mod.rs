//! Node configuration: `config.yaml`, then `IARNET_*` environment variables,
//! then command-line flags (flag > env > file > default).
//!
//! Loading never stops at the first problem: every unknown key and every bad
//! value is reported at once, each with its key and value, before any port is
//! bound. The shipped `config.yaml` is embedded and used when no file is given.

mod layers;

mod security;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::resource::Quantity;
pub use layers::{hostname, valid_host_port, Layers, Source};
pub use security::{AccessConfig, RateLimitConfig, SecurityConfig, TlsFiles, Token};

/// The shipped configuration, used when no file is given.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../config.yaml");

/// How this node finds its internal provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Kubernetes when running in a cluster, else Docker when it answers.
    Auto,
    Standalone,
    K8s,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Standalone => "standalone",
            Mode::K8s => "k8s",
        })
    }
}

/// Upper bounds on what this node offers to the mesh; unset means "detect".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceLimits {
    /// CPU cores (`"8"`, `"500m"`).
    pub cpu: Option<Quantity>,
    /// Memory (`"16Gi"`).
    pub memory: Option<Quantity>,
    /// Whole GPUs.
    pub gpu: Option<u32>,
}

impl fmt::Display for ResourceLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |q: &Option<Quantity>| q.map_or("auto".to_string(), |q| q.to_string());
        write!(
            f,
            "cpu={} memory={} gpu={}",
            show(&self.cpu),
            self.memory
                .map_or("auto".to_string(), |m| format!("{}B", m.units_ceil())),
            self.gpu.map_or("auto".to_string(), |g| g.to_string())
        )
    }
}

/// Gossip and failure-detection tunables.
#[derive(Debug, Clone, PartialEq)]
pub struct GossipConfig {
    /// Round length (`gossip.interval`, default `1s`).
    pub interval: Duration,
    /// Random live peers per round (`gossip.fanout`, default 3).
    pub fanout: usize,
    /// Deadline of one gossip call (`gossip.call_timeout`, default `500ms`).
    pub call_timeout: Duration,
    /// Shortest suspicion in rounds per log10(members) (`gossip.suspicion_mult`, default 1.5).
    pub suspicion_mult: f64,
    /// Longest suspicion as a multiple of the shortest (`gossip.suspicion_max_mult`, default 4).
    pub suspicion_max_mult: f64,
    /// How long dead or departed members are kept (`gossip.tombstone_grace`, default `60s`).
    pub tombstone_grace: Duration,
    /// Soft cap of one gossip message (`gossip.max_message_size`, default `512Ki`).
    pub max_message_bytes: usize,
    /// How often seed names are re-resolved in DNS (`gossip.seed_resolve_interval`, default `30s`).
    pub seed_resolve_interval: Duration,
}

/// The resource plane's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceConfig {
    /// `allow_remote_access`: offer this node's providers to other nodes
    /// (default true). Off: nothing is advertised and CallProvider is refused.
    pub allow_remote_access: bool,
    /// `placement.strategy`: the default ranking (default `spread`).
    pub strategy: crate::placement::Strategy,
    /// `placement.region` / `placement.zone`: labels of this node's providers.
    pub region: Option<String>,
    pub zone: Option<String>,
    /// `docker.host`: the engine to use (default: `DOCKER_HOST`, else the local socket).
    pub docker_host: Option<String>,
    /// `kubernetes.namespace`: where pods are created (default `default`).
    pub k8s_namespace: String,
    /// `external_providers`: hosts and clusters registered at start.
    pub external: Vec<ExternalProvider>,
}

/// One `external_providers` entry: `docker NAME tcp://HOST:PORT` or
/// `k8s NAME /path/to/kubeconfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalProvider {
    pub kind: String,
    pub name: String,
    /// The engine URL (docker) or kubeconfig path (k8s).
    pub target: String,
}

/// A validated node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `mode`: `""` (auto), `standalone` or `k8s`.
    pub mode: Mode,
    /// `listen_addr`: the HTTP API address (JSON routes, /metrics, probes).
    pub listen_addr: SocketAddr,
    /// `peer_listen_addr`: the gRPC address (peers, admin, health, reflection).
    pub peer_listen_addr: SocketAddr,
    /// `advertise_addr`: the `host:port` peers dial; derived when unset.
    pub advertise_addr: Option<String>,
    /// `node_id`: stable identity; read from or written to `data_dir/node-id` when unset.
    pub node_id: Option<String>,
    /// `node_name`: a human label (default: the host name).
    pub node_name: String,
    /// `initial_peers`: seed addresses (`host:port`; DNS names are re-resolved).
    pub initial_peers: Vec<String>,
    pub resource_limits: ResourceLimits,
    /// `workspace_dir`: where application sources are checked out.
    pub workspace_dir: PathBuf,
    /// `data_dir`: node identity and durable state.
    pub data_dir: PathBuf,
    pub gossip: GossipConfig,
    /// `shutdown_grace`: the bound on a graceful shutdown (default `10s`).
    pub shutdown_grace: Duration,
    pub resources: ResourceConfig,
    /// TLS, tokens, access lists, rate limits and the audit log.
    pub security: SecurityConfig,
    /// Where each value came from, for the summary an operator sees.
    pub sources: Vec<(String, Source)>,
}

/// Every problem found while loading, each naming its key and value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

/// One bad key or value.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub value: String,
    pub source: Source,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(
                f,
                "  - {} = {:?} (from {}): {}",
                p.key, p.value, p.source, p.message
            )?;
        }
        Ok(())
    }
}

impl Config {
    /// Loads the embedded default overlaid with `env` and `flags` (for tests and tools).
    pub fn from_layers(layers: &Layers) -> Result<Config, ConfigError> {
        layers::build(layers)
    }

    /// The default configuration exactly as shipped.
    pub fn shipped() -> Config {
        let mut layers = Layers::default();
        layers
            .file(DEFAULT_CONFIG_YAML, Source::Default)
            .expect("the shipped config.yaml parses");
        Config::from_layers(&layers).expect("the shipped config.yaml is valid")
    }

    /// A loopback configuration for tests and embedding: ephemeral port, fast rounds.
    pub fn loopback(node_id: &str) -> Config {
        let mut cfg = Config::shipped();
        cfg.peer_listen_addr = "127.0.0.1:0".parse().expect("a literal address");
        cfg.listen_addr = "127.0.0.1:0".parse().expect("a literal address");
        cfg.node_id = Some(node_id.to_string());
        cfg.node_name = node_id.to_string();
        cfg.initial_peers.clear();
        cfg.gossip.interval = Duration::from_millis(200);
        cfg.gossip.call_timeout = Duration::from_millis(300);
        cfg.shutdown_grace = Duration::from_secs(3);
        // Tests start many nodes in one directory: no shared audit file.
        cfg.security.audit_path = None;
        cfg
    }
}

#[cfg(test)]
mod tests;
