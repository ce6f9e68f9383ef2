//! Durability of the manager's records and start-up reconcile, against the
//! in-memory provider twin and the in-memory store.

use std::sync::{Arc, Mutex};

use super::{Reconciled, LOST, NOT_CREATED};
use crate::placement::manager::queue::tests::until;
use crate::placement::manager::{Manager, NoMesh, PlaceOptions};
use crate::placement::Strategy;
use crate::resource::memory::MemoryProvider;
use crate::resource::validate::deployment_id;
use crate::resource::{
    DeploySpec, DeployState, Deployment, LogOptions, LogStream, ProgressSink, Provider,
    ProviderDescriptor, ResourceError, Resources, Tier,
};
use crate::store::{DeploymentRecord, MemoryStore, PlacedOn, Store, Stored};

fn total() -> Resources {
    Resources {
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        gpus: 0,
        storage_bytes: 0,
    }
}

fn spec(req: &str) -> DeploySpec {
    DeploySpec {
        request_id: req.into(),
        image: "busybox".into(),
        resources: Resources {
            cpu_millis: 100,
            memory_bytes: 64 << 20,
            gpus: 0,
            storage_bytes: 0,
        },
        ..Default::default()
    }
}

/// The memory provider, checking on every deploy that the manager's
/// intent is already in the store; a stop waits while `gate` is held.
struct Checked {
    inner: MemoryProvider,
    store: Arc<dyn Store>,
    seen: Mutex<Vec<Option<Stored>>>,
    gate: tokio::sync::Mutex<()>,
}

fn checked(store: &Arc<dyn Store>) -> Arc<Checked> {
    Arc::new(Checked {
        inner: MemoryProvider::new("p", total(), Default::default()),
        store: store.clone(),
        seen: Mutex::default(),
        gate: tokio::sync::Mutex::default(),
    })
}

#[async_trait::async_trait]
impl Provider for Checked {
    fn id(&self) -> &str {
        self.inner.id()
    }
    async fn describe(&self) -> Result<ProviderDescriptor, ResourceError> {
        self.inner.describe().await
    }
    async fn deploy(&self, s: &DeploySpec, p: ProgressSink) -> Result<Deployment, ResourceError> {
        let rec = self
            .store
            .deployment(&deployment_id(&s.request_id))
            .unwrap();
        self.seen.lock().unwrap().push(rec.map(|r| r.state()));
        self.inner.deploy(s, p).await
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
        let _open = self.gate.lock().await;
        self.inner.stop(id).await
    }
}

async fn manager(store: Arc<dyn Store>, provider: Arc<dyn Provider>) -> Manager {
    let m = Manager::open("n1", Arc::new(NoMesh), Strategy::Spread, false, 1, store).unwrap();
    m.add_provider(provider, Tier::Internal).await.unwrap();
    m
}

fn record(req: &str, state: Stored) -> DeploymentRecord {
    let mut r = DeploymentRecord {
        id: deployment_id(req),
        request_id: req.into(),
        image: "busybox".into(),
        cpu_millis: 100,
        memory_bytes: 64 << 20,
        gpus_wanted: 0,
        storage_bytes: 0,
        placed_on: PlacedOn {
            provider_id: "p".into(),
            provider_name: "p".into(),
            kind: "memory".into(),
            tier: "internal".into(),
            owner_id: "n1".into(),
            owner_addr: String::new(),
        },
        gpus: vec![],
        history: vec![],
        adopted: false,
        labels: Default::default(),
        attempt: 0,
        attempts: Vec::new(),
        spec: None,
    };
    r.push(Stored::Placing);
    r.push(state);
    r
}

#[tokio::test]
async fn a_deploy_is_recorded_before_the_provider_is_called_and_acknowledged_after() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let p = checked(&store);
    let m = manager(store.clone(), p.clone()).await;
    let placed = m
        .deploy(spec("r1"), PlaceOptions::default(), ProgressSink::none())
        .await
        .unwrap();
    assert_eq!(*p.seen.lock().unwrap(), vec![Some(Stored::Placing)]);
    let rec = store.deployment(&placed.deployment.id).unwrap().unwrap();
    assert_eq!(rec.state(), Stored::Running);
    assert_eq!(rec.request_id, "r1");
    assert_eq!(rec.placed_on.provider_id, "p");

    // Stop: recorded, and answered from the record once the container is gone.
    m.stop("r1").await.unwrap();
    let rec = store.deployment(&placed.deployment.id).unwrap().unwrap();
    let states: Vec<Stored> = rec.history.iter().map(|c| c.state.clone()).collect();
    assert_eq!(
        states[states.len() - 2..],
        [Stored::Stopping, Stored::Stopped]
    );
}

/// A stop's own kill reaches the manager as an exit while the stop still
/// holds the request; noting that exit afterwards must not undo the stop.
#[tokio::test]
async fn an_exit_seen_while_a_stop_runs_does_not_undo_it() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let p = checked(&store);
    let m = Arc::new(manager(store.clone(), p.clone()).await);
    let placed = m
        .deploy(spec("r1"), PlaceOptions::default(), ProgressSink::none())
        .await
        .unwrap();
    let id = placed.deployment.id.clone();
    let gate = p.gate.lock().await;
    let stop = tokio::spawn({
        let m = m.clone();
        async move { m.stop("r1").await }
    });
    until("the stop is recorded", || async {
        store.deployment(&id).unwrap().unwrap().state() == Stored::Stopping
    })
    .await;
    let mut exited = placed.deployment.clone();
    exited.push_state(DeployState::Exited(137));
    let mut note = Box::pin(m.note(&exited));
    assert!(
        futures::poll!(&mut note).is_pending(),
        "the exit waits for the stop"
    );
    drop(gate);
    stop.await.unwrap().unwrap();
    note.await;
    let rec = store.deployment(&id).unwrap().unwrap();
    assert_eq!(rec.state(), Stored::Stopped);
    assert_eq!(
        m.status("r1").await.unwrap().0.state(),
        DeployState::Stopped
    );
}

#[tokio::test]
async fn records_come_back_after_a_restart_and_a_retry_goes_to_the_same_provider() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let provider = Arc::new(MemoryProvider::new("p", total(), Default::default()));
    let first = manager(store.clone(), provider.clone()).await;
    first
        .deploy(spec("r1"), PlaceOptions::default(), ProgressSink::none())
        .await
        .unwrap();
    drop(first);
    // A second provider that would win the ranking (more free CPU).
    let other = Arc::new(MemoryProvider::new(
        "q",
        Resources {
            cpu_millis: 64_000,
            ..total()
        },
        Default::default(),
    ));
    let second = manager(store.clone(), provider.clone()).await;
    second
        .add_provider(other.clone(), Tier::Internal)
        .await
        .unwrap();
    assert_eq!(second.reconcile().await, Reconciled::default());
    let again = second
        .deploy(spec("r1"), PlaceOptions::default(), ProgressSink::none())
        .await
        .unwrap();
    assert_eq!(again.placement.provider_id, "p");
    assert_eq!(provider.list().await.unwrap().len(), 1);
    assert!(
        other.list().await.unwrap().is_empty(),
        "no duplicate elsewhere"
    );
}

#[tokio::test]
async fn reconcile_adopts_resolves_and_marks_what_vanished() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let provider = Arc::new(MemoryProvider::new("p", total(), Default::default()));
    // Containers: one unknown to the store, one whose intent was written.
    provider
        .deploy(&spec("unknown"), ProgressSink::none())
        .await
        .unwrap();
    provider
        .deploy(&spec("made"), ProgressSink::none())
        .await
        .unwrap();
    let mut made = record("made", Stored::Placing);
    made.history.truncate(1);
    store.put_deployment(&made).unwrap();
    // Records whose containers are gone.
    let mut crashed = record("crashed", Stored::Placing);
    crashed.history.truncate(1);
    store.put_deployment(&crashed).unwrap();
    store
        .put_deployment(&record("lost", Stored::Running))
        .unwrap();
    store
        .put_deployment(&record("stopping", Stored::Stopping))
        .unwrap();
    store
        .put_deployment(&record("done", Stored::Stopped))
        .unwrap();

    let m = manager(store.clone(), provider.clone()).await;
    let r = m.reconcile().await;
    let key = |s: &str| deployment_id(s);
    assert_eq!(r.adopted, vec![key("unknown")]);
    let mut missing = vec![key("crashed"), key("lost"), key("stopping")];
    missing.sort();
    assert_eq!(r.resolved_missing, missing);
    assert_eq!(r.updated, vec![key("made")]);

    let state = |s: &str| store.deployment(&key(s)).unwrap().unwrap();
    assert!(state("unknown").adopted);
    assert_eq!(state("unknown").state(), Stored::Running);
    assert_eq!(state("made").state(), Stored::Running);
    assert_eq!(
        state("crashed").state(),
        Stored::Failed {
            reason: NOT_CREATED.into()
        }
    );
    assert_eq!(
        state("lost").state(),
        Stored::Failed {
            reason: LOST.into()
        }
    );
    assert!(
        state("lost")
            .history
            .iter()
            .any(|c| c.state == Stored::Running),
        "history is kept"
    );
    assert_eq!(state("stopping").state(), Stored::Stopped);
    assert_eq!(state("done").state(), Stored::Stopped);

    // Answered from the records, with their final states.
    assert_eq!(
        m.status("done").await.unwrap().0.state(),
        DeployState::Stopped
    );
    assert_eq!(
        m.status("crashed").await.unwrap().0.state(),
        DeployState::Failed(NOT_CREATED.into())
    );
    assert_eq!(m.list().await.len(), 6);
    // A second reconcile changes nothing.
    assert_eq!(m.reconcile().await, Reconciled::default());

    // The client retries the crashed request: made once, on the same provider.
    m.deploy(
        spec("crashed"),
        PlaceOptions::default(),
        ProgressSink::none(),
    )
    .await
    .unwrap();
    m.deploy(
        spec("crashed"),
        PlaceOptions::default(),
        ProgressSink::none(),
    )
    .await
    .unwrap();
    let running: Vec<String> = provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.request_id == "crashed")
        .map(|d| d.id)
        .collect();
    assert_eq!(running, vec![key("crashed")]);
    assert_eq!(state("crashed").state(), Stored::Running);
    // Reservations: the provider holds exactly its three live deployments.
    let reserved = provider.describe().await.unwrap().capacity.reserved;
    assert_eq!(reserved.cpu_millis, 300);
}
