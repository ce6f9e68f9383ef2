//! Any node answers for the whole mesh, on real nodes on 127.0.0.1 with
//! in-memory providers: a deployment placed through one node is read,
//! followed, renewed and stopped through every other; with its home killed
//! it is still found and stopped through its owner; lookups keep finding
//! deployments while members join, leave and crash; and the mesh listing
//! merges every node's part, pages through it, filters it, counts it, and
//! names a node that does not answer.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use iarnet::config::Config;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::proto::resource as pb;
use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::{Provider, Resources};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

type Api = ResourceServiceClient<tonic::transport::Channel>;

fn provider(id: &str) -> Arc<MemoryProvider> {
    Arc::new(MemoryProvider::new(
        id,
        Resources {
            cpu_millis: 64_000,
            memory_bytes: 64 << 30,
            ..Resources::ZERO
        },
        BTreeMap::new(),
    ))
}

/// A node on loopback; `slow_death` keeps a crashed member suspect (not
/// dead) for a long while, so a listing meets it as a silent member.
async fn start(
    id: &str,
    seeds: &[String],
    providers: Vec<Arc<dyn Provider>>,
    slow_death: bool,
) -> NodeHandle {
    let mut cfg = Config::loopback(id);
    cfg.initial_peers = seeds.to_vec();
    if slow_death {
        cfg.gossip.suspicion_mult = 500.0;
    }
    // The tests make hundreds of management calls a second from one address.
    cfg.security.rate_limit.token_rate = 100_000.0;
    cfg.security.rate_limit.token_burst = 100_000.0;
    node::start_with(cfg, ProviderSetup::Given(providers))
        .await
        .expect("node starts on 127.0.0.1:0")
}

async fn client(node: &NodeHandle) -> Api {
    ResourceServiceClient::connect(format!("http://{}", node.local_addr()))
        .await
        .unwrap()
}

fn spec(request_id: &str, provider_id: &str) -> pb::DeploySpec {
    pb::DeploySpec {
        request_id: request_id.into(),
        image: "iarnet-test/busybox:1".into(),
        cpu: "100m".into(),
        memory: "16Mi".into(),
        provider_id: provider_id.into(),
        labels: [(
            "team".to_string(),
            format!("t{}", request_id.bytes().last().unwrap_or(0) % 2),
        )]
        .into(),
        ..Default::default()
    }
}

async fn deploy(api: &mut Api, spec: pb::DeploySpec) -> pb::Deployment {
    let mut stream = api.deploy(spec).await.unwrap().into_inner();
    let mut deployment = None;
    while let Some(ev) = stream.next().await {
        if let Some(pb::deploy_event::Event::Deployment(d)) = ev.unwrap().event {
            deployment = Some(d);
        }
    }
    deployment.expect("a deploy ends with its deployment")
}

async fn get(api: &mut Api, id: &str) -> Result<pb::Deployment, tonic::Status> {
    api.get_deployment(pb::GetDeploymentRequest { id: id.into() })
        .await
        .map(|r| r.into_inner())
}

/// Polls `get` until it answers, or fails naming the last error.
async fn until_found(api: &mut Api, id: &str) -> pb::Deployment {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match get(api, id).await {
            Ok(d) => return d,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("{id} was never found: {e:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn converge(nodes: &[&NodeHandle]) {
    let ids: Vec<String> = nodes.iter().map(|n| n.id()).collect();
    common::wait_until("every node to see every other", WAIT, || {
        common::all_see_alive(nodes, &ids)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_answers_for_a_deployment_placed_through_another() {
    let owner_p = provider("any-p1");
    let home = start("any-0", &[], Vec::new(), false).await;
    let seed = [home.advertise_addr()];
    let owner = start(
        "any-1",
        &seed,
        vec![owner_p.clone() as Arc<dyn Provider>],
        false,
    )
    .await;
    let mut rest = Vec::new();
    for i in 2..8 {
        rest.push(start(&format!("any-{i}"), &seed, Vec::new(), false).await);
    }
    let mut all: Vec<&NodeHandle> = vec![&home, &owner];
    all.extend(rest.iter());
    converge(&all).await;
    common::wait_until("the home to see the provider", WAIT, || {
        match home.manager().candidates().iter().any(|c| c.id == "any-p1") {
            true => Ok(()),
            false => Err("not yet".into()),
        }
    })
    .await;

    let mut at_home = client(&home).await;
    let mut leased = spec("anywhere-1", "");
    leased.lease_ttl = "1h".into();
    let d = deploy(&mut at_home, leased).await;
    assert_eq!(d.owner_id, owner.id());

    // Every other node answers, by deployment id and by request id, and
    // says which node runs it and which placed it.
    for (i, n) in std::iter::once(&owner).chain(rest.iter()).enumerate() {
        let mut api = client(n).await;
        let got = until_found(&mut api, &d.id).await;
        assert_eq!(
            (got.owner_id.as_str(), got.home_id.as_str()),
            (owner.id().as_str(), home.id().as_str()),
            "through {}",
            n.id()
        );
        assert_eq!(got.state, "running");
        let by_request = get(&mut api, "anywhere-1").await.unwrap();
        assert_eq!(by_request.id, d.id);
        // A renewal through any node reaches the owner.
        let renewed = api
            .renew_lease(pb::RenewLeaseRequest {
                id: if i % 2 == 0 {
                    d.id.clone()
                } else {
                    "anywhere-1".into()
                },
                epoch: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            renewed.lease.unwrap().renewals,
            i as u32 + 1,
            "through {}",
            n.id()
        );
        let lines: Vec<String> = api
            .logs(pb::LogsRequest {
                id: "anywhere-1".into(),
                tail: 0,
                follow: false,
            })
            .await
            .unwrap()
            .into_inner()
            .filter_map(|l| async move { l.ok().map(|l| l.text) })
            .collect()
            .await;
        assert!(
            lines.iter().any(|l| l.contains("started from")),
            "{lines:?}"
        );
    }

    // Follow through the last node; stop through another: the follow ends.
    let mut far = client(&rest[5]).await;
    let mut follow = far
        .logs(pb::LogsRequest {
            id: d.id.clone(),
            tail: 0,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let first = follow.next().await.unwrap().unwrap();
    assert!(first.text.contains("started from"), "{first:?}");
    let stopped = client(&rest[3])
        .await
        .stop(pb::StopRequest {
            id: "anywhere-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state, "stopped");
    assert_eq!(
        stopped.home_id,
        home.id(),
        "the home stopped it, keeping its record"
    );
    let rest_of_follow = tokio::time::timeout(WAIT, follow.collect::<Vec<_>>()).await;
    assert!(
        rest_of_follow.is_ok(),
        "the follow ended with the deployment"
    );
    assert_eq!(owner_p.describe().await.unwrap().capacity.deployments, 0);
    let at_home_now = get(&mut at_home, &d.id).await.unwrap();
    assert_eq!(at_home_now.state, "stopped");

    // Unknown ids are NOT_FOUND from anywhere, saying the mesh was asked.
    let e = get(&mut far, "never-deployed").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("unknown to the mesh"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_homes_deployment_is_found_and_stopped_through_its_owner() {
    let owner_p = provider("dead-home-p");
    let owner = start(
        "dh-owner",
        &[],
        vec![owner_p.clone() as Arc<dyn Provider>],
        false,
    )
    .await;
    let seed = [owner.advertise_addr()];
    let home = start("dh-home", &seed, Vec::new(), false).await;
    let other = start("dh-other", &seed, Vec::new(), false).await;
    let watcher = start("dh-watcher", &seed, Vec::new(), false).await;
    converge(&[&owner, &home, &other, &watcher]).await;
    common::wait_until("the home to see the provider", WAIT, || {
        match home
            .manager()
            .candidates()
            .iter()
            .any(|c| c.id == "dead-home-p")
        {
            true => Ok(()),
            false => Err("not yet".into()),
        }
    })
    .await;
    let d = deploy(&mut client(&home).await, spec("orphaned", "")).await;
    let mut api = client(&other).await;
    until_found(&mut api, &d.id).await;
    home.kill();

    // Found through the owner; its home is named though gone.
    let got = until_found(&mut api, "orphaned").await;
    assert_eq!(
        (got.owner_id.as_str(), got.state.as_str()),
        (owner.id().as_str(), "running")
    );
    let stopped = api
        .stop(pb::StopRequest {
            id: "orphaned".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state, "stopped");
    assert_eq!(owner_p.describe().await.unwrap().capacity.deployments, 0);
    let mut w = client(&watcher).await;
    let e = get(&mut w, "orphaned").await;
    assert!(
        matches!(&e, Err(s) if s.code() == Code::NotFound || s.code() == Code::Unavailable),
        "stopped and gone from its owner, its home dead: {e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookups_keep_finding_deployments_while_members_join_leave_and_crash() {
    let p1 = provider("churn-p1");
    let p2 = provider("churn-p2");
    let a = start("churn-a", &[], vec![p1 as Arc<dyn Provider>], false).await;
    let seed = [a.advertise_addr()];
    let b = start("churn-b", &seed, vec![p2 as Arc<dyn Provider>], false).await;
    let c = start("churn-c", &seed, Vec::new(), false).await;
    let d = start("churn-d", &seed, Vec::new(), false).await;
    let leaver = start("churn-leaver", &seed, Vec::new(), false).await;
    let crasher = start("churn-crasher", &seed, Vec::new(), false).await;
    converge(&[&a, &b, &c, &d, &leaver, &crasher]).await;
    common::wait_until("everyone to see both providers", WAIT, || {
        let ok = [&c, &d].iter().all(|n| n.manager().candidates().len() == 2);
        if ok {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    // 20 deployments, placed through four homes.
    let mut ids = Vec::new();
    for (i, home) in [&a, &b, &c, &d].iter().cycle().take(20).enumerate() {
        let dep = deploy(&mut client(home).await, spec(&format!("churn-{i}"), "")).await;
        ids.push(dep.id);
    }
    for id in &ids {
        until_found(&mut client(&d).await, id).await;
    }

    // Lookups from the four stable nodes (1,000 at least) for as long as
    // two members join, one leaves and one crashes, and the views settle.
    let askers = [
        client(&a).await,
        client(&b).await,
        client(&c).await,
        client(&d).await,
    ];
    let churning = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let lookups = {
        let (ids, churning) = (ids.clone(), churning.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0usize;
            while n < 1_000 || churning.load(std::sync::atomic::Ordering::Relaxed) {
                let mut api = askers[n % 4].clone();
                let key = if n % 3 == 0 {
                    format!("churn-{}", n % ids.len())
                } else {
                    ids[n % ids.len()].clone()
                };
                if let Err(e) = get(&mut api, &key).await {
                    failures.push((key, e.code(), e.message().to_string()));
                }
                n += 1;
            }
            (n, failures)
        })
    };
    let joiner1 = start("churn-join-1", &seed, Vec::new(), false).await;
    leaver.shutdown().await;
    crasher.kill();
    let joiner2 = start("churn-join-2", &seed, Vec::new(), false).await;
    let stable: Vec<String> = [&a, &b, &c, &d, &joiner1, &joiner2]
        .iter()
        .map(|n| n.id())
        .collect();
    common::wait_until("the views to settle after the churn", WAIT, || {
        common::all_see_alive(&[&a, &b, &c, &d, &joiner1, &joiner2], &stable)
    })
    .await;
    churning.store(false, std::sync::atomic::Ordering::Relaxed);
    let (done, failures) = lookups.await.unwrap();
    println!("{done} lookups during the churn");
    let not_found: Vec<_> = failures.iter().filter(|f| f.1 == Code::NotFound).collect();
    assert!(
        not_found.is_empty(),
        "a lookup said NOT_FOUND for a deployment that exists: {not_found:?}"
    );
    assert!(
        failures.is_empty(),
        "lookups failed during churn: {failures:?}"
    );
    drop((joiner1, joiner2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mesh_listing_merges_pages_filters_counts_and_names_a_silent_node() {
    let mut nodes = Vec::new();
    let mut seed = Vec::new();
    for i in 0..4 {
        let p = provider(&format!("list-p{i}"));
        let n = start(
            &format!("list-{i}"),
            &seed,
            vec![p as Arc<dyn Provider>],
            true,
        )
        .await;
        if seed.is_empty() {
            seed.push(n.advertise_addr());
        }
        nodes.push(n);
    }
    let refs: Vec<&NodeHandle> = nodes.iter().collect();
    converge(&refs).await;
    // Three on each node's own provider, placed by another node: every
    // deployment is known to two nodes (home and owner), listed once.
    let mut expected = BTreeSet::new();
    for i in 0..4 {
        let home = &nodes[(i + 1) % 4];
        common::wait_until("the home to see the provider", WAIT, || {
            let id = format!("list-p{i}");
            match home.manager().candidates().iter().any(|c| c.id == id) {
                true => Ok(()),
                false => Err("not yet".into()),
            }
        })
        .await;
        for j in 0..3 {
            let req = format!("list-{i}-{j}");
            let d = deploy(&mut client(home).await, spec(&req, &format!("list-p{i}"))).await;
            expected.insert(d.id);
        }
    }
    let mut api = client(&nodes[0]).await;
    let list = |scope: &str, page_size: u32, page_token: String| pb::ListDeploymentsRequest {
        scope: scope.into(),
        page_size,
        page_token,
        ..Default::default()
    };
    let all = api
        .list_deployments(list("mesh", 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    let got: BTreeSet<String> = all.deployments.iter().map(|d| d.id.clone()).collect();
    assert_eq!(got, expected, "each deployment once");
    assert_eq!((all.nodes_answered, all.missing_nodes.len()), (4, 0));
    assert!(all
        .deployments
        .iter()
        .all(|d| !d.home_id.is_empty() && d.home_id != d.owner_id));
    // This node alone knows only its own part.
    let mine = api
        .list_deployments(list("", 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.deployments.len(), 6, "3 it placed, 3 it runs");

    // Pages of 5: 5, 5, 2, no duplicates, nothing missed.
    let mut paged = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = api
            .list_deployments(list("mesh", 5, token.clone()))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.deployments.len() <= 5);
        paged.extend(page.deployments.into_iter().map(|d| d.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10, "pages never ended");
    }
    assert_eq!(paged.len(), 12, "{paged:?}");
    assert_eq!(paged.iter().cloned().collect::<BTreeSet<_>>(), expected);

    // Filters: owner, label, state.
    let mut by_owner = list("mesh", 0, String::new());
    by_owner.owner_id = nodes[2].id();
    let owned = api.list_deployments(by_owner).await.unwrap().into_inner();
    assert_eq!(owned.deployments.len(), 3);
    let mut by_label = list("mesh", 0, String::new());
    by_label.labels.insert("team".into(), "t0".into());
    let labelled = api.list_deployments(by_label).await.unwrap().into_inner();
    assert!(labelled
        .deployments
        .iter()
        .all(|d| d.labels.get("team").map(String::as_str) == Some("t0")));
    assert!(!labelled.deployments.is_empty() && labelled.deployments.len() < 12);
    let bad = api
        .list_deployments(list("galaxy", 0, String::new()))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("scope"), "{bad:?}");

    // Counted once each, by state.
    let cap = api
        .get_capacity(pb::GetCapacityRequest {
            count_deployments: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cap.deployments.get("running"), Some(&12), "{cap:?}");

    // The stream sends each node's part as it comes, then the end.
    let chunks: Vec<pb::DeploymentsChunk> = api
        .stream_deployments(list("mesh", 0, String::new()))
        .await
        .unwrap()
        .into_inner()
        .map(|c| c.unwrap())
        .collect()
        .await;
    let streamed: BTreeSet<String> = chunks
        .iter()
        .flat_map(|c| c.deployments.iter().map(|d| d.id.clone()))
        .collect();
    assert_eq!(streamed, expected);
    assert!(chunks.last().unwrap().done);

    // One node goes silent (crashed, still suspect): the rest answer, and
    // the listing names it instead of failing.
    let silent = nodes.pop().unwrap();
    let silent_id = silent.id();
    silent.kill();
    let partial = api
        .list_deployments(list("mesh", 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(partial.missing_nodes, vec![silent_id.clone()]);
    assert_eq!(partial.nodes_answered, 3);
    // Its own three were placed by a live home: still listed, from the record.
    assert_eq!(
        partial.deployments.len(),
        12,
        "{:?}",
        partial
            .deployments
            .iter()
            .map(|d| &d.id)
            .collect::<Vec<_>>()
    );
    let cap = api
        .get_capacity(pb::GetCapacityRequest {
            count_deployments: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cap.missing_nodes, vec![silent_id]);
}
