//! Gangs against the in-memory provider twin: all replicas start or none;
//! an owner that cannot hold its part (the home's view was stale) makes
//! the home give every other hold back at once; a gang the view already
//! rules out is refused before any owner is asked; bad input is named.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::placement::manager::{Manager, NoMesh, PlaceOptions};
use crate::placement::Strategy;
use crate::resource::memory::MemoryProvider;
use crate::resource::{DeploySpec, ProgressSink, Provider, ResourceError, Resources, Tier};
use crate::store::MemoryStore;

fn cpus(n: u64) -> Resources {
    Resources {
        cpu_millis: n * 1000,
        memory_bytes: 8 << 30,
        gpus: 0,
        storage_bytes: 0,
    }
}

fn spec(req: &str, cpu: u64) -> DeploySpec {
    DeploySpec {
        request_id: req.into(),
        image: "busybox".into(),
        resources: Resources {
            memory_bytes: 16 << 20,
            ..cpus(cpu)
        },
        ..Default::default()
    }
}

fn gang() -> PlaceOptions {
    PlaceOptions {
        gang: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

/// A home with three 2-CPU providers; the twins are returned so a test
/// can change one behind the home's view.
async fn manager() -> (Manager, Vec<Arc<MemoryProvider>>) {
    let store = Arc::new(MemoryStore::new());
    let m = Manager::open("home", Arc::new(NoMesh), Strategy::Spread, false, 7, store).unwrap();
    let mut twins = Vec::new();
    for id in ["p1", "p2", "p3"] {
        let p = Arc::new(MemoryProvider::new(id, cpus(2), BTreeMap::new()));
        m.add_provider(p.clone(), Tier::Internal).await.unwrap();
        twins.push(p);
    }
    (m, twins)
}

/// What each provider has reserved, holds included, as its owner says now.
async fn reserved(m: &Manager) -> Vec<u64> {
    let mut out = Vec::new();
    for id in ["p1", "p2", "p3"] {
        let (p, _) = m.registry.local(id).unwrap();
        out.push(p.describe().await.unwrap().capacity.reserved.cpu_millis);
    }
    out
}

#[tokio::test]
async fn with_room_for_all_every_replica_starts() {
    let (m, _) = manager().await;
    let (view, placed) = m
        .deploy_service(spec("g", 2), gang(), 3, ProgressSink::none())
        .await
        .unwrap();
    assert_eq!((view.record.replicas, view.running), (3, 3));
    let on: HashSet<String> = placed
        .iter()
        .map(|p| p.placement.provider_id.clone())
        .collect();
    assert_eq!(on.len(), 3, "{on:?}");
    assert_eq!(
        reserved(&m).await,
        [2000, 2000, 2000],
        "held once, taken once"
    );
}

#[tokio::test]
async fn an_owner_that_cannot_hold_its_part_makes_the_home_give_every_hold_back() {
    let (m, twins) = manager().await;
    // p3 fills behind the home's view, which still shows it empty.
    twins[2]
        .deploy(&spec("elsewhere", 2), ProgressSink::none())
        .await
        .unwrap();
    let e = m
        .deploy_service(spec("g", 2), gang(), 3, ProgressSink::none())
        .await
        .unwrap_err();
    assert!(matches!(e, ResourceError::NoPlacement(_)), "{e}");
    let text = e.to_string();
    assert!(text.contains("1 of 3 owners could not hold room"), "{text}");
    assert!(text.contains("nothing was started"), "{text}");
    // The two holds granted were given back at once, nothing started,
    // and no service is left behind.
    assert_eq!(reserved(&m).await, [0, 0, 2000]);
    assert!(matches!(
        m.service("g").await,
        Err(ResourceError::NotFound(_))
    ));
    for p in &twins[..2] {
        assert!(p.list().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_gang_the_view_rules_out_asks_nobody_and_bad_input_is_named() {
    let (m, _) = manager().await;
    let e = m
        .deploy_service(spec("g", 2), gang(), 4, ProgressSink::none())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("room for 3 now"), "{e}");
    assert_eq!(reserved(&m).await, [0, 0, 0]);
    let raw = crate::proto::resource::DeploySpec {
        gang_timeout: "5s".into(),
        ..Default::default()
    };
    let e = PlaceOptions::from_proto(&raw).unwrap_err();
    assert!(e.to_string().contains("gang_timeout"), "{e}");
    let raw = crate::proto::resource::DeploySpec {
        gang: true,
        gang_timeout: "10h".into(),
        ..Default::default()
    };
    assert!(PlaceOptions::from_proto(&raw)
        .unwrap_err()
        .to_string()
        .contains("100ms to 5m"));
}
