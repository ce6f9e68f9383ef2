//! The node's own keys: mode, addresses, identity, seeds, directories,
//! shutdown_grace and resource_limits.

use std::fmt;

use super::hint;
use super::parser::Parser;
use super::{Key, Quantity};

pub(super) const MODE: Key = Key::new(
    "mode",
    "",
    "how the internal provider is found: \"\" (auto), \"standalone\" (Docker) or \"k8s\"",
)
.env("IARNET_MODE");
pub(super) const LISTEN_ADDR: Key = Key::new(
    "listen_addr",
    ":8083",
    "the HTTP API address (JSON routes, /metrics, probes)",
)
.env("IARNET_LISTEN_ADDR");
pub(super) const PEER_LISTEN_ADDR: Key = Key::new(
    "peer_listen_addr",
    ":50051",
    "the gRPC address (peers, admin, health, reflection)",
)
.env("IARNET_PEER_LISTEN_ADDR");
pub(super) const ADVERTISE_ADDR: Key =
    Key::new("advertise_addr", "", "the HOST:PORT other nodes dial")
        .env("IARNET_ADVERTISE_ADDR")
        .derived("derived from the bound address");
pub(super) const NODE_ID: Key = Key::new("node_id", "", "stable identity of this node")
    .env("IARNET_NODE_ID")
    .derived("data_dir/node-id");
pub(super) const NODE_NAME: Key = Key::new("node_name", "", "a human label for operators")
    .env("IARNET_NODE_NAME")
    .derived("host name");
pub(super) const INITIAL_PEERS: Key = Key::new(
    "initial_peers",
    "",
    "seeds to join through, HOST:PORT (DNS names are re-resolved)",
)
.env("IARNET_INITIAL_PEERS")
.list();
pub(super) const CPU_LIMIT: Key = Key::new("resource_limits.cpu", "", "CPU cores offered")
    .env("IARNET_CPU_LIMIT")
    .derived("detect");
pub(super) const MEMORY_LIMIT: Key = Key::new("resource_limits.memory", "", "memory offered")
    .env("IARNET_MEMORY_LIMIT")
    .derived("detect");
pub(super) const GPU_LIMIT: Key = Key::new("resource_limits.gpu", "", "whole GPUs offered")
    .env("IARNET_GPU_LIMIT")
    .derived("detect");
pub(super) const MAX_DEPLOYMENTS: Key = Key::new(
    "resource_limits.max_deployments",
    "",
    "deployments the internal provider runs at once (e.g. 1 for a single device)",
)
.env("IARNET_MAX_DEPLOYMENTS")
.derived("no limit");
pub(super) const WORKSPACE_DIR: Key = Key::new(
    "workspace_dir",
    "./workspaces",
    "where application sources are checked out",
)
.env("IARNET_WORKSPACE_DIR");
pub(super) const MAX_CHECKOUT_SIZE: Key = Key::new(
    "max_checkout_size",
    "1Gi",
    "the largest application checkout kept; a bigger repository is refused",
)
.env("IARNET_MAX_CHECKOUT_SIZE");
pub(super) const DATA_DIR: Key =
    Key::new("data_dir", "./data", "node identity and durable state").env("IARNET_DATA_DIR");
pub(super) const SHUTDOWN_GRACE: Key = Key::new(
    "shutdown_grace",
    "10s",
    "the bound on a graceful shutdown (SIGTERM/SIGINT)",
)
.env("IARNET_SHUTDOWN_GRACE");

pub(super) const KEYS: &[Key] = &[
    MODE,
    LISTEN_ADDR,
    PEER_LISTEN_ADDR,
    ADVERTISE_ADDR,
    NODE_ID,
    NODE_NAME,
    INITIAL_PEERS,
    CPU_LIMIT,
    MEMORY_LIMIT,
    GPU_LIMIT,
    MAX_DEPLOYMENTS,
    WORKSPACE_DIR,
    MAX_CHECKOUT_SIZE,
    DATA_DIR,
    SHUTDOWN_GRACE,
];

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
    /// CPU cores (`resource_limits.cpu`: `"8"`, `"500m"`).
    pub cpu: Option<Quantity>,
    /// Memory (`resource_limits.memory`: `"16Gi"`).
    pub memory: Option<Quantity>,
    /// Whole GPUs (`resource_limits.gpu`).
    pub gpu: Option<u32>,
    /// Deployments run at once (`resource_limits.max_deployments`); None is no limit.
    pub max_deployments: Option<u32>,
}

impl fmt::Display for ResourceLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |q: &Option<Quantity>| q.map_or("auto".to_string(), |q| q.to_string());
        write!(
            f,
            "cpu={} memory={} gpu={} max_deployments={}",
            show(&self.cpu),
            self.memory
                .map_or("auto".to_string(), |m| format!("{}B", m.units_ceil())),
            self.gpu.map_or("auto".to_string(), |g| g.to_string()),
            self.max_deployments
                .map_or("unlimited".to_string(), |m| m.to_string())
        )
    }
}

impl Parser<'_> {
    pub(super) fn mode(&mut self) -> Mode {
        match self.scalar(&MODE).as_str() {
            "" | "auto" => Mode::Auto,
            "standalone" => Mode::Standalone,
            "k8s" | "kubernetes" => Mode::K8s,
            other => {
                let other = other.to_string();
                let hint = hint::did_you_mean(&other, ["auto", "standalone", "k8s", "kubernetes"]);
                self.fail(
                    MODE.name,
                    &other,
                    format!("expected \"\" (auto-detect), \"standalone\" or \"k8s\"{hint}"),
                );
                Mode::Auto
            }
        }
    }

    pub(super) fn node_id(&mut self) -> Option<String> {
        let id = self.opt_scalar(&NODE_ID)?;
        let ok = id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if ok {
            Some(id)
        } else {
            self.fail(
                NODE_ID.name,
                &id,
                "use at most 128 characters from A-Z, a-z, 0-9, '-', '_' and '.'",
            );
            None
        }
    }

    pub(super) fn node_name(&mut self) -> String {
        self.opt_scalar(&NODE_NAME)
            .unwrap_or_else(|| hostname().unwrap_or_else(|| "iarnet".to_string()))
    }

    pub(super) fn initial_peers(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for peer in self.list(&INITIAL_PEERS) {
            if super::valid_host_port(&peer) {
                out.push(peer);
            } else {
                self.fail(INITIAL_PEERS.name, &peer, "each peer must be HOST:PORT with a port from 1 to 65535, e.g. \"peer2.example.com:50051\"");
            }
        }
        out
    }

    pub(super) fn resource_limits(&mut self) -> ResourceLimits {
        ResourceLimits {
            cpu: self.quantity(&CPU_LIMIT),
            memory: self.quantity(&MEMORY_LIMIT),
            gpu: self.quantity(&GPU_LIMIT).and_then(|q| self.whole_gpus(q)),
            max_deployments: self
                .opt_scalar(&MAX_DEPLOYMENTS)
                .map(|_| self.int(&MAX_DEPLOYMENTS, 1, u32::MAX as u64) as u32),
        }
    }

    fn whole_gpus(&mut self, q: Quantity) -> Option<u32> {
        if q.milli() % 1000 != 0 || q.units_ceil() > 1024 {
            self.fail(
                GPU_LIMIT.name,
                &q.to_string(),
                "expected a whole number of GPUs from 0 to 1024",
            );
            return None;
        }
        Some(q.units_ceil() as u32)
    }
}

/// This machine's host name (`$HOSTNAME`, else `/etc/hostname`), if known.
pub fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}
