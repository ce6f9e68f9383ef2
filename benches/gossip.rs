//! Gossip benchmark: iarnet side by side with chitchat 0.13, same interval and fanout.
//!
//! `cargo bench --bench gossip`            full run (~40 min: the 10,000-node
//!                                         simulation needs ~11 GiB and ~30 min on two cores)
//! `cargo bench --bench gossip -- --quick` one run per size, smaller sizes
//! `-- --loopback` or `-- --sim` runs only that part;
//! `-- --sim --sim-n 10000` one simulated size only.
//!
//! Prints one table: rounds and wall time to full convergence, steady-state
//! bytes per node per round, crash detection time, false deaths under 10 %
//! loss, and peak memory per node in the 10,000-node simulation. Figures are
//! printed, never asserted: these machines are shared and noisy.

mod chitchat_baseline;

use std::time::{Duration, Instant};

use iarnet::config::Config;
use iarnet::mesh::sim::{Sim, SimConfig};
use iarnet::mesh::Status;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::proto::peer::ProviderInfo;
use mimalloc::MiMalloc;

/// The simulator allocates and frees billions of small message strings;
/// glibc's allocator spent half its time on them, and a counting allocator
/// another sixth on its atomic counters. Memory is read from the kernel
/// instead ([`rss`]).
#[global_allocator]
static ALLOC: MiMalloc = MiMalloc;

/// Resident bytes when the first simulation began.
static START_RSS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Resets the kernel's peak resident size of this process (`VmHWM`).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Resident bytes now (`VmRSS`) and at the peak since the last reset (`VmHWM`).
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Gossip interval for the loopback runs, for both systems.
const LOOPBACK_INTERVAL: Duration = Duration::from_millis(250);
const FANOUT: usize = 3;

struct Row {
    measure: String,
    n: usize,
    ours: String,
    theirs: String,
    target: String,
}

fn target_rounds(n: usize) -> f64 {
    let n = n as f64;
    n.log(3.0) + n.ln().ln() + 2.0
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    Some(xs[xs.len() / 2])
}

fn fmt(x: Option<f64>, unit: &str) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.2}{unit}"))
}

// ----- iarnet over real loopback gRPC --------------------------------------

struct LoopbackRun {
    /// Seconds until the last node was started (part of the convergence time).
    startup_secs: f64,
    rounds: Option<f64>,
    secs: Option<f64>,
    bytes: Option<f64>,
    detection_secs: Option<f64>,
}

async fn loopback_run(n: usize, measure_detection: bool) -> LoopbackRun {
    let mut nodes: Vec<NodeHandle> = Vec::with_capacity(n);
    let t0 = Instant::now();
    let mut seeds = Vec::new();
    for i in 0..n {
        let mut cfg = Config::loopback(&format!("bench{i}"));
        cfg.gossip.interval = LOOPBACK_INTERVAL;
        cfg.gossip.fanout = FANOUT;
        cfg.gossip.call_timeout = Duration::from_millis(500);
        cfg.initial_peers = seeds.clone();
        // No internal provider: this measures gossip, not Docker connections.
        let node = node::start_with(cfg, ProviderSetup::Given(Vec::new()))
            .await
            .expect("bench node starts");
        node.set_providers(vec![ProviderInfo {
            id: format!("bench{i}-p0"),
            r#type: "docker".into(),
            ..Default::default()
        }]);
        if i == 0 {
            seeds.push(node.advertise_addr());
        }
        nodes.push(node);
    }
    let startup_secs = t0.elapsed().as_secs_f64();
    let converged = |nodes: &[NodeHandle]| {
        nodes.iter().all(|node| {
            node.providers().len() == n
                && node
                    .members()
                    .iter()
                    .filter(|m| m.status == Status::Alive)
                    .count()
                    == n
        })
    };
    let deadline = t0 + Duration::from_secs(60);
    while !converged(&nodes) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = converged(&nodes).then(|| t0.elapsed().as_secs_f64());
    let rounds = secs.map(|s| s / LOOPBACK_INTERVAL.as_secs_f64());

    // Steady state: bytes over 10 rounds, per node per round.
    let before: u64 = nodes.iter().map(|n| n.stats().bytes_sent).sum();
    let steady_rounds = 10u32;
    tokio::time::sleep(LOOPBACK_INTERVAL * steady_rounds).await;
    let after: u64 = nodes.iter().map(|n| n.stats().bytes_sent).sum();
    let bytes = Some((after - before) as f64 / n as f64 / f64::from(steady_rounds));

    let mut detection_secs = None;
    if measure_detection {
        let victim = nodes.pop().expect("n > 1");
        let victim_id = victim.id();
        let t = Instant::now();
        victim.kill();
        let gone = |nodes: &[NodeHandle]| {
            nodes.iter().all(|node| {
                node.members()
                    .iter()
                    .all(|m| m.id != victim_id || m.status.is_tombstone())
            })
        };
        let deadline = t + Duration::from_secs(60);
        while !gone(&nodes) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        detection_secs = gone(&nodes).then(|| t.elapsed().as_secs_f64());
    }
    for node in nodes {
        node.kill();
    }
    LoopbackRun {
        startup_secs,
        rounds,
        secs,
        bytes,
        detection_secs,
    }
}

// ----- iarnet in the simulator ---------------------------------------------

struct SimRun {
    rounds: Option<f64>,
    bytes: Option<f64>,
    detection_rounds: Option<f64>,
    peak_bytes_per_node: f64,
}

fn sim_run(n: usize, seed: u64, steady: bool, detection: bool) -> SimRun {
    // Against the process before any simulation: memory a finished run
    // freed stays with the allocator, so a later run would seem to need none.
    let base = *START_RSS.get_or_init(|| rss().0);
    reset_peak_rss();
    let mut sim = Sim::new(SimConfig {
        nodes: n,
        seed,
        ..Default::default()
    });
    // Large runs take minutes per round: show that they are moving.
    let started = Instant::now();
    let rounds = sim
        .run_until(60, |s| {
            if n >= 10_000 {
                eprintln!("sim n={n}: {:?} elapsed", started.elapsed());
            }
            s.converged()
        })
        .map(|r| r as f64);
    let peak_bytes_per_node = rss().1.saturating_sub(base) as f64 / n as f64;
    let mut bytes = None;
    if steady {
        let before = sim.bytes_sent();
        for _ in 0..10 {
            sim.step();
        }
        bytes = Some((sim.bytes_sent() - before) as f64 / n as f64 / 10.0);
    }
    let mut detection_rounds = None;
    if detection {
        sim.crash(n - 1);
        detection_rounds = sim
            .run_until(60, |s| s.gone_everywhere(n - 1))
            .map(|r| r as f64);
    }
    SimRun {
        rounds,
        bytes,
        detection_rounds,
        peak_bytes_per_node,
    }
}

fn false_deaths(n: usize, seed: u64) -> usize {
    let mut sim = Sim::new(SimConfig {
        nodes: n,
        seed,
        loss: 0.10,
        ..Default::default()
    });
    sim.run_until(60, Sim::converged);
    let interval_s = sim.core(0).config().gossip_interval / 1000;
    for _ in 0..(60 / interval_s.max(1)) {
        sim.step();
    }
    sim.false_deaths()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    START_RSS.get_or_init(|| rss().0);
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let quick = has("--quick");
    let (loopback, simulate) = match (has("--loopback"), has("--sim")) {
        (false, false) => (true, true),
        (l, s) => (l, s),
    };
    let runs = if quick { 1 } else { 3 };
    let loopback_sizes: &[usize] = match (loopback, quick) {
        (false, _) => &[],
        (true, true) => &[16, 64],
        (true, false) => &[16, 64, 128],
    };
    let mut rows: Vec<Row> = Vec::new();

    for &n in loopback_sizes {
        let detect = n <= 64;
        let mut ours = Vec::new();
        for _ in 0..runs {
            ours.push(loopback_run(n, detect).await);
        }
        let mut theirs = Vec::new();
        for _ in 0..runs {
            match chitchat_baseline::run_chitchat_loopback(
                n,
                LOOPBACK_INTERVAL,
                10,
                detect,
                Duration::from_secs(60),
            )
            .await
            {
                Ok(r) => theirs.push(r),
                Err(e) => eprintln!("chitchat n={n}: {e:#}"),
            }
        }
        let pick = |xs: Vec<Option<f64>>| median(xs.into_iter().flatten().collect());
        rows.push(Row {
            measure: "loopback: rounds to converge".into(),
            n,
            ours: fmt(pick(ours.iter().map(|r| r.rounds).collect()), ""),
            theirs: fmt(
                pick(theirs.iter().map(|r| r.rounds_to_converge).collect()),
                "",
            ),
            target: format!("<= {:.1}", target_rounds(n)),
        });
        rows.push(Row {
            measure: "loopback: seconds to converge".into(),
            n,
            ours: fmt(pick(ours.iter().map(|r| r.secs).collect()), "s"),
            theirs: fmt(
                pick(theirs.iter().map(|r| r.secs_to_converge).collect()),
                "s",
            ),
            target: "-".into(),
        });
        rows.push(Row {
            measure: "loopback: of which starting all nodes".into(),
            n,
            ours: fmt(median(ours.iter().map(|r| r.startup_secs).collect()), "s"),
            theirs: "-".into(),
            target: "-".into(),
        });
        rows.push(Row {
            measure: "loopback: bytes/node/round (steady)".into(),
            n,
            ours: fmt(pick(ours.iter().map(|r| r.bytes).collect()), ""),
            theirs: fmt(
                pick(theirs.iter().map(|r| r.bytes_per_node_per_round).collect()),
                "",
            ),
            target: "<= chitchat, flat in N".into(),
        });
        if detect {
            let interval = LOOPBACK_INTERVAL.as_secs_f64();
            rows.push(Row {
                measure: "loopback: crash detected by all (rounds)".into(),
                n,
                ours: fmt(
                    pick(
                        ours.iter()
                            .map(|r| r.detection_secs.map(|s| s / interval))
                            .collect(),
                    ),
                    "",
                ),
                theirs: fmt(
                    pick(
                        theirs
                            .iter()
                            .map(|r| r.detection_secs.map(|s| s / interval))
                            .collect(),
                    ),
                    "",
                ),
                target: "<= 10".into(),
            });
        }
    }

    // `--sim-n N`: one simulated size only, without the loss runs.
    let only: Option<usize> = args
        .iter()
        .position(|a| a == "--sim-n")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    let only_sizes = only.map(|n| vec![n]);
    let sim_sizes: &[usize] = match (simulate, quick, &only_sizes) {
        (false, _, _) => &[],
        (true, _, Some(v)) => v,
        (true, true, None) => &[1000],
        (true, false, None) => &[1000, 10_000],
    };
    for &n in sim_sizes {
        let seeds: Vec<u64> = if n >= 10_000 {
            vec![1]
        } else {
            (1..=runs as u64).collect()
        };
        let runs: Vec<SimRun> = seeds
            .iter()
            .map(|s| sim_run(n, *s, true, n <= 1000))
            .collect();
        rows.push(Row {
            measure: "sim: rounds to converge".into(),
            n,
            ours: fmt(median(runs.iter().filter_map(|r| r.rounds).collect()), ""),
            theirs: "-".into(),
            target: format!("<= {:.1}", target_rounds(n)),
        });
        rows.push(Row {
            measure: "sim: bytes/node/round (steady)".into(),
            n,
            ours: fmt(median(runs.iter().filter_map(|r| r.bytes).collect()), ""),
            theirs: "-".into(),
            target: "flat in N".into(),
        });
        if n <= 1000 {
            rows.push(Row {
                measure: "sim: crash detected by all (rounds)".into(),
                n,
                ours: fmt(
                    median(runs.iter().filter_map(|r| r.detection_rounds).collect()),
                    "",
                ),
                theirs: "-".into(),
                target: "<= 10".into(),
            });
        }
        rows.push(Row {
            measure: "sim: peak memory per node (RSS)".into(),
            n,
            ours: format!(
                "{:.0} KiB",
                median(runs.iter().map(|r| r.peak_bytes_per_node).collect()).unwrap_or(0.0)
                    / 1024.0
            ),
            theirs: "-".into(),
            target: "-".into(),
        });
    }
    for n in if simulate && only.is_none() {
        vec![64, 1000]
    } else {
        Vec::new()
    } {
        rows.push(Row {
            measure: "sim: false deaths, 60 s at 10% loss".into(),
            n,
            ours: false_deaths(n, 7).to_string(),
            theirs: "-".into(),
            target: "0".into(),
        });
    }
    // chitchat has no simulator; its in-memory transport could not bring 1,000
    // nodes to convergence on two cores (see chitchat_baseline.rs), so the
    // simulated sizes have no chitchat column.

    println!("\niarnet gossip benchmark (interval {LOOPBACK_INTERVAL:?} on loopback, fanout {FANOUT}; medians of {runs} run(s))");
    println!(
        "{:<44} {:>6}  {:>18}  {:>22}  {:>22}",
        "measure", "N", "iarnet", "chitchat 0.13", "target"
    );
    for r in rows {
        println!(
            "{:<44} {:>6}  {:>18}  {:>22}  {:>22}",
            r.measure, r.n, r.ours, r.theirs, r.target
        );
    }
}
