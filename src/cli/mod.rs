//! Command-line interface of the `iarnet` binary: without a subcommand it
//! runs a node (flags become a [`Config`]); with one it is a client of a
//! running node over gRPC ([`client`]).

mod apps;
mod cert;
pub mod client;
mod deploy;
mod render;
mod services;
mod swarm;

use std::path::PathBuf;

use clap::Parser;

use crate::config::{Config, ConfigError, Layers, Source, DEFAULT_CONFIG_YAML};

/// A decentralized compute-resource mesh node.
///
/// Precedence: flag > IARNET_* environment > config file > built-in default
/// (the shipped config.yaml, compiled in).
#[derive(Debug, Parser)]
#[command(name = "iarnet", version)]
pub struct Cli {
    /// Talk to a running node instead of running one.
    #[command(subcommand)]
    pub command: Option<client::Command>,
    /// Configuration file (YAML). Without it the built-in default is used.
    #[arg(long, env = "IARNET_CONFIG")]
    pub config: Option<PathBuf>,
    /// Seed peers, comma-separated HOST:PORT (e.g. node1:50051,node2:50051).
    #[arg(long, value_name = "ADDRS")]
    pub initial_peers: Option<String>,
    /// gRPC listen address (IP:PORT or :PORT).
    #[arg(long, value_name = "ADDR")]
    pub peer_listen_addr: Option<String>,
    /// HTTP API listen address (IP:PORT or :PORT).
    #[arg(long, value_name = "ADDR")]
    pub listen_addr: Option<String>,
    /// The HOST:PORT other nodes dial to reach this one.
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<String>,
    /// Stable node identity.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Human label for operators.
    #[arg(long)]
    pub node_name: Option<String>,
    /// Directory for node identity and durable state.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// "" (auto), standalone or k8s.
    #[arg(long)]
    pub mode: Option<String>,
    /// Validate the configuration, print a summary and exit.
    #[arg(long)]
    pub check: bool,
    /// Log format: text or json (log levels come from RUST_LOG, default info).
    #[arg(long, env = "IARNET_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Anything that stops the configuration from loading, with every problem listed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}: {error}")]
    Read { path: String, error: String },
    #[error("{0}")]
    Invalid(#[from] ConfigError),
}

impl Cli {
    /// Builds the configuration from the defaults, the file, `env` and the flags.
    pub fn load(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, LoadError> {
        let mut layers = Layers::default();
        layers.file(DEFAULT_CONFIG_YAML, Source::Default)?;
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path).map_err(|e| LoadError::Read {
                path: path.display().to_string(),
                error: e.to_string(),
            })?;
            layers.file(&text, Source::File)?;
        }
        layers.env(env);
        let flags = [
            ("initial_peers", &self.initial_peers),
            ("peer_listen_addr", &self.peer_listen_addr),
            ("listen_addr", &self.listen_addr),
            ("advertise_addr", &self.advertise_addr),
            ("node_id", &self.node_id),
            ("node_name", &self.node_name),
            ("data_dir", &self.data_dir),
            ("mode", &self.mode),
        ];
        for (key, value) in flags {
            if let Some(v) = value {
                layers.flag(key, v);
            }
        }
        Ok(Config::from_layers(&layers)?)
    }
}

/// A human summary of the effective configuration.
pub fn summary(cfg: &Config) -> String {
    let g = &cfg.gossip;
    format!(
        "mode: {}\nlisten_addr: {}\npeer_listen_addr: {}\nadvertise_addr: {}\nnode_id: {}\nnode_name: {}\ninitial_peers: {:?}\nresource_limits: {}\nworkspace_dir: {}\ndata_dir: {}\ngossip: interval={} fanout={} call_timeout={} suspicion_mult={} suspicion_max_mult={} tombstone_grace={} max_message_size={}B seed_resolve_interval={}\nshutdown_grace: {}\n",
        cfg.mode,
        cfg.listen_addr,
        cfg.peer_listen_addr,
        cfg.advertise_addr.as_deref().unwrap_or("(derived from the bound address)"),
        cfg.node_id.as_deref().unwrap_or("(from data_dir/node-id)"),
        cfg.node_name,
        cfg.initial_peers,
        cfg.resource_limits,
        cfg.workspace_dir.display(),
        cfg.data_dir.display(),
        humantime::format_duration(g.interval),
        g.fanout,
        humantime::format_duration(g.call_timeout),
        g.suspicion_mult,
        g.suspicion_max_mult,
        humantime::format_duration(g.tombstone_grace),
        g.max_message_bytes,
        humantime::format_duration(g.seed_resolve_interval),
        humantime::format_duration(cfg.shutdown_grace),
    )
}
