//! Real nodes over tonic on 127.0.0.1: forming, crash, leave, restart, providers.

mod common;

use std::time::Duration;

use common::{all_see_alive, find, start, wait_until};
use iarnet::mesh::Status;
use iarnet::node::NodeHandle;
use iarnet::proto::peer::ProviderInfo;

const WAIT: Duration = Duration::from_secs(30);

async fn mesh(n: usize, prefix: &str) -> Vec<NodeHandle> {
    let seed = start(&format!("{prefix}0"), &[]).await;
    let seed_addr = vec![seed.advertise_addr()];
    let mut nodes = vec![seed];
    for i in 1..n {
        nodes.push(start(&format!("{prefix}{i}"), &seed_addr).await);
    }
    let ids: Vec<String> = nodes.iter().map(|n| n.id()).collect();
    let refs: Vec<&NodeHandle> = nodes.iter().collect();
    wait_until("every node to see every node alive", WAIT, || {
        all_see_alive(&refs, &ids)
    })
    .await;
    nodes
}

fn provider(id: &str) -> ProviderInfo {
    ProviderInfo {
        id: id.into(),
        name: format!("{id} docker"),
        r#type: "docker".into(),
        host: "127.0.0.1".into(),
        port: 2375,
        status: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_nodes_form_from_one_seed_and_share_providers() {
    let nodes = mesh(8, "form").await;

    nodes[3].set_providers(vec![provider("form3-docker")]);
    wait_until("the provider to reach every node", WAIT, || {
        for n in &nodes {
            let ps = n.providers();
            if !ps
                .iter()
                .any(|p| p.id == "form3-docker" && p.owner_id == "form3")
            {
                return Err(format!(
                    "{} has providers {:?}",
                    n.id(),
                    ps.iter().map(|p| &p.id).collect::<Vec<_>>()
                ));
            }
        }
        Ok(())
    })
    .await;

    nodes[3].set_providers(Vec::new());
    wait_until(
        "the removed provider to vanish everywhere",
        WAIT,
        || match nodes.iter().find(|n| !n.providers().is_empty()) {
            Some(n) => Err(format!("{} still has {:?}", n.id(), n.providers())),
            None => Ok(()),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_detected_by_all_and_its_providers_vanish() {
    let mut nodes = mesh(5, "crash").await;
    nodes[2].set_providers(vec![provider("crash2-docker")]);
    wait_until("the provider to spread", WAIT, || {
        match nodes.iter().find(|n| n.providers().len() != 1) {
            Some(n) => Err(format!("{} has {} providers", n.id(), n.providers().len())),
            None => Ok(()),
        }
    })
    .await;

    nodes.remove(2).kill();
    wait_until("every node to hold crash2 dead", WAIT, || {
        for n in &nodes {
            match find(n, "crash2") {
                Some(m) if m.status == Status::Dead => {}
                None => {}
                Some(m) => return Err(format!("{} holds crash2 {:?}", n.id(), m.status)),
            }
        }
        Ok(())
    })
    .await;
    for n in &nodes {
        assert!(
            n.providers().is_empty(),
            "{} still lists a dead node's provider",
            n.id()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_is_seen_as_left_not_dead() {
    let mut nodes = mesh(5, "leave").await;
    nodes.remove(1).shutdown().await;
    // Left (not dead) means the goodbye arrived and spread, not the failure detector.
    wait_until("every node to hold leave1 as left", WAIT, || {
        for n in &nodes {
            match find(n, "leave1") {
                Some(m) if m.status == Status::Left => {}
                other => return Err(format!("{} holds {:?}", n.id(), other.map(|m| m.status))),
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_as_a_new_generation() {
    let mut nodes = mesh(4, "restart").await;
    let seed = vec![nodes[0].advertise_addr()];
    let old = nodes.remove(3);
    let old_generation = old.generation();
    old.kill();
    let fresh = start("restart3", &seed).await;
    let new_generation = fresh.generation();
    assert!(new_generation > old_generation);
    nodes.push(fresh);
    wait_until(
        "every node to hold restart3's new generation alive",
        WAIT,
        || {
            for n in &nodes {
                match find(n, "restart3") {
                    Some(m) if m.generation == new_generation && m.status == Status::Alive => {}
                    other => {
                        return Err(format!(
                            "{} holds {:?}",
                            n.id(),
                            other.map(|m| (m.generation, m.status))
                        ))
                    }
                }
            }
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_given_by_dns_name_is_resolved() {
    let a = start("dns-a", &[]).await;
    let by_name = format!("localhost:{}", a.local_addr().port());
    let b = start("dns-b", &[by_name]).await;
    let ids = vec!["dns-a".to_string(), "dns-b".to_string()];
    wait_until("b to join through a seed named localhost", WAIT, || {
        all_see_alive(&[&a, &b], &ids)
    })
    .await;
}

/// Every 60th round prunes the channel pool; a node must stay responsive
/// through many of those (they once locked the mesh twice and froze it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_keep_gossiping_past_many_housekeeping_rounds() {
    // A frozen node blocks a runtime thread for good, and the test would hang
    // instead of failing: a watchdog turns that into a failure with a reason.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watched = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(WAIT * 3);
        if !watched.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("a node froze: the housekeeping test did not finish");
            std::process::abort();
        }
    });
    let fast = |id: &str, seeds: Vec<String>| {
        let mut cfg = iarnet::config::Config::loopback(id);
        cfg.gossip.interval = Duration::from_millis(5);
        cfg.initial_peers = seeds;
        iarnet::node::start_with(cfg, iarnet::node::ProviderSetup::Given(Vec::new()))
    };
    let a = fast("house-a", vec![]).await.expect("a starts");
    let b = fast("house-b", vec![a.advertise_addr()])
        .await
        .expect("b starts");
    wait_until("both nodes to pass 200 rounds, still joined", WAIT, || {
        for n in [&a, &b] {
            // Rounds first: a frozen node holds the lock ids_in takes.
            let rounds = n.stats().rounds;
            if rounds < 200 {
                return Err(format!("{}: only {rounds} rounds", n.id()));
            }
            let alive = common::ids_in(n, Status::Alive).len();
            if alive != 2 {
                return Err(format!("{}: {rounds} rounds, {alive} alive", n.id()));
            }
        }
        Ok(())
    })
    .await;
    // A frozen node would not answer this: the API takes the same lock.
    assert!(find(&a, "house-b").is_some());
    done.store(true, std::sync::atomic::Ordering::SeqCst);
}
