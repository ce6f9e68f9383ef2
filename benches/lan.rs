//! LAN discovery benchmark: how long N `iarnet` binaries, each in its own
//! network namespace on one Linux bridge (tests/support/netns.rs), take
//! from start to "all joined" (every node sees all N alive), found over
//! mDNS with no seeds, against the same nodes joined through one seed with
//! mDNS off (the baseline, measured in the same run). Gossip runs every
//! 200 ms; the times include each process's start.
//!
//! `cargo bench --bench lan`            N = 3 and 20, 3 samples each
//! `cargo bench --bench lan -- --quick` N = 3, 1 sample
//!
//! Root only (it creates namespaces, a bridge and an iptables rule); it
//! prints why and exits otherwise. Figures are printed, never asserted.

#[path = "../tests/support/netns.rs"]
mod netns;

use std::time::{Duration, Instant};

use netns::Lan;

const DEADLINE: Duration = Duration::from_secs(60);

/// Seconds from spawning `n` nodes to every one seeing all `n` alive.
fn join_time(case: u32, n: usize, mdns: bool) -> f64 {
    let mut lan = Lan::new(case);
    for _ in 0..n {
        lan.add_namespace("lan0");
    }
    let ids: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
    let seed = format!("{}.10:{}", lan.prefix, netns::GRPC_PORT);
    let started = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        if mdns {
            lan.spawn(i, id, &[("IARNET_MDNS", "on")]);
        } else {
            lan.spawn(
                i,
                id,
                &[("IARNET_MDNS", "off"), ("IARNET_INITIAL_PEERS", &seed)],
            );
        }
    }
    let want: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut pending: Vec<usize> = (0..n).collect();
    lan.wait("all nodes joined", DEADLINE, |lan| {
        pending.retain(|&i| lan.sees(i, &want).is_err());
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("{} nodes not joined yet", pending.len()))
        }
    });
    started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if let Some(why) = netns::unavailable() {
        println!("lan bench skipped: {why}");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (sizes, samples): (&[usize], usize) = if quick { (&[3], 1) } else { (&[3, 20], 3) };
    println!("LAN join: N iarnet binaries in namespaces on one bridge, gossip 200 ms, {samples} sample(s), median");
    println!(
        "{:>4}  {:>12}  {:>12}  {:>13}",
        "N", "mDNS (s)", "1 seed (s)", "mDNS / seed"
    );
    for &n in sizes {
        let mut mdns = Vec::new();
        let mut seed = Vec::new();
        for _ in 0..samples {
            mdns.push(join_time(5, n, true));
            seed.push(join_time(6, n, false));
        }
        let (m, s) = (median(mdns), median(seed));
        println!("{n:>4}  {m:>12.2}  {s:>12.2}  {:>13.2}", m / s);
    }
}
