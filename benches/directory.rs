//! Directory benchmark: what answering for the whole mesh from any node costs.
//!
//! 1. Lookup latency on 8 real nodes on loopback: GetDeployment from a node
//!    that does not hold the deployment (a lookup through the ring, then the
//!    home answers), against the same call at the home (baseline).
//! 2. Messages per lookup and registration traffic in a simulation of the
//!    directory's own state machines (ring, registrar, table) at 1,000 and
//!    10,000 members, 10 deployments per member: a lookup must cost the same
//!    number of messages at every size, and the steady registration traffic
//!    per member per round must not grow with N.
//! 3. A mesh-wide listing of 10,000 deployments over 8 real nodes: time and
//!    bytes for all pages, against listing one node's own part.
//!
//! `cargo bench --bench directory`            full run (a few minutes)
//! `cargo bench --bench directory -- --quick` smaller sizes
//!
//! Figures are printed with the ratio against the baseline measured in the
//! same run; nothing is asserted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use iarnet::config::Config;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::placement::directory::registrar::{Holding, Registrar, K, REFRESH_MS};
use iarnet::placement::directory::{Location, Member, NodeRef, Registrant, Ring, Table};
use iarnet::placement::manager::PlaceOptions;
use iarnet::proto::resource as pb;
use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::{DeploySpec, ProgressSink, Provider, Resources};
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const NODES: usize = 8;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn start(id: &str, seeds: &[String], providers: Vec<Arc<dyn Provider>>) -> NodeHandle {
    let mut cfg = Config::loopback(id);
    cfg.initial_peers = seeds.to_vec();
    cfg.security.rate_limit.token_rate = 1e9;
    cfg.security.rate_limit.token_burst = 1e9;
    cfg.security.rate_limit.call_rate = 1e9;
    cfg.security.rate_limit.call_burst = 1e9;
    node::start_with(cfg, ProviderSetup::Given(providers))
        .await
        .expect("node starts")
}

/// 8 nodes, each with a large in-memory provider, all seeing all.
async fn mesh(tag: &str) -> Vec<NodeHandle> {
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..NODES {
        let p = Arc::new(MemoryProvider::new(
            &format!("{tag}-p{i}"),
            Resources {
                cpu_millis: 10_000_000,
                memory_bytes: 1 << 50,
                ..Resources::ZERO
            },
            BTreeMap::new(),
        ));
        let seeds: Vec<String> = nodes
            .first()
            .map(|n| n.advertise_addr())
            .into_iter()
            .collect();
        nodes.push(start(&format!("{tag}-{i}"), &seeds, vec![p]).await);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while nodes.iter().any(|n| n.manager().candidates().len() < NODES) {
        assert!(Instant::now() < deadline, "the mesh did not converge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes
}

async fn client(n: &NodeHandle) -> ResourceServiceClient<tonic::transport::Channel> {
    ResourceServiceClient::connect(format!("http://{}", n.local_addr()))
        .await
        .expect("connect")
}

fn spec(request_id: String) -> DeploySpec {
    DeploySpec {
        request_id,
        image: "iarnet-test/busybox:1".into(),
        resources: Resources {
            cpu_millis: 10,
            memory_bytes: 4 << 20,
            ..Resources::ZERO
        },
        ..Default::default()
    }
}

// ----- 1. lookup latency ------------------------------------------------------

async fn lookups(samples: usize) {
    let nodes = mesh("lat").await;
    let home = &nodes[0];
    let mut ids = Vec::new();
    for i in 0..samples {
        let placed = home
            .manager()
            .deploy(
                spec(format!("lat-{i}")),
                PlaceOptions::default(),
                ProgressSink::none(),
            )
            .await
            .expect("deploy");
        ids.push(placed.deployment.id);
    }
    // Registered: every id found from the farthest node once.
    let mut far = client(&nodes[NODES - 1]).await;
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(30);
        while far
            .get_deployment(pb::GetDeploymentRequest { id: id.clone() })
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "{id} never found");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut at_home = client(home).await;
    let mut others = Vec::new();
    for n in &nodes[1..] {
        others.push(client(n).await);
    }
    let timed = |api: &mut ResourceServiceClient<_>, id: String| {
        let mut api = api.clone();
        async move {
            let t = Instant::now();
            api.get_deployment(pb::GetDeploymentRequest { id })
                .await
                .expect("found");
            t.elapsed()
        }
    };
    let (mut base, mut remote) = (Vec::new(), Vec::new());
    for (i, id) in ids.iter().enumerate() {
        base.push(timed(&mut at_home, id.clone()).await);
        // A different non-holder each time (nothing is cached between
        // lookups; channels are warm on both paths).
        remote.push(timed(&mut others[i % (NODES - 1)], id.clone()).await);
    }
    base.sort();
    remote.sort();
    println!("| GetDeployment ({samples} deployments, 8 nodes) | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| baseline: at the home | {:.0} µs | {:.0} µs |",
        us(pct(&base, 0.5)),
        us(pct(&base, 0.99))
    );
    println!(
        "| at a node that does not hold it (lookup + forward) | {:.0} µs | {:.0} µs |",
        us(pct(&remote, 0.5)),
        us(pct(&remote, 0.99))
    );
    println!(
        "ratio: p50 {:.2}x, p99 {:.2}x",
        us(pct(&remote, 0.5)) / us(pct(&base, 0.5)),
        us(pct(&remote, 0.99)) / us(pct(&base, 0.99))
    );
}

// ----- 2. the directory's state machines at scale ----------------------------

fn member(i: usize, generation: u64) -> Member {
    Member {
        id: format!("m{i:05}"),
        addr: format!("10.{}.{}.{}:50051", i / 65536, (i / 256) % 256, i % 256),
        generation,
    }
}

/// Registers every member's holdings; returns (messages, locations sent).
fn register_all(
    ring: &Ring,
    registrars: &mut [Registrar],
    holdings: &[Vec<Holding>],
    tables: &mut HashMap<String, Table>,
    now: u64,
) -> (usize, usize) {
    let (mut messages, mut sent) = (0, 0);
    for (i, r) in registrars.iter_mut().enumerate() {
        let from = member(i, 1).id;
        for s in r.plan(&holdings[i], ring, now) {
            messages += 1;
            sent += s.register.len();
            let t = tables.entry(s.to.id.clone()).or_default();
            for h in &s.register {
                t.register(h.location.clone(), h.by, &from, now);
            }
            r.acked(&s.to, &s.register, now);
        }
    }
    (messages, sent)
}

fn simulate(n: usize, per_member: usize) {
    let t0 = Instant::now();
    let members: Vec<Member> = (0..n).map(|i| member(i, 1)).collect();
    let ring = Ring::new(members.clone());
    let mut rng = SmallRng::seed_from_u64(7);
    let holdings: Vec<Vec<Holding>> = (0..n)
        .map(|i| {
            (0..per_member)
                .map(|j| Holding {
                    location: Location {
                        deployment_id: format!("iarnet-{i:05}-{j:03}"),
                        home: Some(NodeRef {
                            id: member(i, 1).id,
                            addr: member(i, 1).addr,
                        }),
                        ..Location::default()
                    },
                    by: Registrant::Home,
                })
                .collect()
        })
        .collect();
    let mut registrars: Vec<Registrar> = (0..n).map(|_| Registrar::default()).collect();
    let mut tables: HashMap<String, Table> = HashMap::new();
    let (first_msgs, first_sent) = register_all(&ring, &mut registrars, &holdings, &mut tables, 0);

    // Lookups from random members: ask the K members the ring names.
    let lookups = 10_000;
    let (mut messages, mut misses) = (0usize, 0usize);
    for _ in 0..lookups {
        let owner = rng.random_range(0..n);
        let id = &holdings[owner][rng.random_range(0..per_member)]
            .location
            .deployment_id;
        let asked = ring.replicas(id, K);
        messages += asked.len();
        let found = asked
            .iter()
            .any(|m| tables.get(&m.id).and_then(|t| t.get(id, 1)).is_some());
        if !found {
            misses += 1;
        }
    }

    // Steady state: rounds of 1 s with nothing changing, over one refresh
    // period; then one member joins.
    let rounds = REFRESH_MS / 1000;
    let mut steady = 0usize;
    for round in 1..=rounds {
        steady += register_all(&ring, &mut registrars, &holdings, &mut tables, round * 1000).1;
    }
    let mut grown = members.clone();
    grown.push(member(n, 1));
    let ring2 = Ring::new(grown);
    let now = rounds * 1000 + 1000;
    let (join_msgs, join_sent) = register_all(&ring2, &mut registrars, &holdings, &mut tables, now);
    let entries: usize = tables.values().map(Table::len).sum();
    println!(
        "| {n} | {per_member} | {:.2} | {} | {:.3} | {first_msgs} msgs / {first_sent} locations | {join_msgs} msgs / {join_sent} locations ({:.1}% of all) | {:.1} | {:.1} s |",
        messages as f64 / lookups as f64,
        misses,
        steady as f64 / (n as f64 * rounds as f64),
        100.0 * join_sent as f64 / first_sent as f64,
        entries as f64 / n as f64,
        t0.elapsed().as_secs_f64()
    );
}

// ----- 3. mesh-wide listing --------------------------------------------------

async fn listing(total: usize) {
    let nodes = mesh("list").await;
    // Each node places its share on its own provider.
    let per = total / NODES;
    let mut tasks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let m = n.manager().clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..per {
                m.deploy(
                    spec(format!("list-{i}-{j:06}")),
                    PlaceOptions::default(),
                    ProgressSink::none(),
                )
                .await
                .expect("deploy");
            }
        }));
    }
    for t in tasks {
        t.await.expect("deploys");
    }
    let mut api = client(&nodes[0]).await;
    let list = |scope: &str, token: String| pb::ListDeploymentsRequest {
        scope: scope.into(),
        page_size: 1000,
        page_token: token,
        ..Default::default()
    };
    // Warm the channels.
    api.list_deployments(list("mesh", String::new()))
        .await
        .expect("list");

    let t = Instant::now();
    let node_only = api
        .list_deployments(list("node", String::new()))
        .await
        .expect("list")
        .into_inner();
    let node_time = t.elapsed();
    let node_bytes = node_only.encoded_len();

    let t = Instant::now();
    let (mut got, mut bytes, mut pages, mut token) = (0usize, 0usize, 0usize, String::new());
    loop {
        let page = api
            .list_deployments(list("mesh", token))
            .await
            .expect("page")
            .into_inner();
        bytes += page.encoded_len();
        got += page.deployments.len();
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mesh_time = t.elapsed();
    let t = Instant::now();
    let streamed: usize = api
        .stream_deployments(list("mesh", String::new()))
        .await
        .expect("stream")
        .into_inner()
        .map(|c| c.map(|c| c.deployments.len()).unwrap_or(0))
        .fold(0, |a, n| async move { a + n })
        .await;
    let stream_time = t.elapsed();
    println!("| listing | deployments | pages | time | bytes to the client |");
    println!("|---|---|---|---|---|");
    println!(
        "| baseline: one node's own part (scope node) | {} | 1 | {:.0} ms | {:.0} KiB |",
        node_only.deployments.len(),
        node_time.as_secs_f64() * 1e3,
        node_bytes as f64 / 1024.0
    );
    println!(
        "| the whole mesh, paginated (scope mesh, 1,000 a page) | {got} | {pages} | {:.0} ms | {:.0} KiB |",
        mesh_time.as_secs_f64() * 1e3,
        bytes as f64 / 1024.0
    );
    println!(
        "| the whole mesh, streamed | {streamed} | – | {:.0} ms | – |",
        stream_time.as_secs_f64() * 1e3
    );
    println!(
        "per deployment: {:.1} µs paginated vs {:.1} µs for one node's own",
        mesh_time.as_secs_f64() * 1e6 / got.max(1) as f64,
        node_time.as_secs_f64() * 1e6 / node_only.deployments.len().max(1) as f64
    );
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!("# iarnet directory benchmark (200 ms gossip interval on loopback)");
    println!("## 1. lookup latency");
    lookups(if quick { 100 } else { 500 }).await;
    println!("## 2. the directory at scale (simulated ring, registrars, tables; k = {K})");
    println!("| members | deployments per member | messages per lookup | misses | steady locations per member per round | first registration | after one join | entries held per member | wall |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in if quick {
        vec![1_000]
    } else {
        vec![1_000, 10_000]
    } {
        simulate(n, 10);
    }
    println!("## 3. mesh-wide listing over {NODES} nodes");
    listing(if quick { 2_000 } else { 10_000 }).await;
}
