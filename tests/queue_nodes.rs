//! The pending queue across real nodes on 127.0.0.1 with in-memory
//! providers: a deploy that does not fit waits at its home with a reason,
//! runs when capacity frees on another node (heard through gossip), many
//! homes race for the same capacity without over-commit, and a request no
//! provider could hold is refused unless it waits for a bigger node.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{start_with, wait_until};
use iarnet::lifecycle::priority::{Priority, PriorityClass};
use iarnet::node::NodeHandle;
use iarnet::placement::manager::PlaceOptions;
use iarnet::proto::resource as pb;
use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::validate::deployment_id;
use iarnet::resource::{
    DeploySpec, DeployState, Deployment, LogOptions, LogStream, ProgressSink, Provider,
    ProviderDescriptor, ResourceError, Resources,
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

fn cpus(n: u64) -> Resources {
    Resources {
        cpu_millis: n * 1000,
        memory_bytes: 64 << 30,
        gpus: 0,
        storage_bytes: 0,
    }
}

fn spec(request_id: &str, cpu: u64) -> DeploySpec {
    DeploySpec {
        request_id: request_id.into(),
        image: "iarnet-test/busybox:1".into(),
        resources: Resources {
            cpu_millis: cpu * 1000,
            memory_bytes: 16 << 20,
            gpus: 0,
            storage_bytes: 0,
        },
        ..Default::default()
    }
}

fn pb_spec(request_id: &str, cpu: &str) -> pb::DeploySpec {
    pb::DeploySpec {
        request_id: request_id.into(),
        image: "iarnet-test/busybox:1".into(),
        cpu: cpu.into(),
        memory: "16Mi".into(),
        ..Default::default()
    }
}

/// The memory twin, counting the deploys it accepted per request id.
struct Counted {
    inner: MemoryProvider,
    created: Mutex<HashMap<String, u32>>,
}

#[async_trait::async_trait]
impl Provider for Counted {
    fn id(&self) -> &str {
        self.inner.id()
    }
    async fn describe(&self) -> Result<ProviderDescriptor, ResourceError> {
        self.inner.describe().await
    }
    async fn deploy(&self, s: &DeploySpec, p: ProgressSink) -> Result<Deployment, ResourceError> {
        let fresh = self
            .inner
            .list()
            .await?
            .iter()
            .all(|d| d.request_id != s.request_id);
        let d = self.inner.deploy(s, p).await?;
        if fresh {
            *self
                .created
                .lock()
                .unwrap()
                .entry(s.request_id.clone())
                .or_default() += 1;
        }
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

async fn sees_free(node: &NodeHandle, provider: &str, cpu_millis: u64) {
    wait_until("the provider's capacity to be seen", WAIT, || {
        let c = node.manager().candidates();
        match c.iter().find(|c| c.id == provider) {
            Some(c) if c.capacity.available().cpu_millis >= cpu_millis => Ok(()),
            Some(c) => Err(format!("{} free", c.capacity.available())),
            None => Err(format!("{} does not see {provider}", node.id())),
        }
    })
    .await;
}

async fn client(node: &NodeHandle) -> ResourceServiceClient<tonic::transport::Channel> {
    ResourceServiceClient::connect(format!("http://{}", node.local_addr()))
        .await
        .unwrap()
}

async fn deploy(
    api: &mut ResourceServiceClient<tonic::transport::Channel>,
    spec: pb::DeploySpec,
) -> Result<(pb::Placement, pb::Deployment), tonic::Status> {
    use futures::StreamExt;
    let mut stream = api.deploy(spec).await?.into_inner();
    let (mut placement, mut deployment) = (None, None);
    while let Some(ev) = stream.next().await {
        match ev?.event {
            Some(pb::deploy_event::Event::Placement(p)) => placement = Some(p),
            Some(pb::deploy_event::Event::Deployment(d)) => deployment = Some(d),
            _ => {}
        }
    }
    Ok((placement.unwrap(), deployment.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queued_deploy_runs_when_another_node_frees_capacity() {
    let provider = Arc::new(MemoryProvider::new("pb", cpus(2), BTreeMap::new()));
    let b = start_with("qb", &[], vec![provider.clone() as Arc<dyn Provider>], true).await;
    let a = start_with("qa", &[b.advertise_addr()], Vec::new(), true).await;
    sees_free(&a, "pb", 2000).await;

    // B fills its own provider; A's deploy of the same size then waits.
    b.manager()
        .deploy(
            spec("filler", 2),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    wait_until("A to see pb full", WAIT, || {
        let c = a.manager().candidates();
        match c.iter().find(|c| c.id == "pb") {
            Some(c) if c.capacity.available().cpu_millis == 0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let mut api = client(&a).await;
    let (placement, d) = deploy(&mut api, pb_spec("waiter", "2")).await.unwrap();
    assert_eq!(d.state, "queued");
    assert!(placement.provider_id.is_empty());
    assert_eq!(
        d.reason,
        "0/1 providers can run it now: 1 insufficient cpu (needs 2, most free 0); position 1 of 1 in the queue"
    );
    assert!(
        placement.reason.starts_with("queued: 0/1 providers"),
        "{placement:?}"
    );
    // The queue lists it with the same reason.
    let queue = api
        .list_queue(pb::ListQueueRequest {})
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(queue.len(), 1);
    assert_eq!(
        (queue[0].position, queue[0].priority.as_str()),
        (1, "interactive")
    );
    assert!(queue[0].reason.contains("insufficient cpu"), "{queue:?}");

    // Stop on B: A hears the freed capacity through gossip and places it.
    let rounds_before = a.stats().rounds;
    let started = std::time::Instant::now();
    b.manager().stop(&deployment_id("filler")).await.unwrap();
    wait_until("the queued deploy to run", WAIT, || {
        let on_b: Vec<String> = futures::executor::block_on(provider.list())
            .unwrap()
            .into_iter()
            .map(|d| d.request_id)
            .collect();
        if on_b == ["waiter"] {
            Ok(())
        } else {
            Err(format!("pb holds {on_b:?}"))
        }
    })
    .await;
    let rounds = a.stats().rounds - rounds_before;
    println!(
        "unblock: {rounds} gossip rounds of the home ({:?}, interval {:?})",
        started.elapsed(),
        a.config().gossip.interval
    );
    let got = api
        .get_deployment(pb::GetDeploymentRequest {
            id: deployment_id("waiter"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, "running");
    assert!(api
        .list_queue(pb::ListQueueRequest {})
        .await
        .unwrap()
        .into_inner()
        .entries
        .is_empty());
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("iarnet_queue_unblocked_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_homes_racing_for_ten_cpus_never_overcommit_and_none_runs_twice() {
    let provider = Arc::new(Counted {
        inner: MemoryProvider::new("p10", cpus(10), BTreeMap::new()),
        created: Mutex::default(),
    });
    let owner = start_with(
        "race-o",
        &[],
        vec![provider.clone() as Arc<dyn Provider>],
        true,
    )
    .await;
    let seeds = vec![owner.advertise_addr()];
    let mut homes = Vec::new();
    for i in 0..4 {
        homes.push(start_with(&format!("race-h{i}"), &seeds, Vec::new(), true).await);
    }
    for h in &homes {
        sees_free(h, "p10", 10_000).await;
    }
    // The owner takes all ten CPUs first.
    for i in 0..10 {
        owner
            .manager()
            .deploy(
                spec(&format!("fill-{i}"), 1),
                PlaceOptions::default(),
                ProgressSink::none(),
            )
            .await
            .unwrap();
    }
    for h in &homes {
        sees_free(h, "p10", 0).await;
        wait_until("the owner's provider to look full", WAIT, || {
            let c = h.manager().candidates();
            match c.iter().find(|c| c.id == "p10") {
                Some(c) if c.capacity.available().cpu_millis == 0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let provider = provider.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut samples = 0u64;
            while !done.load(Ordering::Relaxed) {
                let c = provider.describe().await.unwrap().capacity;
                assert!(c.total.fits(&c.reserved), "over-committed: {c:?}");
                samples += 1;
                tokio::task::yield_now().await;
            }
            samples
        })
    };

    // 4 homes × 25 one-CPU requests; every fifth may wait only a moment.
    let mut all = Vec::new();
    for (h, home) in homes.iter().enumerate() {
        for i in 0..25 {
            let req = format!("race-{h}-{i:02}");
            let opts = PlaceOptions {
                priority: Priority {
                    class: if i % 2 == 0 {
                        PriorityClass::Interactive
                    } else {
                        PriorityClass::Batch
                    },
                    value: 0,
                },
                queue_timeout: if i % 5 == 4 {
                    Duration::from_millis(300)
                } else {
                    Duration::from_secs(120)
                },
                ..Default::default()
            };
            let placed = home
                .manager()
                .deploy(spec(&req, 1), opts, ProgressSink::none())
                .await
                .unwrap();
            assert!(matches!(placed.deployment.state(), DeployState::Queued(_)));
            all.push((h, req));
        }
    }

    // Capacity frees over time: the owner's fillers first, then whatever
    // ran is stopped by its home once seen running.
    for i in 0..10 {
        owner
            .manager()
            .stop(&deployment_id(&format!("fill-{i}")))
            .await
            .unwrap();
    }
    let mut finished: HashMap<String, DeployState> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while finished.len() < all.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} finished: {finished:?}",
            finished.len(),
            all.len()
        );
        for (h, req) in &all {
            if finished.contains_key(req) {
                continue;
            }
            let m = homes[*h].manager();
            let (d, _) = m.status(&deployment_id(req)).await.unwrap();
            match d.state() {
                DeployState::Running => {
                    let (d, _) = m.stop(&deployment_id(req)).await.unwrap();
                    finished.insert(req.clone(), d.state());
                }
                DeployState::Expired(why) => {
                    assert!(
                        why.starts_with("waited its queue_timeout of 300ms"),
                        "{why}"
                    );
                    finished.insert(req.clone(), DeployState::Expired(why));
                }
                DeployState::Queued(_) => {}
                other => panic!("{req} is {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::Relaxed);
    assert!(watcher.await.unwrap() > 0);

    let created = provider.created.lock().unwrap().clone();
    let ran = finished
        .values()
        .filter(|s| **s == DeployState::Stopped)
        .count();
    let expired = finished.len() - ran;
    println!("race: {ran} ran, {expired} expired, {} fillers", 10);
    for (_, req) in &all {
        let n = created.get(req).copied().unwrap_or(0);
        match &finished[req] {
            DeployState::Stopped => assert_eq!(n, 1, "{req} ran {n} times"),
            _ => assert_eq!(n, 0, "{req} expired yet ran {n} times"),
        }
    }
    // Everything that waited the long timeout ran.
    assert!(ran >= 80, "{ran} ran");
    for h in &homes {
        assert!(h.manager().queue().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn never_fits_is_refused_and_waiting_for_capacity_runs_once_a_bigger_node_joins() {
    let small = Arc::new(MemoryProvider::new("small", cpus(2), BTreeMap::new()));
    let a = start_with("nf-a", &[], vec![small as Arc<dyn Provider>], true).await;
    let mut api = client(&a).await;
    let err = deploy(&mut api, pb_spec("huge", "8")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("too small for cpu (needs 8, largest 2)")
            && err.message().contains("wait_for_capacity"),
        "{err:?}"
    );
    // Nothing was recorded or queued.
    assert!(api
        .list_queue(pb::ListQueueRequest {})
        .await
        .unwrap()
        .into_inner()
        .entries
        .is_empty());
    assert_eq!(
        api.get_deployment(pb::GetDeploymentRequest {
            id: deployment_id("huge")
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
    // Bad input names its field.
    let err = deploy(
        &mut api,
        pb::DeploySpec {
            priority: "urgent".into(),
            ..pb_spec("bad", "1")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("priority") && err.message().contains("interactive, batch"),
        "{err:?}"
    );
    let err = deploy(
        &mut api,
        pb::DeploySpec {
            queue_timeout: "-5m".into(),
            ..pb_spec("bad", "1")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("queue_timeout"), "{err:?}");

    let waits = pb::DeploySpec {
        wait_for_capacity: true,
        priority: "batch".into(),
        ..pb_spec("huge", "8")
    };
    let (_, d) = deploy(&mut api, waits).await.unwrap();
    assert_eq!(d.state, "queued");
    assert!(d.reason.contains("too small for cpu"), "{d:?}");

    let big = Arc::new(MemoryProvider::new("big", cpus(16), BTreeMap::new()));
    let b = start_with(
        "nf-b",
        &[a.advertise_addr()],
        vec![big.clone() as Arc<dyn Provider>],
        true,
    )
    .await;
    wait_until("the huge deploy to run on the new node", WAIT, || {
        let on_big = futures::executor::block_on(big.list()).unwrap();
        if on_big.iter().any(|d| d.request_id == "huge") {
            Ok(())
        } else {
            Err(format!("big holds {on_big:?}"))
        }
    })
    .await;
    let got = api
        .get_deployment(pb::GetDeploymentRequest {
            id: deployment_id("huge"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.owner_id.as_str(), got.state.as_str()),
        (b.id().as_str(), "running")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_that_may_preempt_evicts_one_victim_on_another_node_which_waits_at_its_home() {
    let provider = Arc::new(MemoryProvider::new("pp", cpus(2), BTreeMap::new()));
    let b = start_with(
        "pre-b",
        &[],
        vec![provider.clone() as Arc<dyn Provider>],
        true,
    )
    .await;
    let a = start_with("pre-a", &[b.advertise_addr()], Vec::new(), true).await;
    sees_free(&a, "pp", 2000).await;
    let mut api = client(&a).await;
    for (req, value) in [("low-0", -5), ("low-1", 0)] {
        let (_, d) = deploy(
            &mut api,
            pb::DeploySpec {
                priority: "batch".into(),
                priority_value: value,
                preemptible: true,
                ..pb_spec(req, "1")
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (d.state.as_str(), d.preemptible),
            ("running", true),
            "{d:?}"
        );
        assert_eq!(d.priority, format!("batch:{value}"));
    }
    wait_until("A to see pp full", WAIT, || {
        match a.manager().candidates().iter().find(|c| c.id == "pp") {
            Some(c) if c.capacity.available().cpu_millis == 0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // A bad policy is refused, naming the field, and changes nothing.
    let bad = deploy(
        &mut api,
        pb::DeploySpec {
            preemption_policy: "always".into(),
            ..pb_spec("urgent", "1")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("preemption_policy"), "{bad:?}");

    let (placement, d) = deploy(
        &mut api,
        pb::DeploySpec {
            preemption_policy: "lower-priority".into(),
            ..pb_spec("urgent", "1")
        },
    )
    .await
    .unwrap();
    assert_eq!(d.state, "running", "{d:?}");
    assert!(placement.reason.contains("evicting"), "{placement:?}");
    // Only the lowest went; it waits at its home, saying why.
    let by = deployment_id("urgent");
    let reader = api.clone();
    let status = |id: &'static str| {
        let mut api = reader.clone();
        async move {
            api.get_deployment(pb::GetDeploymentRequest {
                id: deployment_id(id),
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    for _ in 0..600 {
        if status("low-0").await.state == "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let victim = status("low-0").await;
    assert_eq!(victim.state, "queued", "{victim:?}");
    assert!(
        victim.reason.starts_with(&format!("preempted by {by}")),
        "{victim:?}"
    );
    assert_eq!(victim.attempt, 2);
    assert_eq!(status("low-1").await.state, "running");
    let on_b: Vec<String> = provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|d| !d.state().is_final())
        .map(|d| d.request_id)
        .collect();
    assert_eq!(on_b.len(), 2, "{on_b:?}");
    assert!(b.metrics().await.contains("iarnet_preemptions_total 1"));
    assert!(a
        .metrics()
        .await
        .contains("iarnet_preempted_requeued_total 1"));

    // Room returns: the victim runs again, as its next attempt.
    api.stop(pb::StopRequest { id: by.clone() }).await.unwrap();
    for _ in 0..600 {
        if status("low-0").await.state == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back = status("low-0").await;
    assert_eq!(
        (back.state.as_str(), back.attempt),
        ("running", 2),
        "{back:?}"
    );
    assert_eq!(back.attempts[0].ended, format!("preempted by {by}"));
}
