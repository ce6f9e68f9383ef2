//! Leases against the in-memory provider twin: expiry frees the capacity
//! and says why, auto-renew renews exactly `max_renewals` times, renewals
//! and releases are fenced by epoch and refused when they cannot be, and a
//! lease survives its owner's restart (redb). TTLs are tens of milliseconds
//! here (the API's floor is 1 s); waits are on conditions.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::placement::manager::queue::tests::until;
use crate::placement::manager::{Manager, NoMesh, PlaceOptions};
use crate::placement::Strategy;
use crate::resource::memory::MemoryProvider;
use crate::resource::validate::deployment_id;
use crate::resource::{
    DeploySpec, DeployState, LeaseState, LeaseTerms, ProgressSink, Provider, ResourceError,
    Resources, Tier,
};
use crate::store::{MemoryStore, RedbStore, Store};

fn spec(req: &str, lease: Option<LeaseTerms>) -> DeploySpec {
    DeploySpec {
        request_id: req.into(),
        image: "busybox".into(),
        resources: Resources {
            cpu_millis: 1000,
            memory_bytes: 16 << 20,
            ..Resources::ZERO
        },
        lease,
        ..Default::default()
    }
}

fn terms(ttl_ms: u64, auto_renew: bool, max_renewals: Option<u32>) -> Option<LeaseTerms> {
    Some(LeaseTerms {
        ttl_ms,
        auto_renew,
        max_renewals,
        holder: String::new(),
    })
}

fn provider() -> Arc<MemoryProvider> {
    Arc::new(MemoryProvider::new(
        "p",
        Resources {
            cpu_millis: 2000,
            memory_bytes: 8 << 30,
            ..Resources::ZERO
        },
        Default::default(),
    ))
}

async fn manager(store: Arc<dyn Store>, p: Arc<MemoryProvider>) -> Arc<Manager> {
    let m = Manager::open("owner", Arc::new(NoMesh), Strategy::Spread, false, 7, store).unwrap();
    m.add_provider(p, Tier::Internal).await.unwrap();
    Arc::new(m)
}

async fn reserved_cpu(p: &MemoryProvider) -> u64 {
    p.describe().await.unwrap().capacity.reserved.cpu_millis
}

fn precondition(e: ResourceError, needle: &str) {
    assert!(
        matches!(&e, ResourceError::Precondition(m) if m.contains(needle)),
        "expected FAILED_PRECONDITION naming {needle:?}, got {e:?}"
    );
}

#[tokio::test]
async fn expiry_stops_the_deployment_frees_its_capacity_and_says_why() {
    let p = provider();
    let m = manager(Arc::new(MemoryStore::new()), p.clone()).await;
    let placed = m
        .deploy(
            spec("short", terms(60, false, None)),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    let lease = placed
        .deployment
        .lease
        .clone()
        .expect("a lease was granted");
    assert_eq!(
        (lease.state, lease.epoch, lease.holder.as_str()),
        (LeaseState::Active, 1, "owner")
    );
    assert_eq!(lease.seed_state, "LEASED");
    assert_eq!(reserved_cpu(&p).await, 1000);

    let cancel = CancellationToken::new();
    let worker = tokio::spawn(m.clone().run_leases(cancel.clone()));
    until("the lease to run out and free the CPU", || async {
        reserved_cpu(&p).await == 0
    })
    .await;
    let (d, owner) = m.status(&deployment_id("short")).await.unwrap();
    assert_eq!(owner, "owner");
    assert_eq!(d.state(), DeployState::Stopped);
    let lease = d.lease.clone().expect("the ended lease is still answered");
    assert_eq!(
        (lease.state, lease.seed_state.as_str()),
        (LeaseState::Expired, "TERMINATED")
    );
    assert!(
        d.reason().contains("lease (ttl 60ms) expired"),
        "{}",
        d.reason()
    );
    assert_eq!(m.leases().metrics().expired.get(), 1);
    // The home's record learned how it ended.
    assert!(m.book.get(&d.id).unwrap().state().is_final());
    // Renewing what ran out is refused, naming why.
    precondition(m.renew_lease("short", None).await.unwrap_err(), "expired");

    // Deploying the same request again is a new grant: a larger epoch.
    let again = m
        .deploy(
            spec("short", terms(60_000, false, None)),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    let lease = again.deployment.lease.unwrap();
    assert_eq!(
        (lease.epoch, lease.transitions, lease.state),
        (2, 1, LeaseState::Active)
    );
    cancel.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn auto_renew_renews_exactly_max_renewals_times_then_expires() {
    let p = provider();
    let m = manager(Arc::new(MemoryStore::new()), p.clone()).await;
    m.deploy(
        spec("auto", terms(40, true, Some(3))),
        PlaceOptions::default(),
        ProgressSink::none(),
    )
    .await
    .unwrap();
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(m.clone().run_leases(cancel.clone()));
    // The provider frees the room a moment before the lease is written
    // off: wait for both.
    until("the lease to run out after its renewals", || async {
        let ended = m.status("auto").await.ok().and_then(|(d, _)| d.lease);
        reserved_cpu(&p).await == 0 && ended.is_some_and(|l| l.state == LeaseState::Expired)
    })
    .await;
    let (d, _) = m.status("auto").await.unwrap();
    let lease = d.lease.unwrap();
    assert_eq!((lease.renewals, lease.state), (3, LeaseState::Expired));
    assert_eq!(m.leases().metrics().auto_renewed.get(), 3);
    assert!(
        lease.expires_ms - lease.acquired_ms >= 4 * 40,
        "it lived its TTL four times: {lease:?}"
    );
    cancel.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn renew_and_release_are_fenced_limited_and_refused_when_they_cannot_be() {
    let p = provider();
    let m = manager(Arc::new(MemoryStore::new()), p.clone()).await;
    let placed = m
        .deploy(
            spec("held", terms(60_000, false, Some(1))),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    let first = placed.deployment.lease.unwrap();

    // A holder with another epoch lost the lease: refused, nothing changes.
    precondition(
        m.renew_lease("held", Some(first.epoch + 1))
            .await
            .unwrap_err(),
        "epoch",
    );
    let (d, _) = m.renew_lease("held", Some(first.epoch)).await.unwrap();
    let renewed = d.lease.unwrap();
    assert_eq!(renewed.renewals, 1);
    assert!(renewed.expires_ms >= first.expires_ms);
    precondition(
        m.renew_lease("held", None).await.unwrap_err(),
        "max_renewals",
    );

    // A stale release is refused too; the right one stops it and frees it.
    precondition(
        m.release_lease("held", Some(99)).await.unwrap_err(),
        "epoch",
    );
    assert_eq!(reserved_cpu(&p).await, 1000);
    let (d, _) = m.release_lease("held", Some(first.epoch)).await.unwrap();
    assert_eq!(d.state(), DeployState::Stopped);
    assert_eq!(d.lease.as_ref().unwrap().state, LeaseState::Released);
    assert_eq!(reserved_cpu(&p).await, 0);
    precondition(m.renew_lease("held", None).await.unwrap_err(), "released");
    precondition(m.release_lease("held", None).await.unwrap_err(), "released");

    // A deployment without a lease has none to renew.
    m.deploy(
        spec("plain", None),
        PlaceOptions::default(),
        ProgressSink::none(),
    )
    .await
    .unwrap();
    precondition(
        m.renew_lease("plain", None).await.unwrap_err(),
        "holds no lease",
    );
    // A stop ends a lease as released.
    m.deploy(
        spec("stopped", terms(60_000, false, None)),
        PlaceOptions::default(),
        ProgressSink::none(),
    )
    .await
    .unwrap();
    let (d, _) = m.stop("stopped").await.unwrap();
    assert_eq!(d.lease.unwrap().state, LeaseState::Released);
}

#[tokio::test]
async fn a_lease_outlives_its_owners_restart_and_still_expires() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider();
    {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open_dir(dir.path()).unwrap());
        let m = manager(store, p.clone()).await;
        m.deploy(
            spec("durable", terms(150, false, None)),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap();
        // The node goes away before the lease runs out; no worker ran.
    }
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_dir(dir.path()).unwrap());
    let m = manager(store, p.clone()).await;
    let lease = m
        .leases()
        .view(&deployment_id("durable"))
        .expect("kept across the restart");
    assert_eq!((lease.epoch, lease.state), (1, LeaseState::Active));
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(m.clone().run_leases(cancel.clone()));
    until("the restarted owner to expire it", || async {
        reserved_cpu(&p).await == 0
    })
    .await;
    // The epoch counter survived too: the next grant is greater.
    let again = m
        .deploy(
            spec("next", terms(60_000, false, None)),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    assert_eq!(again.deployment.lease.unwrap().epoch, 2);
    cancel.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_deploy_refused_by_its_provider_keeps_no_lease() {
    let p = provider();
    let m = manager(Arc::new(MemoryStore::new()), p.clone()).await;
    // Filled behind the manager's back: its view still says 2 CPUs free,
    // so it tries, and the provider refuses.
    p.deploy(
        &DeploySpec {
            resources: Resources {
                cpu_millis: 1500,
                ..spec("x", None).resources
            },
            ..spec("elsewhere", None)
        },
        ProgressSink::none(),
    )
    .await
    .unwrap();
    let e = m
        .deploy(
            spec("refused", terms(60_000, false, None)),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    assert!(m.leases().view(&deployment_id("refused")).is_none());
    assert_eq!(m.leases().by_state()[0], ("active", 0));
}
