//! Placement benchmark: decision speed, placement among remote providers
//! against the original's capacity-RPC-per-provider algorithm, and the
//! overhead of a CallProvider proxy against a bare tonic unary call.
//!
//! `cargo bench --bench placement`            full run (about a minute)
//! `cargo bench --bench placement -- --index` only decisions and view changes
//! `cargo bench --bench placement -- --quick` fewer iterations
//!
//! Figures are printed with ratios against baselines measured in the same
//! run; nothing is asserted (these machines are shared and noisy).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iarnet::config::Config;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::placement::manager::PlaceOptions;
use iarnet::placement::{Candidate, Index, Need, Strategy};
use iarnet::proto::peer::peer_service_client::PeerServiceClient;
use iarnet::proto::peer::ProviderCallRequest;
use iarnet::proto::resource as pb;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::{
    Capacity, DeploySpec, ProgressSink, Provider, ProviderKind, Resources, Tier,
};
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn res(cpu: u64, mem_mi: u64) -> Resources {
    Resources {
        cpu_millis: cpu,
        memory_bytes: mem_mi << 20,
        gpus: 0,
        storage_bytes: 0,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

// ----- 1. decisions ---------------------------------------------------------

fn view(n: usize, rng: &mut SmallRng) -> Vec<Candidate> {
    let regions = ["eu-west", "us-east", "ap-south", "eu-north"];
    (0..n)
        .map(|i| {
            let total = res(
                rng.random_range(4..128) * 1000,
                rng.random_range(8..512) * 1024,
            );
            let used = rng.random_range(0..=100) as f64 / 100.0;
            Candidate {
                id: format!("p{i}"),
                name: format!("p{i}"),
                kind: ProviderKind::Docker,
                tier: match i % 10 {
                    0 => Tier::Internal,
                    1 | 2 => Tier::External,
                    _ => Tier::Discovered,
                },
                owner_id: format!("n{}", i / 4),
                owner_addr: format!("10.0.{}.{}:50051", i / 250, i % 250),
                healthy: i % 50 != 7,
                capacity: Capacity {
                    total,
                    reserved: res(
                        (total.cpu_millis as f64 * used) as u64,
                        ((total.memory_bytes >> 20) as f64 * used) as u64,
                    ),
                    ..Capacity::default()
                },
                labels: [("region".to_string(), regions[i % 4].to_string())].into(),
                version: 0,
                gpus: Vec::new(),
            }
        })
        .collect()
}

fn decisions(n: usize, iters: usize) {
    let mut rng = SmallRng::seed_from_u64(n as u64);
    let t = Instant::now();
    let index = Index::build(view(n, &mut rng));
    let build = t.elapsed();
    println!("\n## decisions over {n} providers (index built in {build:.2?}, one core)");
    println!("| strategy | decisions/s | p50 | p99 | linear scan decisions/s | speed-up |");
    println!("|---|---|---|---|---|---|");
    let skip = HashSet::new();
    let needs: Vec<Resources> = (0..1024)
        .map(|_| res(rng.random_range(1..16) * 250, rng.random_range(1..32) * 128))
        .collect();
    for s in [
        Strategy::Spread,
        Strategy::BinPack,
        Strategy::RoundRobin,
        Strategy::Weighted,
        Strategy::Random,
        Strategy::Geographic,
    ] {
        let mut lat = Vec::with_capacity(iters);
        let mut found = 0usize;
        let start = Instant::now();
        for i in 0..iters {
            let need = Need {
                resources: needs[i % needs.len()],
                region: Some("eu-west"),
                ..Need::default()
            };
            let t = Instant::now();
            found += index.rank(&need, s, 3, &skip, &mut rng).len();
            lat.push(t.elapsed());
        }
        let rate = iters as f64 / start.elapsed().as_secs_f64();
        lat.sort();
        // Baseline: score every provider and keep the best three.
        let base_iters = (iters / 20).max(100);
        let start = Instant::now();
        for i in 0..base_iters {
            let need = Need {
                resources: needs[i % needs.len()],
                ..Need::default()
            };
            let mut best: Vec<(u64, usize)> = index
                .candidates()
                .iter()
                .enumerate()
                .filter(|(_, c)| need.feasible(c))
                .map(|(j, c)| (c.capacity.available().cpu_millis, j))
                .collect();
            best.sort_unstable_by(|a, b| b.cmp(a));
            found += best.len().min(3);
        }
        let base_rate = base_iters as f64 / start.elapsed().as_secs_f64();
        println!(
            "| {s} | {rate:.0} | {:.2?} | {:.2?} | {base_rate:.0} | {:.0}x |",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            rate / base_rate
        );
        std::hint::black_box(found);
    }
}

/// The manager's own path: the cached index (rebuilt only when the view
/// changes) and a ranking, as every deploy does before its admission call.
fn manager_decisions(n: usize, iters: usize) {
    struct Fixed(Vec<Candidate>);
    impl iarnet::placement::Discovery for Fixed {
        fn discovered(&self) -> Vec<Candidate> {
            self.0.clone()
        }
        fn publish(&self, _: Vec<iarnet::proto::peer::ProviderInfo>) {}
        fn caller(&self) -> Arc<dyn iarnet::placement::ProviderCaller> {
            unreachable!()
        }
        fn version(&self) -> u64 {
            1
        }
    }
    let mut rng = SmallRng::seed_from_u64(9);
    let mut cands = view(n, &mut rng);
    for c in &mut cands {
        c.tier = Tier::Discovered;
    }
    let m =
        iarnet::placement::Manager::new("bench", Arc::new(Fixed(cands)), Strategy::Spread, true, 1);
    let t = Instant::now();
    m.index();
    let first = t.elapsed();
    let skip = HashSet::new();
    let start = Instant::now();
    let mut found = 0;
    for i in 0..iters {
        let need = Need {
            resources: res(250 * (1 + i as u64 % 16), 128),
            ..Need::default()
        };
        found += m
            .index()
            .rank(&need, Strategy::Spread, 3, &skip, &mut rng)
            .len();
    }
    let rate = iters as f64 / start.elapsed().as_secs_f64();
    std::hint::black_box(found);
    println!("manager path at {n} providers (cached index + rank): {rate:.0} decisions/s on one core; the first build of the index took {first:.2?}");
}

/// A mesh of `n` discovered providers, four per owner, that says whose
/// changed when `keeps_feed` (a node's view does); without it every change
/// rebuilds the index, as before the feed.
struct ChangingMesh {
    owners: std::sync::Mutex<BTreeMap<String, Vec<Candidate>>>,
    log: std::sync::Mutex<Vec<String>>,
    keeps_feed: bool,
    whole_reads: std::sync::atomic::AtomicUsize,
}

impl iarnet::placement::Discovery for ChangingMesh {
    fn discovered(&self) -> Vec<Candidate> {
        self.whole_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let owners = self.owners.lock().unwrap();
        owners.values().flatten().cloned().collect()
    }
    fn publish(&self, _: Vec<iarnet::proto::peer::ProviderInfo>) {}
    fn caller(&self) -> Arc<dyn iarnet::placement::ProviderCaller> {
        unreachable!()
    }
    fn version(&self) -> u64 {
        self.log.lock().unwrap().len() as u64
    }
    fn feed_position(&self) -> Option<u64> {
        self.keeps_feed.then(|| self.version())
    }
    fn changed_owners(&self, after: u64) -> Option<(u64, Vec<String>)> {
        let log = self.log.lock().unwrap();
        self.keeps_feed
            .then(|| (log.len() as u64, log[after as usize..].to_vec()))
    }
    fn discovered_from(&self, owner: &str) -> Vec<Candidate> {
        let owners = self.owners.lock().unwrap();
        owners.get(owner).cloned().unwrap_or_default()
    }
}

/// What one changed provider costs the next decision: the index kept up to
/// date from the mesh's feed against the rebuild of the whole index, in
/// alternation in the same run, then decisions on the updated index.
fn view_change(n: usize, iters: usize) {
    let mut rng = SmallRng::seed_from_u64(11);
    let mut cands = view(n, &mut rng);
    for c in &mut cands {
        c.tier = Tier::Discovered;
    }
    let mut owners: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for c in cands {
        owners.entry(c.owner_id.clone()).or_default().push(c);
    }
    let ids: Vec<String> = owners.keys().cloned().collect();
    let managers: Vec<(Arc<ChangingMesh>, iarnet::placement::Manager)> = [false, true]
        .into_iter()
        .map(|keeps_feed| {
            let mesh = Arc::new(ChangingMesh {
                owners: std::sync::Mutex::new(owners.clone()),
                log: std::sync::Mutex::default(),
                keeps_feed,
                whole_reads: Default::default(),
            });
            let m =
                iarnet::placement::Manager::new("bench", mesh.clone(), Strategy::Spread, true, 1);
            m.index();
            (mesh, m)
        })
        .collect();
    // The same changes for both, in blocks (each manager's garbage would
    // otherwise be freed on the other's time): feed, rebuild, feed, rebuild.
    let changes: Vec<(String, u64)> = (0..iters)
        .map(|_| {
            let owner = ids[rng.random_range(0..ids.len())].clone();
            (owner, rng.random_range(0..4) * 1000)
        })
        .collect();
    let mut lat: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for half in [0..iters / 2, iters / 2..iters] {
        for which in [1, 0] {
            let (mesh, m) = &managers[which];
            for i in half.clone() {
                // One provider of one owner reserves or frees some CPU.
                let (owner, cpu) = &changes[i];
                let mut held = mesh.owners.lock().unwrap();
                let set = held.get_mut(owner).unwrap();
                let at = i % set.len();
                let c = &mut set[at];
                c.capacity.reserved.cpu_millis = (*cpu).min(c.capacity.total.cpu_millis);
                c.version += 1;
                drop(held);
                mesh.log.lock().unwrap().push(owner.clone());
                let t = Instant::now();
                std::hint::black_box(m.index().len());
                lat[which].push(t.elapsed());
            }
        }
    }
    let [mut rebuild, mut update] = lat;
    rebuild.sort();
    update.sort();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    println!("\n## a view change with one changed provider, {n} providers ({iters} changes each, one core)");
    println!("| index | mean | p50 | p99 |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("rebuilt (before)", &rebuild),
        ("updated from the feed", &update),
    ] {
        println!(
            "| {name} | {:.2?} | {:.2?} | {:.2?} |",
            mean(v),
            percentile(v, 0.5),
            percentile(v, 0.99)
        );
    }
    println!(
        "whole-mesh reads: {} rebuilding, {} with the feed",
        managers[0]
            .0
            .whole_reads
            .load(std::sync::atomic::Ordering::Relaxed),
        managers[1]
            .0
            .whole_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "speed-up (mean): {:.0}x",
        mean(&rebuild).as_secs_f64() / mean(&update).as_secs_f64()
    );
    // Decisions on the index after all those updates.
    let m = &managers[1].1;
    let skip = HashSet::new();
    let runs = iters * 50;
    let start = Instant::now();
    let mut found = 0;
    for i in 0..runs {
        let need = Need {
            resources: res(250 * (1 + i as u64 % 16), 128),
            ..Need::default()
        };
        found += m
            .index()
            .rank(&need, Strategy::Spread, 3, &skip, &mut rng)
            .len();
    }
    std::hint::black_box(found);
    println!(
        "decisions on the updated index: {:.0}/s on one core",
        runs as f64 / start.elapsed().as_secs_f64()
    );
}

// ----- 2. placement among 50 remote providers --------------------------------

async fn start(id: &str, seeds: &[String], providers: Vec<Arc<dyn Provider>>) -> NodeHandle {
    let mut cfg = Config::loopback(id);
    cfg.initial_peers = seeds.to_vec();
    start_cfg(cfg, providers).await
}

async fn start_cfg(cfg: Config, providers: Vec<Arc<dyn Provider>>) -> NodeHandle {
    node::start_with(cfg, ProviderSetup::Given(providers))
        .await
        .expect("node starts")
}

fn spec(id: String) -> DeploySpec {
    DeploySpec {
        request_id: id,
        image: "busybox".into(),
        resources: res(10, 16),
        ..Default::default()
    }
}

async fn remote_placement(iters: usize) {
    // 5 owner nodes with 10 providers each; the requester owns none.
    let seed = start("owner0", &[], Vec::new()).await;
    let seeds = vec![seed.advertise_addr()];
    let mut owners = vec![seed];
    for o in 1..5 {
        owners.push(start(&format!("owner{o}"), &seeds, Vec::new()).await);
    }
    for (o, node) in owners.iter().enumerate() {
        for p in 0..10 {
            let mp = MemoryProvider::new(
                &format!("o{o}-p{p}"),
                res(1_000_000, 1 << 30),
                BTreeMap::new(),
            );
            node.manager()
                .add_provider(Arc::new(mp), Tier::Internal)
                .await
                .unwrap();
        }
    }
    let requester = start("requester", &seeds, Vec::new()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while requester.manager().candidates().len() < 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cands = requester.manager().candidates();
    println!(
        "\n## placement among {} remote providers (real loopback gRPC)",
        cands.len()
    );

    let mut ours = Vec::new();
    for i in 0..iters {
        let t = Instant::now();
        requester
            .manager()
            .deploy(
                spec(format!("ours-{i}")),
                PlaceOptions::default(),
                ProgressSink::none(),
            )
            .await
            .unwrap();
        ours.push(t.elapsed());
    }

    // The original: ask every provider for its capacity, in turn, then deploy.
    let mut clients = BTreeMap::new();
    for c in &cands {
        if !clients.contains_key(&c.owner_addr) {
            let ch = PeerServiceClient::connect(format!("http://{}", c.owner_addr))
                .await
                .unwrap();
            clients.insert(c.owner_addr.clone(), ch);
        }
    }
    let mut seed_alg = Vec::new();
    for i in 0..iters {
        let t = Instant::now();
        let mut best: Option<(u64, &Candidate)> = None;
        for c in &cands {
            let client = clients.get_mut(&c.owner_addr).unwrap();
            let r = client
                .call_provider(ProviderCallRequest {
                    provider_id: c.id.clone(),
                    method: "capacity".into(),
                    payload: pb::CapacityCall {}.encode_to_vec(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let e = pb::ProviderEntry::decode(r.response.as_slice()).unwrap();
            let free = e
                .capacity
                .and_then(|c| c.available)
                .map_or(0, |a| a.cpu_millis);
            if best.is_none_or(|(b, _)| free > b) {
                best = Some((free, c));
            }
        }
        let (_, c) = best.unwrap();
        let call = pb::DeployCall {
            spec: Some(iarnet::resource::wire::spec_to_proto(&spec(format!(
                "seed-{i}"
            )))),
        };
        clients
            .get_mut(&c.owner_addr)
            .unwrap()
            .call_provider(ProviderCallRequest {
                provider_id: c.id.clone(),
                method: "deploy".into(),
                payload: call.encode_to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        seed_alg.push(t.elapsed());
    }
    busiest_owner(&requester, 32, 20 * iters).await;
    ours.sort();
    seed_alg.sort();
    let (o50, s50) = (percentile(&ours, 0.5), percentile(&seed_alg, 0.5));
    let (o99, s99) = (percentile(&ours, 0.99), percentile(&seed_alg, 0.99));
    println!("| algorithm | p50 | p99 | placements/s |");
    println!("|---|---|---|---|");
    let rate = |v: &[Duration]| v.len() as f64 / v.iter().sum::<Duration>().as_secs_f64();
    println!(
        "| iarnet: cached view + one admission call | {o50:.2?} | {o99:.2?} | {:.0} |",
        rate(&ours)
    );
    println!(
        "| original: capacity RPC per provider, then deploy | {s50:.2?} | {s99:.2?} | {:.0} |",
        rate(&seed_alg)
    );
    println!(
        "speed-up: p50 {:.1}x, p99 {:.1}x (target >= 20x)",
        s50.as_secs_f64() / o50.as_secs_f64(),
        s99.as_secs_f64() / o99.as_secs_f64()
    );
    drop(requester);
    drop(owners);
}

/// The CallProvider rate a busy home sends its busiest owner: `total`
/// placements with `in_flight` at once, all under the default budget (a
/// refusal would end the run here), against that budget.
async fn busiest_owner(requester: &NodeHandle, in_flight: usize, total: usize) {
    let budget = Config::loopback("budget").security.rate_limit;
    let start = Instant::now();
    let per = total / in_flight;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..in_flight {
        let manager = requester.manager().clone();
        tasks.spawn(async move {
            let mut owners = Vec::new();
            for i in 0..per {
                let placed = manager
                    .deploy(
                        spec(format!("busy-{t}-{i}")),
                        PlaceOptions::default(),
                        ProgressSink::none(),
                    )
                    .await
                    .expect("placed under the default CallProvider budget");
                // Provider ids are o<owner>-p<n>.
                owners.push(
                    placed
                        .deployment
                        .provider_id
                        .split('-')
                        .next()
                        .unwrap()
                        .to_string(),
                );
            }
            owners
        });
    }
    let mut per_owner: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(owners) = tasks.join_next().await {
        for o in owners.unwrap() {
            *per_owner.entry(o).or_default() += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let busiest = per_owner.values().copied().max().unwrap_or(0) as f64 / secs;
    println!(
        "busy home: {} placements, {in_flight} in flight, {:.0}/s; the busiest owner took {busiest:.0} CallProvider deploys/s \
         (default budget rate_limit.call_rate {:.0}/s, burst {:.0}: {:.0}x headroom; the old shared gossip budget was 200/s)",
        per * in_flight,
        (per * in_flight) as f64 / secs,
        budget.call_rate,
        budget.call_burst,
        budget.call_rate / busiest.max(1.0)
    );
}

// ----- 3. CallProvider overhead ----------------------------------------------

async fn call_overhead(iters: usize) {
    // This section measures the proxy itself at tens of thousands of calls
    // per second from one peer: past any flood budget, so lift it here.
    let mut cfg = Config::loopback("co-owner");
    cfg.security.rate_limit.call_rate = 1e6;
    cfg.security.rate_limit.call_burst = 1e6;
    let owner = start_cfg(
        cfg,
        vec![Arc::new(MemoryProvider::new(
            "co-p",
            res(8000, 8192),
            BTreeMap::new(),
        ))],
    )
    .await;
    let requester = start("co-req", &[owner.advertise_addr()], Vec::new()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while requester.manager().candidates().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cand = requester.manager().candidates().remove(0);
    let proxy = iarnet::placement::RemoteProvider::new(
        cand,
        Arc::new(BareCaller::connect(&owner.advertise_addr()).await),
    );
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", owner.advertise_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);

    println!("\n## CallProvider overhead: remote capacity through the proxy vs a bare tonic unary (grpc.health.v1/Check), same server");
    let mut lat_proxy = Vec::new();
    let mut lat_bare = Vec::new();
    for _ in 0..200 {
        proxy.describe().await.unwrap();
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap();
    }
    // Interleaved so that machine noise hits both alike.
    for _ in 0..iters {
        let t = Instant::now();
        std::hint::black_box(proxy.describe().await.unwrap());
        lat_proxy.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .unwrap(),
        );
        lat_bare.push(t.elapsed());
    }
    lat_proxy.sort();
    lat_bare.sort();
    let proxy = Arc::new(proxy);
    let throughput = |f: Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>| async move {
        let start = Instant::now();
        let per = iters / 32 + 1;
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..per {
                    f().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (per * 32) as f64 / start.elapsed().as_secs_f64()
    };
    let p = proxy.clone();
    let proxy_rate = throughput(Arc::new(move || {
        let p = p.clone();
        Box::pin(async move {
            p.describe().await.unwrap();
        })
    }))
    .await;
    let h = health.clone();
    let bare_rate = throughput(Arc::new(move || {
        let mut h = h.clone();
        Box::pin(async move {
            h.check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .unwrap();
        })
    }))
    .await;
    println!("| call | p50 | p99 | calls/s (32 in flight) |");
    println!("|---|---|---|---|");
    println!(
        "| proxy capacity (CallProvider) | {:.2?} | {:.2?} | {proxy_rate:.0} |",
        percentile(&lat_proxy, 0.5),
        percentile(&lat_proxy, 0.99)
    );
    println!(
        "| bare tonic unary | {:.2?} | {:.2?} | {bare_rate:.0} |",
        percentile(&lat_bare, 0.5),
        percentile(&lat_bare, 0.99)
    );
    println!(
        "ratio: p50 {:.2}x, p99 {:.2}x latency (target <= 1.3x); {:.2}x calls/s (target >= 0.75x)",
        percentile(&lat_proxy, 0.5).as_secs_f64() / percentile(&lat_bare, 0.5).as_secs_f64(),
        percentile(&lat_proxy, 0.99).as_secs_f64() / percentile(&lat_bare, 0.99).as_secs_f64(),
        proxy_rate / bare_rate
    );
}

/// A caller on one plain channel, like the node's pooled one.
struct BareCaller(PeerServiceClient<tonic::transport::Channel>);

impl BareCaller {
    async fn connect(addr: &str) -> BareCaller {
        BareCaller(
            PeerServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap(),
        )
    }
}

#[async_trait::async_trait]
impl iarnet::placement::ProviderCaller for BareCaller {
    async fn call(
        &self,
        _owner_addr: &str,
        request: ProviderCallRequest,
        _timeout: Duration,
    ) -> Result<iarnet::proto::peer::ProviderCallResponse, tonic::Status> {
        self.0
            .clone()
            .call_provider(request)
            .await
            .map(|r| r.into_inner())
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 1 } else { 5 };
    println!(
        "# iarnet placement benchmark{}",
        if quick { " (quick)" } else { "" }
    );
    decisions(1_000, 40_000 * scale);
    decisions(10_000, 40_000 * scale);
    manager_decisions(10_000, 40_000 * scale);
    view_change(10_000, 400 * scale);
    if std::env::args().any(|a| a == "--index") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        remote_placement(40 * scale).await;
        call_overhead(2_000 * scale).await;
    });
}
