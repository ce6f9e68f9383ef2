//! Preemption against the in-memory provider twin: a request that may
//! preempt evicts exactly enough lower-priority preemptible work, the
//! victims wait in their home's queue with the reason and come back when
//! room returns; nothing it does not outrank, nor anything not
//! preemptible, is touched.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::super::queue::tests::until;
use crate::lifecycle::priority::{Priority, PriorityClass};
use crate::placement::manager::{Manager, NoMesh, PlaceOptions};
use crate::placement::Strategy;
use crate::resource::memory::MemoryProvider;
use crate::resource::validate::deployment_id;
use crate::resource::{DeploySpec, DeployState, PreemptionPolicy, ProgressSink, Resources, Tier};
use crate::store::{MemoryStore, Store};

fn cpus(n: u64) -> Resources {
    Resources {
        cpu_millis: n * 1000,
        memory_bytes: 8 << 30,
        gpus: 0,
        storage_bytes: 0,
    }
}

fn spec(req: &str, cpu: u64, preemptible: bool) -> DeploySpec {
    DeploySpec {
        request_id: req.into(),
        image: "busybox".into(),
        resources: Resources {
            cpu_millis: cpu * 1000,
            memory_bytes: 16 << 20,
            gpus: 0,
            storage_bytes: 0,
        },
        preemptible,
        ..Default::default()
    }
}

fn opts(class: PriorityClass, value: i64, preemption: PreemptionPolicy) -> PlaceOptions {
    PlaceOptions {
        priority: Priority { class, value },
        preemption,
        queue_timeout: Duration::from_secs(600),
        ..Default::default()
    }
}

async fn manager(total_cpus: u64) -> (Arc<Manager>, CancellationToken) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let m = Arc::new(
        Manager::open("home", Arc::new(NoMesh), Strategy::Spread, false, 7, store).unwrap(),
    );
    let p = Arc::new(MemoryProvider::new(
        "p",
        cpus(total_cpus),
        Default::default(),
    ));
    m.add_provider(p, Tier::Internal).await.unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(
        m.clone()
            .run_preemptions(Duration::from_millis(20), cancel.clone()),
    );
    tokio::spawn(
        m.clone()
            .run_queue(Duration::from_millis(20), cancel.clone()),
    );
    (m, cancel)
}

async fn state(m: &Manager, req: &str) -> DeployState {
    m.status(&deployment_id(req)).await.unwrap().0.state()
}

/// Four 1-CPU batch deployments fill the provider: `low-0`, `low-1` at
/// value -5, `mid-0`, `mid-1` at 0.
async fn filled(m: &Manager) {
    for (req, value) in [("low-0", -5), ("mid-0", 0), ("low-1", -5), ("mid-1", 0)] {
        let placed = m
            .deploy(
                spec(req, 1, true),
                opts(PriorityClass::Batch, value, PreemptionPolicy::Never),
                ProgressSink::none(),
            )
            .await
            .unwrap();
        assert_eq!(placed.deployment.state(), DeployState::Running, "{req}");
    }
}

#[tokio::test]
async fn a_higher_priority_request_evicts_exactly_enough_and_the_victims_wait_again() {
    let (m, cancel) = manager(4).await;
    filled(&m).await;
    let placed = m
        .deploy(
            spec("urgent", 2, false),
            opts(
                PriorityClass::Interactive,
                0,
                PreemptionPolicy::LowerPriority,
            ),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    assert_eq!(placed.deployment.state(), DeployState::Running);
    assert!(
        placed.placement.reason.contains("evicting lower-priority"),
        "{}",
        placed.placement.reason
    );
    // The two lowest went, and only they.
    for req in ["mid-0", "mid-1"] {
        assert_eq!(state(&m, req).await, DeployState::Running, "{req}");
    }
    let by = deployment_id("urgent");
    for req in ["low-0", "low-1"] {
        until(&format!("{req} queued again"), || async {
            matches!(state(&m, req).await, DeployState::Queued(why) if why.starts_with(&format!("preempted by {by}")))
        })
        .await;
        let (d, _) = m.status(&deployment_id(req)).await.unwrap();
        assert_eq!(d.attempt, 2, "{req}: the next placement is a new attempt");
        assert_eq!(d.attempts[0].ended, format!("preempted by {by}"));
    }
    assert_eq!(m.failover_metrics().preemptions.get(), 2);
    assert_eq!(m.failover_metrics().preempted_requeued.get(), 2);
    // Room returns: the victims run again, at their next attempt.
    m.stop(&by).await.unwrap();
    for req in ["low-0", "low-1"] {
        until(&format!("{req} back"), || async {
            state(&m, req).await == DeployState::Running
        })
        .await;
    }
    cancel.cancel();
}

#[tokio::test]
async fn nothing_is_evicted_without_the_policy_a_margin_or_a_preemptible_victim() {
    let (m, cancel) = manager(4).await;
    filled(&m).await;
    let queued = |req: &'static str, o: PlaceOptions, preemptible: bool| {
        let m = m.clone();
        async move {
            let placed = m
                .deploy(spec(req, 1, preemptible), o, ProgressSink::none())
                .await
                .unwrap();
            assert!(
                matches!(placed.deployment.state(), DeployState::Queued(_)),
                "{req}: {:?}",
                placed.deployment.state()
            );
        }
    };
    // Not asked to preempt.
    queued(
        "polite",
        opts(PriorityClass::Interactive, 0, PreemptionPolicy::Never),
        false,
    )
    .await;
    // batch+4 is not 10 points above batch-5.
    queued(
        "close",
        opts(PriorityClass::Batch, 4, PreemptionPolicy::LowerPriority),
        false,
    )
    .await;
    for req in ["low-0", "low-1", "mid-0", "mid-1"] {
        assert_eq!(state(&m, req).await, DeployState::Running, "{req}");
    }
    assert_eq!(m.failover_metrics().preemptions.get(), 0);
    cancel.cancel();

    // Work that is not preemptible stays, whatever asks.
    let (m, cancel) = manager(1).await;
    m.deploy(
        spec("pinned", 1, false),
        opts(PriorityClass::Batch, -100, PreemptionPolicy::Never),
        ProgressSink::none(),
    )
    .await
    .unwrap();
    let placed = m
        .deploy(
            spec("urgent", 1, false),
            opts(
                PriorityClass::Interactive,
                100,
                PreemptionPolicy::LowerPriority,
            ),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    assert!(matches!(placed.deployment.state(), DeployState::Queued(_)));
    assert_eq!(state(&m, "pinned").await, DeployState::Running);
    cancel.cancel();
}
