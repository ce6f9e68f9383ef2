//! Baseline: the `chitchat` 0.13 crate (Quickwit's scuttlebutt gossip with a phi-accrual failure
//! detector), run in one process so the gossip bench can print it beside our own protocol.
//!
//! Setup shared by both runs:
//! - every node is seeded with node 0's address only and sets one ~60-byte key
//!   `provider:<node_id>-p0`, standing for one provider record;
//! - fanout: chitchat 0.13 gossips each round to a *fixed* 3 random live peers (`GOSSIP_COUNT`
//!   in its `server.rs`, not configurable), plus occasionally one dead node and one seed;
//! - wire format `ProtocolVersion::V1` (compressed digest, the newest one);
//! - failure detector: phi threshold 8 (chitchat's default) with `initial_interval` equal to the
//!   gossip interval, so a peer is declared dead after ~8 mean heartbeat inter-arrival times
//!   without a newer heartbeat. `sampling_window_size` is 100 instead of the default 1000 because
//!   every node allocates one window per peer: 1000 nodes x 1000 peers x 1000 f64 would be 8 GB.
//!
//! Definitions used in [`ChitchatRun`]:
//! - converged: every node lists all n nodes in `live_nodes()` and holds every node's key;
//! - bytes: chitchat payload bytes handed to the socket (`SendOutcome::num_bytes_sent`, all of
//!   SYN, SYN-ACK and ACK), without UDP/IP headers, counted by a wrapper around the transport;
//! - dead: the killed node is in `dead_nodes()` of every surviving node, i.e. its phi exceeded the
//!   threshold (which also removes it from `live_nodes()`); chitchat has no "leave" message, so
//!   shutting the node down is a silent crash from the others' point of view.
//!
//! Each wait (convergence, detection) is bounded by `deadline`; a field is `None` when it passed.
#![allow(dead_code)] // The bench binary may use only some of these items.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chitchat::transport::{
    ChannelTransport, RecvOutcome, SendOutcome, Socket, Transport, UdpTransport,
};
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatEnvelope, ChitchatHandle, ChitchatId, ChitchatMessage,
    FailureDetectorConfig, ProtocolVersion,
};

/// Chitchat 0.13's gossip fanout (`GOSSIP_COUNT` in its `server.rs`); not configurable.
pub const CHITCHAT_FANOUT: usize = 3;

/// Largest UDP payload chitchat uses; also the MTU given to the in-memory transport.
const MAX_PAYLOAD: usize = 65_507;

#[derive(Debug, Clone)]
pub struct ChitchatRun {
    pub n: usize,
    /// Wall time from the first spawn to convergence divided by the gossip interval. Includes
    /// the failure detector's warm-up: a peer is live only after two heartbeats from it.
    pub rounds_to_converge: Option<f64>,
    pub secs_to_converge: Option<f64>,
    /// Steady state after convergence: bytes sent per node per nominal gossip interval.
    pub bytes_per_node_per_round: Option<f64>,
    /// Time until every surviving node has the killed node in `dead_nodes()`.
    pub detection_secs: Option<f64>,
    /// Gossip rounds each node actually ran until convergence, estimated as SYNs sent per node
    /// divided by the fanout. Below `rounds_to_converge` when the CPU cannot keep up with the
    /// interval; a little above it otherwise (round at t=0, extra SYNs to the seed).
    pub effective_rounds_to_converge: Option<f64>,
}

/// Start `n` chitchat nodes on real loopback UDP sockets and measure convergence, steady-state
/// traffic over `steady_rounds` gossip intervals and, if `measure_detection`, the time until the
/// last node (not the seed), stopped silently, is declared dead by every other node.
pub async fn run_chitchat_loopback(
    n: usize,
    gossip_interval: Duration,
    steady_rounds: u32,
    measure_detection: bool,
    deadline: Duration,
) -> anyhow::Result<ChitchatRun> {
    let addrs = reserve_loopback_addrs(n)?;
    let transport = CountingTransport::new(UdpTransport);
    run_cluster(
        &transport,
        &addrs,
        gossip_interval,
        steady_rounds,
        measure_detection,
        deadline,
    )
    .await
}

/// Same measurement over chitchat's in-memory `ChannelTransport`. No detection phase.
///
/// Caveats: messages are still serialized (and checked by a decode), and a node's inbox holds 100
/// messages, more are dropped. Each message costs O(n) CPU (full digest, zstd), so large n is
/// CPU-bound: on 2 cores 300 nodes converge at a 1 s interval, but 1000 nodes did not within
/// 500 s even at 10 s, the single seed dropping most join SYNs (and RSS grew past 9 GB).
pub async fn run_chitchat_in_memory(
    n: usize,
    gossip_interval: Duration,
    steady_rounds: u32,
    deadline: Duration,
) -> anyhow::Result<ChitchatRun> {
    anyhow::ensure!(n < 40_000, "logical ports 20000+i must fit in u16");
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16)))
        .collect();
    let transport = CountingTransport::new(ChannelTransport::with_mtu(MAX_PAYLOAD));
    run_cluster(
        &transport,
        &addrs,
        gossip_interval,
        steady_rounds,
        false,
        deadline,
    )
    .await
}

/// Chitchat advertises the address it is configured with, so it needs concrete ports up front:
/// bind n sockets on port 0 together (distinct ports), note the ports, release them.
fn reserve_loopback_addrs(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let sockets = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<Vec<_>, _>>()?)
}

fn node_config(i: usize, addr: SocketAddr, seed: SocketAddr, interval: Duration) -> ChitchatConfig {
    ChitchatConfig {
        chitchat_id: ChitchatId::new(format!("node-{i}"), 0, addr),
        cluster_id: "iarnet-baseline".to_string(),
        gossip_interval: interval,
        listen_addr: addr,
        seed_nodes: vec![seed.to_string()],
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: 8.0,
            sampling_window_size: 100,
            max_interval: (interval * 10).max(Duration::from_secs(10)),
            initial_interval: interval,
            // Keep dead nodes listed (not garbage-collected) for the whole measurement.
            dead_node_grace_period: Duration::from_secs(3600),
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: ProtocolVersion::V1,
    }
}

fn provider_key(node_id: &str) -> String {
    format!("provider:{node_id}-p0")
}

async fn run_cluster(
    transport: &CountingTransport<impl Transport>,
    addrs: &[SocketAddr],
    interval: Duration,
    steady_rounds: u32,
    measure_detection: bool,
    deadline: Duration,
) -> anyhow::Result<ChitchatRun> {
    let n = addrs.len();
    anyhow::ensure!(n >= 2, "need at least two nodes");
    let fanout = CHITCHAT_FANOUT.min(n - 1) as f64;
    let poll = (interval / 4).max(Duration::from_millis(10));
    let counters = transport.counters.clone();
    let mut run = ChitchatRun {
        n,
        rounds_to_converge: None,
        secs_to_converge: None,
        bytes_per_node_per_round: None,
        detection_secs: None,
        effective_rounds_to_converge: None,
    };

    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for (i, &addr) in addrs.iter().enumerate() {
        let config = node_config(i, addr, addrs[0], interval);
        let key = provider_key(&config.chitchat_id.node_id);
        // ~60-byte value standing for one provider record.
        let value = format!("{:-<60}", format!("endpoint={addr};cpu=8;mem=32Gi;gpu=0;"));
        handles.push(spawn_chitchat(config, vec![(key, value)], transport).await?);
    }
    let ids: Vec<ChitchatId> = handles.iter().map(|h| h.chitchat_id().clone()).collect();
    let keys: Vec<String> = ids.iter().map(|id| provider_key(&id.node_id)).collect();

    if !poll_until(start + deadline, poll, || converged(&handles, &ids, &keys)).await {
        return Ok(run);
    }
    let secs = start.elapsed().as_secs_f64();
    run.secs_to_converge = Some(secs);
    run.rounds_to_converge = Some(secs / interval.as_secs_f64());
    let syns_per_node = counters.syns.load(Ordering::Relaxed) as f64 / n as f64;
    run.effective_rounds_to_converge = Some(syns_per_node / fanout);

    let bytes_before = counters.bytes.load(Ordering::Relaxed);
    tokio::time::sleep(interval * steady_rounds).await;
    let bytes = counters.bytes.load(Ordering::Relaxed) - bytes_before;
    run.bytes_per_node_per_round = Some(bytes as f64 / n as f64 / f64::from(steady_rounds.max(1)));

    if measure_detection {
        let victim = handles.pop().expect("n >= 2, so there is a node to kill");
        let victim_id = victim.chitchat_id().clone();
        // No goodbye exists in chitchat: stopping the server just stops its gossip.
        victim.shutdown().await?;
        let killed_at = Instant::now();
        let all_see_dead = || async {
            for handle in &handles {
                let dead = handle.with_chitchat(|c| c.dead_nodes().any(|id| *id == victim_id));
                if !dead.await {
                    return false;
                }
            }
            true
        };
        if poll_until(killed_at + deadline, poll, all_see_dead).await {
            run.detection_secs = Some(killed_at.elapsed().as_secs_f64());
        }
    }
    for handle in handles {
        // A node whose server already stopped is not an error for the measurement.
        let _ = handle.shutdown().await;
    }
    Ok(run)
}

/// Polls `check` every `period` until it returns true (-> true) or `until` passes (-> false).
/// A check still running at `until` is abandoned: under load one pass can take long.
async fn poll_until<F, Fut>(until: Instant, period: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::from_std(until);
    loop {
        if matches!(tokio::time::timeout_at(until, check()).await, Ok(true)) {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(period).await;
    }
}

/// Every node sees all nodes live (self included) and holds every node's provider key.
async fn converged(handles: &[ChitchatHandle], ids: &[ChitchatId], keys: &[String]) -> bool {
    for handle in handles {
        let ok = handle
            .with_chitchat(|c| {
                c.live_nodes().count() == ids.len()
                    && ids
                        .iter()
                        .zip(keys)
                        .all(|(id, key)| c.node_state(id).is_some_and(|s| s.contains_key(key)))
            })
            .await;
        if !ok {
            return false;
        }
    }
    true
}

/// Totals over every socket opened through one [`CountingTransport`].
#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    syns: AtomicU64,
}

/// Wraps a chitchat transport and counts what its sockets send.
struct CountingTransport<T> {
    inner: T,
    counters: Arc<Counters>,
}

impl<T> CountingTransport<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            counters: Arc::default(),
        }
    }
}

struct CountingSocket {
    inner: Box<dyn Socket>,
    counters: Arc<Counters>,
}

/// What `#[async_trait]` expands an `async fn` to; written by hand because `async-trait` is not
/// one of our dependencies.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'a>>;

impl<T: Transport> Transport for CountingTransport<T> {
    fn open<'life0, 'async_trait>(
        &'life0 self,
        listen_addr: SocketAddr,
    ) -> BoxFuture<'async_trait, Box<dyn Socket>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let inner = self.inner.open(listen_addr).await?;
            let socket = CountingSocket {
                inner,
                counters: self.counters.clone(),
            };
            Ok(Box::new(socket) as Box<dyn Socket>)
        })
    }
}

impl Socket for CountingSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn send<'life0, 'async_trait>(
        &'life0 mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> BoxFuture<'async_trait, SendOutcome>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        // Each gossip round starts with one SYN per selected peer: this gives the round count.
        let is_syn = matches!(envelope.message, ChitchatMessage::Syn { .. });
        Box::pin(async move {
            let outcome = self.inner.send(to, envelope).await?;
            let bytes = outcome.num_bytes_sent as u64;
            self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
            if is_syn {
                self.counters.syns.fetch_add(1, Ordering::Relaxed);
            }
            Ok(outcome)
        })
    }

    fn recv<'life0, 'async_trait>(&'life0 mut self) -> BoxFuture<'async_trait, RecvOutcome>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.recv()
    }
}
