//! Container benchmark: iarnet nodes as containers of the image built from the
//! Dockerfile (no registry: see tests/support/node_image.rs), against the same
//! binary run as plain processes on loopback in the same run.
//!
//! `cargo bench --bench container_mesh`            3 samples of each mesh figure
//! `cargo bench --bench container_mesh -- --quick` 1 sample
//!
//! Prints the image size, start-up to SERVING (start → gRPC health SERVING),
//! 5-node convergence (all see all alive), crash detection after a kill (in
//! seconds and gossip rounds), and the nodes' idle CPU and memory in the
//! 5-node mesh. Nodes have no internal provider: this measures the mesh, not
//! Docker connections.
//!
//! Then failover in containers: a home without a provider and owners that
//! mount the engine's socket (a Docker provider each); a deployment with
//! `reschedule.after` 1 s, its owner container killed (`docker kill`), down
//! time split into detection (kill → the home holds the owner dead), grace
//! (→ the next attempt recorded) and placement with the container's start
//! (→ running), against a plain deploy on the same mesh (request → running)
//! and Nomad's and Kubernetes' defaults.
//!
//! Figures are printed, never asserted: the machines are shared and noisy.

#[path = "../tests/support/docker.rs"]
mod docker_support;
#[path = "../tests/support/node_image.rs"]
mod node_image;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use iarnet::proto::resource as pb;
use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
use node_image::{
    docker_ok, get_node, grpc_addr, ips, kill, list_peers, node_bin, node_image, rt, serving,
    stats, NodeSpec, Run, RUN_LABEL,
};

const INTERVAL: Duration = Duration::from_millis(250);
const NODES: usize = 5;
const STARTUP_SAMPLES: usize = 5;
const LIMIT: Duration = Duration::from_secs(60);
/// Fine-grained polling: the figures are timings.
const POLL: Duration = Duration::from_millis(5);
/// An engine address that never answers: no internal provider.
const NO_DOCKER: &str = "unix:///nonexistent/docker.sock";

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Polls until `done` holds; the elapsed time, or None after [`LIMIT`].
fn time_until(mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < LIMIT {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(POLL);
    }
    None
}

/// Whether every address in `observers` sees exactly `alive` members alive
/// and `dead` more members dead (ids unknown here: counts suffice).
fn converged(observers: &[String], alive: u32, dead: usize) -> bool {
    observers.iter().all(|addr| {
        list_peers(addr, true).is_ok_and(|v| {
            v.alive == alive
                && v.peers.iter().filter(|p| p.state == "dead").count() == dead
                && v.suspect == 0
        })
    })
}

fn node_env(name: &str, advertise: &str, seeds: &str) -> Vec<(String, String)> {
    vec![
        ("IARNET_NODE_NAME".into(), name.into()),
        ("IARNET_ADVERTISE_ADDR".into(), advertise.into()),
        ("IARNET_INITIAL_PEERS".into(), seeds.into()),
        (
            "IARNET_GOSSIP_INTERVAL".into(),
            format!("{}ms", INTERVAL.as_millis()),
        ),
        ("IARNET_DOCKER_HOST".into(), NO_DOCKER.into()),
    ]
}

// ----- containers ------------------------------------------------------------

struct MeshFigures {
    /// First start → all see all.
    converge: Duration,
    /// Last `docker start` returned → all see all.
    converge_after_last: Duration,
    detect: Duration,
    /// (CPU %, VmRSS MiB) samples of every node process, when measured.
    idle: Vec<(f64, f64)>,
    /// (CPU %, memory MiB) samples of every container by `docker stats`.
    docker_stats: Vec<(f64, f64)>,
}

fn container_startup(image: &str) -> (Vec<f64>, Vec<f64>) {
    let run = Run::new("cbench");
    let net = run.network("net");
    let (mut total, mut cli) = (Vec::new(), Vec::new());
    for i in 0..STARTUP_SAMPLES {
        let short = format!("s{i}");
        let name = run.name(&short);
        let spec = NodeSpec {
            name: &short,
            networks: vec![net.clone()],
            env: node_env(&name, &format!("{name}:50051"), ""),
            docker_socket: false,
        };
        run.create_node(image, &spec);
        let t0 = Instant::now();
        docker_ok(&["start", &name]);
        cli.push(secs(t0.elapsed()));
        let ip = ips(std::slice::from_ref(&name))[0]
            .get(&net)
            .cloned()
            .expect("a started container has an IP");
        let addr = grpc_addr(&ip);
        time_until(|| serving(&addr).unwrap_or(false)).expect("the container reaches SERVING");
        total.push(secs(t0.elapsed()));
        docker_ok(&["rm", "-f", "-v", &name]);
    }
    (total, cli)
}

fn container_mesh(image: &str, measure_idle: bool) -> MeshFigures {
    let run = Run::new("cbench");
    let net = run.network("net");
    let seeds = format!("{}:50051,{}:50051", run.name("n0"), run.name("n2"));
    let names: Vec<String> = (0..NODES)
        .map(|i| {
            let short = format!("n{i}");
            let name = run.name(&short);
            let spec = NodeSpec {
                name: &short,
                networks: vec![net.clone()],
                env: node_env(&name, &format!("{name}:50051"), &seeds),
                docker_socket: false,
            };
            run.create_node(image, &spec)
        })
        .collect();
    let t0 = Instant::now();
    for name in &names {
        docker_ok(&["start", name]);
    }
    let last = Instant::now();
    let addrs: Vec<String> = ips(&names)
        .into_iter()
        .map(|mut nets| grpc_addr(&nets.remove(&net).expect("a started container has an IP")))
        .collect();
    time_until(|| converged(&addrs, NODES as u32, 0)).expect("the container mesh converges");
    let (converge, converge_after_last) = (t0.elapsed(), last.elapsed());

    let (mut idle, mut docker_stats) = (Vec::new(), Vec::new());
    if measure_idle {
        // Let start-up work settle, then sample (each `docker stats` call spans ~2s).
        std::thread::sleep(Duration::from_secs(5));
        for _ in 0..3 {
            docker_stats.extend(stats(&names).expect("docker stats"));
        }
        // The node processes as the host sees them (a local engine shares its PIDs).
        let pids: Vec<u32> = names
            .iter()
            .filter_map(|n| {
                docker_ok(&["inspect", "-f", "{{.State.Pid}}", n])
                    .parse()
                    .ok()
            })
            .collect();
        idle = proc_idle(&pids);
    }

    let t = Instant::now();
    kill(&names[NODES - 1]);
    time_until(|| converged(&addrs[..NODES - 1], NODES as u32 - 1, 1))
        .expect("the kill is detected");
    MeshFigures {
        converge,
        converge_after_last,
        detect: t.elapsed(),
        idle,
        docker_stats,
    }
}

// ----- failover in containers ------------------------------------------------

const NOMAD_DEFAULT_S: f64 = 50.0;
const KUBERNETES_DEFAULT_S: f64 = 300.0;

/// One failover, in milliseconds.
struct Phases {
    detection: f64,
    grace: f64,
    placement: f64,
}

fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn deploy_spec(run: &Run, id: &str) -> pb::DeploySpec {
    pb::DeploySpec {
        request_id: id.into(),
        image: docker_support_image(),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["sleep 600".into()],
        cpu: "100m".into(),
        memory: "32Mi".into(),
        labels: [(RUN_LABEL.to_string(), run.prefix.clone())].into(),
        reschedule: Some(pb::Reschedule {
            after: "1s".into(),
            delay: "100ms".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The workload image the tests build locally (no registry).
fn docker_support_image() -> String {
    docker_support::ensure_test_image();
    docker_support::TEST_IMAGE.to_string()
}

fn deploy(addr: &str, spec: pb::DeploySpec) -> pb::Deployment {
    rt().block_on(async {
        let mut api = ResourceServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("the home answers");
        let mut events = api.deploy(spec).await.expect("deploy").into_inner();
        let mut last = None;
        while let Some(ev) = events.next().await {
            if let Some(pb::deploy_event::Event::Deployment(d)) = ev.expect("deploy event").event {
                last = Some(d);
            }
        }
        last.expect("a deploy ends with its deployment")
    })
}

fn get(addr: &str, id: &str) -> Option<pb::Deployment> {
    rt().block_on(async {
        let mut api = ResourceServiceClient::connect(format!("http://{addr}"))
            .await
            .ok()?;
        api.get_deployment(pb::GetDeploymentRequest { id: id.into() })
            .await
            .ok()
            .map(tonic::Response::into_inner)
    })
}

/// `trials` failovers on a home and `trials + 1` owners; the phases of
/// each, and the median plain deploy (ms).
fn container_failover(image: &str, trials: usize) -> (Vec<Phases>, f64) {
    let run = Run::new("cfail");
    let net = run.network("net");
    let home = run.name("home");
    let seeds = format!("{home}:50051");
    let mut names = Vec::new();
    for i in 0..=trials + 1 {
        let short = if i == 0 {
            "home".to_string()
        } else {
            format!("o{i}")
        };
        let name = run.name(&short);
        let mut env = node_env(&name, &format!("{name}:50051"), &seeds);
        if i > 0 {
            env.retain(|(k, _)| k != "IARNET_DOCKER_HOST");
        }
        let spec = NodeSpec {
            name: &short,
            networks: vec![net.clone()],
            env,
            docker_socket: i > 0,
        };
        names.push(run.node(image, &spec));
    }
    let addrs: Vec<String> = ips(&names)
        .into_iter()
        .map(|mut nets| grpc_addr(&nets.remove(&net).expect("a started container has an IP")))
        .collect();
    time_until(|| converged(&addrs, names.len() as u32, 0)).expect("the mesh converges");
    let ids: Vec<String> = addrs
        .iter()
        .map(|a| get_node(a).expect("node info").id)
        .collect();
    time_until(|| node_image::list_providers(&addrs[0]).is_ok_and(|p| p.len() == trials + 1))
        .expect("the home sees every owner's Docker provider");

    let mut plain = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        let d = deploy(
            &addrs[0],
            deploy_spec(&run, &format!("{}-plain-{i}", run.prefix)),
        );
        assert_eq!(d.state, "running", "{d:?}");
        plain.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    let mut phases = Vec::new();
    let mut alive: Vec<usize> = (1..names.len()).collect();
    for t in 0..trials {
        let id = format!("{}-f{t}", run.prefix);
        let d = deploy(&addrs[0], deploy_spec(&run, &id));
        let Some(k) = alive.iter().position(|&i| ids[i] == d.owner_id) else {
            panic!("placed on an unknown owner: {d:?}");
        };
        let victim = alive.remove(k);
        let killed = unix_ms();
        kill(&names[victim]);
        // Watched apart: a status call may wait on the unreachable owner.
        let (home_addr, dead_id) = (addrs[0].clone(), ids[victim].clone());
        let detection = std::thread::spawn(move || {
            time_until(|| {
                list_peers(&home_addr, true).is_ok_and(|v| {
                    v.peers
                        .iter()
                        .any(|p| p.id == dead_id && (p.state == "dead" || p.state == "left"))
                })
            })
            .map(|_| unix_ms())
        });
        let done = time_until(|| {
            get(&addrs[0], &id).is_some_and(|g| g.attempt >= 2 && g.state == "running")
        });
        done.expect("the deployment fails over");
        let got = get(&addrs[0], &id).expect("the home answers");
        let detected = detection.join().ok().flatten().unwrap_or(killed);
        let intent = got
            .attempts
            .last()
            .map_or(detected, |a| a.placed_unix * 1000.0);
        let running = got
            .history
            .iter()
            .rev()
            .find(|c| c.state == "running")
            .map_or(intent, |c| c.at_unix * 1000.0);
        phases.push(Phases {
            detection: detected - killed,
            grace: intent - detected,
            placement: running - intent,
        });
    }
    (phases, median(plain))
}

fn print_failover(phases: &[Phases], plain_ms: f64) {
    let med = |f: fn(&Phases) -> f64| median(phases.iter().map(f).collect());
    let (d, g, p) = (med(|x| x.detection), med(|x| x.grace), med(|x| x.placement));
    let total_s = (d + g + p) / 1000.0;
    println!();
    println!(
        "failover in containers ({} kills, gossip {}ms, reschedule.after 1s, Docker providers):",
        phases.len(),
        INTERVAL.as_millis()
    );
    println!(
        "  detection {d:.0} ms + grace {g:.0} ms + placement and container start {p:.0} ms = {total_s:.2} s down (medians)"
    );
    println!(
        "  baseline plain deploy on the same mesh {plain_ms:.0} ms; down time {:.3}x of Nomad's defaults (~{NOMAD_DEFAULT_S:.0} s), {:.4}x of Kubernetes' (~{KUBERNETES_DEFAULT_S:.0} s)",
        total_s / NOMAD_DEFAULT_S,
        total_s / KUBERNETES_DEFAULT_S
    );
}

// ----- processes on loopback (the baseline) ---------------------------------

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn spawn(addr: &str, seeds: &str, data: &std::path::Path) -> Child {
    Command::new(node_bin())
        .envs(node_env(addr, addr, seeds))
        .env("IARNET_PEER_LISTEN_ADDR", addr)
        .env("IARNET_LISTEN_ADDR", "127.0.0.1:0")
        .env("IARNET_DATA_DIR", data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the iarnet binary starts")
}

fn process_startup() -> Vec<f64> {
    let dir = tempfile::tempdir().expect("temp dir");
    (0..STARTUP_SAMPLES)
        .map(|i| {
            let addr = format!("127.0.0.1:{}", free_port());
            let t0 = Instant::now();
            let _proc = Procs(vec![spawn(&addr, "", &dir.path().join(i.to_string()))]);
            time_until(|| serving(&addr).unwrap_or(false)).expect("the process reaches SERVING");
            secs(t0.elapsed())
        })
        .collect()
}

/// (utime + stime in clock ticks, resident MiB) of a process.
fn proc_usage(pid: u32) -> Option<(u64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks, rss_kib / 1024.0))
}

fn process_mesh(measure_idle: bool) -> MeshFigures {
    let addrs: Vec<String> = (0..NODES)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let seeds = format!("{},{}", addrs[0], addrs[2]);
    let dir = tempfile::tempdir().expect("temp dir");
    let t0 = Instant::now();
    let children = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| spawn(a, &seeds, &dir.path().join(i.to_string())))
        .collect();
    let last = Instant::now();
    let mut procs = Procs(children);
    time_until(|| converged(&addrs, NODES as u32, 0)).expect("the process mesh converges");
    let (converge, converge_after_last) = (t0.elapsed(), last.elapsed());

    let mut idle = Vec::new();
    if measure_idle {
        std::thread::sleep(Duration::from_secs(5));
        idle = proc_idle(&procs.0.iter().map(Child::id).collect::<Vec<_>>());
    }

    let t = Instant::now();
    let victim = procs.0.last_mut().expect("five processes");
    victim.kill().expect("SIGKILL");
    let _ = victim.wait();
    time_until(|| converged(&addrs[..NODES - 1], NODES as u32 - 1, 1))
        .expect("the kill is detected");
    MeshFigures {
        converge,
        converge_after_last,
        detect: t.elapsed(),
        idle,
        docker_stats: Vec::new(),
    }
}

/// Each process over one 10 s window: (CPU % of a core, VmRSS MiB). CPU
/// time counts in 10 ms ticks (USER_HZ), so a shorter window is too coarse.
fn proc_idle(pids: &[u32]) -> Vec<(f64, f64)> {
    let before: Vec<_> = pids.iter().map(|&p| proc_usage(p)).collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let window = t.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .filter_map(|(&pid, b)| {
            let ((t0, _), (t1, mib)) = (b?, proc_usage(pid)?);
            Some(((t1 - t0) as f64 / 100.0 / window * 100.0, mib))
        })
        .collect()
}

// ----- report ------------------------------------------------------------------

fn row(what: &str, container: String, process: String, ratio: Option<f64>) {
    let ratio = ratio.map_or(String::new(), |r| format!("{r:.2}x"));
    println!("{what:<44} {container:>18} {process:>18} {ratio:>8}");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 1 } else { 3 };

    let built = Instant::now();
    let image = node_image();
    let build_secs = secs(built.elapsed());
    let size = |img: &str| {
        docker_ok(&["image", "inspect", "-f", "{{.Size}}", img])
            .parse::<f64>()
            .unwrap_or(f64::NAN)
            / 1048576.0
    };
    let bin_mib = std::fs::metadata(node_bin()).map_or(f64::NAN, |m| m.len() as f64 / 1048576.0);

    let (c_start, c_cli) = container_startup(&image);
    let p_start = process_startup();
    let c_mesh: Vec<MeshFigures> = (0..runs).map(|i| container_mesh(&image, i == 0)).collect();
    let p_mesh: Vec<MeshFigures> = (0..runs).map(|i| process_mesh(i == 0)).collect();
    let (failovers, plain_ms) = container_failover(&image, runs);

    let interval = secs(INTERVAL);
    println!();
    println!("iarnet in containers vs. the same binary as processes on loopback");
    println!(
        "{NODES} nodes, gossip interval {}ms, no internal provider; start-up {STARTUP_SAMPLES} samples, mesh figures median of {runs}",
        INTERVAL.as_millis()
    );
    println!(
        "image {image}: {:.1} MiB (base {}: {:.1} MiB; binary with debug info {bin_mib:.1} MiB, stripped in the image); built or found in {build_secs:.1}s",
        size(&image),
        node_image::base_image(),
        size(&node_image::base_image()),
    );
    println!();
    println!(
        "{:<44} {:>18} {:>18} {:>8}",
        "measure", "container", "process", "ratio"
    );
    let (cs, ps) = (median(c_start.clone()), median(p_start.clone()));
    row(
        "start-up to SERVING, median",
        format!("{cs:.3}s"),
        format!("{ps:.3}s"),
        Some(cs / ps),
    );
    row(
        "  of which `docker start` returning",
        format!("{:.3}s", median(c_cli)),
        "-".into(),
        None,
    );
    let med = |m: &[MeshFigures], f: fn(&MeshFigures) -> Duration| {
        median(m.iter().map(|x| secs(f(x))).collect())
    };
    let pair = |what: &str, f: fn(&MeshFigures) -> Duration| {
        let (c, p) = (med(&c_mesh, f), med(&p_mesh, f));
        row(
            what,
            format!("{c:.2}s {:.1}r", c / interval),
            format!("{p:.2}s {:.1}r", p / interval),
            Some(c / p),
        );
    };
    pair("convergence, first start -> all see all", |m| m.converge);
    pair("convergence, last start -> all see all", |m| {
        m.converge_after_last
    });
    pair("detection, kill -> the other 4 hold it dead", |m| m.detect);
    let idle = |s: &[(f64, f64)]| {
        (
            median(s.iter().map(|x| x.0).collect()),
            median(s.iter().map(|x| x.1).collect()),
        )
    };
    let ((c_cpu, c_mem), (p_cpu, p_mem)) = (idle(&c_mesh[0].idle), idle(&p_mesh[0].idle));
    row(
        "idle CPU per node process (% of a core), median",
        format!("{c_cpu:.2}%"),
        format!("{p_cpu:.2}%"),
        Some(c_cpu / p_cpu),
    );
    row(
        "resident memory per node process, median",
        format!("{c_mem:.1} MiB"),
        format!("{p_mem:.1} MiB"),
        Some(c_mem / p_mem),
    );
    let (d_cpu, d_mem) = idle(&c_mesh[0].docker_stats);
    row(
        "docker stats per container: CPU, memory",
        format!("{d_cpu:.2}% {d_mem:.1} MiB"),
        "-".into(),
        None,
    );
    println!();
    println!(
        "r = gossip rounds. Process figures come from /proc (utime+stime, VmRSS) for both columns."
    );
    println!(
        "docker stats counts the cgroup: memory without page cache (the mapped binary is cache),"
    );
    println!("CPU including the image's HEALTHCHECK (`iarnet health` every 10s).");
    print_failover(&failovers, plain_ms);
}
