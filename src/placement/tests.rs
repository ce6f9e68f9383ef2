use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::rank::{Index, Strategy};
use super::{Candidate, Discovery, Need, PlaceOptions};
use super::{Manager, ProviderCaller};
use crate::proto::peer::ProviderInfo;
use crate::resource::memory::MemoryProvider;
use crate::resource::{Capacity, DeploySpec, ProgressSink, ProviderKind, Resources, Tier};

fn res(cpu: u64, mem_mi: u64) -> Resources {
    Resources {
        cpu_millis: cpu,
        memory_bytes: mem_mi << 20,
        gpus: 0,
        storage_bytes: 0,
    }
}

fn cand(id: &str, tier: Tier, free_cpu: u64, labels: &[(&str, &str)]) -> Candidate {
    Candidate {
        id: id.into(),
        name: id.into(),
        kind: ProviderKind::Memory,
        tier,
        owner_id: "n".into(),
        owner_addr: String::new(),
        healthy: true,
        capacity: Capacity {
            total: res(free_cpu + 1000, 4096),
            reserved: res(1000, 0),
            ..Capacity::default()
        },
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        version: 0,
        gpus: Vec::new(),
    }
}

fn ids(v: Vec<&Candidate>) -> Vec<&str> {
    v.into_iter().map(|c| c.id.as_str()).collect()
}

fn rank(index: &Index, need: &Need, s: Strategy, k: usize) -> Vec<String> {
    let mut rng = SmallRng::seed_from_u64(7);
    ids(index.rank(need, s, k, &HashSet::new(), &mut rng))
        .into_iter()
        .map(String::from)
        .collect()
}

fn need(cpu: u64) -> Need<'static> {
    Need {
        resources: res(cpu, 64),
        ..Need::default()
    }
}

#[test]
fn tiers_come_first_whatever_the_strategy() {
    let index = Index::build(vec![
        cand("d-big", Tier::Discovered, 64_000, &[]),
        cand("e-mid", Tier::External, 8_000, &[]),
        cand("i-small", Tier::Internal, 2_000, &[]),
    ]);
    for s in [
        Strategy::Spread,
        Strategy::BinPack,
        Strategy::RoundRobin,
        Strategy::Random,
        Strategy::Weighted,
        Strategy::Geographic,
    ] {
        assert_eq!(
            rank(&index, &need(500), s, 3),
            ["i-small", "e-mid", "d-big"],
            "{s}"
        );
        // Internal cannot fit 4 cores: external first.
        assert_eq!(rank(&index, &need(4000), s, 3), ["e-mid", "d-big"], "{s}");
    }
}

#[test]
fn spread_and_binpack_order_by_free_cpu() {
    let index = Index::build(
        [1000, 4000, 2000, 8000]
            .iter()
            .enumerate()
            .map(|(i, cpu)| cand(&format!("p{i}"), Tier::Discovered, *cpu, &[]))
            .collect(),
    );
    assert_eq!(
        rank(&index, &need(1500), Strategy::Spread, 4),
        ["p3", "p1", "p2"]
    );
    assert_eq!(
        rank(&index, &need(1500), Strategy::BinPack, 4),
        ["p2", "p1", "p3"]
    );
}

#[test]
fn round_robin_rotates_and_random_covers() {
    let index = Index::build(
        (0..4)
            .map(|i| cand(&format!("p{i}"), Tier::Discovered, 4000, &[]))
            .collect(),
    );
    let firsts: HashSet<String> = (0..4)
        .map(|_| rank(&index, &need(100), Strategy::RoundRobin, 1)[0].clone())
        .collect();
    assert_eq!(firsts.len(), 4, "four decisions visit four providers");
    let mut rng = SmallRng::seed_from_u64(1);
    let mut seen = HashSet::new();
    for _ in 0..200 {
        seen.insert(
            index.rank(&need(100), Strategy::Random, 1, &HashSet::new(), &mut rng)[0]
                .id
                .clone(),
        );
    }
    assert_eq!(seen.len(), 4);
}

#[test]
fn weighted_prefers_free_capacity() {
    let index = Index::build(vec![
        cand("small", Tier::Discovered, 1000, &[]),
        cand("large", Tier::Discovered, 99_000, &[]),
    ]);
    let mut rng = SmallRng::seed_from_u64(3);
    let large = (0..1000)
        .filter(|_| {
            index.rank(&need(100), Strategy::Weighted, 1, &HashSet::new(), &mut rng)[0].id
                == "large"
        })
        .count();
    assert!(large > 900, "large chosen {large}/1000 times");
}

#[test]
fn geographic_prefers_the_region_then_falls_back() {
    let index = Index::build(vec![
        cand("us", Tier::Discovered, 64_000, &[("region", "us-east")]),
        cand("eu-1", Tier::Discovered, 2_000, &[("region", "eu-west")]),
        cand("eu-2", Tier::Discovered, 4_000, &[("region", "eu-west")]),
    ]);
    let n = Need {
        region: Some("eu-west"),
        ..need(1000)
    };
    assert_eq!(
        rank(&index, &n, Strategy::Geographic, 3),
        ["eu-2", "eu-1", "us"]
    );
    let n = Need {
        region: Some("eu-west"),
        ..need(3000)
    };
    assert_eq!(rank(&index, &n, Strategy::Geographic, 3), ["eu-2", "us"]);
}

#[test]
fn labels_gpu_model_health_and_pinning_filter() {
    let mut sick = cand("sick", Tier::Internal, 64_000, &[]);
    sick.healthy = false;
    let mut gpu = cand(
        "gpu",
        Tier::Discovered,
        8_000,
        &[("gpu.model", "NVIDIA H100 80GB HBM3"), ("zone", "a")],
    );
    gpu.capacity.total.gpus = 2;
    let index = Index::build(vec![
        sick,
        gpu,
        cand("plain", Tier::Discovered, 8_000, &[("zone", "b")]),
    ]);
    let mut n = need(100);
    n.resources.gpus = 1;
    n.gpu_model = Some("h100");
    assert_eq!(rank(&index, &n, Strategy::Spread, 3), ["gpu"]);
    let zone_b: BTreeMap<String, String> = [("zone".to_string(), "b".to_string())].into();
    let n = Need {
        required_labels: Some(&zone_b),
        ..need(100)
    };
    assert_eq!(rank(&index, &n, Strategy::Spread, 3), ["plain"]);
    let n = Need {
        provider_id: Some("gpu"),
        ..need(100)
    };
    assert_eq!(rank(&index, &n, Strategy::Spread, 3), ["gpu"]);
    assert!(Strategy::parse("fastest").unwrap_err().contains("spread"));
}

struct NoMesh(Mutex<Vec<ProviderInfo>>);

impl Discovery for NoMesh {
    fn discovered(&self) -> Vec<Candidate> {
        Vec::new()
    }
    fn publish(&self, providers: Vec<ProviderInfo>) {
        *self.0.lock().unwrap() = providers;
    }
    fn caller(&self) -> Arc<dyn ProviderCaller> {
        unreachable!("no remote providers in this test")
    }
    fn version(&self) -> u64 {
        0
    }
}

fn spec(req: &str, cpu: u64) -> DeploySpec {
    DeploySpec {
        request_id: req.into(),
        image: "busybox".into(),
        resources: res(cpu, 64),
        ..Default::default()
    }
}

#[tokio::test]
async fn manager_places_publishes_and_is_idempotent() {
    let mesh = Arc::new(NoMesh(Mutex::default()));
    let m = Manager::new("n", mesh.clone(), Strategy::Spread, true, 1);
    m.add_provider(
        Arc::new(MemoryProvider::new("a", res(2000, 4096), BTreeMap::new())),
        Tier::Internal,
    )
    .await
    .unwrap();
    m.add_provider(
        Arc::new(MemoryProvider::new("b", res(2000, 4096), BTreeMap::new())),
        Tier::External,
    )
    .await
    .unwrap();
    let first = m
        .deploy(
            spec("r1", 1500),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    assert_eq!(first.placement.provider_id, "a");
    assert_eq!(first.placement.tier, "internal");
    let again = m
        .deploy(
            spec("r1", 1500),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    assert_eq!(again.deployment.id, first.deployment.id);
    assert_eq!(
        m.list().await.len(),
        1,
        "a retried request makes no second deployment"
    );
    // a has 500m left: the next goes to the external tier.
    let second = m
        .deploy(
            spec("r2", 1500),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    assert_eq!(second.placement.provider_id, "b");
    let published = mesh.0.lock().unwrap().clone();
    let a = published.iter().find(|p| p.id == "a").unwrap();
    assert_eq!(
        a.capacity.unwrap().reserved.unwrap().cpu_millis,
        1500,
        "capacity advertised after the deploy"
    );
    let err = m
        .deploy(
            spec("r3", 1500),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.to_string().contains("none of the 2 known providers"),
        "{err}"
    );
    m.stop(&first.deployment.id).await.unwrap();
    m.deploy(
        spec("r3", 1500),
        PlaceOptions::default(),
        ProgressSink::none(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn remote_access_off_advertises_nothing_and_refuses_calls() {
    let mesh = Arc::new(NoMesh(Mutex::default()));
    let m = Manager::new("n", mesh.clone(), Strategy::Spread, false, 1);
    m.add_provider(
        Arc::new(MemoryProvider::new("a", res(2000, 4096), BTreeMap::new())),
        Tier::Internal,
    )
    .await
    .unwrap();
    assert!(mesh.0.lock().unwrap().is_empty());
    let err = m.serve_call("a", "capacity", &[]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // Local placement still works.
    m.deploy(
        spec("r1", 100),
        PlaceOptions::default(),
        ProgressSink::none(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn serve_call_rejects_unknown_and_malformed() {
    let m = Manager::new(
        "n",
        Arc::new(NoMesh(Mutex::default())),
        Strategy::Spread,
        true,
        1,
    );
    m.add_provider(
        Arc::new(MemoryProvider::new("a", res(2000, 4096), BTreeMap::new())),
        Tier::Internal,
    )
    .await
    .unwrap();
    assert_eq!(
        m.serve_call("zz", "capacity", &[])
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    let err = m
        .serve_call("a", "deploy", &[0xff, 0xff, 0xff])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("deploy"), "{}", err.message());
    assert_eq!(
        m.serve_call("a", "reboot", &[]).await.unwrap_err().code(),
        tonic::Code::Unimplemented
    );
    // A spec with a bad field names it.
    use prost::Message;
    let bad = crate::proto::resource::DeployCall {
        spec: Some(crate::proto::resource::DeploySpec {
            request_id: "x".into(),
            image: "busybox".into(),
            cpu: "lots".into(),
            memory: "64Mi".into(),
            ..Default::default()
        }),
    };
    let err = m
        .serve_call("a", "deploy", &bad.encode_to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("cpu"), "{}", err.message());
    assert_eq!(m.list().await.len(), 0, "nothing was deployed");
}
