//! Swarm groups, pools, models and health across real nodes on 127.0.0.1
//! with in-memory providers: groups formed from any node with a leader and
//! a maximum size, the leader replaced when it dies, pools that outlive
//! their creator and serve as placement targets, deploys scoped to a group
//! (through its leader), a pool or a model, and round trips in ListPeers
//! and HealthCheck.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use iarnet::config::Config;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::proto::admin::admin_client::AdminClient;
use iarnet::proto::admin::ListPeersRequest;
use iarnet::proto::resource as rpb;
use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
use iarnet::proto::swarm as pb;
use iarnet::proto::swarm::swarm_client::SwarmClient;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::{Provider, Resources};
use tonic::transport::Channel;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

fn provider(id: &str) -> Arc<dyn Provider> {
    Arc::new(MemoryProvider::new(
        id,
        Resources {
            cpu_millis: 4_000,
            memory_bytes: 4 << 30,
            ..Resources::ZERO
        },
        BTreeMap::new(),
    ))
}

async fn start(id: &str, seeds: &[String], models: &[&str]) -> NodeHandle {
    let mut cfg = Config::loopback(id);
    cfg.initial_peers = seeds.to_vec();
    cfg.models = models.iter().map(|m| m.to_string()).collect();
    node::start_with(
        cfg,
        ProviderSetup::Given(vec![provider(&format!("{id}-p"))]),
    )
    .await
    .expect("node starts on 127.0.0.1:0")
}

async fn swarm(node: &NodeHandle) -> SwarmClient<Channel> {
    SwarmClient::connect(format!("http://{}", node.local_addr()))
        .await
        .unwrap()
}

async fn resources(node: &NodeHandle) -> ResourceServiceClient<Channel> {
    ResourceServiceClient::connect(format!("http://{}", node.local_addr()))
        .await
        .unwrap()
}

/// Three nodes seeing each other's providers (and so their records).
async fn trio(tag: &str, models: [&[&str]; 3]) -> Vec<NodeHandle> {
    let a = start(&format!("{tag}-a"), &[], models[0]).await;
    let seed = [a.advertise_addr()];
    let b = start(&format!("{tag}-b"), &seed, models[1]).await;
    let c = start(&format!("{tag}-c"), &seed, models[2]).await;
    let nodes = vec![a, b, c];
    for n in &nodes {
        common::wait_until("every node to see three providers", WAIT, || {
            match n.manager().candidates().len() {
                3 => Ok(()),
                m => Err(format!("{} sees {m}", n.id())),
            }
        })
        .await;
    }
    nodes
}

/// Polls `node`'s view of `group` until `done` holds.
async fn group_until(
    node: &NodeHandle,
    group: &str,
    what: &str,
    done: impl Fn(&pb::Group) -> bool,
) -> pb::Group {
    let mut api = swarm(node).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let list = api
            .list_groups(pb::ListGroupsRequest {})
            .await
            .unwrap()
            .into_inner();
        let g = list.groups.into_iter().find(|g| g.name == group);
        if let Some(g) = &g {
            if done(g) {
                return g.clone();
            }
        }
        assert!(Instant::now() < deadline, "{what}: {g:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn deploy(
    node: &NodeHandle,
    spec: rpb::DeploySpec,
) -> Result<rpb::Deployment, tonic::Status> {
    let mut api = resources(node).await;
    let mut stream = api.deploy(spec).await?.into_inner();
    let mut deployment = None;
    while let Some(ev) = stream.next().await {
        if let Some(rpb::deploy_event::Event::Deployment(d)) = ev?.event {
            deployment = Some(d);
        }
    }
    Ok(deployment.expect("a deploy ends with its deployment"))
}

fn spec(id: &str) -> rpb::DeploySpec {
    rpb::DeploySpec {
        request_id: id.into(),
        name: id.into(),
        image: "busybox".into(),
        cpu: "1".into(),
        memory: "64Mi".into(),
        queue_timeout: "0".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_form_from_any_node_with_a_leader_and_a_maximum() {
    let nodes = trio("grp", [&[], &[], &[]]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut on_c = swarm(c).await;

    // Bad input is named and changes nothing.
    let bad = on_c
        .create_group(pb::CreateGroupRequest {
            name: "no spaces".into(),
            max_members: 2,
            node: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().starts_with("invalid name:"),
        "{}",
        bad.message()
    );
    let bad = on_c
        .create_group(pb::CreateGroupRequest {
            name: "lab".into(),
            max_members: 0,
            node: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        bad.message().starts_with("invalid max_members:"),
        "{}",
        bad.message()
    );

    // Created for a, from c; b joins, from c too.
    let g = on_c
        .create_group(pb::CreateGroupRequest {
            name: "lab".into(),
            max_members: 2,
            node: a.id(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.members.len(), 1);
    assert_eq!(g.leader, a.id());
    assert_eq!(g.term, 1);
    let missing = on_c
        .join_group(pb::JoinGroupRequest {
            group: "nope".into(),
            node: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    group_until(c, "lab", "c to see lab", |g| g.members.len() == 1).await;
    on_c.join_group(pb::JoinGroupRequest {
        group: "lab".into(),
        node: b.id(),
    })
    .await
    .unwrap();
    let g = group_until(c, "lab", "c to see a and b in lab, a leading", |g| {
        g.members.len() == 2 && g.leader == a.id()
    })
    .await;
    assert!(g.quorum);
    assert!(g.leader_since_ms > 0);

    // Full: c's own join is refused with the count.
    let full = on_c
        .join_group(pb::JoinGroupRequest {
            group: "lab".into(),
            node: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted);
    assert!(
        full.message().contains("2 of 2 members"),
        "{}",
        full.message()
    );

    // b leaves (through its own node); a still leads, now alone.
    swarm(b)
        .await
        .leave_group(pb::LeaveGroupRequest {
            group: "lab".into(),
            node: String::new(),
            release: false,
        })
        .await
        .unwrap();
    group_until(a, "lab", "a to see b gone", |g| {
        g.members.len() == 1 && g.leader == a.id()
    })
    .await;
    // And b's record lists no group in ListPeers.
    let peers = AdminClient::connect(format!("http://{}", a.local_addr()))
        .await
        .unwrap()
        .list_peers(ListPeersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let a_entry = peers.peers.iter().find(|p| p.id == a.id()).unwrap();
    assert_eq!(a_entry.groups, ["lab"]);
    let b_entry = peers.peers.iter().find(|p| p.id == b.id()).unwrap();
    assert!(b_entry.groups.is_empty(), "{b_entry:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_leader_is_replaced_by_the_oldest_member() {
    let mut nodes = trio("lead", [&[], &[], &[]]).await;
    let mut on_a = swarm(&nodes[0]).await;
    on_a.create_group(pb::CreateGroupRequest {
        name: "g".into(),
        max_members: 5,
        node: String::new(),
    })
    .await
    .unwrap();
    for n in &nodes[1..] {
        group_until(n, "g", "the group to reach every node", |_| true).await;
        swarm(n)
            .await
            .join_group(pb::JoinGroupRequest {
                group: "g".into(),
                node: String::new(),
            })
            .await
            .unwrap();
    }
    let (a_id, b_id) = (nodes[0].id().to_string(), nodes[1].id().to_string());
    let before = group_until(&nodes[2], "g", "three members, a leading", |g| {
        g.members.len() == 3 && g.leader == a_id
    })
    .await;
    let a = nodes.remove(0);
    let killed = Instant::now();
    a.kill();
    let after = group_until(&nodes[1], "g", "b to take office", |g| g.leader == b_id).await;
    println!("leader replaced {:?} after the kill", killed.elapsed());
    assert_eq!(after.term, before.term + 1);
    assert!(after.epoch > before.epoch);
    group_until(&nodes[0], "g", "b to see itself leading", |g| {
        g.leader == b_id && g.members.len() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pools_outlive_their_creator_and_scope_placement_with_groups_and_models() {
    let mut nodes = trio("pool", [&[], &["llama3:8b"], &["llama3:8b", "whisper"]]).await;
    let (b_id, c_id) = (nodes[1].id().to_string(), nodes[2].id().to_string());
    let mut on_a = swarm(&nodes[0]).await;
    let bad = on_a
        .create_pool(pb::CreatePoolRequest {
            name: "bc".into(),
            nodes: vec!["nobody".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().starts_with("invalid nodes[0]:"),
        "{}",
        bad.message()
    );
    let p = on_a
        .create_pool(pb::CreatePoolRequest {
            name: "bc".into(),
            nodes: vec![b_id.clone(), c_id.clone()],
            description: "b and c".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.members.len(), 2);
    assert_eq!(p.capacity.unwrap().total.unwrap().cpu_millis, 8_000);

    // The creator dies; the pool stays, listed by the others.
    let a = nodes.remove(0);
    let mut on_b = swarm(&nodes[0]).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let pools = on_b
            .list_pools(pb::ListPoolsRequest {})
            .await
            .unwrap()
            .into_inner();
        if pools.pools.iter().any(|p| p.name == "bc") {
            break;
        }
        assert!(Instant::now() < deadline, "b never heard of pool bc");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill();
    common::wait_until("b and c to see a dead", WAIT, || {
        match common::find(&nodes[0], "pool-a").map(|m| m.status) {
            Some(iarnet::mesh::Status::Dead) | None => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;
    let pools = on_b
        .list_pools(pb::ListPoolsRequest {})
        .await
        .unwrap()
        .into_inner();
    let bc = pools
        .pools
        .iter()
        .find(|p| p.name == "bc")
        .expect("the pool outlived a");
    assert_eq!(bc.created_by, "pool-a");
    assert_eq!(bc.members.len(), 2);

    // Placement by pool, by model, and a model nobody serves.
    let d = deploy(
        &nodes[0],
        rpb::DeploySpec {
            pool: "bc".into(),
            ..spec("in-pool")
        },
    )
    .await
    .unwrap();
    assert!([&b_id, &c_id].contains(&&d.owner_id), "{d:?}");
    let d = deploy(
        &nodes[0],
        rpb::DeploySpec {
            requires_model: "whisper".into(),
            ..spec("whisper")
        },
    )
    .await
    .unwrap();
    assert_eq!(d.owner_id, c_id);
    let none = deploy(
        &nodes[0],
        rpb::DeploySpec {
            requires_model: "gpt-9".into(),
            ..spec("gpt")
        },
    )
    .await
    .unwrap_err();
    assert!(
        none.message().contains("without model gpt-9"),
        "{}",
        none.message()
    );
    let bad = deploy(
        &nodes[0],
        rpb::DeploySpec {
            pool: "bad name".into(),
            ..spec("bad")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().starts_with("invalid pool:"),
        "{}",
        bad.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_deploys_go_through_the_leader_onto_members_only() {
    let nodes = trio("gdep", [&[], &[], &[]]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    swarm(a)
        .await
        .create_group(pb::CreateGroupRequest {
            name: "ab".into(),
            max_members: 4,
            node: String::new(),
        })
        .await
        .unwrap();
    group_until(b, "ab", "b to see ab", |_| true).await;
    swarm(b)
        .await
        .join_group(pb::JoinGroupRequest {
            group: "ab".into(),
            node: String::new(),
        })
        .await
        .unwrap();
    // c is no member: it forwards to the leader, a.
    group_until(c, "ab", "c to see both members", |g| g.members.len() == 2).await;
    let mut placed = Vec::new();
    for i in 0..4 {
        // Two CPUs each: the members' providers hold two apiece.
        let d = deploy(
            c,
            rpb::DeploySpec {
                group: "ab".into(),
                cpu: "2".into(),
                ..spec(&format!("ab-{i}"))
            },
        )
        .await
        .unwrap();
        assert!(
            [a.id(), b.id()].contains(&d.owner_id),
            "placed outside the group: {d:?}"
        );
        assert_eq!(d.group, "ab", "{d:?}");
        placed.push(d.clone());
        // Any node answers where it lives: its home is the leader.
        let found = resources(c)
            .await
            .get_deployment(rpb::GetDeploymentRequest { id: d.id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.home_id, a.id(), "the leader placed it: {found:?}");
    }
    let missing = deploy(
        c,
        rpb::DeploySpec {
            group: "zz".into(),
            ..spec("zz")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // a leaves, asked from c: what it runs for the group keeps running.
    let on_a: Vec<&rpb::Deployment> = placed.iter().filter(|d| d.owner_id == a.id()).collect();
    let on_b: Vec<&rpb::Deployment> = placed.iter().filter(|d| d.owner_id == b.id()).collect();
    assert_eq!((on_a.len(), on_b.len()), (2, 2), "{placed:?}");
    let left = swarm(c)
        .await
        .leave_group(pb::LeaveGroupRequest {
            group: "ab".into(),
            node: a.id().to_string(),
            release: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(left.stopped.is_empty(), "{left:?}");
    // b leaves with release, asked from c: b's share is stopped through
    // its home, and a's share is untouched.
    let released = swarm(c)
        .await
        .leave_group(pb::LeaveGroupRequest {
            group: "ab".into(),
            node: b.id().to_string(),
            release: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut want: Vec<String> = on_b.iter().map(|d| d.id.clone()).collect();
    let mut got = released.stopped.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "{released:?}");
    assert!(released.not_stopped.is_empty(), "{released:?}");
    for d in &placed {
        let now = resources(c)
            .await
            .get_deployment(rpb::GetDeploymentRequest { id: d.id.clone() })
            .await
            .unwrap()
            .into_inner();
        let want = if d.owner_id == b.id() {
            "stopped"
        } else {
            "running"
        };
        assert_eq!(now.state, want, "{now:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trips_show_in_list_peers_and_health_checks() {
    let nodes = trio("rtt", [&[], &["llama3:8b"], &[]]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut admin = AdminClient::connect(format!("http://{}", a.local_addr()))
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let peers = admin
            .list_peers(ListPeersRequest::default())
            .await
            .unwrap()
            .into_inner();
        let others: Vec<_> = peers.peers.iter().filter(|p| !p.is_self).collect();
        if others.len() == 2 && others.iter().all(|p| p.rtt_ms > 0.0 && p.rtt_p99_ms > 0.0) {
            let pb_ = others.iter().find(|p| p.id == b.id()).unwrap();
            assert_eq!(pb_.models, ["llama3:8b"]);
            assert!(pb_.allow_remote);
            break;
        }
        assert!(Instant::now() < deadline, "no round trips yet: {peers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    deploy(
        b,
        rpb::DeploySpec {
            provider_id: "rtt-b-p".into(),
            ..spec("busy")
        },
    )
    .await
    .unwrap();
    let h = swarm(a)
        .await
        .health_check(pb::HealthCheckRequest { node: b.id() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, "alive");
    assert!(h.response_ms > 0.0 && h.rtt_ms > 0.0, "{h:?}");
    assert_eq!(h.models, ["llama3:8b"]);
    assert_eq!(h.active_allocations, 1);
    assert!((h.cpu_load - 0.25).abs() < 1e-9, "{h:?}");
    let nobody = swarm(a)
        .await
        .health_check(pb::HealthCheckRequest {
            node: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(nobody.code(), Code::NotFound);
}

/// A minimal HTTP/1.1 exchange on a blocking thread: (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let (method, path, body) = (method.to_string(), path.to_string(), body.to_string());
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, rest.to_string())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_http_api_and_metrics_show_groups_pools_and_round_trips() {
    let nodes = trio("http", [&["whisper"], &[], &[]]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let at = a.http_addr();

    let (status, body) = http(
        at,
        "POST",
        "/swarm/groups",
        r#"{"name": "lab", "max_member": 3}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("max_member"), "{body}");
    let (status, body) = http(
        at,
        "POST",
        "/swarm/groups",
        r#"{"name": "lab", "max_members": 3}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(
        at,
        "POST",
        "/swarm/groups",
        r#"{"name": "lab", "max_members": 3}"#,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    group_until(b, "lab", "b to see lab", |_| true).await;
    let join = format!(r#"{{"node": "{}"}}"#, b.id());
    let (status, body) = http(at, "POST", "/swarm/groups/lab/join", &join).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(at, "POST", "/swarm/groups/nope/join", "").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(at, "POST", "/swarm/pools", r#"{"name": "all"}"#).await;
    assert_eq!(status, 201, "{body}");
    let pool: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(pool["members"].as_array().unwrap().len(), 3, "{body}");
    let (status, _) = http(at, "DELETE", "/swarm/pools/nope", "").await;
    assert_eq!(status, 404);
    let (status, body) = http(at, "GET", &format!("/swarm/health/{}", b.id()), "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"alive""#), "{body}");
    let (status, _) = http(at, "GET", "/swarm/health/nobody", "").await;
    assert_eq!(status, 404);

    let (_, body) = http(at, "GET", "/peer/nodes", "").await;
    let nodes_json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let me = nodes_json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["is_self"] == true)
        .unwrap()
        .clone();
    assert_eq!(me["models"], serde_json::json!(["whisper"]));
    assert_eq!(me["groups"], serde_json::json!(["lab"]));

    let deadline = Instant::now() + WAIT;
    loop {
        let (_, metrics) = http(at, "GET", "/metrics", "").await;
        let ok = metrics.contains("iarnet_peer_rtt_seconds{")
            && metrics.contains(r#"iarnet_swarm_group_leader{group="lab"} 1"#)
            && metrics.contains(r#"iarnet_swarm_group_members{group="lab"} 2"#)
            && metrics.contains("iarnet_swarm_pools 1");
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics lack the swarm: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_keeps_its_groups_and_pools() {
    let store: Arc<dyn iarnet::store::Store> = Arc::new(iarnet::store::memory::MemoryStore::new());
    let boot = || async {
        node::start_with_store(
            Config::loopback("keep-a"),
            ProviderSetup::Given(vec![provider("keep-a-p")]),
            store.clone(),
        )
        .await
        .expect("node starts")
    };
    let a = boot().await;
    let id = a.id();
    let mut api = swarm(&a).await;
    api.create_group(pb::CreateGroupRequest {
        name: "kept".into(),
        max_members: 3,
        node: String::new(),
    })
    .await
    .unwrap();
    api.create_pool(pb::CreatePoolRequest {
        name: "mine".into(),
        nodes: vec![id.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let joined = group_until(&a, "kept", "a to lead kept", |g| g.leader == id).await;
    // Shutdown saves what changed since the last round.
    a.shutdown().await;

    let a = boot().await;
    assert_eq!(a.id(), id, "the identity is kept in the store");
    let g = group_until(&a, "kept", "a to lead kept again", |g| g.leader == id).await;
    assert_eq!(g.members[0].joined_ms, joined.members[0].joined_ms);
    assert_eq!(g.max_members, 3);
    let pools = swarm(&a)
        .await
        .list_pools(pb::ListPoolsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pools;
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert_eq!(pools[0].name, "mine");
    assert_eq!(pools[0].members, [id]);
    a.shutdown().await;
}
