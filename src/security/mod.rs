//! Who may talk to a node: mutual TLS between peers, bearer tokens for
//! management calls, allow/deny lists, per-caller rate limits.
//!
//! Every gRPC call passes [`guard::Guard`] before it is decoded. It sorts the
//! call by surface (gossip and CallProvider from peers; management; health
//! and reflection), names the caller ([`Caller`], which the audit log
//! records) and refuses with UNAUTHENTICATED, PERMISSION_DENIED or
//! RESOURCE_EXHAUSTED (with a retry hint). Refusals are counted in metrics
//! and logged at most once per caller per [`LOG_EVERY`], so a hostile peer
//! cannot flood the log.

pub mod access;
pub mod certs;
pub mod guard;
pub mod http_tls;
pub mod limiter;
pub mod tls;
pub mod tokens;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::{Code, Status};
use tracing::warn;

use crate::audit::Audit;
use crate::config::{AccessConfig, SecurityConfig};
use crate::metrics::{Metrics, RefusalLabels};
use limiter::Limiter;
use tls::Tls;
use tokens::Tokens;

/// The one peer method with its own budget (`rate_limit.call_*`).
const CALL_PROVIDER_PATH: &str = "/peer.PeerService/CallProvider";
/// The deployment directory between nodes: a peer surface, on the
/// CallProvider budget (a lookup or forward stands for a management call).
const DIRECTORY_PREFIX: &str = "/iarnet.directory.v1.Directory/";
/// Image builds for another node's provider: a peer surface on the same
/// budget (one call carries one build).
const BUILD_PREFIX: &str = "/iarnet.build.v1.ImageBuild/";
/// Swarm changes forwarded to the node they are about, and health probes.
const SWARM_PEER_PREFIX: &str = "/iarnet.swarm.v1.SwarmPeer/";

/// A refused caller is logged at most once per this interval.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Which kind of call, for the rules that apply and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `peer.PeerService` (gossip, CallProvider) and the deployment
    /// directory, from other nodes.
    Peer,
    /// Health checks and reflection.
    Health,
    /// Admin and ResourceService: operators and other services.
    Management,
}

impl Surface {
    pub fn of(path: &str) -> Surface {
        if path.starts_with("/peer.PeerService/")
            || path.starts_with(DIRECTORY_PREFIX)
            || path.starts_with(BUILD_PREFIX)
            || path.starts_with(SWARM_PEER_PREFIX)
        {
            Surface::Peer
        } else if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") {
            Surface::Health
        } else {
            Surface::Management
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Surface::Peer => "peer",
            Surface::Health => "health",
            Surface::Management => "management",
        }
    }
}

/// Who made a call, as the guard established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A node; `verified` when its id comes from a certificate.
    Peer {
        id: Option<String>,
        verified: bool,
        addr: Option<SocketAddr>,
    },
    /// A management client holding a token.
    Token {
        name: String,
        addr: Option<SocketAddr>,
    },
    /// A management client on a node without tokens, or a health check.
    Anonymous { addr: Option<SocketAddr> },
}

impl Caller {
    /// The id a certificate proved, if any.
    pub fn verified_id(&self) -> Option<&str> {
        match self {
            Caller::Peer {
                id, verified: true, ..
            } => id.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |addr: &Option<SocketAddr>| addr.map(|a| format!("@{a}")).unwrap_or_default();
        match self {
            Caller::Peer { id, addr, verified } => write!(
                f,
                "peer:{}{}{}",
                id.as_deref().unwrap_or("?"),
                if *verified { "" } else { "(unverified)" },
                at(addr)
            ),
            Caller::Token { name, addr } => write!(f, "token:{name}{}", at(addr)),
            Caller::Anonymous { addr } => write!(f, "anonymous{}", at(addr)),
        }
    }
}

/// The caller of a gRPC request, as the guard named it and the audit log
/// records it; "local" for a request that did not pass the guard.
pub fn who<T>(request: &tonic::Request<T>) -> String {
    request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| "local".to_string(), ToString::to_string)
}

/// A node's security settings, built once at start.
pub struct Security {
    pub tls: Option<Tls>,
    tokens: Tokens,
    protect_health: bool,
    pub access: AccessConfig,
    /// Gossip (ExchangePeers, ExchangeProviders) per peer.
    gossip_calls: Limiter,
    /// CallProvider per peer: a busy home sends an owner far more of these.
    provider_calls: Limiter,
    token_calls: Limiter,
    logged: Mutex<HashMap<(String, &'static str), Instant>>,
    metrics: Metrics,
    audit: Arc<Audit>,
}

impl Security {
    pub fn new(
        cfg: &SecurityConfig,
        tls: Option<Tls>,
        metrics: Metrics,
        audit: Arc<Audit>,
    ) -> Security {
        let r = &cfg.rate_limit;
        Security {
            tls,
            tokens: Tokens::new(cfg.tokens.clone()),
            protect_health: cfg.protect_health,
            access: cfg.access.clone(),
            gossip_calls: Limiter::new(r.peer_rate, r.peer_burst),
            provider_calls: Limiter::new(r.call_rate, r.call_burst),
            token_calls: Limiter::new(r.token_rate, r.token_burst),
            logged: Mutex::default(),
            metrics,
            audit,
        }
    }

    /// Whether management calls need a token (`auth.tokens` is set).
    pub fn requires_token(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Decides one call from what is known before its body is read.
    pub fn admit(
        &self,
        path: &str,
        remote: Option<SocketAddr>,
        cert_id: Option<String>,
        authorization: Option<&[u8]>,
    ) -> Result<Caller, Status> {
        let surface = Surface::of(path);
        let budget = if path == CALL_PROVIDER_PATH
            || path.starts_with(DIRECTORY_PREFIX)
            || path.starts_with(BUILD_PREFIX)
        {
            &self.provider_calls
        } else {
            &self.gossip_calls
        };
        self.admit_with(surface, budget, remote, cert_id, authorization)
    }

    /// Decides one call to `surface` (the HTTP API sorts its own routes).
    pub fn admit_surface(
        &self,
        surface: Surface,
        remote: Option<SocketAddr>,
        cert_id: Option<String>,
        authorization: Option<&[u8]>,
    ) -> Result<Caller, Status> {
        self.admit_with(surface, &self.gossip_calls, remote, cert_id, authorization)
    }

    /// `peer_budget` is the bucket a peer call takes from.
    fn admit_with(
        &self,
        surface: Surface,
        peer_budget: &Limiter,
        remote: Option<SocketAddr>,
        cert_id: Option<String>,
        authorization: Option<&[u8]>,
    ) -> Result<Caller, Status> {
        let key_of = |id: &Option<String>| {
            id.clone()
                .or_else(|| remote.map(|a| a.ip().to_string()))
                .unwrap_or_default()
        };
        match surface {
            Surface::Peer => {
                if self.tls.is_some() && cert_id.is_none() {
                    return Err(self.refuse(
                        surface,
                        "unauthenticated",
                        &key_of(&None),
                        Status::unauthenticated("peer calls need a client certificate signed by this mesh's CA (tls.cert_file); management calls go to Admin or ResourceService"),
                    ));
                }
                self.check_access(surface, remote, cert_id.as_deref())?;
                self.limit(peer_budget, surface, &key_of(&cert_id))?;
                Ok(Caller::Peer {
                    verified: cert_id.is_some(),
                    id: cert_id,
                    addr: remote,
                })
            }
            Surface::Health if !self.protect_health || self.tokens.is_empty() => {
                Ok(Caller::Anonymous { addr: remote })
            }
            Surface::Health | Surface::Management => {
                if self.tokens.is_empty() {
                    self.limit(&self.token_calls, surface, &key_of(&None))?;
                    return Ok(Caller::Anonymous { addr: remote });
                }
                let name = self.tokens.check(authorization).map_err(|e| {
                    self.refuse(
                        surface,
                        "unauthenticated",
                        &key_of(&None),
                        Status::unauthenticated(e.message()),
                    )
                })?;
                self.limit(&self.token_calls, surface, &format!("token:{name}"))?;
                Ok(Caller::Token { name, addr: remote })
            }
        }
    }

    fn check_access(
        &self,
        surface: Surface,
        remote: Option<SocketAddr>,
        id: Option<&str>,
    ) -> Result<(), Status> {
        let denied = remote
            .map_or(Ok(()), |a| self.access.check_ip(a.ip()))
            .and_then(|()| id.map_or(Ok(()), |id| self.access.check_node(id)));
        denied.map_err(|d| {
            let key = id
                .map(str::to_string)
                .or_else(|| remote.map(|a| a.ip().to_string()));
            self.refuse(
                surface,
                "not_allowed",
                &key.unwrap_or_default(),
                Status::permission_denied(d.message()),
            )
        })
    }

    /// The check of an id a peer claims in its message: it must match the
    /// certificate when there is one, and pass the node lists.
    pub fn check_claim(&self, caller: Option<&Caller>, claimed: &str) -> Result<(), Status> {
        if claimed.is_empty() {
            return Ok(());
        }
        if let Some(proved) = caller.and_then(Caller::verified_id) {
            if proved != claimed {
                return Err(self.refuse(
                    Surface::Peer,
                    "spoofed",
                    proved,
                    Status::permission_denied(format!(
                        "the message claims to come from node {claimed:?} but the TLS certificate is node {proved:?}'s"
                    )),
                ));
            }
        }
        self.access.check_node(claimed).map_err(|d| {
            self.refuse(
                Surface::Peer,
                "not_allowed",
                claimed,
                Status::permission_denied(d.message()),
            )
        })
    }

    fn limit(&self, limiter: &Limiter, surface: Surface, key: &str) -> Result<(), Status> {
        limiter.take(key, Instant::now()).map_err(|wait| {
            let ms = wait.as_millis().max(1) as u64;
            let mut status = Status::new(
                Code::ResourceExhausted,
                format!("rate limit reached for {key}: retry in {ms} ms (rate_limit.* settings)"),
            );
            if let Ok(v) = ms.to_string().parse() {
                status.metadata_mut().insert("retry-after-ms", v);
            }
            self.refuse(surface, "rate_limited", key, status)
        })
    }

    /// Counts a refusal and logs it unless this caller was logged recently.
    fn refuse(&self, surface: Surface, reason: &'static str, key: &str, status: Status) -> Status {
        self.metrics
            .refusals
            .get_or_create(&RefusalLabels {
                surface: surface.as_str().to_string(),
                reason: reason.to_string(),
            })
            .inc();
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() > 10_000 {
            logged.retain(|_, at| now.duration_since(*at) < LOG_EVERY);
        }
        let k = (key.to_string(), reason);
        let due = logged
            .get(&k)
            .is_none_or(|at| now.duration_since(*at) >= LOG_EVERY);
        if due {
            logged.insert(k, now);
            warn!(caller = %key, surface = surface.as_str(), reason, message = %status.message(), "call refused (further refusals of this caller are counted, not logged, for a minute)");
            self.audit.record(
                "refusal",
                key,
                reason,
                serde_json::json!({"surface": surface.as_str(), "message": status.message(), "sampled": "once per caller per minute; every refusal is counted in iarnet_refusals_total"}),
            );
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_and_call_provider_have_their_own_budgets() {
        let mut cfg = crate::config::Config::shipped().security;
        cfg.rate_limit.peer_burst = 2.0;
        cfg.rate_limit.peer_rate = 0.1;
        cfg.rate_limit.call_burst = 3.0;
        cfg.rate_limit.call_rate = 0.1;
        let s = Security::new(&cfg, None, Metrics::default(), Arc::new(Audit::off()));
        let peer = Some("10.0.0.9:4000".parse().unwrap());
        let call = |path: &str| s.admit(path, peer, None, None).map(|_| ());
        for _ in 0..2 {
            call("/peer.PeerService/ExchangePeers").unwrap();
        }
        let gossip = call("/peer.PeerService/ExchangeProviders").unwrap_err();
        assert_eq!(gossip.code(), Code::ResourceExhausted);
        // A peer that spent its gossip budget still operates providers.
        for _ in 0..2 {
            call("/peer.PeerService/CallProvider").unwrap();
        }
        // Builds for another node share the CallProvider budget.
        assert_eq!(
            Surface::of("/iarnet.build.v1.ImageBuild/Build"),
            Surface::Peer
        );
        call("/iarnet.build.v1.ImageBuild/Build").unwrap();
        let calls = call("/peer.PeerService/CallProvider").unwrap_err();
        assert_eq!(calls.code(), Code::ResourceExhausted);
        assert!(calls.metadata().get("retry-after-ms").is_some());
    }

    #[test]
    fn the_default_call_budget_is_far_above_the_gossip_one() {
        let r = crate::config::Config::shipped().security.rate_limit;
        assert!(r.call_rate >= 10.0 * r.peer_rate && r.call_burst >= r.call_rate);
    }

    #[test]
    fn refusals_are_all_counted_but_logged_once_per_caller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut cfg = crate::config::Config::shipped().security;
        cfg.access.deny_networks = vec!["127.0.0.0/8".parse().unwrap()];
        let metrics = Metrics::default();
        let audit = Arc::new(Audit::open(&path, "n").unwrap());
        let s = Security::new(&cfg, None, metrics.clone(), audit);
        let remote = Some("127.0.0.1:4000".parse().unwrap());
        for _ in 0..50 {
            let e = s
                .admit("/peer.PeerService/ExchangePeers", remote, None, None)
                .unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied);
        }
        let other = Some("127.0.0.2:4000".parse().unwrap());
        s.admit("/peer.PeerService/ExchangePeers", other, None, None)
            .unwrap_err();
        let counted = metrics
            .refusals
            .get_or_create(&RefusalLabels {
                surface: "peer".into(),
                reason: "not_allowed".into(),
            })
            .get();
        assert_eq!(counted, 51);
        let logged = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(logged, 2, "one record per caller, not one per refusal");
        // Management is a different surface: not refused by peer lists.
        assert!(s
            .admit("/iarnet.admin.v1.Admin/GetNode", remote, None, None)
            .is_ok());
    }
}
