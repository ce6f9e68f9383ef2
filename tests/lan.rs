//! Zero-configuration LAN discovery on a real LAN: network namespaces on a
//! Linux bridge, one `iarnet` binary in each, no seeds. Root only (CI runs
//! as root); elsewhere each test says why it skipped.

#[path = "support/netns.rs"]
mod netns;

use std::time::{Duration, Instant};

use netns::Lan;
use serde_json::Value;

/// Generous: this asserts behaviour, not speed (see `benches/lan.rs`).
const JOIN: Duration = Duration::from_secs(30);
/// How long nodes that must not meet are watched: 20 gossip rounds, and
/// several times what discovery takes when multicast works.
const APART: Duration = Duration::from_secs(4);
/// How long a group may take to settle after a partition or a heal.
const SETTLE: Duration = Duration::from_secs(60);

fn skip() -> bool {
    match netns::unavailable() {
        Some(why) => {
            eprintln!("skipped: {why}");
            true
        }
        None => false,
    }
}

#[test]
fn three_nodes_without_seeds_find_each_other_over_mdns() {
    if skip() {
        return;
    }
    let mut lan = Lan::new(0);
    let ids = ["a0", "a1", "a2"];
    for id in ids {
        let ns = lan.add_namespace("lan0");
        // The shipped config: no initial_peers, discovery.mdns auto (= on).
        lan.spawn(ns, id, &[]);
    }
    for n in 0..ids.len() {
        lan.wait("every node to see all three alive", JOIN, |lan| {
            lan.sees(n, &ids)
        });
    }
    let metrics = lan.nodes[0].get("/metrics").unwrap_or_default();
    let discovered = metrics
        .lines()
        .find(|l| l.starts_with("iarnet_mdns_discovered_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(
        discovered.is_some_and(|n| n >= 1.0),
        "iarnet_mdns_discovered_total counts the peers found: {discovered:?}"
    );
}

#[test]
fn without_multicast_nodes_stay_apart_and_a_seed_still_joins() {
    if skip() {
        return;
    }
    let mut lan = Lan::new(1);
    for n in 0..3 {
        let ns = lan.add_namespace("lan0");
        lan.drop_mdns(ns);
        if n < 2 {
            lan.spawn(ns, &format!("b{n}"), &[("IARNET_MDNS", "on")]);
        }
    }
    for n in 0..2 {
        lan.wait("the node to answer", JOIN, |lan| lan.sees(n, &[]));
    }
    lan.hold("b0 and b1 apart with UDP 5353 dropped", APART, |lan| {
        lan.does_not_see(0, "b1")?;
        lan.does_not_see(1, "b0")
    });
    let seed = lan.nodes[0].grpc();
    lan.spawn(
        2,
        "b2",
        &[("IARNET_MDNS", "on"), ("IARNET_INITIAL_PEERS", &seed)],
    );
    lan.wait("b2 to join through its seed b0", JOIN, |lan| {
        lan.sees(2, &["b0", "b2"])?;
        lan.sees(0, &["b0", "b2"])
    });
}

#[test]
fn an_excluded_interface_is_never_used() {
    if skip() {
        return;
    }
    let mut lan = Lan::new(2);
    for (n, ifname) in ["lan0", "lan0", "docker0", "docker0"].iter().enumerate() {
        let ns = lan.add_namespace(ifname);
        let env: &[(&str, &str)] = match n {
            2 => &[("IARNET_MDNS", "on")], // the default exclude list has docker0
            3 => &[("IARNET_MDNS", "on"), ("IARNET_MDNS_EXCLUDE", "tun*")],
            _ => &[("IARNET_MDNS", "on")],
        };
        lan.spawn(ns, &format!("c{n}"), env);
    }
    // docker0 is not excluded for c3, so it proves the LAN works over it too.
    for n in [0, 1, 3] {
        lan.wait("c0, c1 and c3 to meet", JOIN, |lan| {
            lan.sees(n, &["c0", "c1", "c3"])
        });
    }
    lan.hold(
        "c2 (only on docker0) never seen, seeing no one",
        APART,
        |lan| {
            for n in [0, 1, 3] {
                lan.does_not_see(n, "c2")?;
            }
            match lan.nodes[2].alive() {
                Some(alive) if alive.len() == 1 => Ok(()),
                other => Err(format!("c2 sees {other:?}")),
            }
        },
    );
}

/// Group `name` as node `n` reports it in `GET /swarm/groups`.
fn group(lan: &Lan, n: usize, name: &str) -> Result<Value, String> {
    let node = &lan.nodes[n];
    let body = node
        .get("/swarm/groups")
        .ok_or_else(|| format!("{} did not answer /swarm/groups", node.id))?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    v["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["name"] == name))
        .cloned()
        .ok_or_else(|| format!("{} does not list {name}: {body}", node.id))
}

/// Node `n` reports group `lab` led by `leader` with quorum and `members`
/// members (and `term`, if given).
fn led_by(
    lan: &Lan,
    n: usize,
    leader: &str,
    members: usize,
    term: Option<u64>,
) -> Result<(), String> {
    let g = group(lan, n, "lab")?;
    let ok = g["leader"] == leader
        && g["quorum"] == true
        && g["members"].as_array().map(Vec::len) == Some(members)
        && term.is_none_or(|t| g["term"] == t);
    if ok {
        Ok(())
    } else {
        Err(format!("{} reports {g}", lan.nodes[n].id))
    }
}

/// Node `n` reports group `lab` without a leader for want of a majority.
fn leaderless(lan: &Lan, n: usize) -> Result<(), String> {
    let g = group(lan, n, "lab")?;
    let ok = g["leader"] == ""
        && g["quorum"] == false
        && g["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no majority"));
    if ok {
        Ok(())
    } else {
        Err(format!("{} reports {g}", lan.nodes[n].id))
    }
}

#[test]
fn a_partitioned_group_leads_only_on_its_majority_side_and_heals() {
    if skip() {
        return;
    }
    let mut lan = Lan::new(3);
    let ids = ["g0", "g1", "g2", "g3", "g4"];
    for id in ids {
        let ns = lan.add_namespace("lan0");
        // One seed (g0) rather than mDNS: the same join on every run.
        let seed = lan.nodes.first().map(|g0| g0.grpc());
        let mut env = vec![("IARNET_MDNS", "off")];
        env.extend(seed.as_deref().map(|s| ("IARNET_INITIAL_PEERS", s)));
        lan.spawn(ns, id, &env);
    }
    for n in 0..ids.len() {
        lan.wait("every node to see all five alive", JOIN, |lan| {
            lan.sees(n, &ids)
        });
    }

    // g0 creates the group; the others join it, each on itself, in order.
    let created = lan.nodes[0].post("/swarm/groups", r#"{"name":"lab","max_members":8}"#);
    assert!(
        matches!(&created, Some((201, _))),
        "POST /swarm/groups on g0: {created:?}"
    );
    for (n, id) in ids.iter().enumerate().skip(1) {
        lan.wait("the node to list lab before it joins", JOIN, |lan| {
            group(lan, n, "lab").map(drop)
        });
        let joined = lan.nodes[n].post("/swarm/groups/lab/join", "");
        assert!(
            matches!(&joined, Some((200, _))),
            "POST /swarm/groups/lab/join on {id}: {joined:?}"
        );
    }
    for n in 0..ids.len() {
        lan.wait(
            "every node to report lab, 5 members, led by g0",
            JOIN,
            |lan| led_by(lan, n, "g0", 5, Some(1)),
        );
    }

    // 2|3: the leader's side is the minority.
    let cut = Instant::now();
    lan.partition(&[0, 1], &[2, 3, 4]);
    for n in 2..5 {
        lan.wait("g2 to lead the majority side in term 2", SETTLE, |lan| {
            led_by(lan, n, "g2", 3, Some(2))
        });
    }
    let elected = cut.elapsed();
    eprintln!("2|3 partition: the majority side elected g2 in {elected:?}");
    for n in 0..2 {
        lan.wait(
            "g0 and g1 to be leaderless without a majority",
            SETTLE,
            |lan| leaderless(lan, n),
        );
    }
    lan.hold(
        "g0 and g1 leaderless, g2 leading",
        Duration::from_secs(3),
        |lan| {
            leaderless(lan, 0)?;
            leaderless(lan, 1)?;
            led_by(lan, 2, "g2", 3, Some(2))
        },
    );

    let leads = |n: usize, v: u8| {
        let want = format!("iarnet_swarm_group_leader{{group=\"lab\"}} {v}");
        let metrics = lan.nodes[n].get("/metrics").unwrap_or_default();
        assert!(
            metrics.lines().any(|l| l == want),
            "{} /metrics lacks {want}:\n{}",
            ids[n],
            metrics
                .lines()
                .filter(|l| l.contains("swarm_group"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    leads(2, 1);
    leads(0, 0);
    let health = lan.nodes[2].get("/swarm/health/g3").unwrap_or_default();
    let h: Value = serde_json::from_str(&health).unwrap_or_default();
    assert!(
        h["status"] == "alive" && h["response_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "GET /swarm/health/g3 on g2: {health}"
    );
    let mended = Instant::now();
    lan.heal();
    // Death reports the minority made while cut off reach the majority
    // after the heal, a moment before g2's refutation: a successor waits a
    // gossip interval before taking office, so leadership does not move.
    lan.wait("all five to follow g2 in term 2", SETTLE, |lan| {
        let seen: Vec<String> = (0..ids.len())
            .filter_map(|n| led_by(lan, n, "g2", 5, Some(2)).err())
            .collect();
        if seen.is_empty() {
            Ok(())
        } else {
            Err(seen.join("\n"))
        }
    });
    let healed = mended.elapsed();
    eprintln!("2|3 partition: healed, all five follow g2 (term 2) after {healed:?}");
    lan.hold(
        "all five following g2 in term 2",
        Duration::from_secs(2),
        |lan| (0..5).try_for_each(|n| led_by(lan, n, "g2", 5, Some(2))),
    );
}
