//! Placement across real nodes on 127.0.0.1 with in-memory providers:
//! admission under concurrency, remote deploys over CallProvider, the
//! remote-access switch, idempotent retries, the gRPC API, and GPU
//! readings that reach other nodes.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{start_with, wait_until};
use futures::StreamExt;
use iarnet::node::NodeHandle;
use iarnet::placement::manager::PlaceOptions;
use iarnet::proto::resource as pb;
use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::{DeploySpec, LogOptions, ProgressSink, Provider, Resources};

const WAIT: Duration = Duration::from_secs(30);

fn cpus(n: u64) -> Resources {
    Resources {
        cpu_millis: n * 1000,
        memory_bytes: 64 << 30,
        gpus: 0,
        storage_bytes: 0,
    }
}

fn spec(request_id: &str) -> DeploySpec {
    DeploySpec {
        request_id: request_id.into(),
        image: "iarnet-test/busybox:1".into(),
        resources: Resources {
            cpu_millis: 1000,
            memory_bytes: 64 << 20,
            gpus: 0,
            storage_bytes: 0,
        },
        ..Default::default()
    }
}

fn memory(id: &str, n: u64) -> Arc<MemoryProvider> {
    Arc::new(MemoryProvider::new(id, cpus(n), BTreeMap::new()))
}

/// Waits until `node` has every provider in `ids` in its placement view.
async fn sees_providers(node: &NodeHandle, ids: &[&str]) {
    wait_until("providers to be discovered", WAIT, || {
        let have: Vec<String> = node
            .manager()
            .candidates()
            .into_iter()
            .map(|c| c.id)
            .collect();
        if ids.iter().all(|i| have.iter().any(|h| h == i)) {
            Ok(())
        } else {
            Err(format!("{} sees {have:?}", node.id()))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_deploys_never_overcommit() {
    let providers = [memory("p1", 10), memory("p2", 15), memory("p3", 25)];
    let seed = start_with("oc0", &[], Vec::new(), true).await;
    let seeds = vec![seed.advertise_addr()];
    let mut nodes = vec![seed];
    for (i, p) in providers.iter().enumerate() {
        let p: Arc<dyn Provider> = p.clone();
        nodes.push(start_with(&format!("oc{}", i + 1), &seeds, vec![p], true).await);
    }
    for n in &nodes {
        sees_providers(n, &["p1", "p2", "p3"]).await;
    }

    // Watch every provider's books while the storm runs.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let providers = providers.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut samples = 0u64;
            while !done.load(Ordering::Relaxed) {
                for p in &providers {
                    let c = p.describe().await.unwrap().capacity;
                    assert!(
                        c.total.fits(&c.reserved),
                        "{} over-committed: {c:?}",
                        p.id()
                    );
                }
                samples += 1;
                tokio::task::yield_now().await;
            }
            samples
        })
    };
    let nodes = Arc::new(nodes);
    let mut storm = Vec::new();
    for i in 0..200 {
        let nodes = nodes.clone();
        storm.push(tokio::spawn(async move {
            let node = &nodes[i % nodes.len()];
            node.manager()
                .deploy(
                    spec(&format!("storm-{i}")),
                    PlaceOptions::default(),
                    ProgressSink::none(),
                )
                .await
        }));
    }
    let mut placed = 0;
    for t in storm {
        match t.await.unwrap() {
            Ok(_) => placed += 1,
            Err(e) => assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}"),
        }
    }
    done.store(true, Ordering::Relaxed);
    let samples = watcher.await.unwrap();
    assert!(samples > 0);
    assert_eq!(placed, 50, "exactly the capacity is placed");
    let mut reserved = 0;
    for p in &providers {
        let c = p.describe().await.unwrap().capacity;
        assert_eq!(
            c.reserved.cpu_millis,
            c.total.cpu_millis,
            "{} is full",
            p.id()
        );
        reserved += p.list().await.unwrap().len();
    }
    assert_eq!(reserved, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_runs_on_a_discovered_provider_through_its_owner() {
    let b_provider = memory("b-mem", 4);
    let b = start_with("rb", &[], vec![b_provider.clone()], true).await;
    let a = start_with("ra", &[b.advertise_addr()], Vec::new(), true).await;
    sees_providers(&a, &["b-mem"]).await;

    let placed = a
        .manager()
        .deploy(
            spec("remote-1"),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .expect("A places on B's provider");
    assert_eq!(placed.placement.tier, "discovered");
    assert_eq!(placed.placement.owner_id, "rb");
    let id = placed.deployment.id.clone();
    assert_eq!(
        b_provider.list().await.unwrap().len(),
        1,
        "the deployment lives on B"
    );

    // Retried through A: same deployment, nothing new on B.
    let again = a
        .manager()
        .deploy(
            spec("remote-1"),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    assert_eq!(again.deployment.id, id);
    assert_eq!(b_provider.list().await.unwrap().len(), 1);

    // Status, logs and stop through A.
    let (d, owner) = a.manager().status(&id).await.unwrap();
    assert_eq!((d.state().name(), owner.as_str()), ("running", "rb"));
    let lines: Vec<_> = a
        .manager()
        .logs(&id, LogOptions::default())
        .await
        .unwrap()
        .collect()
        .await;
    assert!(!lines.is_empty() && lines.iter().all(|l| l.is_ok()));
    let (stopped, _) = a.manager().stop(&id).await.unwrap();
    assert_eq!(stopped.state().name(), "stopped");
    assert_eq!(
        b_provider.describe().await.unwrap().capacity.reserved,
        Resources::ZERO
    );

    // B's advertised capacity follows: A's view shows the reservation gone.
    wait_until("B's capacity to be re-advertised", WAIT, || {
        let c = a
            .manager()
            .candidates()
            .into_iter()
            .find(|c| c.id == "b-mem")
            .unwrap();
        if c.capacity.reserved.cpu_millis == 0 {
            Ok(())
        } else {
            Err(format!("{:?}", c.capacity))
        }
    })
    .await;
    // Stopping again is harmless: the deployment stays stopped or is gone.
    match a.manager().stop(&id).await {
        Ok((d, _)) => assert_eq!(d.state().name(), "stopped"),
        Err(e) => assert_eq!(e.code(), tonic::Code::NotFound, "{e}"),
    }

    // Both sides of every CallProvider are measured, and the placements counted.
    let (a_metrics, b_metrics) = (a.metrics().await, b.metrics().await);
    for (text, needle) in [
        (
            &a_metrics,
            r#"iarnet_provider_call_seconds_count{side="client",method="deploy",code="ok"}"#,
        ),
        (
            &a_metrics,
            r#"iarnet_provider_call_seconds_count{side="client",method="stop",code="ok"}"#,
        ),
        (
            &a_metrics,
            r#"iarnet_placements_total{outcome="placed",reason="discovered"} 1"#,
        ),
        (
            &a_metrics,
            r#"iarnet_gossip_call_seconds_count{kind="peers"}"#,
        ),
        (
            &b_metrics,
            r#"iarnet_provider_call_seconds_count{side="server",method="deploy",code="ok"}"#,
        ),
        (&b_metrics, r#"iarnet_deployments{state="running"} 0"#),
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_access_off_makes_the_requester_place_elsewhere_or_fail_clearly() {
    let closed = memory("closed-mem", 64);
    let open = memory("open-mem", 1);
    let b = start_with("xb", &[], vec![closed.clone()], false).await;
    let c = start_with("xc", &[b.advertise_addr()], vec![open.clone()], true).await;
    let a = start_with("xa", &[b.advertise_addr()], Vec::new(), true).await;
    sees_providers(&a, &["open-mem"]).await;
    wait_until("C to be seen by A", WAIT, || {
        if a.members().iter().any(|m| m.id == c.id()) {
            Ok(())
        } else {
            Err("no".into())
        }
    })
    .await;
    assert!(
        a.manager()
            .candidates()
            .iter()
            .all(|c| c.id != "closed-mem"),
        "B advertises nothing"
    );
    let placed = a
        .manager()
        .deploy(spec("x-1"), PlaceOptions::default(), ProgressSink::none())
        .await
        .unwrap();
    assert_eq!(placed.placement.provider_id, "open-mem");
    let err = a
        .manager()
        .deploy(spec("x-2"), PlaceOptions::default(), ProgressSink::none())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(closed.list().await.unwrap().is_empty());
    // B itself still places on its own provider.
    b.manager()
        .deploy(spec("x-3"), PlaceOptions::default(), ProgressSink::none())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_api_deploys_lists_logs_and_stops() {
    let p = memory("api-mem", 2);
    let node = start_with("api0", &[], vec![p.clone()], true).await;
    let mut client = ResourceServiceClient::connect(format!("http://{}", node.local_addr()))
        .await
        .unwrap();
    let req = pb::DeploySpec {
        request_id: "api-1".into(),
        image: "iarnet-test/busybox:1".into(),
        cpu: "500m".into(),
        memory: "64Mi".into(),
        ..Default::default()
    };
    let events: Vec<_> = client
        .deploy(req.clone())
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    use pb::deploy_event::Event;
    let events: Vec<Event> = events
        .into_iter()
        .map(|e| e.unwrap().event.unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::State(s) if s == "running")),
        "{events:?}"
    );
    let Some(Event::Placement(placement)) = events.iter().rev().nth(1).cloned() else {
        panic!("{events:?}")
    };
    assert_eq!(placement.provider_id, "api-mem");
    let Some(Event::Deployment(d)) = events.last().cloned() else {
        panic!("{events:?}")
    };
    assert_eq!(d.resources.unwrap().cpu_millis, 500);

    let listed = client
        .list_deployments(pb::ListDeploymentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.deployments.len(), 1);
    let cap = client
        .get_capacity(pb::GetCapacityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cap.node.unwrap().reserved.unwrap().cpu_millis, 500);
    let logs: Vec<_> = client
        .logs(pb::LogsRequest {
            id: d.id.clone(),
            tail: 1,
            follow: false,
        })
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(logs.len(), 1);
    let stopped = client
        .stop(pb::StopRequest { id: d.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state, "stopped");
    assert!(
        stopped.history.len() >= 3,
        "history kept: {:?}",
        stopped.history
    );

    // Bad input: a clear error naming the field, nothing changed.
    let bad = pb::DeploySpec {
        memory: "lots".into(),
        request_id: "api-2".into(),
        ..req.clone()
    };
    let err = client.deploy(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("memory"), "{}", err.message());
    let bad = pb::DeploySpec {
        strategy: "fastest".into(),
        ..req.clone()
    };
    assert_eq!(
        client.deploy(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let err = client
        .get_deployment(pb::GetDeploymentRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client
        .unregister_provider(pb::UnregisterProviderRequest {
            id: "api-mem".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "the internal provider stays"
    );
    let err = client
        .register_provider(pb::RegisterProviderRequest {
            r#type: "ftp".into(),
            name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("type"), "{}", err.message());
    assert_eq!(
        p.describe().await.unwrap().capacity.reserved,
        Resources::ZERO
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_gpu_readings_reach_other_nodes_and_a_lost_gpu_is_not_offered() {
    use iarnet::resource::gpu::{FakeGpus, GpuReadings};
    let start = FakeGpus::uniform(2, "NVIDIA H100").0;
    let readings = Arc::new(GpuReadings::new(start.clone()));
    let b_provider = Arc::new(
        MemoryProvider::with_gpus("b-gpu", cpus(8), BTreeMap::new(), start.clone())
            .with_gpu_probe(readings.clone()),
    );
    let b = start_with("gb", &[], vec![b_provider], true).await;
    let a = start_with("ga", &[b.advertise_addr()], Vec::new(), true).await;
    sees_providers(&a, &["b-gpu"]).await;
    let mut api = ResourceServiceClient::connect(format!("http://{}", a.local_addr()))
        .await
        .unwrap();

    // B's refresh loop re-reads the GPUs; gossip carries the figures to A.
    let mut busy = start.clone();
    busy[1].utilization_pct = 95;
    busy[1].memory_used_bytes = 30 << 30;
    readings.set(busy);
    let seen_busy = wait_for_entry(&mut api, "b-gpu", |e| {
        e.gpus.len() == 2 && e.gpus[1].utilization_pct == 95
    })
    .await;
    let g = &seen_busy.gpus[1];
    assert_eq!(
        (
            g.uuid.as_str(),
            g.memory_bytes,
            g.memory_used_bytes,
            g.holders
        ),
        (start[1].uuid.as_str(), 80 << 30, 30 << 30, 0)
    );

    // A deploy that takes a GPU shows as its holder.
    let mut one_gpu = spec("gpu-1");
    one_gpu.resources.gpus = 1;
    a.manager()
        .deploy(one_gpu, PlaceOptions::default(), ProgressSink::none())
        .await
        .expect("placed on B's GPU");
    wait_for_entry(&mut api, "b-gpu", |e| {
        e.gpus.iter().map(|g| g.holders).sum::<u32>() == 1
    })
    .await;

    // A failed reading keeps the last one; a GPU that fell off the bus is
    // no longer offered, so the other deploy finds no room.
    readings.fail("NVML: GPU is lost");
    b.manager().refresh().await;
    readings.set(vec![start[0].clone()]);
    let lost = wait_for_entry(&mut api, "b-gpu", |e| e.gpus.len() == 1).await;
    assert_eq!(lost.capacity.unwrap().total.unwrap().gpus, 1);
    let mut another = spec("gpu-2");
    another.resources.gpus = 1;
    let refused = a
        .manager()
        .deploy(another, PlaceOptions::default(), ProgressSink::none())
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

/// The entry A lists for `id` once `ok` holds for it.
async fn wait_for_entry(
    api: &mut ResourceServiceClient<tonic::transport::Channel>,
    id: &str,
    ok: impl Fn(&pb::ProviderEntry) -> bool,
) -> pb::ProviderEntry {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed = api
            .list_providers(pb::ListProvidersRequest {})
            .await
            .unwrap()
            .into_inner();
        let entry = listed.providers.into_iter().find(|e| e.id == id);
        match entry {
            Some(e) if ok(&e) => return e,
            other => assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting on {id}: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
