//! Raw configuration layers (file, environment, flags) and their validation.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value as Yaml;

use super::{
    Config, ConfigError, ExternalProvider, GossipConfig, Mode, Problem, Quantity, ResourceConfig,
    ResourceLimits,
};
use crate::placement::Strategy;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::File => "config file",
            Source::Env => "environment",
            Source::Flag => "command line",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Scalar(String),
    List(Vec<String>),
}

impl fmt::Display for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Raw::Scalar(s) => f.write_str(s),
            Raw::List(l) => f.write_str(&l.join(",")),
        }
    }
}

/// Every configuration key, whether it holds a list, and its environment variable.
const KEYS: &[(&str, bool, Option<&str>)] = &[
    ("mode", false, Some("IARNET_MODE")),
    ("listen_addr", false, Some("IARNET_LISTEN_ADDR")),
    ("peer_listen_addr", false, Some("IARNET_PEER_LISTEN_ADDR")),
    ("advertise_addr", false, Some("IARNET_ADVERTISE_ADDR")),
    ("node_id", false, Some("IARNET_NODE_ID")),
    ("node_name", false, Some("IARNET_NODE_NAME")),
    ("initial_peers", true, Some("IARNET_INITIAL_PEERS")),
    ("resource_limits.cpu", false, Some("IARNET_CPU_LIMIT")),
    ("resource_limits.memory", false, Some("IARNET_MEMORY_LIMIT")),
    ("resource_limits.gpu", false, Some("IARNET_GPU_LIMIT")),
    ("workspace_dir", false, Some("IARNET_WORKSPACE_DIR")),
    ("data_dir", false, Some("IARNET_DATA_DIR")),
    ("gossip.interval", false, Some("IARNET_GOSSIP_INTERVAL")),
    ("gossip.fanout", false, Some("IARNET_GOSSIP_FANOUT")),
    ("gossip.call_timeout", false, None),
    ("gossip.suspicion_mult", false, None),
    ("gossip.suspicion_max_mult", false, None),
    ("gossip.tombstone_grace", false, None),
    ("gossip.max_message_size", false, None),
    ("gossip.seed_resolve_interval", false, None),
    ("shutdown_grace", false, Some("IARNET_SHUTDOWN_GRACE")),
    (
        "allow_remote_access",
        false,
        Some("IARNET_ALLOW_REMOTE_ACCESS"),
    ),
    (
        "placement.strategy",
        false,
        Some("IARNET_PLACEMENT_STRATEGY"),
    ),
    ("placement.region", false, Some("IARNET_REGION")),
    ("placement.zone", false, Some("IARNET_ZONE")),
    ("docker.host", false, Some("IARNET_DOCKER_HOST")),
    (
        "external_providers",
        true,
        Some("IARNET_EXTERNAL_PROVIDERS"),
    ),
    ("kubernetes.namespace", false, Some("IARNET_K8S_NAMESPACE")),
    ("tls.ca_file", false, Some("IARNET_TLS_CA_FILE")),
    ("tls.cert_file", false, Some("IARNET_TLS_CERT_FILE")),
    ("tls.key_file", false, Some("IARNET_TLS_KEY_FILE")),
    ("tls.server_name", false, None),
    ("auth.tokens", true, Some("IARNET_AUTH_TOKENS")),
    ("auth.token_file", false, Some("IARNET_AUTH_TOKEN_FILE")),
    ("auth.protect_health", false, None),
    ("access.allow_nodes", true, None),
    ("access.deny_nodes", true, None),
    ("access.allow_networks", true, None),
    ("access.deny_networks", true, None),
    ("rate_limit.peer_rate", false, None),
    ("rate_limit.peer_burst", false, None),
    ("rate_limit.token_rate", false, None),
    ("rate_limit.token_burst", false, None),
    ("audit.path", false, Some("IARNET_AUDIT_PATH")),
];

/// `IARNET_*` variables read elsewhere (the binary), not configuration keys.
const OTHER_ENV: &[&str] = &[
    "IARNET_CONFIG",
    "IARNET_LOG_FORMAT",
    "IARNET_ADDR",
    "IARNET_TOKEN",
];

/// Raw values by key, each with the layer that set it last.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    values: BTreeMap<String, (Raw, Source)>,
    problems: Vec<Problem>,
}

impl Layers {
    /// Adds a YAML document; unknown keys and wrong shapes become problems.
    pub fn file(&mut self, yaml: &str, source: Source) -> Result<(), ConfigError> {
        let doc: Yaml = match serde_yaml_ng::from_str(yaml) {
            Ok(doc) => doc,
            Err(e) => {
                return Err(ConfigError {
                    problems: vec![problem(
                        "(file)",
                        "",
                        source,
                        format!("not valid YAML: {e}"),
                    )],
                })
            }
        };
        match doc {
            Yaml::Null => {}
            Yaml::Mapping(map) => self.flatten("", &map, source),
            other => self.problems.push(problem(
                "(file)",
                &scalar_text(&other).unwrap_or_default(),
                source,
                "the configuration must be a mapping of keys to values".into(),
            )),
        }
        Ok(())
    }

    fn flatten(&mut self, prefix: &str, map: &serde_yaml_ng::Mapping, source: Source) {
        for (k, v) in map {
            let Some(k) = k.as_str() else {
                self.problems
                    .push(problem(prefix, "", source, "keys must be strings".into()));
                continue;
            };
            let key = if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            };
            let spec = KEYS.iter().find(|(name, _, _)| *name == key);
            let is_section = KEYS
                .iter()
                .any(|(name, _, _)| name.starts_with(&format!("{key}.")));
            match (v, spec) {
                (Yaml::Null, _) if spec.is_some() || is_section => {}
                (Yaml::Mapping(inner), None) if is_section => self.flatten(&key, inner, source),
                (Yaml::Sequence(items), Some((_, true, _))) => {
                    let mut list = Vec::new();
                    for item in items {
                        match scalar_text(item) {
                            Some(s) => list.push(s),
                            None => self.problems.push(problem(
                                &key,
                                "",
                                source,
                                "list items must be plain values".into(),
                            )),
                        }
                    }
                    self.values.insert(key, (Raw::List(list), source));
                }
                (v, Some((_, is_list, _))) => match scalar_text(v) {
                    Some(s) if *is_list => {
                        self.values.insert(key, (Raw::List(split_list(&s)), source));
                    }
                    Some(s) => {
                        self.values.insert(key, (Raw::Scalar(s), source));
                    }
                    None => self.problems.push(problem(
                        &key,
                        "",
                        source,
                        "expected a plain value, not a mapping or list".into(),
                    )),
                },
                (v, None) => {
                    let hint = suggest(&key)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    self.problems.push(problem(
                        &key,
                        &scalar_text(v).unwrap_or_default(),
                        source,
                        format!("unknown key{hint} (see the configuration reference in README.md)"),
                    ));
                }
            }
        }
    }

    /// Applies `IARNET_*` variables; unknown `IARNET_*` names become problems.
    pub fn env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (name, value) in vars {
            if !name.starts_with("IARNET_") || OTHER_ENV.contains(&name.as_str()) {
                continue;
            }
            match KEYS.iter().find(|(_, _, env)| *env == Some(name.as_str())) {
                Some((key, true, _)) => {
                    self.values.insert(
                        key.to_string(),
                        (Raw::List(split_list(&value)), Source::Env),
                    );
                }
                Some((key, false, _)) => {
                    self.values
                        .insert(key.to_string(), (Raw::Scalar(value), Source::Env));
                }
                None => {
                    let known: Vec<&str> = KEYS.iter().filter_map(|(_, _, e)| *e).collect();
                    self.problems.push(problem(
                        &name,
                        &value,
                        Source::Env,
                        format!(
                            "unknown environment variable; known ones: {}",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
    }

    /// Applies one command-line flag to `key` (lists are comma-separated).
    pub fn flag(&mut self, key: &str, value: &str) {
        let is_list = KEYS.iter().any(|(k, l, _)| *k == key && *l);
        let raw = if is_list {
            Raw::List(split_list(value))
        } else {
            Raw::Scalar(value.to_string())
        };
        self.values.insert(key.to_string(), (raw, Source::Flag));
    }
}

fn problem(key: &str, value: &str, source: Source, message: String) -> Problem {
    Problem {
        key: key.to_string(),
        value: value.to_string(),
        source,
        message,
    }
}

fn scalar_text(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Null => Some(String::new()),
        _ => None,
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

fn suggest(key: &str) -> Option<&'static str> {
    let last = key.rsplit('.').next().unwrap_or(key);
    KEYS.iter().map(|(k, _, _)| *k).find(|k| {
        let kl = k.rsplit('.').next().unwrap_or(k);
        kl == last || edit_distance(kl, last) <= 2
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses every key, collecting every problem, into a [`Config`].
pub(super) fn build(layers: &Layers) -> Result<Config, ConfigError> {
    let mut p = Parser {
        layers,
        problems: layers.problems.clone(),
    };
    let gossip = GossipConfig {
        interval: p.duration(
            "gossip.interval",
            "1s",
            Duration::from_millis(10),
            Duration::from_secs(3600),
        ),
        fanout: p.int("gossip.fanout", 3, 1, 64) as usize,
        call_timeout: p.duration(
            "gossip.call_timeout",
            "500ms",
            Duration::from_millis(1),
            Duration::from_secs(600),
        ),
        suspicion_mult: p.float("gossip.suspicion_mult", 1.5, 0.1, 100.0),
        suspicion_max_mult: p.float("gossip.suspicion_max_mult", 4.0, 1.0, 100.0),
        tombstone_grace: p.duration(
            "gossip.tombstone_grace",
            "60s",
            Duration::from_secs(1),
            Duration::from_secs(7 * 86_400),
        ),
        max_message_bytes: p.bytes("gossip.max_message_size", "512Ki", 4 << 10, 2 << 20),
        seed_resolve_interval: p.duration(
            "gossip.seed_resolve_interval",
            "30s",
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        ),
    };
    let data_dir = PathBuf::from(p.scalar("data_dir", "./data"));
    let cfg = Config {
        mode: p.mode(),
        listen_addr: p.listen("listen_addr", ":8083"),
        peer_listen_addr: p.listen("peer_listen_addr", ":50051"),
        advertise_addr: p
            .opt_scalar("advertise_addr")
            .and_then(|a| p.check_host_port("advertise_addr", a)),
        node_id: p.opt_scalar("node_id").and_then(|id| p.check_id(id)),
        node_name: p.opt_scalar("node_name").unwrap_or_else(default_node_name),
        initial_peers: p.peers(),
        resource_limits: ResourceLimits {
            cpu: p.quantity("resource_limits.cpu"),
            memory: p.quantity("resource_limits.memory"),
            gpu: p
                .quantity("resource_limits.gpu")
                .and_then(|q| p.whole_gpus(q)),
        },
        workspace_dir: PathBuf::from(p.scalar("workspace_dir", "./workspaces")),
        security: p.security(&data_dir),
        data_dir,
        gossip,
        shutdown_grace: p.duration(
            "shutdown_grace",
            "10s",
            Duration::from_millis(100),
            Duration::from_secs(3600),
        ),
        resources: ResourceConfig {
            allow_remote_access: p.boolean("allow_remote_access", true),
            strategy: p.strategy(),
            region: p.opt_scalar("placement.region").filter(|s| !s.is_empty()),
            zone: p.opt_scalar("placement.zone").filter(|s| !s.is_empty()),
            docker_host: p.opt_scalar("docker.host").filter(|s| !s.is_empty()),
            k8s_namespace: p.scalar("kubernetes.namespace", "default"),
            external: p.externals(),
        },
        sources: layers
            .values
            .iter()
            .map(|(k, (_, s))| (k.clone(), *s))
            .collect(),
    };
    if p.problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError {
            problems: p.problems,
        })
    }
}

pub(super) struct Parser<'a> {
    layers: &'a Layers,
    problems: Vec<Problem>,
}

impl Parser<'_> {
    fn raw(&self, key: &str) -> Option<(&Raw, Source)> {
        self.layers.values.get(key).map(|(r, s)| (r, *s))
    }

    pub(super) fn fail(&mut self, key: &str, value: &str, message: impl Into<String>) {
        let source = self.raw(key).map_or(Source::Default, |(_, s)| s);
        self.problems
            .push(problem(key, value, source, message.into()));
    }

    pub(super) fn opt_scalar(&self, key: &str) -> Option<String> {
        match self.raw(key)? {
            (Raw::Scalar(s), _) if !s.trim().is_empty() => Some(s.trim().to_string()),
            _ => None,
        }
    }

    pub(super) fn scalar(&self, key: &str, default: &str) -> String {
        self.opt_scalar(key).unwrap_or_else(|| default.to_string())
    }

    fn mode(&mut self) -> Mode {
        match self.scalar("mode", "").as_str() {
            "" | "auto" => Mode::Auto,
            "standalone" => Mode::Standalone,
            "k8s" | "kubernetes" => Mode::K8s,
            other => {
                let other = other.to_string();
                self.fail(
                    "mode",
                    &other,
                    "expected \"\" (auto-detect), \"standalone\" or \"k8s\"",
                );
                Mode::Auto
            }
        }
    }

    pub(super) fn boolean(&mut self, key: &str, default: bool) -> bool {
        let text = self.scalar(key, if default { "true" } else { "false" });
        match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" => false,
            _ => {
                self.fail(key, &text, "expected true or false");
                default
            }
        }
    }

    fn strategy(&mut self) -> Strategy {
        let text = self.scalar("placement.strategy", "spread");
        Strategy::parse(&text).unwrap_or_else(|why| {
            self.fail("placement.strategy", &text, &why);
            Strategy::default()
        })
    }

    fn listen(&mut self, key: &str, default: &str) -> SocketAddr {
        let text = self.scalar(key, default);
        let parsed = match text.strip_prefix(':') {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p)),
            None => text.parse::<SocketAddr>().ok(),
        };
        parsed.unwrap_or_else(|| {
            self.fail(
                key,
                &text,
                "expected IP:PORT or :PORT, e.g. \"0.0.0.0:50051\" or \":50051\"",
            );
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        })
    }

    fn check_host_port(&mut self, key: &str, text: String) -> Option<String> {
        if valid_host_port(&text) {
            Some(text)
        } else {
            self.fail(key, &text, "expected HOST:PORT with a port from 1 to 65535, e.g. \"node1.example:50051\" or \"10.0.0.5:50051\"");
            None
        }
    }

    fn peers(&mut self) -> Vec<String> {
        let list = match self.raw("initial_peers") {
            Some((Raw::List(l), _)) => l.clone(),
            Some((Raw::Scalar(s), _)) => split_list(s),
            None => Vec::new(),
        };
        let mut out = Vec::new();
        for peer in list {
            if valid_host_port(&peer) {
                out.push(peer);
            } else {
                self.fail("initial_peers", &peer, "each peer must be HOST:PORT with a port from 1 to 65535, e.g. \"peer2.example.com:50051\"");
            }
        }
        out
    }

    fn externals(&mut self) -> Vec<ExternalProvider> {
        let list = match self.raw("external_providers") {
            Some((Raw::List(l), _)) => l.clone(),
            Some((Raw::Scalar(s), _)) => split_list(s),
            None => Vec::new(),
        };
        let mut out: Vec<ExternalProvider> = Vec::new();
        for entry in list {
            let parts: Vec<&str> = entry.split_whitespace().collect();
            let ok_name = |n: &str| {
                !n.is_empty()
                    && n.len() <= 63
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            };
            match parts.as_slice() {
                [kind @ ("docker" | "k8s"), name, target] if ok_name(name) => {
                    if out.iter().any(|e| e.name == *name) {
                        self.fail("external_providers", &entry, "two providers with the same name");
                        continue;
                    }
                    out.push(ExternalProvider {
                        kind: kind.to_string(),
                        name: name.to_string(),
                        target: target.to_string(),
                    });
                }
                _ => self.fail(
                    "external_providers",
                    &entry,
                    "each entry is \"docker NAME tcp://HOST:PORT\" or \"k8s NAME /path/to/kubeconfig\" (NAME: letters, digits, '-', '_', '.')",
                ),
            }
        }
        out
    }

    /// A list key given as a YAML list or a comma-separated string.
    pub(super) fn list(&self, key: &str) -> Vec<String> {
        match self.raw(key) {
            Some((Raw::List(l), _)) => l.clone(),
            Some((Raw::Scalar(s), _)) => split_list(s),
            None => Vec::new(),
        }
    }

    fn check_id(&mut self, id: String) -> Option<String> {
        let ok = id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if ok {
            Some(id)
        } else {
            self.fail(
                "node_id",
                &id,
                "use at most 128 characters from A-Z, a-z, 0-9, '-', '_' and '.'",
            );
            None
        }
    }

    fn quantity(&mut self, key: &str) -> Option<Quantity> {
        let text = self.opt_scalar(key)?;
        match Quantity::parse(&text) {
            Ok(q) => Some(q),
            Err(e) => {
                self.fail(key, &text, e.to_string());
                None
            }
        }
    }

    fn whole_gpus(&mut self, q: Quantity) -> Option<u32> {
        if q.milli() % 1000 != 0 || q.units_ceil() > 1024 {
            self.fail(
                "resource_limits.gpu",
                &q.to_string(),
                "expected a whole number of GPUs from 0 to 1024",
            );
            return None;
        }
        Some(q.units_ceil() as u32)
    }

    fn bytes(&mut self, key: &str, default: &str, min: usize, max: usize) -> usize {
        let text = self.scalar(key, default);
        match Quantity::parse(&text) {
            Ok(q) if (min as u128..=max as u128).contains(&q.units_ceil()) => {
                q.units_ceil() as usize
            }
            Ok(_) => {
                self.fail(
                    key,
                    &text,
                    format!("must be between {min} and {max} bytes (e.g. \"64Ki\")"),
                );
                min
            }
            Err(e) => {
                self.fail(key, &text, e.to_string());
                min
            }
        }
    }

    fn duration(&mut self, key: &str, default: &str, min: Duration, max: Duration) -> Duration {
        let text = self.scalar(key, default);
        match humantime::parse_duration(&text) {
            Ok(d) if d >= min && d <= max => d,
            Ok(_) => {
                self.fail(
                    key,
                    &text,
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
                min
            }
            Err(e) => {
                self.fail(
                    key,
                    &text,
                    format!("{e}: expected a duration such as \"1s\", \"500ms\" or \"2m\""),
                );
                min
            }
        }
    }

    pub(super) fn int(&mut self, key: &str, default: u64, min: u64, max: u64) -> u64 {
        let text = self.scalar(key, &default.to_string());
        match text.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => v,
            _ => {
                self.fail(
                    key,
                    &text,
                    format!("expected a whole number from {min} to {max}"),
                );
                default
            }
        }
    }

    pub(super) fn float(&mut self, key: &str, default: f64, min: f64, max: f64) -> f64 {
        let text = self.scalar(key, &default.to_string());
        match text.parse::<f64>() {
            Ok(v) if (min..=max).contains(&v) => v,
            _ => {
                self.fail(key, &text, format!("expected a number from {min} to {max}"));
                default
            }
        }
    }
}

/// `host:port` with a non-empty host (IP, `[v6]` or DNS name) and a non-zero port.
pub fn valid_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    };
    port_ok && host_ok
}

fn default_node_name() -> String {
    hostname().unwrap_or_else(|| "iarnet".to_string())
}

/// This machine's host name (`$HOSTNAME`, else `/etc/hostname`), if known.
pub fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}
