//! The async loop that drives the gossip core over tonic: one round per
//! interval, exchanges run concurrently with deadlines on pooled channels,
//! and a peer that is still busy from the last round is skipped, never waited on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prost::Message;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};
use tracing::{debug, Instrument};

use super::stats::Stats;
use crate::api::limits;
use crate::audit::Audit;
use crate::config::Config;
use crate::mesh::{Call, Mesh, Millis, Reply, Target};
use crate::metrics::{KindLabel, Metrics};
use crate::proto::peer::peer_service_client::PeerServiceClient;
use crate::proto::peer::Member;
use crate::security::tls::Tls;
use crate::security::Security;

/// Largest gossip message a node accepts or sends (the core's soft cap is far below).
pub const MAX_GRPC_MESSAGE: usize = 4 << 20;

/// State shared by the node's tasks and its gRPC services.
pub struct Shared {
    mesh: Mutex<Mesh>,
    start: tokio::time::Instant,
    pub stats: Stats,
    pub metrics: Metrics,
    stopped: AtomicBool,
    pub config: Config,
    pub(crate) pool: Pool,
    pub security: Arc<Security>,
    pub audit: Arc<Audit>,
}

impl Shared {
    pub fn new(mesh: Mesh, config: Config, tls: Option<Tls>, audit: Arc<Audit>) -> Shared {
        let metrics = Metrics::default();
        let security = Arc::new(Security::new(
            &config.security,
            tls.clone(),
            metrics.clone(),
            audit.clone(),
        ));
        Shared {
            mesh: Mutex::new(mesh),
            start: tokio::time::Instant::now(),
            stats: Stats::default(),
            metrics,
            stopped: AtomicBool::new(false),
            pool: Pool::new(config.gossip.call_timeout, tls),
            security,
            audit,
            config,
        }
    }

    /// The core, for one short synchronous step (never held across an await).
    pub fn mesh(&self) -> MutexGuard<'_, Mesh> {
        // The core has no invariants a panicking reader could break mid-way.
        self.mesh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Milliseconds on tokio's clock since the node started.
    pub fn now(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Refuses work once the node is stopped (a crashed node must look crashed).
    pub fn check_running(&self) -> Result<(), Status> {
        if self.stopped.load(Ordering::SeqCst) {
            Err(Status::unavailable(
                "this iarnet node is shutting down; try another peer",
            ))
        } else {
            Ok(())
        }
    }
}

/// One lazily connected channel per peer address, reused across rounds.
pub(crate) struct Pool {
    clients: Mutex<HashMap<String, PeerServiceClient<Channel>>>,
    timeout: Duration,
    tls: Option<ClientTlsConfig>,
}

impl Pool {
    fn new(timeout: Duration, tls: Option<Tls>) -> Pool {
        Pool {
            clients: Mutex::default(),
            timeout,
            tls: tls.map(|t| t.client()),
        }
    }

    pub(crate) fn client(&self, addr: &str) -> Result<PeerServiceClient<Channel>, Status> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let bad = |e: tonic::transport::Error| {
            Status::invalid_argument(format!("bad peer address {addr:?}: {e}"))
        };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(bad)?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(bad)?;
        }
        let client = PeerServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        clients.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// Drops channels to addresses no longer in `keep`.
    fn retain(&self, keep: &HashSet<String>) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.retain(|addr, _| keep.contains(addr));
    }
}

/// Runs one exchange to the end. Returns the peer's own record when it answered.
pub async fn run_exchange(shared: &Shared, target: Target) -> Option<Member> {
    let (mut ex, first) = shared.mesh().open(target.clone());
    let mut queue = VecDeque::from([first]);
    let mut peer = None;
    let client = shared.pool.client(&target.addr);
    while let Some(call) = queue.pop_front() {
        let result = match &client {
            Ok(c) => call_once(shared, c.clone(), call).await,
            Err(e) => Err(e.clone()),
        };
        let now = shared.now();
        match result {
            Ok(reply) => {
                if let (None, Reply::Peers(r)) = (&peer, &reply) {
                    peer = r.sender.clone();
                }
                let next = shared.mesh().on_reply(now, &mut ex, reply);
                queue.extend(next);
            }
            Err(status) => {
                Stats::add(&shared.stats.calls_failed, 1);
                debug!(peer = %target.addr, code = ?status.code(), error = %status.message(), "gossip call failed");
                match shared.mesh().on_failure(now, &mut ex) {
                    Some(retry) => queue.push_front(retry),
                    None => break,
                }
            }
        }
    }
    peer
}

async fn call_once(
    shared: &Shared,
    mut client: PeerServiceClient<Channel>,
    call: Call,
) -> Result<Reply, Status> {
    Stats::add(&shared.stats.calls_sent, 1);
    let started = std::time::Instant::now();
    let (kind, reply) = match call {
        Call::Peers(req) => {
            let req = request(shared, req);
            let r = answered(shared, client.exchange_peers(req)).await;
            let r = r.and_then(|r| limits::exchange_response(&r).map(|()| r));
            ("peers", r.map(Reply::Peers))
        }
        Call::Providers(req) => {
            let req = request(shared, req);
            let r = answered(shared, client.exchange_providers(req)).await;
            let r = r.and_then(|r| limits::provider_response(&r).map(|()| r));
            ("providers", r.map(Reply::Providers))
        }
    };
    shared
        .metrics
        .gossip_call_seconds
        .get_or_create(&KindLabel {
            kind: kind.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    reply
}

/// A gossip request carrying its deadline to the server, counted as sent.
fn request<T: Message>(shared: &Shared, body: T) -> Request<T> {
    Stats::add(&shared.stats.bytes_sent, body.encoded_len());
    let mut req = Request::new(body);
    req.set_timeout(shared.config.gossip.call_timeout);
    req
}

/// Awaits a gossip call within the call timeout, counting the reply's bytes.
async fn answered<T: Message>(
    shared: &Shared,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    let reply = tokio::time::timeout(shared.config.gossip.call_timeout, call)
        .await
        .map_err(|_| Status::deadline_exceeded("gossip call timed out"))??
        .into_inner();
    Stats::add(&shared.stats.bytes_received, reply.encoded_len());
    Ok(reply)
}

/// One round per interval until cancelled.
pub async fn gossip_loop(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(shared.config.gossip.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inflight: JoinSet<String> = JoinSet::new();
    let mut busy: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(done) = inflight.join_next() => {
                if let Ok(addr) = done {
                    busy.remove(&addr);
                }
            }
            _ = interval.tick() => {
                let targets = shared.mesh().tick(shared.now());
                let round = shared.stats.rounds.fetch_add(1, Ordering::Relaxed);
                if round % 60 == 59 {
                    // One guard: the mesh mutex is not reentrant.
                    let keep: HashSet<String> = {
                        let mesh = shared.mesh();
                        mesh.view()
                            .iter()
                            .map(|e| e.info.addr.clone())
                            .chain(mesh.seeds().iter().cloned())
                            .collect()
                    };
                    shared.pool.retain(&keep);
                }
                for t in targets {
                    if !busy.insert(t.addr.clone()) {
                        continue; // still talking to it from an earlier round
                    }
                    let s = shared.clone();
                    let span = tracing::debug_span!("exchange", peer = %t.addr);
                    inflight.spawn(async move {
                        let addr = t.addr.clone();
                        run_exchange(&s, t).await;
                        addr
                    }.instrument(span));
                }
            }
        }
    }
    inflight.shutdown().await;
}

/// Resolves the seed names now and every `seed_resolve_interval`, so a
/// Kubernetes headless Service keeps pointing at the current pods.
pub async fn seed_loop(shared: Arc<Shared>, cancel: CancellationToken) {
    let seeds = shared.config.initial_peers.clone();
    if seeds.is_empty() {
        return;
    }
    loop {
        let mut addrs = Vec::new();
        for seed in &seeds {
            match tokio::net::lookup_host(seed.as_str()).await {
                Ok(found) => addrs.extend(found.map(|a| a.to_string())),
                Err(e) => {
                    debug!(seed = %seed, error = %e, "seed did not resolve; will retry");
                    addrs.push(seed.clone());
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        shared.mesh().set_seeds(addrs);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(shared.config.gossip.seed_resolve_interval) => {}
        }
    }
}

/// Tells a few peers this node is leaving, each call bounded by the call timeout.
pub async fn say_goodbye(shared: &Arc<Shared>) {
    let goodbyes = shared.mesh().leave();
    let mut calls = JoinSet::new();
    for (target, req) in goodbyes {
        let Ok(client) = shared.pool.client(&target.addr) else {
            continue;
        };
        let shared = shared.clone();
        calls.spawn(async move { call_once(&shared, client, Call::Peers(req)).await });
    }
    while calls.join_next().await.is_some() {}
}
