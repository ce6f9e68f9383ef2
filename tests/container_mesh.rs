//! Five iarnet nodes as containers of the image the Dockerfile builds, on
//! this machine's Docker engine: convergence seen from outside with grpcurl,
//! crash detection, a 2|3 partition and its healing, replicas across the
//! containers that the majority keeps running through the partition and
//! that run exactly once after the heal, a restart as a new generation, a
//! deploy through a node without a provider onto another node's Docker
//! provider, and a rolling restart.
//!
//! One sequential test: it is expensive and each step starts from the state
//! the last one left. Nodes a..e share network `mesh`; a and b are also on
//! `left`, c, d and e on `right`, so taking a and b off `mesh` partitions the
//! mesh (names then resolve only within each side). b, c and e mount the
//! engine's socket and so each have an internal Docker provider (one on the
//! minority side, two on the majority); e is the node killed in step 2, so
//! that its provider has something to vanish, and restarted with the same
//! name before the 2|3 partition.

#[path = "support/docker.rs"]
mod docker_support;
#[path = "support/grpcurl.rs"]
mod grpcurl_support;
#[path = "support/node_image.rs"]
mod node_image;
#[path = "support/workloads.rs"]
mod workloads;

use std::collections::{BTreeSet, HashMap};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use iarnet::proto::admin::ListPeersResponse;
use serde_json::{json, Value};

use docker_support::ensure_test_image;
use grpcurl_support::grpcurl;
use node_image::{
    connect, detection_bound, disconnect, docker, docker_ok, get_node, grpc_addr, ips, kill,
    list_peers, list_providers, node_image, serving, start, stop, wait_until, NodeSpec, Run,
};
use workloads::{
    call, call_ok, deploy_body, placed, replica_copies, str_field, workloads, workloads_of_service,
};

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;
const E: usize = 4;
const ALL: [usize; 5] = [A, B, C, D, E];
/// Nodes with the engine's socket: the only provider owners.
const OWNERS: [usize; 3] = [B, C, E];

/// Shorter than the shipped 1s so the steps take seconds.
const INTERVAL: Duration = Duration::from_millis(250);
const POLL: Duration = Duration::from_millis(100);
/// Generous: two cores run five nodes, the engine and the test.
const LIMIT: Duration = Duration::from_secs(60);

struct Mesh {
    run: Run,
    names: Vec<String>,
    ids: Vec<String>,
    gens: Vec<u64>,
    net: String,
    /// 2 × the computed detection bound + 5 s of slack for a loaded machine.
    detect_limit: Duration,
    t0: Instant,
}

impl Mesh {
    fn log(&self, msg: &str) {
        println!("[{:6.1}s] {msg}", self.t0.elapsed().as_secs_f64());
    }

    /// Each node's gRPC address now: its IP on `mesh`, else on its side network.
    fn addrs(&self) -> Vec<Option<String>> {
        ips(&self.names)
            .into_iter()
            .map(|mut nets| {
                nets.remove(&self.net)
                    .or_else(|| nets.into_values().next())
                    .map(|ip| grpc_addr(&ip))
            })
            .collect()
    }

    fn addr(&self, i: usize) -> String {
        self.addrs()[i]
            .clone()
            .unwrap_or_else(|| panic!("node {} has no IP (not running?)", NAMES[i]))
    }

    fn short(&self, id: &str) -> String {
        self.ids
            .iter()
            .position(|x| x == id)
            .map_or_else(|| format!("?{id}"), |i| NAMES[i].to_string())
    }

    fn describe(&self, view: &ListPeersResponse) -> String {
        let mut parts: Vec<String> = view
            .peers
            .iter()
            .map(|p| format!("{}={}@{}", self.short(&p.id), p.state, p.generation))
            .collect();
        parts.sort();
        parts.join(" ")
    }

    /// Waits until node `i` serves, then records its id and generation.
    fn await_serving(&mut self, i: usize) {
        let info = wait_until(
            &format!("node {} to report SERVING", NAMES[i]),
            LIMIT,
            POLL,
            || {
                let addr = self.addrs()[i].clone().ok_or("no IP yet")?;
                if serving(&addr)? {
                    get_node(&addr)
                } else {
                    Err(format!("{addr}: NOT_SERVING"))
                }
            },
        );
        if self.ids[i].is_empty() {
            self.ids[i] = info.id;
        } else {
            assert_eq!(info.id, self.ids[i], "node {} changed id", NAMES[i]);
        }
        self.gens[i] = info.generation;
    }

    /// Whether every observer sees exactly `alive` alive (at their recorded
    /// generations), `gone` dead, departed or forgotten, and the providers of
    /// exactly `owners`. Err describes what is wrong and what each one sees.
    fn agree(
        &self,
        observers: &[usize],
        alive: &[usize],
        gone: &[usize],
        owners: &[usize],
    ) -> Result<(), String> {
        let addrs = self.addrs();
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for &o in observers {
            let Some(addr) = &addrs[o] else {
                problems.push(format!("{} has no IP", NAMES[o]));
                continue;
            };
            let view = match list_peers(addr, true) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            seen.push(format!("  {} sees {}", NAMES[o], self.describe(&view)));
            for &m in alive {
                match view.peers.iter().find(|p| p.id == self.ids[m]) {
                    Some(p) if p.state == "alive" && p.generation == self.gens[m] => {}
                    Some(p) => problems.push(format!(
                        "{} sees {} {} at generation {} (want alive at {})",
                        NAMES[o], NAMES[m], p.state, p.generation, self.gens[m]
                    )),
                    None => problems.push(format!("{} does not know {}", NAMES[o], NAMES[m])),
                }
            }
            for &m in gone {
                if let Some(p) = view.peers.iter().find(|p| p.id == self.ids[m]) {
                    if p.state != "dead" && p.state != "left" {
                        problems.push(format!("{} still sees {} {}", NAMES[o], NAMES[m], p.state));
                    }
                }
            }
            for p in &view.peers {
                let known = alive.iter().chain(gone).any(|&m| self.ids[m] == p.id);
                if !known && p.state == "alive" {
                    problems.push(format!(
                        "{} sees an unexpected member {} alive",
                        NAMES[o], p.id
                    ));
                }
            }
            match list_providers(addr) {
                Ok(providers) => {
                    let got: BTreeSet<String> =
                        providers.iter().map(|p| self.short(&p.owner_id)).collect();
                    let want: BTreeSet<String> =
                        owners.iter().map(|&m| NAMES[m].to_string()).collect();
                    if got != want {
                        problems.push(format!(
                            "{} lists providers of {got:?}, want {want:?}",
                            NAMES[o]
                        ));
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{}\n{}", problems.join("\n"), seen.join("\n")))
        }
    }

    #[track_caller]
    fn await_agreement(
        &self,
        what: &str,
        observers: &[usize],
        alive: &[usize],
        gone: &[usize],
        owners: &[usize],
    ) {
        let started = Instant::now();
        wait_until(what, LIMIT, POLL, || {
            self.agree(observers, alive, gone, owners)
        });
        self.log(&format!("{what}: {:.2}s", started.elapsed().as_secs_f64()));
    }

    /// Panics at once if an observer sees a member of `gone` alive or
    /// suspect (a resurrection), a member of `alive` at another generation
    /// than its current one (a stale record), or, unless `allow_dead`, a
    /// member of `alive` dead or departed. Returns how many suspicions of
    /// live members it saw (transient ones are the protocol at work).
    fn assert_no_regression(
        &self,
        observers: &[usize],
        alive: &[usize],
        gone: &[usize],
        allow_dead: bool,
    ) -> usize {
        let mut suspicions = 0;
        for (o, addr) in self.addrs().into_iter().enumerate() {
            let Some(addr) = addr.filter(|_| observers.contains(&o)) else {
                continue;
            };
            let Ok(view) = list_peers(&addr, true) else {
                continue;
            };
            for p in &view.peers {
                let Some(m) = self.ids.iter().position(|id| *id == p.id) else {
                    continue;
                };
                let dead = p.state == "dead" || p.state == "left";
                let why = if gone.contains(&m) && !dead {
                    "was resurrected"
                } else if alive.contains(&m) && p.generation != self.gens[m] {
                    "came back at a stale generation"
                } else if alive.contains(&m) && dead && !allow_dead {
                    "was declared dead while running"
                } else {
                    suspicions += usize::from(p.state == "suspect");
                    continue;
                };
                panic!(
                    "{} {why}: {} sees it {} at generation {} (current {}); view: {}",
                    NAMES[m],
                    NAMES[o],
                    p.state,
                    p.generation,
                    self.gens[m],
                    self.describe(&view)
                );
            }
        }
        suspicions
    }

    /// Stops node `i` gracefully and starts it again (same container, same
    /// data volume), watching the others the whole time: none of them may be
    /// held dead, departed or unreachable by another for longer than the
    /// detection limit. Returns how many such blips were seen.
    fn restart(&mut self, i: usize, alive: &[usize], gone: &[usize], owners: &[usize]) -> usize {
        let (old_id, old_gen) = (self.ids[i].clone(), self.gens[i]);
        let name = self.names[i].clone();
        let mut job: Option<JoinHandle<()>> = Some(std::thread::spawn(move || {
            stop(&name);
            start(&name);
        }));
        let mut down_since: HashMap<(usize, usize), Instant> = HashMap::new();
        let mut blips = 0;
        let started = Instant::now();
        let limit = self.detect_limit;
        wait_until(
            &format!("the mesh to agree on {} after its restart", NAMES[i]),
            LIMIT,
            POLL,
            || {
                let addrs = self.addrs();
                for &o in alive.iter().filter(|&&o| o != i) {
                    let view = addrs[o].as_deref().map(|a| list_peers(a, true));
                    for &m in alive.iter().filter(|&&m| m != i && m != o) {
                        let state = match &view {
                            Some(Ok(v)) => v
                                .peers
                                .iter()
                                .find(|p| p.id == self.ids[m])
                                .map_or("missing".to_string(), |p| p.state.clone()),
                            Some(Err(e)) => format!("unknown: it does not answer ({e})"),
                            None => "unknown: it has no IP".to_string(),
                        };
                        if state == "alive" || state == "suspect" {
                            if down_since.remove(&(o, m)).is_some() {
                                blips += 1;
                            }
                            continue;
                        }
                        let since = down_since.entry((o, m)).or_insert_with(Instant::now);
                        assert!(
                            since.elapsed() <= limit,
                            "mesh lost while restarting {}: {}'s view of {} has been {state} for {:?} (limit {limit:?})",
                            NAMES[i],
                            NAMES[o],
                            NAMES[m],
                            since.elapsed()
                        );
                    }
                }
                if job.as_ref().is_some_and(|j| !j.is_finished()) {
                    return Err(format!("docker stop + start of {} still running", NAMES[i]));
                }
                if let Some(j) = job.take() {
                    if let Err(panic) = j.join() {
                        std::panic::resume_unwind(panic);
                    }
                }
                let addr = addrs[i].clone().ok_or("restarted node has no IP yet")?;
                if !serving(&addr)? {
                    return Err(format!("{} not SERVING yet", NAMES[i]));
                }
                let info = get_node(&addr)?;
                assert_eq!(info.id, old_id, "{} came back with another id", NAMES[i]);
                assert!(
                    info.generation > old_gen,
                    "{} came back at generation {} <= {old_gen}",
                    NAMES[i],
                    info.generation
                );
                self.gens[i] = info.generation;
                self.agree(alive, alive, gone, owners)
            },
        );
        blips += down_since.len();
        self.log(&format!(
            "restarted {}: generation {old_gen} -> {}, same id {old_id}; agreed after {:.2}s; transient blips {blips}",
            NAMES[i],
            self.gens[i],
            started.elapsed().as_secs_f64()
        ));
        blips
    }
}

#[test]
fn five_node_container_mesh_converges_detects_partitions_heals_restarts_and_deploys() {
    let t0 = Instant::now();
    ensure_test_image();
    let image = node_image();
    let _ = grpcurl();
    println!("[{:6.1}s] image {image} ready", t0.elapsed().as_secs_f64());

    // ----- 1. five nodes, seeded by name, converge ---------------------------
    let run = Run::new("cmesh");
    let net = run.network("mesh");
    let left = run.network("left");
    let right = run.network("right");
    let seeds = format!("{}:50051,{}:50051", run.name("a"), run.name("c"));
    let mut names = Vec::new();
    for (i, short) in NAMES.iter().enumerate() {
        let name = run.name(short);
        let side = if i <= B { &left } else { &right };
        let spec = NodeSpec {
            name: short,
            networks: vec![net.clone(), side.clone()],
            env: vec![
                ("IARNET_NODE_NAME".into(), name.clone()),
                ("IARNET_ADVERTISE_ADDR".into(), format!("{name}:50051")),
                ("IARNET_INITIAL_PEERS".into(), seeds.clone()),
                (
                    "IARNET_GOSSIP_INTERVAL".into(),
                    format!("{}ms", INTERVAL.as_millis()),
                ),
            ],
            docker_socket: OWNERS.contains(&i),
        };
        names.push(run.node(&image, &spec));
    }
    let bound = detection_bound(INTERVAL, NAMES.len());
    let mut mesh = Mesh {
        run,
        names,
        ids: vec![String::new(); 5],
        gens: vec![0; 5],
        net,
        detect_limit: bound * 2 + Duration::from_secs(5),
        t0,
    };
    for i in ALL {
        mesh.await_serving(i);
    }
    mesh.log("5 containers SERVING");
    for &o in &OWNERS {
        mesh.run.clean_label(format!("iarnet.node={}", mesh.ids[o]));
    }
    let uid = docker_ok(&["exec", &mesh.names[A], "id", "-u"]);
    assert_eq!(uid, "10001", "the node must run as uid 10001");
    mesh.await_agreement(
        "all 5 see 5 alive and both providers",
        &ALL,
        &ALL,
        &[],
        &OWNERS,
    );

    // The same, from outside with grpcurl.
    let want_ids: BTreeSet<&str> = mesh.ids.iter().map(String::as_str).collect();
    let want_owners: BTreeSet<&str> = OWNERS.iter().map(|&o| mesh.ids[o].as_str()).collect();
    for i in ALL {
        let addr = mesh.addr(i);
        let peers = call_ok(&addr, "iarnet.admin.v1.Admin/ListPeers", None).remove(0);
        assert_eq!(
            peers["alive"],
            json!(5),
            "{} over grpcurl: {peers}",
            NAMES[i]
        );
        let listed = peers["peers"].as_array().cloned().unwrap_or_default();
        let ids: BTreeSet<&str> = listed.iter().map(|p| str_field(p, "id")).collect();
        assert_eq!(ids, want_ids, "{} over grpcurl: {peers}", NAMES[i]);
        assert!(
            listed.iter().all(|p| str_field(p, "state") == "alive"),
            "{peers}"
        );
        let providers = call_ok(
            &addr,
            "iarnet.resource.v1.ResourceService/ListProviders",
            None,
        )
        .remove(0);
        let entries = providers["providers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let owners: BTreeSet<&str> = entries.iter().map(|p| str_field(p, "ownerId")).collect();
        assert_eq!(
            owners, want_owners,
            "{} over grpcurl: {providers}",
            NAMES[i]
        );
        for p in &entries {
            let own = str_field(p, "ownerId") == mesh.ids[i];
            let tier = str_field(p, "tier");
            assert_eq!(
                tier,
                if own { "internal" } else { "discovered" },
                "{} over grpcurl: {p}",
                NAMES[i]
            );
        }
    }
    mesh.log("grpcurl from the host: every node lists 5 alive peers and the providers of c and e");

    // ----- 2. a crash: docker kill e --------------------------------------------
    let live = [A, B, C, D];
    let killed = Instant::now();
    kill(&mesh.names[E]);
    wait_until(
        "a, b, c and d to hold e dead and drop its provider",
        mesh.detect_limit,
        POLL,
        || mesh.agree(&live, &live, &[E], &[B, C]),
    );
    mesh.log(&format!(
        "e killed: all others hold it dead, its provider gone, after {:.2}s (bound {:.2}s = {:.1} rounds, limit {:.1}s)",
        killed.elapsed().as_secs_f64(),
        bound.as_secs_f64(),
        bound.as_secs_f64() / INTERVAL.as_secs_f64(),
        mesh.detect_limit.as_secs_f64()
    ));

    // ----- 4. the crashed node restarts with the same name ---------------------
    let old_e = mesh.gens[E];
    start(&mesh.names[E]);
    mesh.await_serving(E);
    assert!(
        mesh.gens[E] > old_e,
        "e restarted at generation {} <= {old_e}",
        mesh.gens[E]
    );
    mesh.await_agreement(
        "e back with the same id as a new generation, all 5 alive",
        &ALL,
        &ALL,
        &[],
        &OWNERS,
    );
    mesh.log(&format!(
        "e restarted: generation {old_e} -> {}",
        mesh.gens[E]
    ));

    // ----- 3. replicas on b, c and e, placed through d ---------------------------
    let svc = format!("{}-svc", mesh.run.prefix);
    let mut body = deploy_body(&mesh.run, &svc);
    body["replicas"] = json!(3);
    body["spread"] = json!("node");
    body["reschedule"] = json!({"after": "1s", "delay": "100ms"});
    let events = call_ok(
        &mesh.addr(D),
        "iarnet.resource.v1.ResourceService/Deploy",
        Some(&body),
    );
    let service = events
        .iter()
        .find_map(|e| e.get("service").cloned())
        .unwrap_or_else(|| panic!("no service event in the Deploy stream: {events:?}"));
    assert_eq!(service["running"], json!(3), "{service}");
    let copies = replica_copies(&svc);
    let nodes: BTreeSet<&str> = copies.values().flatten().map(|c| c.node.as_str()).collect();
    let want: BTreeSet<&str> = OWNERS.iter().map(|&o| mesh.ids[o].as_str()).collect();
    assert_eq!(nodes, want, "one replica on each of b, c and e: {copies:?}");
    let on_b = copies
        .iter()
        .find(|(_, c)| c.iter().any(|c| c.node == mesh.ids[B]))
        .map(|(index, _)| index.clone())
        .expect("a replica on b");
    mesh.log(&format!(
        "service {svc}: 3 replicas through d, one container each on b, c and e (replica {on_b} on b)"
    ));

    // ----- 3'. partition a b | c d e and heal -----------------------------------
    let cut = Instant::now();
    disconnect(&mesh.net, &mesh.names[A]);
    disconnect(&mesh.net, &mesh.names[B]);
    wait_until(
        "each side to hold the other dead",
        mesh.detect_limit,
        POLL,
        || {
            mesh.assert_no_regression(&ALL, &ALL, &[], true);
            let l = mesh.agree(&[A, B], &[A, B], &[C, D, E], &[B]);
            let r = mesh.agree(&[C, D, E], &[C, D, E], &[A, B], &[C, E]);
            match (l, r) {
                (Ok(()), Ok(())) => Ok(()),
                (l, r) => Err(format!("left: {l:?}\nright: {r:?}")),
            }
        },
    );
    let detected = cut.elapsed();
    mesh.log(&format!(
        "partitioned: each side holds the other dead after {:.2}s",
        detected.as_secs_f64()
    ));

    // The majority replaces b's replica on c or e; b, cut off, runs on.
    let replica_id = format!("{svc}-{on_b}");
    let replaced = wait_until(
        "d to run a replacement of b's replica on its side",
        LIMIT,
        POLL,
        || {
            let got = call(
                &mesh.addr(D),
                "iarnet.resource.v1.ResourceService/GetDeployment",
                Some(&json!({"id": replica_id})),
            )?
            .remove(0);
            let owner = str_field(&got, "ownerId");
            if got["attempt"] == json!(2)
                && (owner == mesh.ids[C] || owner == mesh.ids[E])
                && str_field(&got, "state") == "running"
            {
                Ok(got)
            } else {
                Err(format!("replica {on_b} so far: {got}"))
            }
        },
    );
    let failover = cut.elapsed();
    let copies = replica_copies(&svc);
    assert_eq!(
        copies[&on_b].len(),
        2,
        "b's stale copy and the replacement, for now: {copies:?}"
    );
    mesh.log(&format!(
        "container-mesh failover: cut -> replacement running on {} after {:.2}s (detection {:.2}s, reschedule_after 1s, placement and start {:.2}s)",
        mesh.short(str_field(&replaced, "ownerId")),
        failover.as_secs_f64(),
        detected.as_secs_f64(),
        (failover.saturating_sub(detected + Duration::from_secs(1))).as_secs_f64(),
    ));

    // The side with the providers still places there; the other has nowhere.
    let rid = format!("{}-partitioned", mesh.run.prefix);
    let events = call_ok(
        &mesh.addr(D),
        "iarnet.resource.v1.ResourceService/Deploy",
        Some(&deploy_body(&mesh.run, &rid)),
    );
    let (placement, deployment) = placed(&events);
    let owner = str_field(&placement, "ownerId");
    assert!(
        owner == mesh.ids[C] || owner == mesh.ids[E],
        "placed on c or e: {placement}"
    );
    assert_eq!(
        workloads(&rid).len(),
        1,
        "the engine runs the deployment placed through d"
    );
    call_ok(
        &mesh.addr(D),
        "iarnet.resource.v1.ResourceService/Stop",
        Some(&json!({"id": str_field(&deployment, "id")})),
    );
    wait_until(
        "the partition-time deployment to be removed",
        LIMIT,
        POLL,
        || {
            let left = workloads(&rid);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("containers left: {left:?}"))
            }
        },
    );
    // a sees only b's provider now: a deploy through it lands there.
    let rid = format!("{}-left", mesh.run.prefix);
    let mut body = deploy_body(&mesh.run, &rid);
    // Fail fast: queued (the default), a miss would wait for the heal.
    body["queue_timeout"] = json!("0");
    let events = call_ok(
        &mesh.addr(A),
        "iarnet.resource.v1.ResourceService/Deploy",
        Some(&body),
    );
    let (placement, deployment) = placed(&events);
    assert_eq!(str_field(&placement, "ownerId"), mesh.ids[B], "{placement}");
    call_ok(
        &mesh.addr(A),
        "iarnet.resource.v1.ResourceService/Stop",
        Some(&json!({"id": str_field(&deployment, "id")})),
    );
    mesh.log("partitioned: d deployed on its side, a on b; both stopped");

    let healed = Instant::now();
    connect(&mesh.net, &mesh.names[A]);
    connect(&mesh.net, &mesh.names[B]);
    wait_until("the healed mesh to reconverge", LIMIT, POLL, || {
        mesh.assert_no_regression(&ALL, &ALL, &[], true);
        mesh.agree(&ALL, &ALL, &[], &OWNERS)
    });
    mesh.log(&format!(
        "healed: all 5 alive at their generations (e's old one never back), after {:.2}s",
        healed.elapsed().as_secs_f64()
    ));
    // Nothing comes back in the next rounds either; a live node may be
    // suspected for a moment (a connection to its old address), never more.
    let watch = Instant::now();
    let mut suspicions = 0;
    while watch.elapsed() < INTERVAL * 12 {
        suspicions += mesh.assert_no_regression(&ALL, &ALL, &[], false);
        std::thread::sleep(POLL);
    }
    mesh.await_agreement("the healed mesh, still agreed", &ALL, &ALL, &[], &OWNERS);
    mesh.log(&format!(
        "12 rounds after healing: no stale generation came back, {suspicions} transient suspicions"
    ));

    // b learns that its replica was replaced and stops its copy: each
    // replica runs exactly once, and stays so.
    wait_until(
        "each replica to run exactly once after the heal",
        LIMIT,
        POLL,
        || {
            let copies = replica_copies(&svc);
            let once = copies.len() == 3 && copies.values().all(|c| c.len() == 1);
            if once {
                Ok(())
            } else {
                Err(format!("running copies: {copies:?}"))
            }
        },
    );
    let fenced = healed.elapsed();
    for _ in 0..8 {
        let copies = replica_copies(&svc);
        assert!(
            copies.len() == 3 && copies.values().all(|c| c.len() == 1),
            "a copy came back: {copies:?}"
        );
        assert_eq!(copies[&on_b][0].attempt, "2", "{copies:?}");
        std::thread::sleep(INTERVAL);
    }
    let service = call_ok(
        &mesh.addr(D),
        "iarnet.resource.v1.ResourceService/GetService",
        Some(&json!({"id": svc})),
    )
    .remove(0);
    assert_eq!(service["running"], json!(3), "{service}");
    mesh.log(&format!(
        "healed: b stopped its stale copy; each replica runs exactly once {:.2}s after the heal",
        fenced.as_secs_f64()
    ));
    call_ok(
        &mesh.addr(D),
        "iarnet.resource.v1.ResourceService/Scale",
        Some(&json!({"id": svc, "replicas": 0})),
    );
    wait_until(
        "the service's containers to be removed",
        LIMIT,
        POLL,
        || {
            let left = workloads_of_service(&svc);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("containers left: {left:?}"))
            }
        },
    );

    // ----- 4'. a graceful restart of d: same id, new generation ---------------
    mesh.restart(D, &ALL, &[], &OWNERS);

    // ----- 5. deploy through a onto c's Docker provider -------------------------
    let rid = format!("{}-hello", mesh.run.prefix);
    let a = mesh.addr(A);
    // e has a provider too: name c's, which a knows only by gossip.
    let providers = call_ok(&a, "iarnet.resource.v1.ResourceService/ListProviders", None).remove(0);
    let c_provider = providers["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| str_field(p, "ownerId") == mesh.ids[C])
        .map(|p| str_field(p, "id").to_string())
        .unwrap_or_else(|| panic!("a lists no provider of c: {providers}"));
    let mut body = deploy_body(&mesh.run, &rid);
    body["provider_id"] = json!(c_provider);
    let events = call_ok(&a, "iarnet.resource.v1.ResourceService/Deploy", Some(&body));
    let (placement, deployment) = placed(&events);
    assert_eq!(str_field(&placement, "ownerId"), mesh.ids[C], "{placement}");
    assert_eq!(str_field(&placement, "tier"), "discovered", "{placement}");
    assert_eq!(str_field(&deployment, "state"), "running", "{deployment}");
    let id = str_field(&deployment, "id").to_string();
    let provider = str_field(&placement, "providerId").to_string();
    let found = workloads(&rid);
    assert_eq!(found.len(), 1, "one container for request {rid}: {found:?}");
    let inspect = docker_ok(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{json .Config.Labels}}",
        &found[0],
    ]);
    let (status, labels) = inspect.split_once(' ').expect("status and labels");
    let labels: Value = serde_json::from_str(labels).expect("labels as JSON");
    assert_eq!(status, "running", "{inspect}");
    assert_eq!(labels["iarnet.managed"], json!("true"), "{labels}");
    assert_eq!(labels["iarnet.node"], json!(mesh.ids[C]), "{labels}");
    assert_eq!(labels["iarnet.provider"], json!(provider), "{labels}");
    let logs = wait_until("the workload's line in Logs through a", LIMIT, POLL, || {
        let lines = call(
            &a,
            "iarnet.resource.v1.ResourceService/Logs",
            Some(&json!({"id": id, "tail": 20})),
        )?;
        let text: Vec<&str> = lines.iter().map(|l| str_field(l, "text")).collect();
        if text.iter().any(|t| t.contains("hello-from-iarnet")) {
            Ok(text.join(""))
        } else {
            Err(format!("lines so far: {text:?}"))
        }
    });
    // Any node answers for it: b neither placed it nor runs it.
    let b = mesh.addr(B);
    let through_b = wait_until(
        "b to find the deployment placed through a",
        LIMIT,
        POLL,
        || {
            call(
                &b,
                "iarnet.resource.v1.ResourceService/GetDeployment",
                Some(&json!({"id": rid})),
            )
        },
    )
    .remove(0);
    assert_eq!(str_field(&through_b, "homeId"), mesh.ids[A], "{through_b}");
    assert_eq!(str_field(&through_b, "ownerId"), mesh.ids[C], "{through_b}");
    let lines = call_ok(
        &b,
        "iarnet.resource.v1.ResourceService/Logs",
        Some(&json!({"id": rid, "tail": 20})),
    );
    assert!(
        lines
            .iter()
            .any(|l| str_field(l, "text").contains("hello-from-iarnet")),
        "logs through b: {lines:?}"
    );
    let stopped = call_ok(
        &a,
        "iarnet.resource.v1.ResourceService/Stop",
        Some(&json!({"id": id})),
    )
    .remove(0);
    assert_eq!(str_field(&stopped, "state"), "stopped", "{stopped}");
    wait_until("the workload container to be removed", LIMIT, POLL, || {
        let left = workloads(&rid);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("containers left: {left:?}"))
        }
    });
    mesh.log(&format!(
        "deploy through a ran on c ({provider}), logs {:?} (through a and b), stopped and removed",
        logs.trim()
    ));

    // ----- 6. a rolling restart of all five ------------------------------------
    let mut blips = 0;
    for i in ALL {
        blips += mesh.restart(i, &ALL, &[], &OWNERS);
    }
    mesh.log(&format!(
        "rolling restart done; transient suspicions/deaths of running nodes: {blips}"
    ));
    let health = docker(&[
        "inspect",
        "-f",
        "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
        &mesh.names[A],
    ]);
    mesh.log(&format!(
        "docker HEALTHCHECK status of a (informational): {health:?}"
    ));
}
