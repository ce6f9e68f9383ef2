//! Reaching the engine: endpoints, TLS, API version negotiation, and the
//! first sync that rebuilds the books from what the engine already runs.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bollard::errors::Error as EngineError;
use bollard::{ClientVersion, Docker, API_DEFAULT_VERSION};
use tracing::info;

use super::books::Books;
use super::{
    DockerProvider, DockerSettings, DockerTls, DEFAULT_ENDPOINT, ENGINE_TIMEOUT_S, FLOOR_VERSION,
};
use crate::resource::error::ResourceError;
use crate::resource::gpu::GpuPool;
use crate::resource::ledger::Ledger;
use crate::resource::types::Resources;
use crate::resource::UNLIMITED;
use crate::sync::KeyLocks;

/// The error and its causes, one line (bollard's transport errors say
/// little at the top: "client error (Connect)").
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

pub(super) fn is_connection_error(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::HyperLegacyError { .. }
            | EngineError::HyperResponseError { .. }
            | EngineError::IOError { .. }
            | EngineError::SocketNotFoundError(_)
            | EngineError::RequestTimeoutError
    )
}

/// The status code of an error the engine answered with.
pub(super) fn engine_status(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// `endpoint` without credentials or query (`tcp://user:pw@host` → `tcp://host`).
pub(super) fn public_endpoint(endpoint: &str) -> String {
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("", endpoint));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let rest = match rest.split_once('/') {
        Some((authority, path)) => {
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{host}/{path}")
        }
        None => rest.rsplit('@').next().unwrap_or(rest).to_string(),
    };
    if scheme.is_empty() {
        rest
    } else {
        format!("{scheme}://{rest}")
    }
}

/// A bollard client for `endpoint` at API `version` (no request is made).
fn client(
    endpoint: &str,
    tls: Option<&DockerTls>,
    version: &ClientVersion,
) -> Result<Docker, String> {
    if let Some(t) = tls {
        // Mutual TLS, as `dockerd --tlsverify` expects (port 2376).
        return Docker::connect_with_ssl(
            endpoint,
            &t.key,
            &t.cert,
            &t.ca,
            ENGINE_TIMEOUT_S,
            version,
        )
        .map_err(|e| chain(&e));
    }
    if endpoint.starts_with("https://") {
        return Err(format!(
            "{} needs TLS client files: give tls_ca, tls_cert and tls_key",
            public_endpoint(endpoint)
        ));
    }
    let made = if endpoint.starts_with("unix://") {
        Docker::connect_with_unix(endpoint, ENGINE_TIMEOUT_S, version)
    } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        Docker::connect_with_http(endpoint, ENGINE_TIMEOUT_S, version)
    } else {
        return Err(format!(
            "unsupported endpoint {:?}: use unix:///path/to/docker.sock or tcp://host:port",
            public_endpoint(endpoint)
        ));
    };
    made.map_err(|e| chain(&e))
}

/// Parses an engine's `ApiVersion` ("1.41").
fn parse_api_version(v: &str) -> Option<ClientVersion> {
    let (major, minor) = v.trim().split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

impl DockerProvider {
    /// Connects to the engine, negotiates the API version, checks it
    /// answers, and rebuilds the books from the containers it already runs
    /// for this provider.
    pub async fn connect(settings: DockerSettings) -> Result<DockerProvider, ResourceError> {
        let endpoint = settings
            .endpoint
            .clone()
            .filter(|e| !e.is_empty())
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|e| !e.is_empty()))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let shown = public_endpoint(&endpoint);
        let unavailable = |reason: String| ResourceError::Unavailable {
            provider: settings.id.clone(),
            reason,
        };
        let hint = if endpoint.starts_with("unix://") {
            "is dockerd running, and may this user open the socket (root or the docker group)?"
        } else {
            "is dockerd listening on that address, and can this host reach it?"
        };
        let docker = Self::negotiate(&endpoint, settings.tls.as_ref())
            .await
            .map_err(|e| {
                unavailable(format!(
                    "cannot reach the Docker engine at {shown}: {e} ({hint})"
                ))
            })?;
        docker.ping().await.map_err(|e| {
            unavailable(format!(
                "the Docker engine at {shown} does not answer: {} ({hint})",
                chain(&e)
            ))
        })?;

        // A limit of UNLIMITED in a dimension means "the host's total".
        let unset = |v: u64| v == UNLIMITED;
        let needs_info = settings
            .limits
            .is_none_or(|l| unset(l.cpu_millis) || unset(l.memory_bytes));
        let host = if needs_info {
            let info = docker.info().await.map_err(|e| {
                unavailable(format!("`docker info` failed at {shown}: {}", chain(&e)))
            })?;
            Resources {
                cpu_millis: info
                    .ncpu
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0)
                    .saturating_mul(1000),
                memory_bytes: info
                    .mem_total
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                gpus: 0,
                // Docker does not account storage: anything fits.
                storage_bytes: UNLIMITED,
            }
        } else {
            Resources::ZERO
        };
        let mut total = match settings.limits {
            Some(l) => Resources {
                cpu_millis: if unset(l.cpu_millis) {
                    host.cpu_millis
                } else {
                    l.cpu_millis
                },
                memory_bytes: if unset(l.memory_bytes) {
                    host.memory_bytes
                } else {
                    l.memory_bytes
                },
                gpus: if l.gpus == u32::MAX { 0 } else { l.gpus },
                storage_bytes: l.storage_bytes,
            },
            None => host,
        };
        if !settings.gpus.is_empty() {
            total.gpus = settings.gpus.len() as u32;
        }
        let provider = DockerProvider {
            id: settings.id.clone(),
            name: if settings.name.is_empty() {
                settings.id.clone()
            } else {
                settings.name.clone()
            },
            node_id: settings.node_id.clone(),
            endpoint: shown,
            labels: settings.labels.clone(),
            docker,
            books: Mutex::new(Books {
                ledger: Ledger::new(&settings.id, total)
                    .with_max_deployments(settings.max_deployments),
                gpus: GpuPool::new(settings.gpus.clone()),
                history: HashMap::new(),
                busy: HashSet::new(),
                touched: HashMap::new(),
                epoch: 0,
            }),
            key_locks: KeyLocks::new(),
            gpu_refresh: None,
        };
        provider.sync().await?;
        let cap = provider.books().ledger.capacity();
        info!(
            provider = %provider.id,
            endpoint = %provider.endpoint,
            api = ?provider.docker.client_version(),
            total = %cap.total,
            reserved = %cap.reserved,
            "docker provider connected"
        );
        Ok(provider)
    }

    /// A client at the newest API version both sides speak.
    async fn negotiate(endpoint: &str, tls: Option<&DockerTls>) -> Result<Docker, String> {
        let docker = client(endpoint, tls, API_DEFAULT_VERSION)?;
        match docker.negotiate_version().await {
            Ok(docker) => Ok(docker),
            // Engines refuse versioned requests newer than they speak, `/version`
            // included: ask again at an old version, then settle on the engine's.
            Err(EngineError::DockerResponseServerError {
                status_code: 400, ..
            }) => {
                let probe = client(endpoint, tls, &FLOOR_VERSION)?;
                let version = probe.version().await.map_err(|e| chain(&e))?;
                let theirs = version
                    .api_version
                    .as_deref()
                    .and_then(parse_api_version)
                    .ok_or("the engine reported no API version")?;
                let chosen = if theirs < *API_DEFAULT_VERSION {
                    theirs
                } else {
                    *API_DEFAULT_VERSION
                };
                client(endpoint, tls, &chosen)
            }
            Err(e) => Err(chain(&e)),
        }
    }
}
