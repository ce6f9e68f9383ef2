//! Failover benchmark: how long a deployment is down when its owner node
//! is killed (no goodbye), split into
//!
//! - detection: kill → the home's view declares the owner dead;
//! - grace: dead → the home starts the next attempt (`reschedule.after`,
//!   here 1 s; the default is 10 s) plus the reschedule loop's tick;
//! - placement: the attempt's record → the replacement running (ranking,
//!   the owner's admission; the in-memory provider starts at once, a real
//!   engine adds its container start).
//!
//! Real nodes on loopback at the default loopback gossip interval (200 ms),
//! a home without providers and N-1 owners with one in-memory provider
//! each, at N = 5 and 64. The baseline measured in the same run is a plain
//! deploy on the same mesh (request → running). For scale, Nomad's
//! defaults take about 50 s (heartbeat 10 s + grace 10 s + reschedule
//! delay 30 s) and Kubernetes about 300 s (the not-ready toleration).
//!
//! A second part measures the duplicate check an owner makes on heal:
//! calls, bytes and time for 1,000 deployments homed on another node
//! (Directory/Check in batches of 500), against asking the home about
//! each one (1,000 GetDeployment calls).
//!
//! `cargo bench --bench failover`            N = 5 and 64
//! `cargo bench --bench failover -- --quick` N = 5 and 16
//!
//! Figures are printed; nothing is asserted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use iarnet::config::Config;
use iarnet::mesh::Status;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::proto::directory as dpb;
use iarnet::proto::directory::directory_client::DirectoryClient;
use iarnet::proto::resource as pb;
use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::{Provider, Resources};
use prost::Message;

const GRACE: &str = "1s";
const NOMAD_DEFAULT_S: f64 = 50.0;
const KUBERNETES_DEFAULT_S: f64 = 300.0;

type Api = ResourceServiceClient<tonic::transport::Channel>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn start(id: &str, seeds: &[String], providers: Vec<Arc<dyn Provider>>) -> NodeHandle {
    let mut cfg = Config::loopback(id);
    cfg.initial_peers = seeds.to_vec();
    // The bench polls the home every 10 ms.
    cfg.security.rate_limit.token_rate = 1e9;
    cfg.security.rate_limit.token_burst = 1e9;
    node::start_with(cfg, ProviderSetup::Given(providers))
        .await
        .expect("node starts")
}

async fn mesh(tag: &str, n: usize) -> (NodeHandle, Vec<NodeHandle>) {
    let home = start(&format!("{tag}-home"), &[], Vec::new()).await;
    let seed = [home.advertise_addr()];
    let mut owners = Vec::new();
    for i in 0..n - 1 {
        let p = Arc::new(MemoryProvider::new(
            &format!("{tag}-p{i}"),
            Resources {
                cpu_millis: 64_000,
                memory_bytes: 64 << 30,
                ..Resources::ZERO
            },
            BTreeMap::new(),
        ));
        owners.push(start(&format!("{tag}-o{i}"), &seed, vec![p as Arc<dyn Provider>]).await);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while home.manager().candidates().len() < n - 1 {
        assert!(
            Instant::now() < deadline,
            "the home never saw every provider"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (home, owners)
}

async fn deploy(api: &mut Api, request_id: &str) -> pb::Deployment {
    let spec = pb::DeploySpec {
        request_id: request_id.into(),
        image: "bench/idle:1".into(),
        cpu: "100m".into(),
        memory: "16Mi".into(),
        reschedule: Some(pb::Reschedule {
            after: GRACE.into(),
            delay: "100ms".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut stream = api.deploy(spec).await.unwrap().into_inner();
    let mut last = None;
    while let Some(ev) = stream.next().await {
        if let Some(pb::deploy_event::Event::Deployment(d)) = ev.unwrap().event {
            last = Some(d);
        }
    }
    last.expect("a deploy ends with its deployment")
}

/// Milliseconds of each phase of one failover.
#[derive(Debug, Clone, Copy)]
struct Phases {
    detection: f64,
    grace: f64,
    /// The attempt's record → running (the in-memory provider starts at once).
    placement: f64,
}

impl Phases {
    fn total(&self) -> f64 {
        self.detection + self.grace + self.placement
    }
}

fn at_ms(d: &pb::Deployment, state: &str, after: u64) -> Option<u64> {
    d.history
        .iter()
        .map(|c| (c.state.as_str(), (c.at_unix * 1000.0) as u64))
        .find(|(s, at)| *s == state && *at >= after)
        .map(|(_, at)| at)
}

async fn one_failover(
    home: &NodeHandle,
    api: &mut Api,
    owners: &mut Vec<NodeHandle>,
    id: &str,
) -> Phases {
    let d = deploy(api, id).await;
    let i = owners
        .iter()
        .position(|n| n.id() == d.owner_id)
        .expect("placed on an owner");
    let dead = owners.remove(i);
    let dead_id = dead.id();
    let killed = now_ms();
    dead.kill();
    let mut detected = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if detected.is_none() {
            let gone = home
                .members()
                .iter()
                .find(|m| m.id == dead_id)
                .is_none_or(|m| m.status == Status::Dead || m.status == Status::Left);
            if gone {
                detected = Some(now_ms());
            }
        }
        let got = api
            .get_deployment(pb::GetDeploymentRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner();
        if got.attempt >= 2 && got.state == "running" {
            let detected = detected.unwrap_or(killed);
            // The attempt is recorded (durably) just before it is sent.
            let intent = got
                .attempts
                .last()
                .map_or(detected, |a| (a.placed_unix * 1000.0) as u64);
            let running = at_ms(&got, "running", intent).unwrap_or(intent);
            let ms = |a: u64, b: u64| b.saturating_sub(a) as f64;
            return Phases {
                detection: ms(killed, detected),
                grace: ms(detected, intent),
                placement: ms(intent, running),
            };
        }
        assert!(Instant::now() < deadline, "never failed over: {got:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn run(n: usize, trials: usize) {
    let tag = format!("fb{n}");
    let (home, mut owners) = mesh(&tag, n).await;
    let mut api = ResourceServiceClient::connect(format!("http://{}", home.local_addr()))
        .await
        .unwrap();
    // Baseline: a plain deploy on the same mesh, request → running.
    let mut direct = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let d = deploy(&mut api, &format!("{tag}-direct-{i}")).await;
        assert_eq!(d.state, "running");
        direct.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let direct = median(direct);
    let mut all = Vec::new();
    for t in 0..trials {
        all.push(one_failover(&home, &mut api, &mut owners, &format!("{tag}-f{t}")).await);
    }
    let med = |f: fn(&Phases) -> f64| median(all.iter().map(f).collect());
    let total = med(Phases::total);
    println!(
        "N={n:>3} ({trials} failovers, gossip {:?}, grace {GRACE}): detection {:.0} ms, grace {:.0} ms, placement {:.1} ms = {:.2} s down (medians)",
        home.config().gossip.interval,
        med(|p| p.detection),
        med(|p| p.grace),
        med(|p| p.placement),
        total / 1000.0,
    );
    println!(
        "       baseline plain deploy {direct:.1} ms (placement is timed from whole-ms records: 0 means under 1 ms); down time {:.3}x of Nomad's defaults (~{NOMAD_DEFAULT_S:.0} s), {:.4}x of Kubernetes' (~{KUBERNETES_DEFAULT_S:.0} s)",
        total / 1000.0 / NOMAD_DEFAULT_S,
        total / 1000.0 / KUBERNETES_DEFAULT_S,
    );
    drop(owners);
    drop(home);
}

/// The duplicate check on heal: one owner running `n` deployments whose
/// home is another node.
async fn heal_check(n: usize) {
    let (home, owners) = mesh("hc", 2).await;
    let owner = &owners[0];
    let mut api = ResourceServiceClient::connect(format!("http://{}", home.local_addr()))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(deploy(&mut api, &format!("hc-{i}")).await.id);
    }
    // The owner's own round, calls and all.
    let t = Instant::now();
    let stopped = owner.manager().fence_round().await;
    let round = t.elapsed();
    assert_eq!(stopped, 0, "nothing is stale here");
    // The same batches by hand, to count their bytes.
    let mut dir = DirectoryClient::connect(format!("http://{}", home.local_addr()))
        .await
        .unwrap();
    let (mut calls, mut sent, mut received) = (0, 0, 0);
    for batch in ids.chunks(500) {
        let req = dpb::CheckRequest {
            from: owner.id(),
            deployments: batch
                .iter()
                .map(|id| dpb::AttemptOf {
                    id: id.clone(),
                    attempt: 1,
                    ..Default::default()
                })
                .collect(),
        };
        sent += req.encoded_len();
        let reply = dir.check(req).await.unwrap().into_inner();
        received += reply.encoded_len();
        calls += 1;
    }
    // Baseline: one GetDeployment per copy.
    let t = Instant::now();
    let (mut b_sent, mut b_received) = (0, 0);
    for id in &ids {
        let req = pb::GetDeploymentRequest { id: id.clone() };
        b_sent += req.encoded_len();
        b_received += api
            .get_deployment(req)
            .await
            .unwrap()
            .into_inner()
            .encoded_len();
    }
    let one_by_one = t.elapsed();
    println!(
        "heal check, {n} foreign-homed deployments on one owner: {calls} Check calls, {:.1} KiB sent + {:.1} KiB received ({:.0} B per deployment), round {:.1} ms",
        sent as f64 / 1024.0,
        received as f64 / 1024.0,
        (sent + received) as f64 / n as f64,
        round.as_secs_f64() * 1000.0,
    );
    println!(
        "       baseline one GetDeployment each: {n} calls, {:.1} KiB + {:.1} KiB, {:.1} ms; ratio {:.3}x calls, {:.3}x bytes, {:.3}x time",
        b_sent as f64 / 1024.0,
        b_received as f64 / 1024.0,
        one_by_one.as_secs_f64() * 1000.0,
        calls as f64 / n as f64,
        (sent + received) as f64 / (b_sent + b_received) as f64,
        round.as_secs_f64() / one_by_one.as_secs_f64(),
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!("failover: owner killed -> replacement running (in-memory providers, loopback)");
    run(5, 3).await;
    run(if quick { 16 } else { 64 }, 3).await;
    heal_check(1_000).await;
}
