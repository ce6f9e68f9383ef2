//! The hardening keys: `tls.*`, `auth.*`, `access.*`, `rate_limit.*`, `audit.*`.

use std::fmt;
use std::path::PathBuf;

use ipnet::IpNet;

use super::parser::Parser;
use super::Key;

pub(super) const CA_FILE: Key =
    Key::new("tls.ca_file", "", "PEM file of the cluster CA").env("IARNET_TLS_CA_FILE");
pub(super) const CERT_FILE: Key =
    Key::new("tls.cert_file", "", "PEM file of this node's certificate")
        .env("IARNET_TLS_CERT_FILE");
pub(super) const KEY_FILE: Key =
    Key::new("tls.key_file", "", "PEM file of this node's key").env("IARNET_TLS_KEY_FILE");
pub(super) const SERVER_NAME: Key = Key::new(
    "tls.server_name",
    "iarnet",
    "the DNS name every node certificate carries and peers verify",
);
pub(super) const TOKENS: Key = Key::new(
    "auth.tokens",
    "",
    "management tokens, NAME:SECRET; none leaves management open",
)
.env("IARNET_AUTH_TOKENS")
.list();
pub(super) const TOKEN_FILE: Key = Key::new(
    "auth.token_file",
    "",
    "more tokens, one NAME:SECRET per line",
)
.env("IARNET_AUTH_TOKEN_FILE");
pub(super) const PROTECT_HEALTH: Key = Key::new(
    "auth.protect_health",
    "false",
    "also require a token for health, reflection, probes and /metrics",
);
pub(super) const ALLOW_NODES: Key = Key::new(
    "access.allow_nodes",
    "",
    "node ids that may gossip and call providers",
)
.list();
pub(super) const DENY_NODES: Key =
    Key::new("access.deny_nodes", "", "node ids that may not (deny wins)").list();
pub(super) const ALLOW_NETWORKS: Key = Key::new(
    "access.allow_networks",
    "",
    "source networks that may gossip and call providers",
)
.list();
pub(super) const DENY_NETWORKS: Key = Key::new(
    "access.deny_networks",
    "",
    "source networks that may not (deny wins)",
)
.list();
pub(super) const PEER_RATE: Key = Key::new(
    "rate_limit.peer_rate",
    "200",
    "gossip calls per second per peer",
);
pub(super) const PEER_BURST: Key =
    Key::new("rate_limit.peer_burst", "400", "gossip burst per peer");
pub(super) const CALL_RATE: Key = Key::new(
    "rate_limit.call_rate",
    "50000",
    "CallProvider calls per second per peer, apart from gossip",
);
pub(super) const CALL_BURST: Key = Key::new(
    "rate_limit.call_burst",
    "100000",
    "CallProvider burst per peer",
);
pub(super) const TOKEN_RATE: Key = Key::new(
    "rate_limit.token_rate",
    "50",
    "management calls per second per token",
);
pub(super) const TOKEN_BURST: Key = Key::new(
    "rate_limit.token_burst",
    "100",
    "management burst per token",
);
pub(super) const AUDIT_PATH: Key = Key::new(
    "audit.path",
    "",
    "the audit log (JSON lines); \"off\" disables it",
)
.env("IARNET_AUDIT_PATH")
.derived("data_dir/audit.jsonl");

pub(super) const KEYS: &[Key] = &[
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    SERVER_NAME,
    TOKENS,
    TOKEN_FILE,
    PROTECT_HEALTH,
    ALLOW_NODES,
    DENY_NODES,
    ALLOW_NETWORKS,
    DENY_NETWORKS,
    PEER_RATE,
    PEER_BURST,
    CALL_RATE,
    CALL_BURST,
    TOKEN_RATE,
    TOKEN_BURST,
    AUDIT_PATH,
];

/// PEM files of mutual TLS: the cluster CA and this node's certificate and key.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A management token: a name (the identity in the audit log) and its secret.
#[derive(Clone, PartialEq)]
pub struct Token {
    pub name: String,
    pub secret: String,
}

impl fmt::Debug for Token {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({:?}, <redacted>)", self.name)
    }
}

/// Who may gossip with this node and call its providers. Deny wins; a
/// non-empty allow list admits only what it names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessConfig {
    pub allow_nodes: Vec<String>,
    pub deny_nodes: Vec<String>,
    pub allow_networks: Vec<IpNet>,
    pub deny_networks: Vec<IpNet>,
}

impl AccessConfig {
    pub fn is_open(&self) -> bool {
        self.allow_nodes.is_empty()
            && self.deny_nodes.is_empty()
            && self.allow_networks.is_empty()
            && self.deny_networks.is_empty()
    }
}

/// Token buckets: calls per second and burst. Each peer has one budget for
/// gossip and another for CallProvider, so a busy home is not throttled by
/// gossip; each management token has its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// `rate_limit.peer_rate`: gossip calls per second per peer.
    pub peer_rate: f64,
    /// `rate_limit.peer_burst`: gossip calls a peer may make at once.
    pub peer_burst: f64,
    /// `rate_limit.call_rate`: CallProvider calls per second per peer.
    pub call_rate: f64,
    /// `rate_limit.call_burst`: CallProvider calls a peer may make at once.
    pub call_burst: f64,
    /// `rate_limit.token_rate`: management calls per second per token.
    pub token_rate: f64,
    /// `rate_limit.token_burst`: management calls a token may make at once.
    pub token_burst: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecurityConfig {
    /// `tls.{ca_file,cert_file,key_file}`: all three turn on mutual TLS.
    pub tls: Option<TlsFiles>,
    /// `tls.server_name`: the DNS name every node certificate carries and
    /// peers verify (addresses change; the cluster name does not).
    pub server_name: String,
    /// `auth.tokens` and `auth.token_file`: empty leaves management open.
    pub tokens: Vec<Token>,
    /// `auth.protect_health`: also require a token for health and reflection.
    pub protect_health: bool,
    pub access: AccessConfig,
    pub rate_limit: RateLimitConfig,
    /// `audit.path`: the audit log (JSON lines); `None` when `off`.
    pub audit_path: Option<PathBuf>,
}

/// Secrets shorter than this are refused: they can be guessed.
const MIN_SECRET: usize = 16;

impl Parser<'_> {
    pub(super) fn security(&mut self, data_dir: &std::path::Path) -> SecurityConfig {
        SecurityConfig {
            tls: self.tls_files(),
            server_name: self.server_name(),
            tokens: self.tokens(),
            protect_health: self.boolean(&PROTECT_HEALTH),
            access: AccessConfig {
                allow_nodes: self.node_ids(&ALLOW_NODES),
                deny_nodes: self.node_ids(&DENY_NODES),
                allow_networks: self.networks(&ALLOW_NETWORKS),
                deny_networks: self.networks(&DENY_NETWORKS),
            },
            rate_limit: RateLimitConfig {
                peer_rate: self.float(&PEER_RATE, 0.1, 1e6),
                peer_burst: self.float(&PEER_BURST, 1.0, 1e6),
                call_rate: self.float(&CALL_RATE, 0.1, 1e6),
                call_burst: self.float(&CALL_BURST, 1.0, 1e6),
                token_rate: self.float(&TOKEN_RATE, 0.1, 1e6),
                token_burst: self.float(&TOKEN_BURST, 1.0, 1e6),
            },
            audit_path: match self.scalar(&AUDIT_PATH).as_str() {
                "off" => None,
                "" => Some(data_dir.join("audit.jsonl")),
                path => Some(PathBuf::from(path)),
            },
        }
    }

    fn tls_files(&mut self) -> Option<TlsFiles> {
        let keys = [&CA_FILE, &CERT_FILE, &KEY_FILE];
        let given: Vec<Option<String>> = keys.iter().map(|k| self.opt_scalar(k)).collect();
        if given.iter().all(Option::is_none) {
            return None;
        }
        let mut ok = true;
        for (key, value) in keys.iter().map(|k| k.name).zip(&given) {
            match value {
                None => {
                    self.fail(
                        key,
                        "",
                        "mutual TLS needs tls.ca_file, tls.cert_file and tls.key_file together (create them with `iarnet cert`)",
                    );
                    ok = false;
                }
                Some(path) if std::fs::metadata(path).is_err() => {
                    self.fail(
                        key,
                        path,
                        "cannot read this file (create it with `iarnet cert`, or fix the path)",
                    );
                    ok = false;
                }
                Some(_) => {}
            }
        }
        let mut it = given.into_iter().flatten().map(PathBuf::from);
        match (ok, it.next(), it.next(), it.next()) {
            (true, Some(ca_file), Some(cert_file), Some(key_file)) => Some(TlsFiles {
                ca_file,
                cert_file,
                key_file,
            }),
            _ => None,
        }
    }

    fn server_name(&mut self) -> String {
        let name = self.scalar(&SERVER_NAME);
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !ok {
            self.fail(
                SERVER_NAME.name,
                &name,
                "expected a DNS name such as \"iarnet\" or \"mesh.example.com\"",
            );
        }
        name
    }

    fn tokens(&mut self) -> Vec<Token> {
        let mut entries: Vec<(String, &'static str)> = self
            .list(&TOKENS)
            .into_iter()
            .map(|e| (e, TOKENS.name))
            .collect();
        if let Some(path) = self.opt_scalar(&TOKEN_FILE) {
            match std::fs::read_to_string(&path) {
                Ok(text) => entries.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(|l| (l.to_string(), TOKEN_FILE.name)),
                ),
                Err(e) => self.fail(
                    TOKEN_FILE.name,
                    &path,
                    format!("cannot read it: {e} (one NAME:SECRET per line)"),
                ),
            }
        }
        let mut out: Vec<Token> = Vec::new();
        for (entry, key) in entries {
            let Some((name, secret)) = entry.split_once(':') else {
                self.fail(
                    key,
                    "<redacted>",
                    "each token is NAME:SECRET, e.g. \"ci:$(openssl rand -hex 24)\"",
                );
                continue;
            };
            let (name, secret) = (name.trim(), secret.trim());
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !name_ok {
                self.fail(
                    key,
                    name,
                    "a token NAME uses 1-64 of A-Z, a-z, 0-9, '-', '_', '.'",
                );
            } else if secret.len() < MIN_SECRET {
                self.fail(
                    key,
                    &format!("{name}:<redacted>"),
                    format!("the secret is shorter than {MIN_SECRET} characters; use e.g. `openssl rand -hex 24`"),
                );
            } else if out.iter().any(|t| t.name == name) {
                self.fail(key, name, "two tokens with the same NAME");
            } else {
                out.push(Token {
                    name: name.to_string(),
                    secret: secret.to_string(),
                });
            }
        }
        out
    }

    fn node_ids(&mut self, key: &Key) -> Vec<String> {
        let mut out = Vec::new();
        for id in self.list(key) {
            let ok = id.len() <= 128
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if ok {
                out.push(id);
            } else {
                self.fail(
                    key.name,
                    &id,
                    "expected node ids (A-Z, a-z, 0-9, '-', '_', '.')",
                );
            }
        }
        out
    }

    fn networks(&mut self, key: &Key) -> Vec<IpNet> {
        let mut out = Vec::new();
        for text in self.list(key) {
            // A bare address means that one host.
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => out.push(net),
                Err(_) => self.fail(
                    key.name,
                    &text,
                    "expected a network in CIDR form (\"10.0.0.0/8\", \"fd00::/8\") or one IP address",
                ),
            }
        }
        out
    }
}
