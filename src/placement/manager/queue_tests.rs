//! The home's queue against the in-memory provider twin and store: order
//! under contention, expiry, stop, restart, never-fits and waiting for a
//! bigger provider. Passes are driven by hand where order matters, by the
//! worker loop where timing does; waits are on conditions.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Seen;
use crate::lifecycle::priority::{Priority, PriorityClass};
use crate::placement::manager::{Manager, NoMesh, PlaceOptions};
use crate::placement::Strategy;
use crate::resource::memory::MemoryProvider;
use crate::resource::validate::deployment_id;
use crate::resource::{
    DeploySpec, DeployState, ProgressSink, Provider, ResourceError, Resources, Tier,
};
use crate::store::{MemoryStore, Store};

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
            cpu_millis: cpu * 1000,
            memory_bytes: 16 << 20,
            gpus: 0,
            storage_bytes: 0,
        },
        ..Default::default()
    }
}

fn waits(class: PriorityClass, value: i64) -> PlaceOptions {
    PlaceOptions {
        priority: Priority { class, value },
        queue_timeout: Duration::from_secs(600),
        ..Default::default()
    }
}

async fn manager(store: Arc<dyn Store>, total_cpus: u64) -> (Manager, Arc<MemoryProvider>) {
    let m = Manager::open("home", Arc::new(NoMesh), Strategy::Spread, false, 7, store).unwrap();
    let p = Arc::new(MemoryProvider::new(
        "p",
        cpus(total_cpus),
        Default::default(),
    ));
    m.add_provider(p.clone(), Tier::Internal).await.unwrap();
    (m, p)
}

fn queued_ids(m: &Manager) -> Vec<String> {
    m.queue()
        .into_iter()
        .map(|(e, _)| e.record.spec.request_id)
        .collect()
}

async fn state(m: &Manager, req: &str) -> DeployState {
    m.status(&deployment_id(req)).await.unwrap().0.state()
}

/// Waits for `cond`, polling; fails after 10 s.
pub(crate) async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn thirty_mixed_priorities_start_in_priority_order_fifo_within_one() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (m, _p) = manager(store, 1).await;
    m.deploy(
        spec("blocker", 1),
        waits(PriorityClass::Batch, 0),
        ProgressSink::none(),
    )
    .await
    .unwrap();
    // 30 arrivals: classes and values interleaved, so arrival order is not
    // queue order.
    let mut expected = Vec::new();
    for i in 0..30u64 {
        let class = if i % 3 == 0 {
            PriorityClass::Interactive
        } else {
            PriorityClass::Batch
        };
        let value = (i % 2) as i64 * 10;
        let req = format!("q{i:02}");
        let placed = m
            .deploy(spec(&req, 1), waits(class, value), ProgressSink::none())
            .await
            .unwrap();
        assert!(matches!(placed.deployment.state(), DeployState::Queued(_)));
        assert!(placed.placement.reason.starts_with("queued: "));
        expected.push((std::cmp::Reverse(Priority { class, value }), i, req));
    }
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, _, r)| r).collect();
    assert_eq!(queued_ids(&m), expected, "the queue lists them in order");

    // Free the one slot, one deployment at a time: the head runs each time.
    let mut seen = Seen::default();
    let mut started = Vec::new();
    let mut running = "blocker".to_string();
    for _ in 0..30 {
        m.stop(&deployment_id(&running)).await.unwrap();
        let before = queued_ids(&m);
        assert_eq!(m.pass(&mut seen).await, 1, "one slot, one start");
        let after = queued_ids(&m);
        let gone: Vec<&String> = before.iter().filter(|r| !after.contains(r)).collect();
        assert_eq!(gone.len(), 1);
        running = gone[0].clone();
        assert_eq!(state(&m, &running).await, DeployState::Running);
        started.push(running.clone());
        // Nothing is free now: another pass starts nothing.
        assert_eq!(m.pass(&mut seen).await, 0);
    }
    assert_eq!(started, expected);
    assert_eq!(m.queue_metrics().unblocked.get(), 30);
}

#[tokio::test]
async fn a_queued_deploy_says_why_per_dimension_and_expires_with_that_reason() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (m, _p) = manager(store.clone(), 2).await;
    let m = Arc::new(m);
    m.deploy(
        spec("big", 2),
        waits(PriorityClass::Batch, 0),
        ProgressSink::none(),
    )
    .await
    .unwrap();
    let opts = PlaceOptions {
        queue_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let placed = m
        .deploy(spec("late", 1), opts, ProgressSink::none())
        .await
        .unwrap();
    let DeployState::Queued(reason) = placed.deployment.state() else {
        panic!("not queued: {:?}", placed.deployment.state());
    };
    assert_eq!(
        reason,
        "0/1 providers can run it now: 1 insufficient cpu (needs 1, most free 0); position 1 of 1 in the queue"
    );
    assert_eq!(store.queued().unwrap().len(), 1, "the entry is durable");

    let cancel = CancellationToken::new();
    let worker = tokio::spawn(
        m.clone()
            .run_queue(Duration::from_millis(10), cancel.clone()),
    );
    until("the deploy expires", || async {
        matches!(state(&m, "late").await, DeployState::Expired(_))
    })
    .await;
    let DeployState::Expired(why) = state(&m, "late").await else {
        unreachable!()
    };
    assert!(
        why.starts_with("waited its queue_timeout of 200ms"),
        "{why}"
    );
    assert!(why.contains("insufficient cpu"), "{why}");
    assert!(m.queue().is_empty());
    assert!(store.queued().unwrap().is_empty());
    assert_eq!(m.queue_metrics().timeouts.get(), 1);
    // Freeing capacity now starts nothing: it gave up.
    m.stop(&deployment_id("big")).await.unwrap();
    assert!(matches!(state(&m, "late").await, DeployState::Expired(_)));
    // The same request again is a new deploy, and it fits now.
    let again = m
        .deploy(
            spec("late", 1),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    assert_eq!(again.deployment.state(), DeployState::Running);
    cancel.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_queued_deploy_can_be_inspected_retried_and_stopped() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (m, p) = manager(store.clone(), 1).await;
    m.deploy(
        spec("run", 1),
        waits(PriorityClass::Batch, 0),
        ProgressSink::none(),
    )
    .await
    .unwrap();
    for req in ["a", "b"] {
        m.deploy(
            spec(req, 1),
            waits(PriorityClass::Batch, 0),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    }
    // A retry of a queued request answers the same entry, not a second one.
    let again = m
        .deploy(
            spec("b", 1),
            waits(PriorityClass::Batch, 0),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    assert!(
        matches!(again.deployment.state(), DeployState::Queued(ref r) if r.ends_with("position 2 of 2 in the queue"))
    );
    assert_eq!(queued_ids(&m), ["a", "b"]);
    // Status and list show it with its reason; it holds no provider.
    let (d, holder) = m.status(&deployment_id("a")).await.unwrap();
    assert_eq!(holder, "home");
    assert!(d.provider_id.is_empty());
    assert!(matches!(d.state(), DeployState::Queued(ref r) if r.contains("position 1 of 2")));
    assert_eq!(m.list().await.len(), 3);
    // Logs of something that never started: a clear precondition.
    let err = m
        .logs(&deployment_id("a"), Default::default())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ResourceError::Precondition(_)), "{err}");

    let (d, _) = m.stop(&deployment_id("a")).await.unwrap();
    assert_eq!(d.state(), DeployState::Stopped);
    assert_eq!(queued_ids(&m), ["b"]);
    assert_eq!(store.queued().unwrap().len(), 1);
    // Stopping it again answers the record.
    assert_eq!(
        m.stop(&deployment_id("a")).await.unwrap().0.state(),
        DeployState::Stopped
    );
    // The slot frees: only b runs, a stays stopped.
    m.stop(&deployment_id("run")).await.unwrap();
    assert_eq!(m.pass(&mut Seen::default()).await, 1);
    assert_eq!(state(&m, "b").await, DeployState::Running);
    assert_eq!(state(&m, "a").await, DeployState::Stopped);
    let on_provider: Vec<String> = p
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.request_id)
        .collect();
    assert_eq!(on_provider, ["b"], "a never reached the provider");
    assert!(store.queued().unwrap().is_empty());
}

#[tokio::test]
async fn a_restarted_home_keeps_its_queue_in_order() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (m, _p) = manager(store.clone(), 1).await;
    m.deploy(
        spec("run", 1),
        waits(PriorityClass::Batch, 0),
        ProgressSink::none(),
    )
    .await
    .unwrap();
    for (req, class) in [
        ("b1", PriorityClass::Batch),
        ("i1", PriorityClass::Interactive),
        ("b2", PriorityClass::Batch),
        ("i2", PriorityClass::Interactive),
    ] {
        m.deploy(spec(req, 1), waits(class, 0), ProgressSink::none())
            .await
            .unwrap();
    }
    let before = queued_ids(&m);
    assert_eq!(before, ["i1", "i2", "b1", "b2"]);
    drop(m);

    // The provider comes back empty (a restart of the twin), so the queue
    // runs once it is attached: in the order it had.
    let (m, _p) = manager(store.clone(), 1).await;
    assert_eq!(queued_ids(&m), before);
    // A newcomer of the same class goes behind the restored ones.
    m.deploy(
        spec("i3", 1),
        waits(PriorityClass::Interactive, 0),
        ProgressSink::none(),
    )
    .await
    .ok();
    let order = queued_ids(&m);
    assert_eq!(&order[..2], ["i1", "i2"]);
    assert_eq!(order.last().map(String::as_str), Some("b2"));
    assert!(order.iter().position(|r| r == "i3") < order.iter().position(|r| r == "b1"));
}

#[tokio::test]
async fn never_fits_is_refused_unless_it_waits_for_a_bigger_provider() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (m, _p) = manager(store.clone(), 4).await;
    let m = Arc::new(m);
    let err = m
        .deploy(
            spec("huge", 16),
            waits(PriorityClass::Batch, 0),
            ProgressSink::none(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ResourceError::NeverFits(_)), "{err}");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.to_string()
            .contains("too small for cpu (needs 16, largest 4)"),
        "{err}"
    );
    assert!(m.queue().is_empty() && store.queued().unwrap().is_empty());
    assert!(
        m.status(&deployment_id("huge")).await.is_err(),
        "nothing recorded"
    );

    // Fail-fast (queue_timeout 0) keeps today's refusal for what fits later.
    m.deploy(
        spec("fill", 4),
        waits(PriorityClass::Batch, 0),
        ProgressSink::none(),
    )
    .await
    .unwrap();
    let fast = PlaceOptions::default();
    let err = m
        .deploy(spec("now-or-never", 1), fast, ProgressSink::none())
        .await
        .unwrap_err();
    assert!(matches!(err, ResourceError::NoPlacement(_)), "{err}");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);

    let cancel = CancellationToken::new();
    let worker = tokio::spawn(
        m.clone()
            .run_queue(Duration::from_millis(10), cancel.clone()),
    );
    let opts = PlaceOptions {
        wait_for_capacity: true,
        ..waits(PriorityClass::Batch, 0)
    };
    let placed = m
        .deploy(spec("huge", 16), opts, ProgressSink::none())
        .await
        .unwrap();
    assert!(
        matches!(placed.deployment.state(), DeployState::Queued(ref r) if r.contains("too small for cpu"))
    );
    // A bigger provider joins: the worker places it there.
    let big = Arc::new(MemoryProvider::new("big", cpus(32), Default::default()));
    m.add_provider(big.clone(), Tier::Internal).await.unwrap();
    until("the huge deploy runs", || async {
        state(&m, "huge").await == DeployState::Running
    })
    .await;
    assert_eq!(
        m.status(&deployment_id("huge"))
            .await
            .unwrap()
            .0
            .provider_id,
        "big"
    );
    assert_eq!(big.list().await.unwrap().len(), 1);
    cancel.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_newcomer_leaves_to_the_line_what_it_waits_for_and_only_that() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (m, _p) = manager(store, 2).await;
    // A waiter no provider here could ever hold claims nothing.
    let forever = PlaceOptions {
        wait_for_capacity: true,
        ..waits(PriorityClass::Interactive, 0)
    };
    m.deploy(spec("huge", 64), forever, ProgressSink::none())
        .await
        .unwrap();
    let placed = m
        .deploy(
            spec("small", 1),
            waits(PriorityClass::Batch, 0),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    assert_eq!(placed.deployment.state(), DeployState::Running);

    // One that fits once the running one stops holds the provider: a
    // newcomer that would fit now goes behind it, with the reason.
    m.deploy(
        spec("two", 2),
        waits(PriorityClass::Interactive, 0),
        ProgressSink::none(),
    )
    .await
    .unwrap();
    let placed = m
        .deploy(
            spec("one", 1),
            waits(PriorityClass::Interactive, 0),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    let DeployState::Queued(reason) = placed.deployment.state() else {
        panic!("{:?}", placed.deployment.state());
    };
    assert!(
        reason.contains(
            "1/1 providers can run it now; 2 queued ahead of it go first; position 3 of 3"
        ),
        "{reason}"
    );
    // The slot frees: "two" goes first, then "one".
    m.stop(&deployment_id("small")).await.unwrap();
    let mut seen = Seen::default();
    assert_eq!(m.pass(&mut seen).await, 1);
    assert_eq!(state(&m, "two").await, DeployState::Running);
    assert!(matches!(state(&m, "one").await, DeployState::Queued(_)));
    m.stop(&deployment_id("two")).await.unwrap();
    assert_eq!(m.pass(&mut seen).await, 1);
    assert_eq!(state(&m, "one").await, DeployState::Running);
    // A fail-fast deploy does not wait, so it does not queue behind anyone.
    let err = m
        .deploy(
            spec("fast", 2),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ResourceError::NoPlacement(_)), "{err}");
}

#[tokio::test]
async fn a_provider_at_its_max_deployments_makes_the_next_wait_with_that_reason() {
    let m = Manager::open(
        "home",
        Arc::new(NoMesh),
        Strategy::Spread,
        false,
        7,
        Arc::new(MemoryStore::new()),
    )
    .unwrap();
    let p = Arc::new(
        MemoryProvider::new("device", cpus(8), Default::default()).with_max_deployments(Some(1)),
    );
    m.add_provider(p.clone(), Tier::Internal).await.unwrap();
    let opts = || waits(PriorityClass::Interactive, 0);
    m.deploy(spec("first", 1), opts(), ProgressSink::none())
        .await
        .unwrap();
    // Plenty of CPU is free, but the one slot is taken.
    let second = m
        .deploy(spec("second", 1), opts(), ProgressSink::none())
        .await
        .unwrap();
    let reason = second.deployment.state().reason().to_string();
    assert!(matches!(second.deployment.state(), DeployState::Queued(_)));
    assert!(
        reason.starts_with("0/1 providers can run it now: 1 already running their max_deployments"),
        "{reason}"
    );
    // Never-fits does not apply: the slot frees when the first ends.
    let mut seen = Seen::default();
    assert_eq!(m.pass(&mut seen).await, 0);
    m.stop(&deployment_id("first")).await.unwrap();
    assert_eq!(m.pass(&mut seen).await, 1);
    assert_eq!(state(&m, "second").await, DeployState::Running);
    assert_eq!(p.describe().await.unwrap().capacity.deployments, 1);
}
