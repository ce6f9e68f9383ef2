//! Node configuration: `config.yaml`, then `IARNET_*` environment variables,
//! then command-line flags (flag > env > file > default).
//!
//! Loading never stops at the first problem: every unknown key and every bad
//! value is reported at once, each with its key and value, before any port is
//! bound. The shipped `config.yaml` is embedded and used when no file is given.
//!
//! # Layout
//! - `keys`: the [`Key`] type and the table of every key (name, env, shape,
//!   default, doc) that the layers, the builders and the drift tests share.
//! - `layers`: raw values from file, environment and flags, unknown keys.
//! - `parser`: typed readers (durations, quantities, addresses…) over a key.
//! - `node`, `gossip`, `resources`, `security`, `discovery`: each section's keys, types
//!   and builder.
//! - `hint`: "did you mean" for keys and values.

mod discovery;
mod gossip;
mod hint;
mod keys;
mod layers;
mod node;
mod parser;
mod resources;
mod security;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::resource::Quantity;
pub use discovery::{valid_model, DiscoveryConfig, MdnsMode};
pub use gossip::GossipConfig;
pub use keys::{keys, Key, SECTIONS};
pub use layers::{Layers, Source};
pub use node::{hostname, Mode, ResourceLimits};
pub use parser::valid_host_port;
pub use resources::{ExternalProvider, ResourceConfig};
pub use security::{AccessConfig, RateLimitConfig, SecurityConfig, TlsFiles, Token};

use parser::Parser;

/// The shipped configuration, used when no file is given.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../config.yaml");

/// A validated node configuration. Each field names its key; the key's
/// default and doc are in the key table ([`keys`]), next to its builder.
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
    /// `node_name`: a human label (unset: the host name).
    pub node_name: String,
    /// `initial_peers`: seed addresses (`host:port`; DNS names are re-resolved).
    pub initial_peers: Vec<String>,
    pub resource_limits: ResourceLimits,
    /// `workspace_dir`: where application sources are checked out.
    pub workspace_dir: PathBuf,
    /// `max_checkout_size`: the largest application checkout kept, in bytes.
    pub max_checkout_bytes: u64,
    /// `data_dir`: node identity and durable state.
    pub data_dir: PathBuf,
    pub gossip: GossipConfig,
    /// `shutdown_grace`: the bound on a graceful shutdown.
    pub shutdown_grace: Duration,
    pub resources: ResourceConfig,
    /// TLS, tokens, access lists, rate limits and the audit log.
    pub security: SecurityConfig,
    /// `discovery.*`: finding peers on the LAN.
    pub discovery: DiscoveryConfig,
    /// `models`: AI models this node serves or can run.
    pub models: Vec<String>,
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
        let mut p = Parser::new(layers);
        let config = Config {
            sources: layers.sources(),
            ..p.config()
        };
        p.finish(config)
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
        // Loopback nodes meet through their seeds, never the LAN.
        cfg.discovery.mdns = MdnsMode::Off;
        cfg.gossip.interval = Duration::from_millis(200);
        cfg.gossip.call_timeout = Duration::from_millis(300);
        cfg.shutdown_grace = Duration::from_secs(3);
        // Tests start many nodes in one directory: no shared audit file.
        cfg.security.audit_path = None;
        cfg
    }
}

impl Parser<'_> {
    /// Reads every section; problems collect in the parser, in this order.
    fn config(&mut self) -> Config {
        let gossip = self.gossip();
        let data_dir = PathBuf::from(self.scalar(&node::DATA_DIR));
        Config {
            mode: self.mode(),
            listen_addr: self.listen(&node::LISTEN_ADDR),
            peer_listen_addr: self.listen(&node::PEER_LISTEN_ADDR),
            advertise_addr: self.host_port(&node::ADVERTISE_ADDR),
            node_id: self.node_id(),
            node_name: self.node_name(),
            initial_peers: self.initial_peers(),
            resource_limits: self.resource_limits(),
            workspace_dir: PathBuf::from(self.scalar(&node::WORKSPACE_DIR)),
            max_checkout_bytes: self.bytes(&node::MAX_CHECKOUT_SIZE, 1 << 20, usize::MAX) as u64,
            security: self.security(&data_dir),
            data_dir,
            gossip,
            shutdown_grace: self.duration(
                &node::SHUTDOWN_GRACE,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
            resources: self.resources(),
            discovery: self.discovery(),
            models: self.models(),
            // Filled from the layers by the caller.
            sources: Vec::new(),
        }
    }
}

#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;
