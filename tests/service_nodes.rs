//! Services across real nodes on 127.0.0.1 with in-memory providers: the
//! replicas of a service spread over nodes; when the owners of two of
//! three replicas die (killed, no goodbye), the home places each again on
//! a survivor, keeping the spread; GetService, ListServices and Scale
//! answer over gRPC, from the home or through any other node.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use iarnet::config::Config;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::proto::resource as pb;
use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::{Provider, Resources};

const WAIT: Duration = Duration::from_secs(60);
const OWNERS: usize = 5;

type Api = ResourceServiceClient<tonic::transport::Channel>;

async fn start(id: &str, seeds: &[String], providers: Vec<Arc<dyn Provider>>) -> NodeHandle {
    let mut cfg = Config::loopback(id);
    cfg.initial_peers = seeds.to_vec();
    node::start_with(cfg, ProviderSetup::Given(providers))
        .await
        .expect("node starts on 127.0.0.1:0")
}

/// A home without a provider and five owners with one each.
async fn mesh(tag: &str) -> (NodeHandle, Vec<NodeHandle>) {
    let home = start(&format!("{tag}-home"), &[], Vec::new()).await;
    let seed = [home.advertise_addr()];
    let mut owners = Vec::new();
    for i in 0..OWNERS {
        let p = Arc::new(MemoryProvider::new(
            &format!("{tag}-p{i}"),
            Resources {
                cpu_millis: 4_000,
                memory_bytes: 4 << 30,
                ..Resources::ZERO
            },
            BTreeMap::new(),
        ));
        owners.push(start(&format!("{tag}-o{i}"), &seed, vec![p as Arc<dyn Provider>]).await);
    }
    common::wait_until("the home to see every provider", WAIT, || {
        match home.manager().candidates().len() {
            OWNERS => Ok(()),
            n => Err(format!("{n} providers")),
        }
    })
    .await;
    (home, owners)
}

async fn deploy_service(api: &mut Api, spec: pb::DeploySpec) -> (pb::Service, usize) {
    let mut stream = api.deploy(spec).await.unwrap().into_inner();
    let (mut service, mut placements) = (None, 0);
    while let Some(ev) = stream.next().await {
        match ev.unwrap().event {
            Some(pb::deploy_event::Event::Service(s)) => service = Some(s),
            Some(pb::deploy_event::Event::Placement(_)) => placements += 1,
            _ => {}
        }
    }
    (
        service.expect("a deploy with replicas ends with its service"),
        placements,
    )
}

async fn service(api: &mut Api, id: &str) -> pb::Service {
    api.get_service(pb::GetServiceRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

fn owners_of(s: &pb::Service) -> Vec<String> {
    s.deployments
        .iter()
        .filter(|d| d.state == "running")
        .map(|d| d.owner_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_owners_replicas_come_back_on_the_survivors_spread_kept() {
    let (home, owners) = mesh("svc").await;
    let mut api = ResourceServiceClient::connect(format!("http://{}", home.local_addr()))
        .await
        .unwrap();
    let (s, placements) = deploy_service(
        &mut api,
        pb::DeploySpec {
            request_id: "web".into(),
            image: "iarnet-test/busybox:1".into(),
            cpu: "1".into(),
            memory: "64Mi".into(),
            replicas: 3,
            spread: "node".into(),
            when_unsatisfiable: "do-not-schedule".into(),
            strategy: "binpack".into(),
            reschedule: Some(pb::Reschedule {
                after: "1s".into(),
                delay: "100ms".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(placements, 3);
    assert_eq!((s.replicas, s.running, s.skew), (3, 3, 1), "{s:?}");
    let first = owners_of(&s);
    assert_eq!(
        first.iter().collect::<HashSet<_>>().len(),
        3,
        "bin-pack alone would stack them; the spread puts one per node: {first:?}"
    );
    assert!(s
        .deployments
        .iter()
        .all(|d| d.labels.get("iarnet.service").is_none_or(|v| v == "web")));

    // Kill the owners of replicas 0 and 1, no goodbye.
    let doomed: Vec<String> = first[..2].to_vec();
    let mut survivors = Vec::new();
    let killed = Instant::now();
    for n in owners {
        if doomed.contains(&n.id()) {
            n.kill();
        } else {
            survivors.push(n);
        }
    }
    let moved = {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = service(&mut api, "web").await;
            let on = owners_of(&s);
            if s.running == 3 && on.iter().all(|o| !doomed.contains(o)) {
                break s;
            }
            assert!(Instant::now() < deadline, "never came back: {s:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    println!(
        "service failover: 2 of 3 owners killed -> 3 running on survivors in {:?} (gossip interval {:?}, grace 1s)",
        killed.elapsed(),
        home.config().gossip.interval
    );
    let on = owners_of(&moved);
    assert_eq!(
        on.iter().collect::<HashSet<_>>().len(),
        3,
        "spread kept: {on:?}"
    );
    for d in &moved.deployments[..2] {
        assert_eq!(d.attempt, 2, "{d:?}");
    }
    assert_eq!(
        moved.deployments[2].attempt, 1,
        "the untouched replica stays"
    );
    assert_eq!(home.manager().failover_metrics().reschedules.get(), 2);

    // Scale over gRPC: down stops the highest, up brings them back.
    let down = api
        .scale(pb::ScaleRequest {
            id: "web".into(),
            replicas: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((down.replicas, down.running), (1, 1));
    let states: Vec<&str> = down.deployments.iter().map(|d| d.state.as_str()).collect();
    assert_eq!(states, ["running", "stopped", "stopped"]);
    let list = api
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.services.len(), 1);
    let missing = api
        .scale(pb::ScaleRequest {
            id: "nope".into(),
            replicas: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let bad = api
        .deploy(pb::DeploySpec {
            request_id: "bad".into(),
            image: "iarnet-test/busybox:1".into(),
            replicas: 2,
            spread: "node".into(),
            when_unsatisfiable: "sometimes".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("when_unsatisfiable"), "{bad:?}");
    drop(survivors);
}

/// What `node`'s own provider has reserved, holds included, as it says now.
fn own_reserved_cpu(node: &NodeHandle) -> u64 {
    node.manager()
        .candidates()
        .iter()
        .find(|c| c.owner_id == node.id())
        .map_or(0, |c| c.capacity.reserved.cpu_millis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gang_over_owners_starts_whole_or_is_refused_holding_nothing() {
    let (home, owners) = mesh("gang").await;
    let mut api = ResourceServiceClient::connect(format!("http://{}", home.local_addr()))
        .await
        .unwrap();
    let gang = |id: &str, cpu: &str| pb::DeploySpec {
        request_id: id.into(),
        image: "iarnet-test/busybox:1".into(),
        cpu: cpu.into(),
        memory: "64Mi".into(),
        replicas: 3,
        gang: true,
        gang_timeout: "5s".into(),
        spread: "node".into(),
        when_unsatisfiable: "do-not-schedule".into(),
        ..Default::default()
    };
    // Room for all: three owners each prepare, then all start.
    let (s, placements) = deploy_service(&mut api, gang("trio", "3")).await;
    assert_eq!(placements, 3);
    assert_eq!((s.replicas, s.running), (3, 3), "{s:?}");
    let on: HashSet<String> = owners_of(&s).into_iter().collect();
    assert_eq!(on.len(), 3, "{on:?}");
    for o in &owners {
        let want = if on.contains(&o.id()) { 3000 } else { 0 };
        assert_eq!(
            own_reserved_cpu(o),
            want,
            "{}: held once, taken once",
            o.id()
        );
    }
    common::wait_until("the home to see the gang's room taken", WAIT, || {
        let free: Vec<u64> = home
            .manager()
            .candidates()
            .iter()
            .map(|c| c.capacity.available().cpu_millis)
            .filter(|f| *f >= 4000)
            .collect();
        match free.len() {
            2 => Ok(()),
            n => Err(format!("{n} owners with 4 CPUs free")),
        }
    })
    .await;

    // Room for two of three: refused at once, nothing held, no service.
    let mut stream = api.deploy(gang("too-big", "4")).await.unwrap().into_inner();
    let e = loop {
        match stream.next().await.expect("an answer") {
            Err(e) => break e,
            Ok(_) => continue,
        }
    };
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("room for 2 now"), "{e:?}");
    let missing = api
        .get_service(pb::GetServiceRequest {
            id: "too-big".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    for o in &owners {
        let want = if on.contains(&o.id()) { 3000 } else { 0 };
        assert_eq!(own_reserved_cpu(o), want, "{}: nothing left held", o.id());
    }
    // Gang without replicas is named.
    let bad = api
        .deploy(pb::DeploySpec {
            replicas: 0,
            spread: String::new(),
            when_unsatisfiable: String::new(),
            ..gang("solo", "1")
        })
        .await;
    let bad = match bad {
        Err(s) => s,
        Ok(s) => s.into_inner().next().await.unwrap().unwrap_err(),
    };
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("gang"), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_node_reads_and_scales_a_service_through_its_home() {
    let (home, owners) = mesh("fwd").await;
    let home_id = home.id();
    let mut at_home = ResourceServiceClient::connect(format!("http://{}", home.local_addr()))
        .await
        .unwrap();
    let (s, _) = deploy_service(
        &mut at_home,
        pb::DeploySpec {
            request_id: "api".into(),
            image: "iarnet-test/busybox:1".into(),
            cpu: "1".into(),
            memory: "64Mi".into(),
            replicas: 3,
            spread: "node".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s.running, 3, "{s:?}");
    // A node that neither placed the service nor keeps it.
    let other = &owners[OWNERS - 1];
    let mut elsewhere = ResourceServiceClient::connect(format!("http://{}", other.local_addr()))
        .await
        .unwrap();
    let got = service(&mut elsewhere, "api").await;
    assert_eq!(
        (got.home_id.as_str(), got.replicas, got.running),
        (home_id.as_str(), 3, 3),
        "{got:?}"
    );
    assert_eq!(owners_of(&got), owners_of(&s));

    let down = elsewhere
        .scale(pb::ScaleRequest {
            id: "api".into(),
            replicas: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((down.replicas, down.running), (1, 1), "{down:?}");
    let kept = service(&mut at_home, "api").await;
    assert_eq!((kept.replicas, kept.running), (1, 1), "the home scaled it");

    let missing = elsewhere
        .get_service(pb::GetServiceRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(missing.message().contains("\"nope\""), "{missing:?}");
    let bad = elsewhere
        .scale(pb::ScaleRequest {
            id: "api".into(),
            replicas: 100_000,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("replicas"), "{bad:?}");
    assert_eq!(
        service(&mut at_home, "api").await.replicas,
        1,
        "nothing changed"
    );

    // Its home gone, the service cannot be answered for: UNAVAILABLE, and why.
    home.kill();
    let deadline = Instant::now() + WAIT;
    let gone = loop {
        let e = elsewhere
            .get_service(pb::GetServiceRequest { id: "api".into() })
            .await
            .unwrap_err();
        if e.code() == tonic::Code::Unavailable {
            break e;
        }
        assert!(Instant::now() < deadline, "still {e:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(gone.message().contains(&home_id), "{gone:?}");
}
