//! Queue benchmark: how fast queued work starts when capacity appears, and
//! what the queue costs.
//!
//! 1. Unblock latency: real nodes on loopback (an owner with one CPU, five
//!    homes), 1, 100 and 10,000 one-CPU deploys queued across the homes;
//!    the running one is stopped and the time until the next is admitted
//!    on the owner is measured, in ms and gossip rounds. Baseline: the time
//!    the same capacity change takes to reach the first home's view with
//!    empty queues (gossip alone).
//! 2. Throughput: 10,000 deploys queued across five homes that know no
//!    provider; a node with room for all of them joins. Baseline: the same
//!    deploys placed directly (not queued) on that node, 32 in flight.
//! 3. One durable queue insert against a durable deploy acknowledgement
//!    (redb, fsync per commit), and memory per 10,000 queued entries.
//!
//! `cargo bench --bench queue`            full run (a few minutes)
//! `cargo bench --bench queue -- --quick` smaller sizes
//!
//! Figures are printed with the ratio against the baseline measured in the
//! same run; nothing is asserted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iarnet::config::Config;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::placement::manager::PlaceOptions;
use iarnet::placement::{Candidate, Discovery, Manager, ProviderCaller, Strategy};
use iarnet::proto::peer::ProviderInfo;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::validate::deployment_id;
use iarnet::resource::{
    DeploySpec, Deployment, LogOptions, LogStream, ProgressSink, Provider, ProviderDescriptor,
    ResourceError, Resources, Tier,
};
use iarnet::store::{RedbStore, Store};
use peak_alloc::PeakAlloc;

#[global_allocator]
static PEAK: PeakAlloc = PeakAlloc;

const HOMES: usize = 5;

fn res(cpu_millis: u64) -> Resources {
    Resources {
        cpu_millis,
        memory_bytes: 4 << 20,
        gpus: 0,
        storage_bytes: 0,
    }
}

fn spec(request_id: &str, cpu_millis: u64) -> DeploySpec {
    DeploySpec {
        request_id: request_id.into(),
        image: "iarnet-test/busybox:1".into(),
        resources: res(cpu_millis),
        ..Default::default()
    }
}

fn waits() -> PlaceOptions {
    PlaceOptions {
        queue_timeout: Duration::from_secs(3600),
        ..Default::default()
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The memory twin, noting when each deploy was admitted.
struct Watched {
    inner: MemoryProvider,
    admitted: Mutex<Vec<(String, Instant)>>,
}

impl Watched {
    fn new(id: &str, total: Resources) -> Arc<Watched> {
        Arc::new(Watched {
            inner: MemoryProvider::new(id, total, BTreeMap::new()),
            admitted: Mutex::default(),
        })
    }

    fn count(&self) -> usize {
        self.admitted.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Provider for Watched {
    fn id(&self) -> &str {
        self.inner.id()
    }
    async fn describe(&self) -> Result<ProviderDescriptor, ResourceError> {
        self.inner.describe().await
    }
    async fn deploy(&self, s: &DeploySpec, p: ProgressSink) -> Result<Deployment, ResourceError> {
        let d = self.inner.deploy(s, p).await?;
        self.admitted
            .lock()
            .unwrap()
            .push((s.request_id.clone(), Instant::now()));
        Ok(d)
    }
    async fn status(&self, id: &str) -> Result<Deployment, ResourceError> {
        self.inner.status(id).await
    }
    async fn list(&self) -> Result<Vec<Deployment>, ResourceError> {
        self.inner.list().await
    }
    async fn logs(&self, id: &str, o: LogOptions) -> Result<LogStream, ResourceError> {
        self.inner.logs(id, o).await
    }
    async fn stop(&self, id: &str) -> Result<Deployment, ResourceError> {
        self.inner.stop(id).await
    }
}

async fn start(id: &str, seeds: &[String], providers: Vec<Arc<dyn Provider>>) -> NodeHandle {
    let mut cfg = Config::loopback(id);
    cfg.initial_peers = seeds.to_vec();
    node::start_with(cfg, ProviderSetup::Given(providers))
        .await
        .expect("node starts")
}

/// Polls until `cond` holds; panics after a minute.
async fn until(what: &str, mut cond: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Instant::now()
}

fn free_cpu(node: &NodeHandle, provider: &str) -> Option<u64> {
    node.manager()
        .candidates()
        .into_iter()
        .find(|c| c.id == provider)
        .map(|c| c.capacity.available().cpu_millis)
}

// ----- 1. unblock latency ----------------------------------------------------

struct Mesh {
    owner: NodeHandle,
    homes: Vec<NodeHandle>,
    provider: Arc<Watched>,
}

async fn one_cpu_mesh(tag: &str) -> Mesh {
    let provider = Watched::new(&format!("{tag}-p"), res(1000));
    let owner = start(
        &format!("{tag}-owner"),
        &[],
        vec![provider.clone() as Arc<dyn Provider>],
    )
    .await;
    let seeds = vec![owner.advertise_addr()];
    let mut homes = Vec::new();
    for h in 0..HOMES {
        homes.push(start(&format!("{tag}-home{h}"), &seeds, Vec::new()).await);
    }
    let pid = provider.id().to_string();
    until("every home to see the provider", || {
        homes.iter().all(|h| free_cpu(h, &pid) == Some(1000))
    })
    .await;
    Mesh {
        owner,
        homes,
        provider,
    }
}

impl Mesh {
    async fn shutdown(self) {
        for h in self.homes {
            h.shutdown().await;
        }
        self.owner.shutdown().await;
    }
}

/// Gossip alone: a freed CPU reaching the first home's view, empty queues.
async fn propagation(samples: usize) -> Vec<Duration> {
    let mesh = one_cpu_mesh("prop").await;
    let pid = mesh.provider.id().to_string();
    let mut out = Vec::new();
    for i in 0..samples {
        let req = format!("prop-fill-{i}");
        mesh.owner
            .manager()
            .deploy(
                spec(&req, 1000),
                PlaceOptions::default(),
                ProgressSink::none(),
            )
            .await
            .expect("fill");
        until("every home to see it full", || {
            mesh.homes.iter().all(|h| free_cpu(h, &pid) == Some(0))
        })
        .await;
        let t0 = Instant::now();
        mesh.owner
            .manager()
            .stop(&deployment_id(&req))
            .await
            .expect("stop");
        let seen = until("a home to see the freed CPU", || {
            mesh.homes.iter().any(|h| free_cpu(h, &pid) == Some(1000))
        })
        .await;
        out.push(seen - t0);
        until("every home to see it free", || {
            mesh.homes.iter().all(|h| free_cpu(h, &pid) == Some(1000))
        })
        .await;
    }
    mesh.shutdown().await;
    out.sort();
    out
}

async fn unblock(queued: usize, samples: usize) -> Vec<Duration> {
    let mesh = one_cpu_mesh(&format!("ub{queued}")).await;
    let pid = mesh.provider.id().to_string();
    mesh.owner
        .manager()
        .deploy(
            spec("filler", 1000),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .expect("fill");
    until("every home to see it full", || {
        mesh.homes.iter().all(|h| free_cpu(h, &pid) == Some(0))
    })
    .await;
    for i in 0..queued {
        let home = &mesh.homes[i % HOMES];
        home.manager()
            .deploy(
                spec(&format!("ub-{i:05}"), 1000),
                waits(),
                ProgressSink::none(),
            )
            .await
            .expect("queued");
    }
    let mut out = Vec::new();
    // Stop what runs (the filler first), time the next admission.
    let mut running: Option<(usize, String)> = None;
    for _ in 0..samples.min(queued) {
        let before = mesh.provider.count();
        let t0 = Instant::now();
        match &running {
            None => mesh.owner.manager().stop(&deployment_id("filler")).await,
            Some((h, req)) => mesh.homes[*h].manager().stop(&deployment_id(req)).await,
        }
        .expect("stop");
        until("the next queued deploy to be admitted", || {
            mesh.provider.count() > before
        })
        .await;
        let (req, at) = mesh.provider.admitted.lock().unwrap()[before].clone();
        out.push(at - t0);
        let i: usize = req.trim_start_matches("ub-").parse().expect("ub-N");
        running = Some((i % HOMES, req));
        // The next sample starts once every home has seen the owner full.
        until("every home to see it full again", || {
            mesh.homes.iter().all(|h| free_cpu(h, &pid) == Some(0))
        })
        .await;
    }
    mesh.shutdown().await;
    out.sort();
    out
}

// ----- 2. throughput ---------------------------------------------------------

/// (seconds from the big node's start to the last admission, admitted).
async fn drain(n: usize, queued: bool) -> (Duration, usize) {
    let tag = if queued { "drain" } else { "direct" };
    let first = start(&format!("{tag}-home0"), &[], Vec::new()).await;
    let seeds = vec![first.advertise_addr()];
    let mut homes = vec![first];
    for h in 1..HOMES {
        homes.push(start(&format!("{tag}-home{h}"), &seeds, Vec::new()).await);
    }
    let big = Watched::new(
        &format!("{tag}-big"),
        Resources {
            memory_bytes: u64::MAX / 4,
            ..res(n as u64 * 100 + 1000)
        },
    );
    let t0;
    if queued {
        for i in 0..n {
            homes[i % HOMES]
                .manager()
                .deploy(
                    spec(&format!("{tag}-{i:05}"), 100),
                    waits(),
                    ProgressSink::none(),
                )
                .await
                .expect("queued");
        }
        t0 = Instant::now();
        let owner = start(
            &format!("{tag}-owner"),
            &seeds,
            vec![big.clone() as Arc<dyn Provider>],
        )
        .await;
        until("every queued deploy to be admitted", || big.count() >= n).await;
        let took = big.admitted.lock().unwrap()[n - 1].1 - t0;
        owner.shutdown().await;
        for h in homes {
            h.shutdown().await;
        }
        return (took, big.count());
    }
    let owner = start(
        &format!("{tag}-owner"),
        &seeds,
        vec![big.clone() as Arc<dyn Provider>],
    )
    .await;
    let pid = big.id().to_string();
    until("every home to see the big provider", || {
        homes.iter().all(|h| free_cpu(h, &pid).is_some())
    })
    .await;
    t0 = Instant::now();
    let homes = Arc::new(homes);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (homes, next) = (homes.clone(), next.clone());
        let tag = tag.to_string();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                homes[i % HOMES]
                    .manager()
                    .deploy(
                        spec(&format!("{tag}-{i:05}"), 100),
                        PlaceOptions::default(),
                        ProgressSink::none(),
                    )
                    .await
                    .expect("placed");
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let took = t0.elapsed();
    owner.shutdown().await;
    if let Ok(homes) = Arc::try_unwrap(homes) {
        for h in homes {
            h.shutdown().await;
        }
    }
    (took, big.count())
}

// ----- 3. insert cost and memory ---------------------------------------------

struct NoMesh;

impl Discovery for NoMesh {
    fn discovered(&self) -> Vec<Candidate> {
        Vec::new()
    }
    fn publish(&self, _: Vec<ProviderInfo>) {}
    fn caller(&self) -> Arc<dyn ProviderCaller> {
        unreachable!("no remote providers in this benchmark")
    }
    fn version(&self) -> u64 {
        0
    }
}

/// A manager on redb in `dir` with one provider of `cpu_millis`.
async fn durable(dir: &std::path::Path, cpu_millis: u64) -> Manager {
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_dir(dir).expect("redb"));
    let m = Manager::open("bench", Arc::new(NoMesh), Strategy::Spread, false, 7, store)
        .expect("manager");
    let total = Resources {
        memory_bytes: u64::MAX / 4,
        ..res(cpu_millis)
    };
    m.add_provider(
        Arc::new(MemoryProvider::new("bench/memory", total, BTreeMap::new())),
        Tier::Internal,
    )
    .await
    .expect("provider");
    m
}

async fn acks(m: &Manager, tag: &str, n: usize, opts: &PlaceOptions) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        m.deploy(
            spec(&format!("{tag}-{i:06}"), 10),
            opts.clone(),
            ProgressSink::none(),
        )
        .await
        .expect("deploy");
        out.push(t.elapsed());
    }
    out
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let interval = Config::loopback("x").gossip.interval;
    let samples = if quick { 3 } else { 7 };
    let sizes: &[usize] = if quick {
        &[1, 100, 1000]
    } else {
        &[1, 100, 10_000]
    };
    let drain_n = if quick { 1000 } else { 10_000 };

    println!("# iarnet queue benchmark ({HOMES} homes, gossip interval {interval:?} on loopback)");
    println!(
        "## 1. unblock latency: capacity freed on the owner -> next queued deploy admitted there"
    );
    let base = propagation(samples).await;
    println!("| queued | p50 | p99 | rounds (p50 / p99) | vs gossip alone (p50) |");
    println!("|---|---|---|---|---|");
    let rounds = |d: Duration| d.as_secs_f64() / interval.as_secs_f64();
    println!(
        "| baseline: the change reaching the first home, empty queues | {:.1} ms | {:.1} ms | {:.2} / {:.2} | 1.00x |",
        ms(pct(&base, 0.5)),
        ms(pct(&base, 0.99)),
        rounds(pct(&base, 0.5)),
        rounds(pct(&base, 0.99))
    );
    for &n in sizes {
        let v = unblock(n, samples).await;
        println!(
            "| {n} | {:.1} ms | {:.1} ms | {:.2} / {:.2} | {:.2}x |",
            ms(pct(&v, 0.5)),
            ms(pct(&v, 0.99)),
            rounds(pct(&v, 0.5)),
            rounds(pct(&v, 0.99)),
            pct(&v, 0.5).as_secs_f64() / pct(&base, 0.5).as_secs_f64()
        );
    }

    println!("## 2. throughput: {drain_n} deploys of 100m across {HOMES} homes, then a node with room for all joins");
    let (direct, placed) = drain(drain_n, false).await;
    let (queued, drained) = drain(drain_n, true).await;
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    println!("| path | admitted | seconds | per second |");
    println!("|---|---|---|---|");
    println!(
        "| baseline: placed directly, 32 in flight | {placed} | {:.2} | {:.0} |",
        direct.as_secs_f64(),
        rate(placed, direct)
    );
    println!(
        "| queued, from the node's start | {drained} | {:.2} | {:.0} |",
        queued.as_secs_f64(),
        rate(drained, queued)
    );
    println!(
        "ratio queued / direct: {:.2}x per second",
        rate(drained, queued) / rate(placed, direct)
    );

    println!("## 3. cost of a durable queue insert, and memory");
    let n = if quick { 200 } else { 1000 };
    let dir_q = tempfile::tempdir().expect("tempdir");
    let dir_p = tempfile::tempdir().expect("tempdir");
    // Full after its first deploy: every later one to `full` is queued
    // (not now, rather than never: it would fit an empty provider).
    let full = durable(dir_q.path(), 10).await;
    let room = durable(dir_p.path(), u64::MAX / 4).await;
    acks(&full, "warm", 1, &waits()).await;
    acks(&room, "warm", 20, &PlaceOptions::default()).await;
    let (mut ins, mut ack) = (Vec::new(), Vec::new());
    for round in 0..4 {
        ins.extend(acks(&full, &format!("q{round}"), n / 4, &waits()).await);
        ack.extend(acks(&room, &format!("p{round}"), n / 4, &PlaceOptions::default()).await);
    }
    ins.sort();
    ack.sort();
    println!("| operation (redb, fsync per commit) | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| baseline: deploy acknowledged (2 commits) | {:.2} ms | {:.2} ms |",
        ms(pct(&ack, 0.5)),
        ms(pct(&ack, 0.99))
    );
    println!(
        "| queue insert acknowledged (1 commit) | {:.2} ms | {:.2} ms |",
        ms(pct(&ins, 0.5)),
        ms(pct(&ins, 0.99))
    );
    println!(
        "ratio insert / deploy ack: p50 {:.2}x, p99 {:.2}x",
        ms(pct(&ins, 0.5)) / ms(pct(&ack, 0.5)),
        ms(pct(&ins, 0.99)) / ms(pct(&ack, 0.99))
    );
    drop(full);
    drop(room);

    let dir = tempfile::tempdir().expect("tempdir");
    let m = durable(dir.path(), 10).await;
    acks(&m, "warm", 1, &waits()).await;
    let entries = 10_000;
    let before = PEAK.current_usage();
    let file_before = std::fs::metadata(dir.path().join("iarnet.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    for i in 0..entries {
        m.deploy(
            spec(&format!("mem-{i:06}"), 10),
            waits(),
            ProgressSink::none(),
        )
        .await
        .expect("queued");
    }
    let held = PEAK.current_usage().saturating_sub(before);
    let file_after = std::fs::read_dir(dir.path())
        .expect("data dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum::<u64>();
    println!(
        "memory per {entries} queued entries (record cache + queue): {:.1} MiB heap ({:.0} B each); store files {:.1} MiB (from {:.1} MiB)",
        held as f64 / (1 << 20) as f64,
        held as f64 / entries as f64,
        file_after as f64 / (1 << 20) as f64,
        file_before as f64 / (1 << 20) as f64
    );
    let _ = m.queue().len();
}
