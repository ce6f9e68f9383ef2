//! Leases across real nodes on 127.0.0.1 with in-memory providers: a
//! deployment placed through a home on another node's provider is leased
//! there (the owner), renewed and released through the home, expires on
//! the owner's clock even when the home was killed, auto-renews exactly
//! `max_renewals` times; bad lease input names its field and changes
//! nothing.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{start_with, wait_until};
use futures::StreamExt;
use iarnet::node::NodeHandle;
use iarnet::proto::resource as pb;
use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::{Provider, Resources};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

type Api = ResourceServiceClient<tonic::transport::Channel>;

fn leased(request_id: &str, ttl: &str) -> pb::DeploySpec {
    pb::DeploySpec {
        request_id: request_id.into(),
        image: "iarnet-test/busybox:1".into(),
        cpu: "1".into(),
        memory: "16Mi".into(),
        lease_ttl: ttl.into(),
        ..Default::default()
    }
}

async fn client(node: &NodeHandle) -> Api {
    ResourceServiceClient::connect(format!("http://{}", node.local_addr()))
        .await
        .unwrap()
}

async fn deploy(api: &mut Api, spec: pb::DeploySpec) -> Result<pb::Deployment, tonic::Status> {
    let mut stream = api.deploy(spec).await?.into_inner();
    let mut deployment = None;
    while let Some(ev) = stream.next().await {
        if let Some(pb::deploy_event::Event::Deployment(d)) = ev?.event {
            deployment = Some(d);
        }
    }
    Ok(deployment.expect("a deploy ends with its deployment"))
}

/// An owner with a 2-CPU provider and a home with none, joined.
async fn owner_and_home(tag: &str) -> (NodeHandle, Arc<MemoryProvider>, NodeHandle) {
    let total = Resources {
        cpu_millis: 2000,
        memory_bytes: 1 << 30,
        ..Resources::ZERO
    };
    let provider = Arc::new(MemoryProvider::new(
        &format!("{tag}-p"),
        total,
        BTreeMap::new(),
    ));
    let owner = start_with(
        &format!("{tag}-owner"),
        &[],
        vec![provider.clone() as Arc<dyn Provider>],
        true,
    )
    .await;
    let home = start_with(
        &format!("{tag}-home"),
        &[owner.advertise_addr()],
        Vec::new(),
        true,
    )
    .await;
    let pid = provider.id().to_string();
    wait_until("the home to see the owner's provider", WAIT, || {
        if home.manager().candidates().iter().any(|c| c.id == pid) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    (owner, provider, home)
}

fn reserved_cpu(p: &MemoryProvider) -> u64 {
    futures::executor::block_on(p.describe())
        .unwrap()
        .capacity
        .reserved
        .cpu_millis
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_is_kept_by_the_owner_renewed_through_the_home_and_expires_there() {
    let (owner, provider, home) = owner_and_home("lr").await;
    let mut api = client(&home).await;
    let mut spec = leased("leased-1", "2s");
    spec.max_renewals = Some(1);
    let d = deploy(&mut api, spec).await.unwrap();
    assert_eq!(d.owner_id, owner.id());
    let lease = d.lease.clone().expect("the deploy answers with its lease");
    assert_eq!(
        (lease.state.as_str(), lease.seed_state.as_str()),
        ("active", "LEASED")
    );
    assert_eq!(lease.holder, home.id(), "the home holds it by default");
    assert_eq!((lease.ttl_secs, lease.max_renewals), (2.0, Some(1)));
    assert!(lease.expires_in_secs > 0.0 && lease.expires_in_secs <= 2.0);

    // Renewed through the home, which does not own the provider: forwarded.
    let stale = api
        .renew_lease(pb::RenewLeaseRequest {
            id: "leased-1".into(),
            epoch: lease.epoch + 1,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    assert!(stale.message().contains("epoch"), "{stale:?}");
    let renewed = api
        .renew_lease(pb::RenewLeaseRequest {
            id: "leased-1".into(),
            epoch: lease.epoch,
        })
        .await
        .unwrap()
        .into_inner();
    let l = renewed.lease.unwrap();
    assert_eq!((l.renewals, l.epoch), (1, lease.epoch));
    assert!(l.renewed_unix > 0.0);
    let limit = api
        .renew_lease(pb::RenewLeaseRequest {
            id: "leased-1".into(),
            epoch: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(limit.code(), Code::FailedPrecondition);
    assert!(limit.message().contains("max_renewals"), "{limit:?}");

    // It runs out on the owner: the CPU comes back, and the home says why.
    assert_eq!(reserved_cpu(&provider), 1000);
    wait_until(
        "the lease to expire on the owner",
        WAIT,
        || match reserved_cpu(&provider) {
            0 => Ok(()),
            n => Err(format!("{n}m reserved")),
        },
    )
    .await;
    let got = api
        .get_deployment(pb::GetDeploymentRequest {
            id: "leased-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, "stopped", "{got:?}");
    assert!(
        got.reason.contains("lease") && got.reason.contains("expired"),
        "{got:?}"
    );
    let l = got.lease.unwrap();
    assert_eq!(
        (l.state.as_str(), l.seed_state.as_str()),
        ("expired", "TERMINATED")
    );
    // Renewing what expired is refused.
    let late = api
        .renew_lease(pb::RenewLeaseRequest {
            id: "leased-1".into(),
            epoch: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert!(late.message().contains("expired"), "{late:?}");
    assert_eq!(owner.manager().leases().metrics().expired.get(), 1);

    // Released through the home: stopped and freed at once.
    let d = deploy(&mut api, leased("leased-2", "1h")).await.unwrap();
    assert_eq!(reserved_cpu(&provider), 1000);
    let released = api
        .release_lease(pb::ReleaseLeaseRequest {
            id: d.id.clone(),
            epoch: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.state, "stopped");
    assert_eq!(released.lease.unwrap().state, "released");
    assert_eq!(reserved_cpu(&provider), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_renew_keeps_it_exactly_max_renewals_times() {
    let (owner, provider, home) = owner_and_home("la").await;
    let mut api = client(&home).await;
    let mut spec = leased("auto-1", "1s");
    spec.auto_renew = true;
    spec.max_renewals = Some(2);
    let started = std::time::Instant::now();
    deploy(&mut api, spec).await.unwrap();
    wait_until(
        "the auto-renewed lease to expire",
        WAIT,
        || match reserved_cpu(&provider) {
            0 => Ok(()),
            n => Err(format!("{n}m reserved")),
        },
    )
    .await;
    let lived = started.elapsed();
    let got = api
        .get_deployment(pb::GetDeploymentRequest {
            id: "auto-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let l = got.lease.unwrap();
    assert_eq!((l.renewals, l.state.as_str()), (2, "expired"), "{l:?}");
    assert!(l.auto_renew);
    assert!(lived >= Duration::from_secs(3), "three TTLs: {lived:?}");
    assert_eq!(owner.manager().leases().metrics().auto_renewed.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_happens_on_the_owner_when_the_home_was_killed() {
    let (owner, provider, home) = owner_and_home("lk").await;
    let mut api = client(&home).await;
    let d = deploy(&mut api, leased("orphan-1", "1s")).await.unwrap();
    assert_eq!(reserved_cpu(&provider), 1000);
    home.kill();
    wait_until(
        "the owner to expire the orphan's lease",
        WAIT,
        || match reserved_cpu(&provider) {
            0 => Ok(()),
            n => Err(format!("{n}m reserved")),
        },
    )
    .await;
    // The owner answers for it, with the lease that ended it.
    let mut api = client(&owner).await;
    let got = api
        .get_deployment(pb::GetDeploymentRequest { id: d.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, "stopped");
    assert_eq!(got.lease.unwrap().state, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_lease_input_names_its_field_and_changes_nothing() {
    let (_owner, provider, home) = owner_and_home("lb").await;
    let mut api = client(&home).await;
    type Change = fn(&mut pb::DeploySpec);
    let cases: [(&str, Change); 5] = [
        ("max_renewals", |s| {
            s.lease_ttl.clear();
            s.max_renewals = Some(3);
        }),
        ("auto_renew", |s| {
            s.lease_ttl.clear();
            s.auto_renew = true;
        }),
        ("lease_ttl", |s| s.lease_ttl = "-5m".into()),
        ("lease_ttl", |s| s.lease_ttl = "400d".into()),
        ("lease_ttl", |s| s.lease_ttl = "100ms".into()),
    ];
    for (field, change) in cases {
        let mut spec = leased("bad-lease", "1m");
        change(&mut spec);
        let e = deploy(&mut api, spec).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {e:?}");
    }
    assert_eq!(reserved_cpu(&provider), 0, "nothing was placed");

    // Renewing what holds no lease, or what nobody knows.
    let mut plain = leased("no-lease", "");
    plain.lease_ttl.clear();
    deploy(&mut api, plain).await.unwrap();
    let e = api
        .renew_lease(pb::RenewLeaseRequest {
            id: "no-lease".into(),
            epoch: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("holds no lease"), "{e:?}");
    let e = api
        .release_lease(pb::ReleaseLeaseRequest {
            id: "nobody-knows".into(),
            epoch: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(
        reserved_cpu(&provider),
        1000,
        "the plain deployment runs on"
    );
}
