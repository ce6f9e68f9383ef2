use proptest::prelude::*;

use super::record::{entry_hash, Stamp, Status};
use super::sim::{sim_id, Sim, SimConfig};
use super::*;
use crate::proto::peer::{Member, ProviderInfo};

fn stamp(generation: u64, incarnation: u64, status: Status) -> Stamp {
    Stamp {
        generation,
        incarnation,
        status,
        confirmations: 0,
    }
}

#[test]
fn newer_generation_always_wins() {
    for status in [Status::Alive, Status::Suspect, Status::Dead, Status::Left] {
        assert!(stamp(2, 0, Status::Alive).supersedes(&stamp(1, 9, status)));
        assert!(!stamp(1, 9, status).supersedes(&stamp(2, 0, Status::Alive)));
    }
}

#[test]
fn suspicion_and_refutation_order() {
    let alive = stamp(1, 3, Status::Alive);
    let suspect = stamp(1, 3, Status::Suspect);
    let dead = stamp(1, 3, Status::Dead);
    assert!(suspect.supersedes(&alive));
    assert!(!alive.supersedes(&suspect));
    assert!(
        stamp(1, 4, Status::Alive).supersedes(&suspect),
        "owner refutes with a higher incarnation"
    );
    assert!(dead.supersedes(&suspect));
    assert!(
        !stamp(1, 3, Status::Alive).supersedes(&dead),
        "a relayed old alive never resurrects"
    );
    assert!(stamp(1, 4, Status::Alive).supersedes(&dead));
    assert!(
        !stamp(1, 99, Status::Alive).supersedes(&stamp(1, 0, Status::Left)),
        "left is final"
    );
    let confirmed = Stamp {
        confirmations: 2,
        ..suspect
    };
    assert!(confirmed.supersedes(&suspect));
}

fn arb_status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Alive),
        Just(Status::Suspect),
        Just(Status::Dead),
        Just(Status::Left)
    ]
}

fn arb_stamp() -> impl Strategy<Value = Stamp> {
    (0u64..3, 0u64..4, arb_status(), 0u32..3).prop_map(|(g, i, s, c)| Stamp {
        generation: g,
        incarnation: i,
        status: s,
        confirmations: if s == Status::Suspect { c } else { 0 },
    })
}

proptest! {
    /// Merging is a strict order: never both ways, so replicas cannot flip-flop.
    #[test]
    fn supersedes_is_antisymmetric(a in arb_stamp(), b in arb_stamp()) {
        prop_assert!(!(a.supersedes(&b) && b.supersedes(&a)));
        prop_assert!(!a.supersedes(&a));
    }

    /// Transitive: applying records in any order ends at the same winner.
    #[test]
    fn supersedes_is_transitive(a in arb_stamp(), b in arb_stamp(), c in arb_stamp()) {
        if a.supersedes(&b) && b.supersedes(&c) {
            prop_assert!(a.supersedes(&c));
        }
    }

    /// The incrementally kept view hash equals a hash computed from scratch.
    #[test]
    fn view_hash_is_incremental(ops in prop::collection::vec((0usize..12, 0u64..3, arb_status()), 1..60)) {
        let mut mesh = Mesh::new(identity("me", 1), MeshConfig::default(), 7, 0);
        for (i, (who, inc, status)) in ops.into_iter().enumerate() {
            let _ = mesh.apply_member(i as u64, member(&format!("m{who}"), 1, inc, status), false);
        }
        let scratch = mesh.view().iter().fold(0u64, |h, e| h ^ entry_hash(&e.info.id, &e.stamp(), e.held_version()));
        prop_assert_eq!(scratch, mesh.view_hash());
    }
}

fn identity(id: &str, generation: u64) -> Identity {
    Identity {
        id: id.into(),
        name: id.into(),
        addr: format!("{id}:1"),
        generation,
    }
}

fn member(id: &str, generation: u64, incarnation: u64, status: Status) -> Member {
    Member {
        id: id.into(),
        name: id.into(),
        generation,
        addr: format!("{id}:1"),
        incarnation,
        status: status.to_proto(),
        provider_version: 0,
        suspected_by: Vec::new(),
    }
}

#[test]
fn a_suspected_node_refutes_with_a_higher_incarnation() {
    let mut mesh = Mesh::new(identity("me", 5), MeshConfig::default(), 1, 0);
    let _ = mesh.apply_member(0, member("me", 5, 0, Status::Suspect), false);
    assert_eq!(mesh.incarnation(), 1);
    // An old generation of ourselves is history, not a threat.
    let _ = mesh.apply_member(0, member("me", 4, 9, Status::Dead), false);
    assert_eq!(mesh.incarnation(), 1);
}

#[test]
fn malformed_records_are_rejected_without_change() {
    let mut mesh = Mesh::new(identity("me", 1), MeshConfig::default(), 1, 0);
    let before = mesh.view_hash();
    let mut bad = member("x", 1, 0, Status::Alive);
    bad.status = 42;
    assert!(mesh.apply_member(0, bad, false).is_err());
    assert!(mesh
        .apply_member(0, member("", 1, 0, Status::Alive), false)
        .is_err());
    assert_eq!(before, mesh.view_hash());
}

#[test]
fn suspicion_timeout_shrinks_with_confirmations() {
    let mesh = Mesh::new(identity("me", 1), MeshConfig::default(), 1, 0);
    let lone = mesh.suspicion_timeout(64, 1);
    let confirmed = mesh.suspicion_timeout(64, 4);
    assert!(confirmed < lone, "{confirmed} < {lone}");
    assert!(
        mesh.suspicion_timeout(1000, 4) > confirmed,
        "bigger meshes wait longer"
    );
}

#[test]
fn provider_versions_keep_unchanged_entries() {
    let mut mesh = Mesh::new(identity("me", 1), MeshConfig::default(), 1, 0);
    let p = |id: &str| ProviderInfo {
        id: id.into(),
        r#type: "docker".into(),
        ..Default::default()
    };
    mesh.set_providers(vec![p("a")]);
    mesh.set_providers(vec![p("a"), p("b")]);
    let got = mesh.providers();
    let a = got.iter().find(|x| x.id == "a").expect("a advertised");
    let b = got.iter().find(|x| x.id == "b").expect("b advertised");
    assert_eq!((a.version, b.version), (1, 2));
    assert!(got
        .iter()
        .all(|x| x.owner_id == "me" && x.owner_generation == 1));
}

// ----- simulations -----------------------------------------------------

fn sim(nodes: usize, seed: u64) -> Sim {
    println!("simulation seed {seed} (replay with this seed)");
    Sim::new(SimConfig {
        nodes,
        seed,
        ..Default::default()
    })
}

#[track_caller]
fn run(sim: &mut Sim, what: &str, max_rounds: u64, done: impl FnMut(&Sim) -> bool) -> u64 {
    match sim.run_until(max_rounds, done) {
        Some(r) => r,
        None => panic!(
            "{what}: not reached in {max_rounds} rounds (seed {})",
            sim.seed()
        ),
    }
}

#[test]
fn sim_thousand_nodes_converge_from_one_seed() {
    let mut s = sim(1000, 11);
    let rounds = run(&mut s, "convergence of 1000 nodes", 40, Sim::converged);
    println!("1000 nodes converged in {rounds} rounds");
    assert_eq!(s.core(999).providers().len(), 1000);
}

#[test]
fn sim_crash_is_detected_and_never_resurrected() {
    let mut s = sim(64, 21);
    run(&mut s, "convergence", 40, Sim::converged);
    s.crash(7);
    let rounds = run(&mut s, "detection of the crash", 30, |s| {
        s.gone_everywhere(7)
    });
    println!("crash detected everywhere in {rounds} rounds");
    // Long after the tombstones are deleted, nobody brings node 7 back.
    let grace = s.core(0).config().tombstone_grace / s.core(0).config().gossip_interval;
    for _ in 0..grace + 20 {
        s.step();
        assert!(
            s.gone_everywhere(7),
            "node 7 resurrected (seed {})",
            s.seed()
        );
    }
    assert!(s
        .core(0)
        .providers()
        .iter()
        .all(|p| p.owner_id != sim_id(7)));
    assert_eq!(s.false_deaths(), 0);
}

#[test]
fn sim_leave_is_seen_at_once_and_restart_supersedes() {
    let mut s = sim(32, 31);
    run(&mut s, "convergence", 40, Sim::converged);
    s.leave(3);
    let rounds = run(&mut s, "departure", 10, |s| s.gone_everywhere(3));
    println!("departure known everywhere in {rounds} rounds");
    s.restart(3);
    run(&mut s, "rejoin as a new generation", 20, Sim::converged);
    let e = s.core(0).view().get(&sim_id(3)).expect("node 3 known");
    assert_eq!((e.info.generation, e.status), (2, Status::Alive));
}

#[test]
fn sim_partition_heals() {
    let mut s = sim(40, 41);
    run(&mut s, "convergence", 40, Sim::converged);
    s.partition(|i| (i >= 20) as u32);
    let left: Vec<usize> = (0..20).collect();
    let right: Vec<usize> = (20..40).collect();
    run(&mut s, "both sides settle", 60, |s| {
        s.converged_within(&left) && s.converged_within(&right)
    });
    s.heal();
    let rounds = run(&mut s, "heal", 60, Sim::converged);
    println!("partition healed in {rounds} rounds");
    assert_eq!(s.core(0).providers().len(), 40);
}

#[test]
fn sim_lossy_network_has_no_false_deaths() {
    let mut s = Sim::new(SimConfig {
        nodes: 200,
        seed: 51,
        loss: 0.10,
        ..Default::default()
    });
    println!("simulation seed {}", s.seed());
    // Under loss some suspicion is always in flight, so views never match
    // byte for byte; what matters is that everyone holds everyone as live.
    let all_live = |s: &Sim| (0..200).all(|i| s.core(i).live_count() == 200);
    let rounds = run(&mut s, "convergence under loss", 60, all_live);
    println!("200 nodes at 10% loss: everyone live everywhere after {rounds} rounds");
    for _ in 0..120 {
        s.step();
    }
    assert_eq!(
        s.false_deaths(),
        0,
        "false deaths under 10% loss (seed {})",
        s.seed()
    );
    assert!(
        all_live(&s),
        "someone lost track of a live node (seed {})",
        s.seed()
    );
}

#[test]
fn an_entry_stays_small() {
    // 10^8 of these in the 10,000-node simulation: keep an eye on the size.
    let size = std::mem::size_of::<super::view::Entry>();
    println!("Entry is {size} bytes");
    assert!(size <= 72, "Entry grew to {size} bytes");
}
