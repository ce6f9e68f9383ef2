//! Swarm groups benchmark, in the deterministic gossip simulator (the real
//! protocol and swarm code, one process, no clock):
//!
//! 1. gossip bytes per node per round in steady state, with every node in
//!    one group (roster of N), carrying a pool and two models, against the
//!    same mesh without them (baseline, same seed), at N = 16, 32 and 64:
//!    what groups add must stay flat in N (RTT adds no bytes at all: it is
//!    measured from the gossip calls, never sent). Also the one-off bytes
//!    of forming the group (create, N-1 joins, the roster reaching all);
//! 2. leader failover: rounds from crashing the leader until the next one
//!    takes office, against the rounds gossip takes to declare it dead
//!    (the baseline), and until every survivor follows the new leader.
//!
//! `cargo bench --bench swarm`            N = 16, 32, 64
//! `cargo bench --bench swarm -- --quick` N = 16
//!
//! Figures are printed; nothing is asserted.

use iarnet::mesh::sim::{sim_id, Sim, SimConfig};
use iarnet::proto::peer::PoolRecord;
use iarnet::swarm::sim::SwarmSim;
use iarnet::swarm::{peers_of, Swarm};

const STEADY_ROUNDS: u64 = 40;
const SEED: u64 = 42;

fn config(n: usize) -> SimConfig {
    SimConfig {
        nodes: n,
        seed: SEED,
        ..SimConfig::default()
    }
}

/// Steady bytes per node per round of a converged mesh.
fn steady(sim: &mut Sim, step: &mut dyn FnMut(&mut Sim)) -> f64 {
    let before = sim.bytes_sent();
    for _ in 0..STEADY_ROUNDS {
        step(sim);
    }
    (sim.bytes_sent() - before) as f64 / (sim.len() as f64 * STEADY_ROUNDS as f64)
}

/// `n` converged cores all in group "g", with a pool and models, and the
/// bytes sent before the group was created.
fn grouped(n: usize) -> (SwarmSim, u64) {
    let cfg = config(n);
    let delay = cfg.mesh.gossip_interval;
    let mut s = SwarmSim::new(cfg);
    for i in 0..n {
        s.swarms[i] = Swarm::new(
            &sim_id(i),
            iarnet::proto::peer::NodeMeta {
                models: vec!["llama3:8b".into(), "whisper".into()],
                allow_remote: true,
                ..Default::default()
            },
        )
        .with_takeover_delay(delay);
    }
    s.sim
        .run_until(500, |sim| sim.converged())
        .expect("converges");
    s.run_until(100, |s| s.sim.converged())
        .expect("records spread");
    let start = s.sim.bytes_sent();
    let now = s.sim.now();
    s.swarms[0].create_group("g", 1024, &[], now).unwrap();
    s.swarms[0].put_pool(PoolRecord {
        name: "gpus".into(),
        nodes: (0..n).map(sim_id).collect(),
        updated_ms: now,
        writer: sim_id(0),
        created_by: sim_id(0),
        ..Default::default()
    });
    s.publish(0);
    s.run_until(200, |s| (1..n).all(|i| s.group(i, "g").is_some()))
        .expect("the group spreads");
    for i in 1..n {
        let now = s.sim.now();
        let peers = peers_of(s.sim.core(i));
        s.swarms[i].join_group("g", &peers, now).unwrap();
        drop(peers);
        s.publish(i);
    }
    s.run_until(500, |s| {
        s.sim.converged()
            && s.swarms
                .iter()
                .all(|w| w.roster("g").is_some_and(|r| r.members.len() == n))
    })
    .expect("every core holds the full roster");
    (s, start)
}

fn bytes_part(sizes: &[usize]) {
    println!("\n1. steady gossip bytes per node per round (seed {SEED}, {STEADY_ROUNDS} rounds)\n");
    println!("| N | baseline | with a group of N, a pool, 2 models | extra | ratio | forming the group, per node |");
    println!("|---|---|---|---|---|---|");
    for &n in sizes {
        let mut base = Sim::new(config(n));
        base.run_until(500, |sim| sim.converged())
            .expect("converges");
        base.run_until(50, |_| false);
        let b = steady(&mut base, &mut |sim| sim.step());

        let (mut s, start) = grouped(n);
        let formed = s.sim.bytes_sent() - start;
        let before = s.sim.bytes_sent();
        for _ in 0..STEADY_ROUNDS {
            s.step();
        }
        let g = (s.sim.bytes_sent() - before) as f64 / (n as f64 * STEADY_ROUNDS as f64);
        println!(
            "| {n} | {b:.0} B | {g:.0} B | {:+.0} B | {:.2}x | {:.1} KB |",
            g - b,
            g / b,
            formed as f64 / n as f64 / 1000.0
        );
    }
}

fn failover_part(sizes: &[usize]) {
    println!("\n2. leader failover, in gossip rounds (1 s each at the default interval)\n");
    println!("| N | n1 declares the leader dead (baseline) | n1 takes office | every survivor follows | office / detection |");
    println!("|---|---|---|---|---|");
    for &n in sizes {
        let (mut s, _) = grouped(n);
        assert_eq!(s.leader(1, "g").as_deref(), Some("n0"));
        s.sim.crash(0);
        let (mut detected, mut office, mut all) = (None, None, None);
        for round in 1..=1000u64 {
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
            if office.is_none() && s.leader(1, "g").as_deref() == Some("n1") {
                office = Some(round);
            }
            if office.is_some() && (1..n).all(|i| s.leader(i, "g").as_deref() == Some("n1")) {
                all = Some(round);
                break;
            }
        }
        let (d, o, a) = (detected.unwrap(), office.unwrap(), all.unwrap());
        println!("| {n} | {d} | {o} | {a} | {:.2}x |", o as f64 / d as f64);
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick { &[16] } else { &[16, 32, 64] };
    let failover: &[usize] = if quick { &[5, 16] } else { &[5, 16, 64] };
    bytes_part(sizes);
    failover_part(failover);
}
