//! Groups over the gossip simulator: a partition where only the majority
//! side keeps a leader, the heal, and a dead leader replaced within the
//! detection time plus one round.

use super::sim::SwarmSim;
use crate::mesh::sim::{sim_id, SimConfig};

/// `n` converged cores that all heard of group "g", which core 0 created
/// with at most `max` members.
fn created(n: usize, seed: u64, max: u32) -> SwarmSim {
    let mut s = SwarmSim::new(SimConfig {
        nodes: n,
        seed,
        ..SimConfig::default()
    });
    s.sim
        .run_until(200, |sim| sim.converged())
        .expect("the mesh converges");
    let now = s.sim.now();
    s.swarms[0].create_group("g", max, &[], now).unwrap();
    s.publish(0);
    s.run_until(50, |s| (1..n).all(|i| s.group(i, "g").is_some()))
        .expect("every core hears of g");
    s
}

/// `n` converged cores, all in group "g" (core 0 created it).
fn grouped(n: usize, seed: u64) -> SwarmSim {
    let mut s = created(n, seed, 16);
    for i in 1..n {
        s.join(i, "g").unwrap();
    }
    s.run_until(100, |s| {
        (0..n).all(|i| {
            s.group(i, "g")
                .is_some_and(|g| g.members.len() == n && g.leader.as_deref() == Some("n0"))
        })
    })
    .expect("every core sees n members led by n0");
    // The leader's roster counts everyone.
    s.run_until(50, |s| {
        s.swarms
            .iter()
            .all(|w| w.roster("g").is_some_and(|r| r.members.len() == n))
    })
    .expect("the roster reaches every core");
    s
}

#[test]
fn only_the_majority_side_of_a_partition_has_a_leader_and_the_heal_reunites_them() {
    let mut s = grouped(5, 7);
    s.sim.partition(|i| u32::from(i >= 2));
    let rounds = s
        .run_until(300, |s| {
            (2..5).all(|i| s.leader(i, "g").as_deref() == Some("n2"))
                && (0..2).all(|i| s.leader(i, "g").is_none())
        })
        .expect("the majority elects n2 and the minority has no leader");
    let minority = s.group(0, "g").unwrap();
    assert!(!minority.quorum, "{minority:?}");
    assert!(
        minority.reason.contains("2 of the roster's 5"),
        "{}",
        minority.reason
    );
    let majority = s.group(3, "g").unwrap();
    assert_eq!(majority.term, 2);
    println!("majority led by n2 after {rounds} rounds");

    // The minority stays leaderless however long the partition lasts.
    for _ in 0..50 {
        s.step();
        assert!(s.leader(0, "g").is_none() && s.leader(1, "g").is_none());
    }

    s.sim.heal();
    s.run_until(300, |s| {
        // The minority's death reports arrive after the heal, but n2
        // refutes them before anyone replaces it: leadership never moves.
        for i in 0..5 {
            let g = s.group(i, "g").unwrap();
            assert!(
                g.term <= 2 && g.leader.as_deref().is_none_or(|l| l == "n2"),
                "core {i} after the heal: {g:?}"
            );
        }
        (0..5).all(|i| {
            s.group(i, "g").is_some_and(|g| {
                g.members.len() == 5 && g.leader.as_deref() == Some("n2") && g.quorum
            })
        })
    })
    .expect("after the heal all five follow n2");
    for _ in 0..20 {
        s.step();
        assert!((0..5).all(|i| s.group(i, "g").unwrap().term == 2));
    }
}

#[test]
fn a_successor_wins_over_epochs_its_side_never_saw() {
    let mut s = grouped(5, 13);
    s.sim.partition(|i| u32::from(i >= 2));
    s.run_until(300, |s| {
        (2..5).all(|i| s.leader(i, "g").as_deref() == Some("n2"))
    })
    .expect("the majority elects n2");
    let successor = s.swarms[2].roster("g").unwrap().clone();
    assert_eq!(successor.term, 2);
    // The old leader wrote rosters just before the cut that the majority
    // never received: more epochs than its successor's, in the older term.
    let stale = crate::proto::peer::Roster {
        term: 1,
        epoch: successor.epoch + 3,
        leader: "n0".into(),
        members: (0..5).map(sim_id).collect(),
        ..successor.clone()
    };
    s.swarms[0].hold_roster(stale);
    s.step();
    assert!(
        s.leader(0, "g").is_none(),
        "the minority still has no leader"
    );

    s.sim.heal();
    s.run_until(300, |s| {
        for i in 0..5 {
            let g = s.group(i, "g").unwrap();
            assert!(
                g.leader.as_deref().is_none_or(|l| l == "n2"),
                "core {i} after the heal: {g:?}"
            );
        }
        (0..5).all(|i| {
            s.group(i, "g").is_some_and(|g| {
                g.members.len() == 5 && g.leader.as_deref() == Some("n2") && g.term == 2
            })
        })
    })
    .expect("after the heal all five follow n2 in term 2");
}

#[test]
fn two_joins_racing_past_the_maximum_leave_one_member_out() {
    let mut s = created(4, 3, 2);
    // n3 and n2 join in one round: each sees one member of two, so both pass.
    for i in [3, 2] {
        s.join(i, "g").unwrap();
    }
    s.run_until(100, |s| {
        (0..4).all(|i| {
            s.group(i, "g").is_some_and(|g| {
                let ids: Vec<&str> = g.members.iter().map(|m| m.id.as_str()).collect();
                ids == ["n0", "n2"] && g.leader.as_deref() == Some("n0")
            })
        })
    })
    .expect("n3 withdraws (same join time, higher id); n0 and n2 stay");
    assert!(!s.swarms[3].is_member("g"));
    let withdrawn = s.swarms[3].take_withdrawn();
    assert_eq!(withdrawn.len(), 1, "{withdrawn:?}");
    assert!(withdrawn[0].1.contains("is full"), "{withdrawn:?}");
    assert!(s.swarms[2].take_withdrawn().is_empty());
    assert_eq!(s.swarms[0].roster("g").unwrap().members, ["n0", "n2"]);
}

#[test]
fn a_dead_leader_is_replaced_within_the_detection_time_and_one_round() {
    let mut s = grouped(8, 11);
    s.sim.crash(0);
    let mut detected = None;
    let mut took_office = None;
    for round in 1..=300u64 {
        s.step();
        let dead = s
            .sim
            .core(1)
            .view()
            .get(&sim_id(0))
            .is_none_or(|e| e.status.is_tombstone());
        if dead && detected.is_none() {
            detected = Some(round);
        }
        if s.leader(1, "g").as_deref() == Some("n1") {
            took_office = Some(round);
            break;
        }
    }
    let (detected, took_office) = (detected.unwrap(), took_office.expect("n1 takes office"));
    assert!(
        took_office <= detected + 1,
        "n1 saw n0 dead in round {detected} but took office in round {took_office}"
    );
    s.run_until(100, |s| {
        (1..8).all(|i| s.leader(i, "g").as_deref() == Some("n1"))
    })
    .expect("every survivor follows n1");
}
