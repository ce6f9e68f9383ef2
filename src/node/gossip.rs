//! The async loop that drives the gossip core over tonic: one round per
//! interval, exchanges run concurrently with deadlines on pooled channels,
//! and a peer that is still busy from the last round is skipped, never waited on.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prost::Message;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Status};
use tracing::{debug, Instrument};

use super::shared::Shared;
use crate::mesh::{limits, Call, Reply, Target};
use crate::metrics::gossip::Stats;
use crate::metrics::KindLabel;
use crate::proto::peer::peer_service_client::PeerServiceClient;
use crate::proto::peer::Member;

/// Runs one exchange to the end. Returns the peer's own record when it answered.
pub async fn run_exchange(shared: &Shared, target: Target) -> Option<Member> {
    let (mut ex, first) = shared.mesh().open(target.clone());
    let mut queue = VecDeque::from([first]);
    let mut peer = None;
    let mut client = shared.pool.client(&target.addr);
    while let Some(call) = queue.pop_front() {
        let result = match &client {
            Ok(c) => call_once(shared, &target.addr, c.clone(), call).await,
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
                if status.code() == tonic::Code::DeadlineExceeded {
                    // The retry (and the next round) dial afresh.
                    shared.pool.forget(&target.addr);
                    client = shared.pool.client(&target.addr);
                }
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
    addr: &str,
    mut client: PeerServiceClient<Channel>,
    call: Call,
) -> Result<Reply, Status> {
    Stats::add(&shared.stats.calls_sent, 1);
    let started = std::time::Instant::now();
    let (kind, reply) = match call {
        Call::Peers(req) => {
            let req = request(shared, req);
            let r = answered(shared, client.exchange_peers(req)).await;
            let r = r.and_then(|r| {
                limits::exchange_response(&r)
                    .map(|()| r)
                    .map_err(Status::from)
            });
            ("peers", r.map(Reply::Peers))
        }
        Call::Providers(req) => {
            let req = request(shared, req);
            let r = answered(shared, client.exchange_providers(req)).await;
            let r = r.and_then(|r| {
                limits::provider_response(&r)
                    .map(|()| r)
                    .map_err(Status::from)
            });
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
    if reply.is_ok() {
        shared.stats.round_trip(addr, started.elapsed());
    }
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

/// How often, in rounds, the channel pool drops what it no longer needs.
const POOL_SWEEP_ROUNDS: u64 = 10;
/// Rounds a peer's channel may go unused before it is dropped: about the
/// peers met in that many rounds stay connected (fanout × 30, not every
/// member), and only those are pinged.
const POOL_IDLE_ROUNDS: u32 = 30;

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
                if round % POOL_SWEEP_ROUNDS == POOL_SWEEP_ROUNDS - 1 {
                    // One guard: the mesh mutex is not reentrant.
                    let keep: HashSet<String> = {
                        let mesh = shared.mesh();
                        mesh.view()
                            .iter()
                            .map(|e| e.info.addr.clone())
                            .chain(mesh.seeds().iter().cloned())
                            .collect()
                    };
                    shared.pool.retain(&keep, shared.config.gossip.interval * POOL_IDLE_ROUNDS);
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

/// Keeps the mesh's seeds: the configured names, resolved now and every
/// `seed_resolve_interval` (so a Kubernetes headless Service keeps pointing
/// at the current pods), plus the peers found over mDNS as they come and go.
pub async fn seed_loop(shared: Arc<Shared>, cancel: CancellationToken) {
    let seeds = shared.config.initial_peers.clone();
    let mdns = shared
        .config
        .discovery
        .mdns_enabled(&shared.config.initial_peers);
    if seeds.is_empty() && !mdns {
        return;
    }
    let every = shared.config.gossip.seed_resolve_interval;
    let mut resolved = Vec::new();
    let mut next_resolve = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_resolve {
            resolved = resolve(&seeds).await;
            next_resolve = tokio::time::Instant::now() + every;
        }
        let mut addrs = resolved.clone();
        addrs.extend(shared.discovered.addrs());
        addrs.sort();
        addrs.dedup();
        shared.mesh().set_seeds(addrs);
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(next_resolve) => {}
            () = shared.discovered.changed() => {}
        }
    }
}

/// Each seed's addresses; a name that does not resolve stays as written.
async fn resolve(seeds: &[String]) -> Vec<String> {
    let mut addrs = Vec::new();
    for seed in seeds {
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(found) => addrs.extend(found.map(|a| a.to_string())),
            Err(e) => {
                debug!(seed = %seed, error = %e, "seed did not resolve; will retry");
                addrs.push(seed.clone());
            }
        }
    }
    addrs
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
        calls
            .spawn(async move { call_once(&shared, &target.addr, client, Call::Peers(req)).await });
    }
    while calls.join_next().await.is_some() {}
}
