//! Zero-configuration LAN discovery on a real LAN: network namespaces on a
//! Linux bridge, one `iarnet` binary in each, no seeds. Root only (CI runs
//! as root); elsewhere each test says why it skipped.

#[path = "support/netns.rs"]
mod netns;

use std::time::Duration;

use netns::Lan;

/// Generous: this asserts behaviour, not speed (see `benches/lan.rs`).
const JOIN: Duration = Duration::from_secs(30);
/// How long nodes that must not meet are watched: 20 gossip rounds, and
/// several times what discovery takes when multicast works.
const APART: Duration = Duration::from_secs(4);

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
