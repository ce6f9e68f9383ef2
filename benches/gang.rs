//! Gang placement benchmark: how long a gang of N replicas takes, request
//! → every replica running, when the home prepares room on each chosen
//! owner and commits once all agreed (two rounds of calls, in parallel),
//! against the same N replicas placed one by one (a plain service: one
//! deploy after another). Real nodes on loopback: a home without
//! providers and 16 owners with one in-memory provider each, gangs of 3
//! and 16 spread over nodes. For scale, Ray reports about 1.75 ms per
//! placement group create.
//!
//! `cargo bench --bench gang`            40 gangs of each size
//! `cargo bench --bench gang -- --quick` 10
//!
//! Figures are printed; nothing is asserted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use iarnet::config::Config;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::proto::resource as pb;
use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::{Provider, Resources};

const OWNERS: usize = 16;
const RAY_PG_CREATE_MS: f64 = 1.75;

type Api = ResourceServiceClient<tonic::transport::Channel>;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn start(id: &str, seeds: &[String], providers: Vec<Arc<dyn Provider>>) -> NodeHandle {
    let mut cfg = Config::loopback(id);
    cfg.initial_peers = seeds.to_vec();
    cfg.security.rate_limit.token_rate = 1e9;
    cfg.security.rate_limit.token_burst = 1e9;
    node::start_with(cfg, ProviderSetup::Given(providers))
        .await
        .expect("node starts")
}

async fn mesh() -> (NodeHandle, Vec<NodeHandle>) {
    let home = start("gang-home", &[], Vec::new()).await;
    let seed = [home.advertise_addr()];
    let mut owners = Vec::new();
    for i in 0..OWNERS {
        let p = Arc::new(MemoryProvider::new(
            &format!("gang-p{i}"),
            Resources {
                cpu_millis: 1_000_000,
                memory_bytes: 1 << 40,
                ..Resources::ZERO
            },
            BTreeMap::new(),
        ));
        owners.push(start(&format!("gang-o{i}"), &seed, vec![p as Arc<dyn Provider>]).await);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while home.manager().candidates().len() < OWNERS {
        assert!(Instant::now() < deadline, "the home never saw every owner");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (home, owners)
}

/// One service of `n` replicas, as a gang or one by one; its latency.
async fn place(api: &mut Api, id: &str, n: u32, gang: bool) -> Duration {
    let spec = pb::DeploySpec {
        request_id: id.into(),
        image: "bench/idle:1".into(),
        cpu: "100m".into(),
        memory: "16Mi".into(),
        replicas: n,
        gang,
        spread: "node".into(),
        ..Default::default()
    };
    let started = Instant::now();
    let mut stream = api.deploy(spec).await.unwrap().into_inner();
    let mut service = None;
    while let Some(ev) = stream.next().await {
        if let Some(pb::deploy_event::Event::Service(s)) = ev.unwrap().event {
            service = Some(s);
        }
    }
    let took = started.elapsed();
    let s = service.expect("a service");
    assert_eq!(s.running, n, "{id}: {s:?}");
    took
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 10 } else { 40 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (home, _owners) = mesh().await;
        let mut api = Api::connect(format!("http://{}", home.local_addr()))
            .await
            .unwrap();
        println!("gang placement: home + {OWNERS} owners on loopback, {rounds} services of each kind, measured in turn");
        for n in [3u32, 16] {
            let (mut gang, mut seq) = (Vec::new(), Vec::new());
            // Warm the channels to every owner first.
            place(&mut api, &format!("warm-{n}"), n, false).await;
            for r in 0..rounds {
                gang.push(place(&mut api, &format!("g{n}-{r}"), n, true).await);
                seq.push(place(&mut api, &format!("s{n}-{r}"), n, false).await);
            }
            gang.sort();
            seq.sort();
            let (g50, g99) = (pct(&gang, 0.5), pct(&gang, 0.99));
            let (s50, s99) = (pct(&seq, 0.5), pct(&seq, 0.99));
            println!(
                "  {n:>2} replicas: gang p50 {:.2} ms p99 {:.2} ms | one by one p50 {:.2} ms p99 {:.2} ms | gang/one-by-one {:.2}x p50, {:.2}x p99 | {:.2} ms per replica in a gang (Ray: ~{RAY_PG_CREATE_MS} ms per placement group)",
                ms(g50),
                ms(g99),
                ms(s50),
                ms(s99),
                ms(g50) / ms(s50),
                ms(g99) / ms(s99),
                ms(g50) / f64::from(n),
            );
        }
    });
}
