//! The Docker engine as a provider (bollard).
//!
//! Every container iarnet makes is named after its request
//! (`validate::deployment_id(request_id)`) and carries its own
//! books in labels:
//!
//! ```text
//! iarnet.managed=true          iarnet.provider=<provider id>   iarnet.node=<node id>
//! iarnet.request=<request id>  iarnet.cpu_millis=<n>           iarnet.memory_bytes=<n>
//! iarnet.gpus=<uuid,uuid>      iarnet.gpu_shared=<bool>        iarnet.storage_bytes=<n> (when set)
//! ```
//!
//! The name makes deploys idempotent (a retry finds the container, a racing
//! twin gets a name conflict); the labels let a restarted node rebuild its
//! ledger and GPU assignments from the engine alone. A container that has
//! exited holds nothing: its reservation is released as soon as it is seen
//! exited, like a terminated Pod.
//!
//! Admission is the same as in the in-memory twin: reserve in the ledger
//! and assign GPUs under the books' lock, then create; release on failure.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, DeviceRequest, HostConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker, API_DEFAULT_VERSION};
use futures::stream::{self, BoxStream, StreamExt};
use tracing::{debug, info, warn};

use super::error::ResourceError;
use super::gpu::{GpuInfo, GpuPool};
use super::labels;
use super::ledger::{admit, Ledger};
use super::provider::{LogOptions, LogStream, ProgressSink, Provider};
use super::types::{
    DeploySpec, DeployState, Deployment, LogLine, Progress, ProviderDescriptor, ProviderKind,
    Resources, StateChange,
};
use super::validate::{deployment_id, validate};
use crate::sync::KeyLocks;

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
    /// Advertised labels (`region`, `zone`, …); `gpu.model` is added when GPUs exist.
    pub labels: BTreeMap<String, String>,
    /// The node this provider belongs to (labels its containers).
    pub node_id: String,
    /// GPUs of the engine's host, assigned to containers by UUID.
    pub gpus: Vec<GpuInfo>,
}

/// The books of one provider; never held across an await.
struct Books {
    ledger: Ledger,
    gpus: GpuPool,
    /// States seen per deployment (container name).
    history: HashMap<String, Vec<StateChange>>,
    /// Keys a deploy or stop is working on: reconciliation leaves them alone.
    busy: HashSet<String>,
    /// Epoch of the last change made to each key's reservation. A snapshot
    /// of the engine taken at epoch `e` says nothing about keys touched after `e`.
    touched: HashMap<String, u64>,
    epoch: u64,
}

impl Books {
    fn touch(&mut self, key: &str) {
        self.epoch += 1;
        self.touched.insert(key.to_string(), self.epoch);
    }

    fn release(&mut self, key: &str) {
        let held = self.ledger.release(key).is_some();
        self.gpus.release(key);
        self.touch(key);
        if held {
            debug!(deployment = key, "reservation released");
        }
    }

    fn adopt(&mut self, f: &Facts) {
        self.ledger.adopt(&f.key, f.ledger_need());
        if !f.gpus.is_empty() {
            self.gpus.adopt(&f.key, &f.gpus, f.gpu_shared);
        }
        self.touch(&f.key);
    }
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

/// What a container's labels and state say about a deployment.
#[derive(Debug, Clone)]
struct Facts {
    key: String,
    request_id: String,
    image: String,
    resources: Resources,
    gpus: Vec<String>,
    gpu_shared: bool,
    state: DeployState,
    created: Option<SystemTime>,
    started: Option<SystemTime>,
    finished: Option<SystemTime>,
}

impl Facts {
    /// What the container holds in the ledger (shared GPUs are not counted).
    fn ledger_need(&self) -> Resources {
        let mut need = self.resources;
        if self.gpu_shared {
            need.gpus = 0;
        }
        need
    }

    fn live(&self) -> bool {
        !self.state.is_final()
    }

    fn from_labels(
        provider: &str,
        key: &str,
        labels: Option<&HashMap<String, String>>,
        image: String,
        state: DeployState,
    ) -> Option<Facts> {
        let labels = labels?;
        if labels.get(labels::MANAGED).map(String::as_str) != Some("true")
            || labels.get(labels::PROVIDER).map(String::as_str) != Some(provider)
        {
            return None;
        }
        let num = |k: &str| {
            labels
                .get(k)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let gpus: Vec<String> = labels
            .get(labels::GPUS)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        Some(Facts {
            key: key.to_string(),
            request_id: labels.get(labels::REQUEST).cloned().unwrap_or_default(),
            image,
            resources: Resources {
                cpu_millis: num(labels::CPU_MILLIS),
                memory_bytes: num(labels::MEMORY_BYTES),
                gpus: gpus.len() as u32,
                storage_bytes: num(labels::STORAGE_BYTES),
            },
            gpu_shared: labels.get(labels::GPU_SHARED).map(String::as_str) == Some("true"),
            gpus,
            state,
            created: None,
            started: None,
            finished: None,
        })
    }

    fn from_inspect(provider: &str, c: &ContainerInspectResponse) -> Option<Facts> {
        let key = c.name.as_deref()?.trim_start_matches('/');
        let config = c.config.as_ref()?;
        let image = config
            .image
            .clone()
            .or_else(|| c.image.clone())
            .unwrap_or_default();
        let st = c.state.as_ref();
        let state = match st.and_then(|s| s.status) {
            None | Some(ContainerStateStatusEnum::EMPTY) => DeployState::Pending,
            Some(ContainerStateStatusEnum::CREATED) => DeployState::Starting,
            Some(ContainerStateStatusEnum::RESTARTING) => DeployState::Starting,
            Some(ContainerStateStatusEnum::RUNNING)
            | Some(ContainerStateStatusEnum::PAUSED)
            | Some(ContainerStateStatusEnum::STOPPING) => DeployState::Running,
            Some(ContainerStateStatusEnum::REMOVING) => DeployState::Stopped,
            Some(ContainerStateStatusEnum::EXITED) => {
                DeployState::Exited(st.and_then(|s| s.exit_code).unwrap_or(-1))
            }
            Some(ContainerStateStatusEnum::DEAD) => DeployState::Failed(
                st.and_then(|s| s.error.clone())
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "the container is dead".into()),
            ),
        };
        let mut f = Facts::from_labels(provider, key, config.labels.as_ref(), image, state)?;
        f.created = c.created.as_deref().and_then(parse_rfc3339);
        f.started = st
            .and_then(|s| s.started_at.as_deref())
            .and_then(parse_rfc3339);
        f.finished = st
            .and_then(|s| s.finished_at.as_deref())
            .and_then(parse_rfc3339);
        Some(f)
    }

    fn from_summary(provider: &str, c: &ContainerSummary) -> Option<Facts> {
        let key = c.names.as_ref()?.first()?.trim_start_matches('/');
        let state = match c.state {
            None | Some(ContainerSummaryStateEnum::EMPTY) => DeployState::Pending,
            Some(ContainerSummaryStateEnum::CREATED)
            | Some(ContainerSummaryStateEnum::RESTARTING) => DeployState::Starting,
            Some(ContainerSummaryStateEnum::RUNNING)
            | Some(ContainerSummaryStateEnum::PAUSED)
            | Some(ContainerSummaryStateEnum::STOPPING) => DeployState::Running,
            Some(ContainerSummaryStateEnum::REMOVING) => DeployState::Stopped,
            Some(ContainerSummaryStateEnum::EXITED) => {
                DeployState::Exited(c.status.as_deref().and_then(exit_code_of).unwrap_or(-1))
            }
            Some(ContainerSummaryStateEnum::DEAD) => {
                DeployState::Failed("the container is dead".into())
            }
        };
        let image = c.image.clone().unwrap_or_default();
        let mut f = Facts::from_labels(provider, key, c.labels.as_ref(), image, state)?;
        f.created = c
            .created
            .and_then(|s| u64::try_from(s).ok())
            .map(|s| UNIX_EPOCH + Duration::from_secs(s));
        Some(f)
    }

    /// A history for a deployment first seen now, from the engine's timestamps.
    fn seed_history(&self) -> Vec<StateChange> {
        let now = SystemTime::now();
        let mut h = Vec::new();
        let mut push = |state: DeployState, at: Option<SystemTime>| {
            if h.last().map(|c: &StateChange| &c.state) != Some(&state) {
                h.push(StateChange {
                    state,
                    at: at.unwrap_or(now),
                });
            }
        };
        push(DeployState::Pending, self.created);
        match &self.state {
            DeployState::Pending | DeployState::Starting | DeployState::Pulling => {}
            DeployState::Running => push(DeployState::Running, self.started),
            final_state => {
                if self.started.is_some() {
                    push(DeployState::Running, self.started);
                }
                push(final_state.clone(), self.finished);
            }
        }
        push(self.state.clone(), None);
        h
    }
}

/// A valid Docker container name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), as every
/// deployment id of this provider is.
fn is_container_name(s: &str) -> bool {
    s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The exit code in a summary status such as `Exited (137) 3 seconds ago`.
fn exit_code_of(status: &str) -> Option<i64> {
    let open = status.find('(')?;
    let close = status[open..].find(')')? + open;
    status[open + 1..close].trim().parse().ok()
}

/// Parses the engine's RFC 3339 timestamps (`2024-05-01T12:00:00.123456789Z`);
/// Go's zero time (`0001-01-01T00:00:00Z`, "never") and anything odd give None.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let zone_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(zone_at);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: i64 = t.next()?.parse().ok()?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        format!("{digits:0<9}").parse().ok()?
    };
    let offset_s: i64 = match zone {
        "" | "Z" | "z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (h, m) = z[1..].split_once(':')?;
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The error and its causes, one line (bollard's transport errors say
/// little at the top: "client error (Connect)").
fn chain(e: &dyn std::error::Error) -> String {
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

fn is_connection_error(e: &EngineError) -> bool {
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
fn engine_status(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// `endpoint` without credentials or query (`tcp://user:pw@host` → `tcp://host`).
fn public_endpoint(endpoint: &str) -> String {
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

/// Splits the engine's log frames into lines, per stream.
struct LogLines {
    raw: BoxStream<'static, Result<LogOutput, EngineError>>,
    partial: [Vec<u8>; 2],
    ready: VecDeque<Result<LogLine, ResourceError>>,
    done: bool,
    provider: String,
}

impl LogLines {
    fn feed(&mut self, out: LogOutput) {
        let (stderr, bytes) = match out {
            LogOutput::StdErr { message } => (true, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => (false, message),
            LogOutput::StdIn { .. } => return,
        };
        let buf = &mut self.partial[usize::from(stderr)];
        buf.extend_from_slice(&bytes);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1])
                .trim_end_matches('\r')
                .to_string();
            self.ready.push_back(Ok(LogLine { stderr, text }));
        }
    }

    fn flush(&mut self) {
        for stderr in [false, true] {
            let buf = std::mem::take(&mut self.partial[usize::from(stderr)]);
            if !buf.is_empty() {
                let text = String::from_utf8_lossy(&buf).into_owned();
                self.ready.push_back(Ok(LogLine { stderr, text }));
            }
        }
    }

    fn into_stream(self) -> LogStream {
        Box::pin(stream::unfold(self, |mut st| async move {
            loop {
                if let Some(item) = st.ready.pop_front() {
                    return Some((item, st));
                }
                if st.done {
                    return None;
                }
                match st.raw.next().await {
                    Some(Ok(out)) => st.feed(out),
                    Some(Err(e)) => {
                        st.done = true;
                        st.flush();
                        let err = if is_connection_error(&e) {
                            ResourceError::Unavailable {
                                provider: st.provider.clone(),
                                reason: format!("log stream broke: {}", chain(&e)),
                            }
                        } else {
                            ResourceError::Backend(format!("log stream: {}", chain(&e)))
                        };
                        st.ready.push_back(Err(err));
                    }
                    None => {
                        st.done = true;
                        st.flush();
                    }
                }
            }
        }))
    }
}

/// Marks a key busy for as long as it lives.
struct Busy<'a> {
    provider: &'a DockerProvider,
    key: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.provider.books().busy.remove(&self.key);
    }
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

        // A limit of u64::MAX in a dimension means "the host's total".
        let unset = |v: u64| v == u64::MAX;
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
                storage_bytes: u64::MAX,
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
                ledger: Ledger::new(&settings.id, total),
                gpus: GpuPool::new(settings.gpus.clone()),
                history: HashMap::new(),
                busy: HashSet::new(),
                touched: HashMap::new(),
                epoch: 0,
            }),
            key_locks: KeyLocks::new(),
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

    /// The engine client (for callers that need more than the trait).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The engine's endpoint as advertised (never credentials).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn busy(&self, key: &str) -> Busy<'_> {
        self.books().busy.insert(key.to_string());
        Busy {
            provider: self,
            key: key.to_string(),
        }
    }

    fn not_found(&self, id: &str) -> ResourceError {
        ResourceError::NotFound(format!(
            "deployment {id:?} not found on provider {}",
            self.id
        ))
    }

    /// Maps an engine error met while doing `what`.
    fn engine_error(&self, what: &str, e: EngineError) -> ResourceError {
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

    /// The container named `key` if it is one of this provider's (None when
    /// there is no such container).
    async fn inspect(&self, key: &str) -> Result<Option<Facts>, ResourceError> {
        if !is_container_name(key) {
            // Never put arbitrary text into an engine URL.
            return Ok(None);
        }
        match self
            .docker
            .inspect_container(key, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(Facts::from_inspect(&self.id, &c)),
            Err(e) if engine_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.engine_error(&format!("inspect {key}"), e)),
        }
    }

    /// Like `inspect`, but a container that exists under another owner is an error.
    async fn inspect_owned_or_free(&self, key: &str) -> Result<Option<Facts>, ResourceError> {
        match self
            .docker
            .inspect_container(key, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => match Facts::from_inspect(&self.id, &c) {
                Some(f) => Ok(Some(f)),
                None => Err(ResourceError::Backend(format!(
                    "a container named {key} exists on {} but is not provider {}'s \
                     (another provider on the same engine took this request id?)",
                    self.endpoint, self.id
                ))),
            },
            Err(e) if engine_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.engine_error(&format!("inspect {key}"), e)),
        }
    }

    /// Records what was seen of a deployment: extends its history, and
    /// releases its reservation once it no longer runs.
    fn observe(&self, f: &Facts) -> Deployment {
        let mut books = self.books();
        let history = match books.history.get_mut(&f.key) {
            Some(h) => {
                if h.last().map(|c| &c.state) != Some(&f.state) {
                    h.push(StateChange {
                        state: f.state.clone(),
                        at: SystemTime::now(),
                    });
                }
                h.clone()
            }
            None => {
                let h = f.seed_history();
                books.history.insert(f.key.clone(), h.clone());
                h
            }
        };
        if !f.live() && (books.ledger.holds(&f.key) || !books.gpus.held_by(&f.key).is_empty()) {
            books.release(&f.key);
        }
        let gpus = if f.gpus.is_empty() {
            books.gpus.held_by(&f.key)
        } else {
            f.gpus.clone()
        };
        Deployment {
            id: f.key.clone(),
            request_id: f.request_id.clone(),
            provider_id: self.id.clone(),
            image: f.image.clone(),
            resources: f.resources,
            gpus,
            history,
        }
    }

    /// This provider's containers, as the engine lists them.
    async fn list_facts(&self) -> Result<Vec<Facts>, ResourceError> {
        let filters: HashMap<&str, Vec<String>> = HashMap::from([(
            "label",
            vec![
                format!("{}=true", labels::MANAGED),
                format!("{}={}", labels::PROVIDER, self.id),
            ],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| self.engine_error("list containers", e))?;
        Ok(found
            .iter()
            .filter_map(|c| Facts::from_summary(&self.id, c))
            .collect())
    }

    /// Brings the books in line with the engine: live containers hold
    /// their reservations (adopted after a restart), exited or vanished
    /// ones hold nothing. Keys changed since the listing began, or being
    /// deployed or stopped now, are left alone. Returns what was listed.
    async fn sync(&self) -> Result<Vec<Facts>, ResourceError> {
        let start = self.books().epoch;
        let facts = self.list_facts().await?;
        let mut books = self.books();
        let books = &mut *books;
        let settled = |b: &Books, key: &str| {
            !b.busy.contains(key) && b.touched.get(key).is_none_or(|t| *t <= start)
        };
        let mut seen = HashSet::new();
        for f in &facts {
            seen.insert(f.key.as_str());
            if !settled(books, &f.key) {
                continue;
            }
            let held = books.ledger.holds(&f.key);
            if f.live() && !held {
                debug!(deployment = %f.key, need = %f.ledger_need(), "adopting a running container");
                books.adopt(f);
            } else if !f.live() && (held || !books.gpus.held_by(&f.key).is_empty()) {
                books.release(&f.key);
            }
        }
        let vanished: Vec<String> = books
            .ledger
            .keys()
            .filter(|k| !seen.contains(k) && settled(books, k))
            .map(String::from)
            .collect();
        for key in vanished {
            warn!(deployment = %key, "container vanished from the engine; releasing its reservation");
            books.release(&key);
        }
        // Forget what no longer exists anywhere.
        books
            .touched
            .retain(|k, t| *t > start || seen.contains(k.as_str()) || books.busy.contains(k));
        books.history.retain(|k, _| {
            seen.contains(k.as_str()) || books.busy.contains(k) || books.ledger.holds(k)
        });
        Ok(facts)
    }

    /// Pulls `image` unless the engine has it, reporting progress.
    async fn ensure_image(
        &self,
        image: &str,
        progress: &ProgressSink,
        history: &mut Vec<StateChange>,
    ) -> Result<(), ResourceError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if engine_status(&e) == Some(404) => {}
            Err(e) => return Err(self.engine_error(&format!("inspect image {image}"), e)),
        }
        push(history, progress, DeployState::Pulling);
        info!(provider = %self.id, image, "pulling image");
        let last = image.rsplit('/').next().unwrap_or(image);
        let mut opts = CreateImageOptionsBuilder::default().from_image(image);
        if !image.contains('@') && !last.contains(':') {
            // Without a tag the engine would pull every tag.
            opts = opts.tag("latest");
        }
        let mut pull = self.docker.create_image(Some(opts.build()), None, None);
        let pull_failed = |reason: String| ResourceError::PullFailed {
            image: image.to_string(),
            reason,
        };
        while let Some(step) = pull.next().await {
            match step {
                Ok(info) => {
                    let detail = info.progress_detail.unwrap_or_default();
                    progress.emit(Progress::Pull {
                        layer: info.id.unwrap_or_default(),
                        status: info.status.unwrap_or_default(),
                        current: detail
                            .current
                            .and_then(|n| u64::try_from(n).ok())
                            .unwrap_or(0),
                        total: detail
                            .total
                            .and_then(|n| u64::try_from(n).ok())
                            .unwrap_or(0),
                    });
                }
                Err(EngineError::DockerResponseServerError { message, .. }) => {
                    return Err(pull_failed(message))
                }
                Err(EngineError::DockerStreamError { error }) => return Err(pull_failed(error)),
                Err(e) if is_connection_error(&e) => {
                    return Err(self.engine_error(&format!("pull {image}"), e))
                }
                Err(e) => return Err(pull_failed(chain(&e))),
            }
        }
        Ok(())
    }

    fn container_body(&self, spec: &DeploySpec, gpus: &[String]) -> ContainerCreateBody {
        let r = &spec.resources;
        let mut labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(labels::MANAGED.into(), "true".into());
        labels.insert(labels::PROVIDER.into(), self.id.clone());
        labels.insert(labels::NODE.into(), self.node_id.clone());
        labels.insert(labels::REQUEST.into(), spec.request_id.clone());
        labels.insert(labels::CPU_MILLIS.into(), r.cpu_millis.to_string());
        labels.insert(labels::MEMORY_BYTES.into(), r.memory_bytes.to_string());
        if r.storage_bytes != 0 {
            labels.insert(labels::STORAGE_BYTES.into(), r.storage_bytes.to_string());
        }
        labels.insert(labels::GPUS.into(), gpus.join(","));
        labels.insert(labels::GPU_SHARED.into(), spec.gpu_shared.to_string());

        let mut bindings: BTreeMap<String, Vec<PortBinding>> = BTreeMap::new();
        for p in &spec.ports {
            let port = format!("{}/{}", p.container, if p.udp { "udp" } else { "tcp" });
            bindings.entry(port).or_default().push(PortBinding {
                host_ip: None,
                // Empty = any free port.
                host_port: Some(if p.host == 0 {
                    String::new()
                } else {
                    p.host.to_string()
                }),
            });
        }
        let exposed: Vec<String> = bindings.keys().cloned().collect();

        let host_config = HostConfig {
            nano_cpus: Some(
                i64::try_from(r.cpu_millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
            ),
            memory: Some(i64::try_from(r.memory_bytes).unwrap_or(i64::MAX)),
            device_requests: (!gpus.is_empty()).then(|| {
                vec![DeviceRequest {
                    driver: Some("nvidia".into()),
                    count: None,
                    device_ids: Some(gpus.to_vec()),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    options: None,
                }]
            }),
            port_bindings: (!bindings.is_empty()).then(|| {
                bindings
                    .into_iter()
                    .map(|(k, v)| (k, Some(v)))
                    .collect::<HashMap<_, _>>()
            }),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: (!spec.command.is_empty()).then(|| spec.command.clone()),
            cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
            env: (!spec.env.is_empty())
                .then(|| spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    /// Pulls, creates and starts the container of a reserved deployment.
    /// `Ok(None)` means the name was taken meanwhile (a twin deploy elsewhere).
    async fn create_and_start(
        &self,
        key: &str,
        spec: &DeploySpec,
        gpus: &[String],
        progress: &ProgressSink,
        history: &mut Vec<StateChange>,
        created: &mut bool,
    ) -> Result<Option<Facts>, ResourceError> {
        self.ensure_image(&spec.image, progress, history).await?;
        push(history, progress, DeployState::Starting);
        if !self
            .create_named(key, self.container_body(spec, gpus))
            .await?
        {
            return Ok(None);
        }
        *created = true;
        self.docker
            .start_container(key, None)
            .await
            .map_err(|e| self.engine_error(&format!("start {key}"), e))?;
        match self.inspect(key).await? {
            Some(f) => Ok(Some(f)),
            None => Err(ResourceError::Backend(format!(
                "container {key} vanished right after it started"
            ))),
        }
    }

    /// Creates the container named `key`; `Ok(false)` when a container of
    /// that name exists already (a twin deploy made it). The engine holds a
    /// name a moment before the container can be inspected, so a conflict
    /// waits for the winner to show up, or for its create to fail and free
    /// the name, and then tries again.
    async fn create_named(
        &self,
        key: &str,
        body: ContainerCreateBody,
    ) -> Result<bool, ResourceError> {
        let deadline = Instant::now() + NAME_RACE_WAIT;
        loop {
            let opts = CreateContainerOptionsBuilder::default().name(key).build();
            match self.docker.create_container(Some(opts), body.clone()).await {
                Ok(resp) => {
                    for w in resp.warnings.iter().filter(|w| !w.is_empty()) {
                        warn!(deployment = key, warning = %w, "engine warning on create");
                    }
                    return Ok(true);
                }
                Err(e) if engine_status(&e) == Some(409) => {
                    let retry_at = Instant::now() + Duration::from_secs(1);
                    while Instant::now() < retry_at {
                        match self
                            .docker
                            .inspect_container(key, None::<InspectContainerOptions>)
                            .await
                        {
                            Ok(_) => return Ok(false),
                            Err(e) if engine_status(&e) == Some(404) => {}
                            Err(e) => return Err(self.engine_error(&format!("inspect {key}"), e)),
                        }
                        if Instant::now() >= deadline {
                            return Err(ResourceError::Backend(format!(
                                "the engine reports the name {key} in use, yet no such container appears"
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                }
                Err(EngineError::DockerResponseServerError {
                    status_code: 400,
                    message,
                }) => {
                    // The engine's own checks (memory below its minimum, more
                    // CPUs than the host has, …): the spec is at fault.
                    let lower = message.to_lowercase();
                    let field = if lower.contains("memory") {
                        "memory"
                    } else if lower.contains("cpu") {
                        "cpu"
                    } else if lower.contains("port") {
                        "ports"
                    } else {
                        "spec"
                    };
                    return Err(ResourceError::invalid(
                        field,
                        format!("the Docker engine refused it: {message}"),
                    ));
                }
                Err(e) => return Err(self.engine_error(&format!("create {key}"), e)),
            }
        }
    }

    /// Removes a container, ignoring "already gone".
    async fn remove(&self, key: &str) -> Result<(), ResourceError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(key, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if engine_status(&e) == Some(404) => Ok(()),
            // 409: removal already in progress.
            Err(e) if engine_status(&e) == Some(409) => Ok(()),
            Err(e) => Err(self.engine_error(&format!("remove {key}"), e)),
        }
    }
}

fn push(history: &mut Vec<StateChange>, progress: &ProgressSink, state: DeployState) {
    progress.emit(Progress::State(state.clone()));
    if history.last().map(|c| &c.state) != Some(&state) {
        history.push(StateChange {
            state,
            at: SystemTime::now(),
        });
    }
}

#[async_trait::async_trait]
impl Provider for DockerProvider {
    fn id(&self) -> &str {
        &self.id
    }

    async fn describe(&self) -> Result<ProviderDescriptor, ResourceError> {
        let healthy = match self.docker.ping().await {
            Ok(_) => match self.sync().await {
                Ok(_) => true,
                Err(e) => {
                    warn!(provider = %self.id, error = %e, "cannot list containers");
                    false
                }
            },
            Err(e) => {
                debug!(provider = %self.id, error = %chain(&e), "engine does not answer");
                false
            }
        };
        let books = self.books();
        let mut labels = self.labels.clone();
        if let Some(model) = books.gpus.models().first() {
            labels.insert(labels::GPU_MODEL.into(), model.clone());
        }
        Ok(ProviderDescriptor {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: ProviderKind::Docker,
            endpoint: self.endpoint.clone(),
            healthy,
            capacity: books.ledger.capacity(),
            labels,
        })
    }

    async fn deploy(
        &self,
        spec: &DeploySpec,
        progress: ProgressSink,
    ) -> Result<Deployment, ResourceError> {
        validate(spec)?;
        let key = deployment_id(&spec.request_id);
        let _key_lock = self.key_locks.lock(&key).await;
        if let Some(f) = self.inspect_owned_or_free(&key).await? {
            debug!(deployment = %key, "deploy retried: returning the existing container");
            if f.state != DeployState::Starting {
                return Ok(self.observe(&f));
            }
            // Created but never started: the node died between the two
            // calls. Finish what the first attempt began.
            self.docker
                .start_container(&key, None)
                .await
                .map_err(|e| self.engine_error(&format!("start {key}"), e))?;
            let started = self.inspect(&key).await?.unwrap_or(f);
            return Ok(self.observe(&started));
        }

        let mut history = Vec::new();
        push(&mut history, &progress, DeployState::Pending);
        let busy = self.busy(&key);
        let gpus = {
            let mut books = self.books();
            let books = &mut *books;
            let gpus = admit(&mut books.ledger, &mut books.gpus, &key, spec)?;
            books.touch(&key);
            gpus
        };

        let mut created = false;
        let outcome = self
            .create_and_start(&key, spec, &gpus, &progress, &mut history, &mut created)
            .await;
        let facts = match outcome {
            Ok(Some(f)) => f,
            Ok(None) => {
                // Someone else created it between our check and our create:
                // it exists and holds what it asked for.
                let existing = match self.inspect_owned_or_free(&key).await {
                    Ok(Some(f)) => Ok(f),
                    Ok(None) => Err(ResourceError::Backend(format!(
                        "container {key} was reported to exist but cannot be found"
                    ))),
                    Err(e) => Err(e),
                };
                drop(busy);
                return match existing {
                    Ok(f) => Ok(self.observe(&f)),
                    Err(e) => {
                        self.books().release(&key);
                        Err(e)
                    }
                };
            }
            Err(e) => {
                if created {
                    if let Err(re) = self.remove(&key).await {
                        warn!(deployment = %key, error = %re, "cannot remove a half-made container");
                    }
                }
                self.books().release(&key);
                warn!(provider = %self.id, deployment = %key, error = %e, "deploy failed");
                return Err(e);
            }
        };
        progress.emit(Progress::State(facts.state.clone()));
        {
            let mut books = self.books();
            history.push(StateChange {
                state: facts.state.clone(),
                at: SystemTime::now(),
            });
            history.dedup_by(|a, b| a.state == b.state);
            books.history.insert(key.clone(), history);
            books.touch(&key);
        }
        drop(busy);
        info!(provider = %self.id, deployment = %key, image = %spec.image, state = %facts.state, "deployed");
        Ok(self.observe(&facts))
    }

    async fn status(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        match self.inspect(deployment_id).await? {
            Some(f) => Ok(self.observe(&f)),
            None => Err(self.not_found(deployment_id)),
        }
    }

    async fn list(&self) -> Result<Vec<Deployment>, ResourceError> {
        let facts = self.sync().await?;
        let mut all: Vec<Deployment> = facts.iter().map(|f| self.observe(f)).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn logs(
        &self,
        deployment_id: &str,
        opts: LogOptions,
    ) -> Result<LogStream, ResourceError> {
        if self.inspect(deployment_id).await?.is_none() {
            return Err(self.not_found(deployment_id));
        }
        let tail = opts
            .tail
            .map_or_else(|| "all".to_string(), |n| n.to_string());
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(opts.follow)
            .tail(&tail)
            .build();
        let raw = self.docker.logs(deployment_id, Some(options)).boxed();
        Ok(LogLines {
            raw,
            partial: [Vec::new(), Vec::new()],
            ready: VecDeque::new(),
            done: false,
            provider: self.id.clone(),
        }
        .into_stream())
    }

    async fn stop(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        let _key_lock = self.key_locks.lock(deployment_id).await;
        let Some(facts) = self.inspect(deployment_id).await? else {
            return Err(self.not_found(deployment_id));
        };
        let busy = self.busy(deployment_id);
        let opts = StopContainerOptionsBuilder::default()
            .t(STOP_GRACE_S)
            .build();
        match self.docker.stop_container(deployment_id, Some(opts)).await {
            Ok(()) => {}
            // Removed meanwhile: a concurrent stop won.
            Err(e) if engine_status(&e) == Some(404) => {
                return Err(self.not_found(deployment_id));
            }
            Err(e) => {
                // Still try to remove it: force kills.
                warn!(deployment = deployment_id, error = %chain(&e), "stop failed; removing by force");
            }
        }
        self.remove(deployment_id).await?;
        let mut d = self.observe(&facts);
        d.push_state(DeployState::Stopped);
        {
            let mut books = self.books();
            books.release(deployment_id);
            books.history.remove(deployment_id);
        }
        drop(busy);
        info!(provider = %self.id, deployment = deployment_id, "stopped and removed");
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse() {
        let t = parse_rfc3339("2024-05-01T12:00:01.5Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1_714_564_801, 500_000_000)
        );
        let t = parse_rfc3339("2024-05-01T14:00:01.123456789+02:00").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1_714_564_801, 123_456_789)
        );
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), None);
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00.x1Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn exit_codes_from_summaries() {
        assert_eq!(exit_code_of("Exited (137) 3 seconds ago"), Some(137));
        assert_eq!(exit_code_of("Exited (0) About a minute ago"), Some(0));
        assert_eq!(exit_code_of("Up 3 seconds"), None);
        assert_eq!(exit_code_of("Exited (x"), None);
    }

    #[test]
    fn only_container_names_reach_the_engine() {
        assert!(is_container_name(&deployment_id("r1")));
        for bad in ["", "../etc", "a/b", "a?b", "-x", "a b"] {
            assert!(!is_container_name(bad), "{bad}");
        }
    }

    #[test]
    fn endpoints_lose_credentials() {
        assert_eq!(
            public_endpoint("tcp://user:secret@host:2375/x?token=1"),
            "tcp://host:2375/x"
        );
        assert_eq!(public_endpoint("tcp://host:2375"), "tcp://host:2375");
        assert_eq!(
            public_endpoint("unix:///var/run/docker.sock"),
            "unix:///var/run/docker.sock"
        );
    }

    #[test]
    fn labels_make_facts_and_only_ours() {
        let mut labels = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::PROVIDER.to_string(), "p1".to_string()),
            (labels::REQUEST.to_string(), "r1".to_string()),
            (labels::CPU_MILLIS.to_string(), "250".to_string()),
            (labels::MEMORY_BYTES.to_string(), "67108864".to_string()),
            (labels::GPUS.to_string(), "GPU-a,GPU-b".to_string()),
            (labels::GPU_SHARED.to_string(), "true".to_string()),
        ]);
        let f = Facts::from_labels("p1", "k", Some(&labels), "img".into(), DeployState::Running)
            .unwrap();
        assert_eq!(f.resources.cpu_millis, 250);
        assert_eq!(f.resources.gpus, 2);
        assert_eq!(f.ledger_need().gpus, 0, "shared GPUs are not in the ledger");
        assert_eq!(f.gpus, vec!["GPU-a", "GPU-b"]);
        assert!(
            Facts::from_labels("p2", "k", Some(&labels), "img".into(), DeployState::Running)
                .is_none()
        );
        labels.insert(labels::CPU_MILLIS.into(), "garbage".into());
        let f = Facts::from_labels("p1", "k", Some(&labels), "img".into(), DeployState::Running)
            .unwrap();
        assert_eq!(f.resources.cpu_millis, 0, "bad labels never panic");
    }

    #[test]
    fn seeded_history_follows_the_engine() {
        let f = Facts {
            key: "k".into(),
            request_id: "r".into(),
            image: "i".into(),
            resources: Resources::ZERO,
            gpus: vec![],
            gpu_shared: false,
            state: DeployState::Exited(3),
            created: Some(UNIX_EPOCH + Duration::from_secs(10)),
            started: Some(UNIX_EPOCH + Duration::from_secs(11)),
            finished: Some(UNIX_EPOCH + Duration::from_secs(12)),
        };
        let states: Vec<DeployState> = f.seed_history().into_iter().map(|c| c.state).collect();
        assert_eq!(
            states,
            vec![
                DeployState::Pending,
                DeployState::Running,
                DeployState::Exited(3)
            ]
        );
    }

    #[test]
    fn log_frames_become_lines() {
        let mut l = LogLines {
            raw: stream::empty().boxed(),
            partial: [Vec::new(), Vec::new()],
            ready: VecDeque::new(),
            done: false,
            provider: "p".into(),
        };
        l.feed(LogOutput::StdOut {
            message: "a\nb".into(),
        });
        l.feed(LogOutput::StdErr {
            message: "e1\r\n".into(),
        });
        l.feed(LogOutput::StdOut {
            message: "c\n".into(),
        });
        l.feed(LogOutput::StdOut {
            message: "tail".into(),
        });
        l.flush();
        let got: Vec<(bool, String)> = l
            .ready
            .into_iter()
            .map(|r| r.map(|x| (x.stderr, x.text)).unwrap())
            .collect();
        assert_eq!(
            got,
            vec![
                (false, "a".into()),
                (true, "e1".into()),
                (false, "bc".into()),
                (false, "tail".into())
            ]
        );
    }
}
