//! Services against the in-memory provider twin: replicas spread over
//! providers, idempotent retries, scaling both ways, a strict spread that
//! waits naming itself, a soft one that gives way, bad input that leaves
//! nothing behind, and a service that outlives its home's restart.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::placement::manager::{Manager, NoMesh, PlaceOptions};
use crate::placement::Strategy;
use crate::resource::memory::MemoryProvider;
use crate::resource::validate::deployment_id;
use crate::resource::{
    DeploySpec, DeployState, ProgressSink, ResourceError, Resources, Spread, SpreadKey, Tier,
};
use crate::store::{MemoryStore, RedbStore, Store};
use tokio_util::sync::CancellationToken;

fn cpus(n: u64) -> Resources {
    Resources {
        cpu_millis: n * 1000,
        memory_bytes: 8 << 30,
        gpus: 0,
        storage_bytes: 0,
    }
}

fn spec(req: &str, spread: Option<(SpreadKey, bool)>) -> DeploySpec {
    DeploySpec {
        request_id: req.into(),
        image: "busybox".into(),
        resources: Resources {
            memory_bytes: 16 << 20,
            ..cpus(1)
        },
        spread: spread.map(|(key, strict)| Spread {
            key,
            max_skew: 1,
            strict,
        }),
        ..Default::default()
    }
}

async fn manager(store: Arc<dyn Store>, providers: &[(&str, u64)]) -> Manager {
    let m = Manager::open("home", Arc::new(NoMesh), Strategy::BinPack, false, 7, store).unwrap();
    for (id, n) in providers {
        let p = Arc::new(MemoryProvider::new(id, cpus(*n), BTreeMap::new()));
        m.add_provider(p, Tier::Internal).await.unwrap();
    }
    m
}

fn waits() -> PlaceOptions {
    PlaceOptions {
        queue_timeout: Duration::from_secs(600),
        ..Default::default()
    }
}

#[tokio::test]
async fn replicas_go_to_distinct_providers_and_a_retry_finds_the_same_ones() {
    let m = manager(
        Arc::new(MemoryStore::new()),
        &[("p1", 8), ("p2", 8), ("p3", 8)],
    )
    .await;
    // Bin-pack alone would put all three on one provider.
    let s = spec("web", Some((SpreadKey::Provider, true)));
    let (view, placed) = m
        .deploy_service(s.clone(), waits(), 3, ProgressSink::none())
        .await
        .unwrap();
    let on: HashSet<String> = placed
        .iter()
        .map(|p| p.placement.provider_id.clone())
        .collect();
    assert_eq!(on.len(), 3, "one replica per provider: {on:?}");
    assert_eq!((view.record.replicas, view.running, view.skew), (3, 3, 0));
    assert_eq!(
        view.per_domain,
        BTreeMap::from([("p1".into(), 1), ("p2".into(), 1), ("p3".into(), 1)])
    );
    let ids: Vec<String> = view
        .replicas
        .iter()
        .map(|(_, d, _)| d.request_id.clone())
        .collect();
    assert_eq!(ids, ["web-0", "web-1", "web-2"]);

    let (again, _) = m
        .deploy_service(s, waits(), 3, ProgressSink::none())
        .await
        .unwrap();
    assert_eq!(again.replicas.len(), 3, "a retry makes nothing new");
    assert_eq!(m.list_local().await.len(), 3);
}

#[tokio::test]
async fn scaling_adds_the_next_replicas_and_stops_the_highest() {
    let m = manager(Arc::new(MemoryStore::new()), &[("p1", 8), ("p2", 8)]).await;
    let s = spec("api", Some((SpreadKey::Provider, false)));
    m.deploy_service(s, waits(), 2, ProgressSink::none())
        .await
        .unwrap();
    let up = m.scale("api", 5).await.unwrap();
    assert_eq!((up.record.replicas, up.running), (5, 5));
    assert!(up.skew <= 1, "kept within the skew: {:?}", up.per_domain);

    let down = m.scale("api", 2).await.unwrap();
    assert_eq!((down.record.replicas, down.running), (2, 2));
    for i in 2..5 {
        let (d, _) = m.status(&deployment_id(&format!("api-{i}"))).await.unwrap();
        assert_eq!(d.state(), DeployState::Stopped, "api-{i}");
    }
    assert_eq!(m.list_local().await.len(), 2);
    // Back up: the stopped indexes come back.
    assert_eq!(m.scale("api", 3).await.unwrap().running, 3);
    assert!(matches!(
        m.scale("nope", 1).await,
        Err(ResourceError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_strict_spread_waits_naming_itself_and_a_soft_one_gives_way() {
    // p2 holds one small deployment only: after web-0 on p1, a second
    // replica may not go to p1 and does not fit p2.
    let m = manager(Arc::new(MemoryStore::new()), &[("p1", 8), ("p2", 1)]).await;
    m.deploy(
        spec("filler", None),
        PlaceOptions::default(),
        ProgressSink::none(),
    )
    .await
    .unwrap();
    let (strict, _) = m
        .deploy_service(
            spec("strict", Some((SpreadKey::Provider, true))),
            waits(),
            2,
            ProgressSink::none(),
        )
        .await
        .unwrap();
    let second = &strict.replicas[1].1;
    match second.state() {
        DeployState::Queued(reason) => assert!(
            reason.contains("spread provider (max skew 1, do-not-schedule) rules out 1 provider(s) with room (replicas per provider: p1=1, p2=0)"),
            "{reason}"
        ),
        other => panic!("a strict spread should wait, not {other:?}"),
    }
    // p1 has room but is ruled out: the queue does not hold it back from
    // others either (the soft service below places there at once).
    m.stop(&deployment_id("filler")).await.unwrap();
    let m = Arc::new(m);
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(
        m.clone()
            .run_queue(Duration::from_millis(20), cancel.clone()),
    );
    let id = deployment_id("strict-1");
    let mut waited = 0;
    loop {
        let (d, _) = m.status(&id).await.unwrap();
        if d.state() == DeployState::Running {
            assert_eq!(d.provider_id, "p2", "the queue keeps the spread");
            break;
        }
        waited += 1;
        assert!(waited < 500, "strict-1 never ran: {:?}", d.state());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    worker.await.unwrap();
    m.deploy(
        spec("filler-2", None),
        PlaceOptions::default(),
        ProgressSink::none(),
    )
    .await
    .unwrap();

    let (soft, placed) = m
        .deploy_service(
            spec("soft", Some((SpreadKey::Provider, false))),
            waits(),
            2,
            ProgressSink::none(),
        )
        .await
        .unwrap();
    assert_eq!(soft.running, 2, "a soft spread places both");
    assert!(placed.iter().all(|p| p.placement.provider_id == "p1"));
}

#[tokio::test]
async fn bad_input_leaves_no_service_behind() {
    let m = manager(Arc::new(MemoryStore::new()), &[("p1", 2)]).await;
    let err = m
        .deploy_service(spec("zero", None), waits(), 0, ProgressSink::none())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("replicas"), "{err}");
    let mut huge = spec("huge", None);
    huge.resources = cpus(64);
    let err = m
        .deploy_service(huge, waits(), 2, ProgressSink::none())
        .await
        .unwrap_err();
    assert!(matches!(err, ResourceError::NeverFits(_)), "{err}");
    assert!(m.services().await.is_empty());
    assert!(m.list_local().await.is_empty());
}

#[tokio::test]
async fn a_service_outlives_its_homes_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open_dir(dir.path()).unwrap());
        let m = manager(store, &[("p1", 8)]).await;
        m.deploy_service(spec("kept", None), waits(), 2, ProgressSink::none())
            .await
            .unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_dir(dir.path()).unwrap());
    let m = manager(store, &[("p1", 8)]).await;
    let v = m.service("kept").await.unwrap();
    assert_eq!(v.record.replicas, 2);
    assert_eq!(v.replicas.len(), 2, "its replicas' records came back too");
}
