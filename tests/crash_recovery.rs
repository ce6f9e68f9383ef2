//! Nothing acknowledged is lost: the real `iarnet` binary with this
//! machine's Docker engine takes a storm of concurrent deploys and stops
//! and is killed (SIGKILL) at random moments, then restarted on the same
//! data_dir. After every kill and restart:
//!
//! - every container of the node has a record in the store (no orphans),
//!   read from the store file itself while the node is down;
//! - every acknowledged deploy is known, running unless its stop was
//!   acknowledged, then stopped;
//! - the provider's reservations equal the requests of its live containers;
//! - retrying the requests that were in flight makes no second container.
//!
//! The kill moments come from a seeded RNG; the seed is printed, and
//! `IARNET_CRASH_SEED=<n>` replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::ContainerSummaryStateEnum;
use iarnet::proto::resource as pb;
use iarnet::proto::resource::deploy_event::Event;
use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
use iarnet::store::{RedbStore, Store};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

#[path = "support/docker.rs"]
mod docker_support;
use docker_support::{containers_labelled, engine, ensure_test_image, suffix, Cleanup, TEST_IMAGE};

const KILLS: usize = 5;
const DEPLOYS_PER_ROUND: usize = 8;
const STOPS_PER_ROUND: usize = 3;
const CPU_MILLIS: u64 = 10;
const MEMORY_BYTES: u64 = 16 << 20;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The node process; killed when dropped (also on panic).
struct Node {
    child: Child,
    grpc: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(data: &Path, node_id: &str, log: &Path) -> Node {
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(log).expect("node log file");
    let child = Command::new(env!("CARGO_BIN_EXE_iarnet"))
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml"))
        .args(["--peer-listen-addr", &grpc, "--listen-addr", &http])
        .args(["--mode", "standalone", "--node-id", node_id])
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "info")
        .env("IARNET_MDNS", "off")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the iarnet binary starts");
    Node { child, grpc }
}

/// What the test knows the node acknowledged.
#[derive(Default, Debug)]
struct Books {
    /// Acknowledged deploys not stopped: request id -> state at the ack.
    live: BTreeMap<String, String>,
    /// Acknowledged stops.
    stopped: BTreeSet<String>,
    /// Deploys sent and not acknowledged.
    inflight: BTreeSet<String>,
    /// Stops sent and not acknowledged.
    stopping: BTreeSet<String>,
}

fn spec(request_id: &str) -> pb::DeploySpec {
    pb::DeploySpec {
        request_id: request_id.to_string(),
        name: request_id.to_string(),
        image: TEST_IMAGE.to_string(),
        // Exits at once on SIGTERM, so a stop does not wait out its grace.
        command: vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM; sleep 3600 & wait".into(),
        ],
        cpu: format!("{CPU_MILLIS}m"),
        memory: format!("{}Mi", MEMORY_BYTES >> 20),
        ..Default::default()
    }
}

/// Deploys and waits for the final deployment (the acknowledgement).
async fn deploy(
    client: &mut ResourceServiceClient<Channel>,
    request_id: &str,
) -> Result<pb::Deployment, String> {
    deploy_spec(client, spec(request_id)).await
}

async fn deploy_spec(
    client: &mut ResourceServiceClient<Channel>,
    spec: pb::DeploySpec,
) -> Result<pb::Deployment, String> {
    let mut req = tonic::Request::new(spec);
    req.set_timeout(Duration::from_secs(60));
    let mut stream = client
        .deploy(req)
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    while let Some(ev) = stream.message().await.map_err(|s| s.to_string())? {
        if let Some(Event::Deployment(d)) = ev.event {
            return Ok(d);
        }
    }
    Err("the stream ended without the deployment".into())
}

async fn stop(
    client: &mut ResourceServiceClient<Channel>,
    request_id: &str,
) -> Result<pb::Deployment, String> {
    let mut req = tonic::Request::new(pb::StopRequest {
        id: request_id.to_string(),
    });
    req.set_timeout(Duration::from_secs(60));
    client
        .stop(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| s.to_string())
}

/// Polls `check` until it answers Ok; panics with the last answer seen.
async fn wait_ok<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let seen = match check().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; last seen: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connects once the node serves its Docker provider.
async fn ready(node: &Node) -> ResourceServiceClient<Channel> {
    let addr = format!("http://{}", node.grpc);
    wait_ok(
        "the node to serve its docker provider",
        Duration::from_secs(30),
        || {
            let addr = addr.clone();
            async move {
                let mut c = ResourceServiceClient::connect(addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let providers = c
                    .list_providers(pb::ListProvidersRequest {})
                    .await
                    .map_err(|s| s.to_string())?
                    .into_inner()
                    .providers;
                if providers.iter().any(|p| p.r#type == "docker" && p.healthy) {
                    Ok(c)
                } else {
                    Err(format!("providers: {providers:?}"))
                }
            }
        },
    )
    .await
}

/// The node's containers: (request id, live?) by container.
async fn containers(docker: &bollard::Docker, node_id: &str) -> Vec<(String, bool)> {
    containers_labelled(docker, "iarnet.node", node_id)
        .await
        .into_iter()
        .map(|c| {
            let req = c
                .labels
                .as_ref()
                .and_then(|l| l.get("iarnet.request").cloned())
                .unwrap_or_default();
            let live = matches!(
                c.state,
                Some(
                    ContainerSummaryStateEnum::RUNNING
                        | ContainerSummaryStateEnum::CREATED
                        | ContainerSummaryStateEnum::RESTARTING
                        | ContainerSummaryStateEnum::PAUSED
                )
            );
            (req, live)
        })
        .collect()
}

/// While the node is down: every container has a record in the store.
async fn no_orphans(docker: &bollard::Docker, node_id: &str, data: &Path, round: usize) {
    let store = RedbStore::open_dir(data).expect("the store opens once the node is dead");
    let recorded: BTreeSet<String> = store
        .deployments()
        .expect("records read")
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    drop(store);
    for (req, _) in containers(docker, node_id).await {
        assert!(
            recorded.contains(&req),
            "round {round}: container of request {req:?} has no record; records: {recorded:?}"
        );
    }
}

/// After a restart: what was acknowledged is there, reservations match,
/// and retries of what was in flight make nothing twice.
async fn check_after_restart(
    client: &mut ResourceServiceClient<Channel>,
    docker: &bollard::Docker,
    node_id: &str,
    books: &Mutex<Books>,
    round: usize,
) {
    let (live, stopped, inflight, stopping) = {
        let b = books.lock().unwrap();
        (
            b.live.clone(),
            b.stopped.clone(),
            b.inflight.clone(),
            b.stopping.clone(),
        )
    };
    for (req, acked_state) in &live {
        let d = client
            .get_deployment(pb::GetDeploymentRequest { id: req.clone() })
            .await
            .unwrap_or_else(|s| panic!("round {round}: acknowledged {req} unknown: {s}"))
            .into_inner();
        let ok = if stopping.contains(req) {
            // A stop killed half-way may leave the container exited.
            ["running", "exited", "stopped", acked_state.as_str()].contains(&d.state.as_str())
        } else {
            d.state == "running" || d.state == *acked_state
        };
        assert!(
            ok,
            "round {round}: {req} acknowledged {acked_state}, now {d:?}"
        );
    }
    for req in &stopped {
        let d = client
            .get_deployment(pb::GetDeploymentRequest { id: req.clone() })
            .await
            .unwrap_or_else(|s| panic!("round {round}: stopped {req} unknown: {s}"))
            .into_inner();
        assert_eq!(d.state, "stopped", "round {round}: {req}: {d:?}");
    }
    let listed: BTreeSet<String> = client
        .list_deployments(pb::ListDeploymentsRequest::default())
        .await
        .expect("list deployments")
        .into_inner()
        .deployments
        .into_iter()
        .map(|d| d.request_id)
        .collect();
    for req in live.keys().chain(&stopped) {
        assert!(listed.contains(req), "round {round}: {req} not listed");
    }

    // Reservations equal the live containers' requests.
    wait_ok(
        "reservations to equal the live containers' requests",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            async move {
                let live = containers(docker, node_id)
                    .await
                    .into_iter()
                    .filter(|(_, l)| *l)
                    .count() as u64;
                let cap = client
                    .get_capacity(pb::GetCapacityRequest::default())
                    .await
                    .map_err(|s| s.to_string())?
                    .into_inner();
                let reserved = cap.node.and_then(|n| n.reserved).unwrap_or_default();
                let want = (live * CPU_MILLIS, live * MEMORY_BYTES);
                if (reserved.cpu_millis, reserved.memory_bytes) == want {
                    Ok(())
                } else {
                    Err(format!(
                        "reserved ({}m, {}B), {live} live containers want ({}m, {}B)",
                        reserved.cpu_millis, reserved.memory_bytes, want.0, want.1
                    ))
                }
            }
        },
    )
    .await;

    // Retries of what was in flight: acknowledged now, exactly one container.
    for req in &inflight {
        let d = deploy(client, req)
            .await
            .unwrap_or_else(|e| panic!("round {round}: retry of in-flight {req} failed: {e}"));
        // A container the kill left created but not started is started by the retry.
        assert_eq!(d.state, "running", "round {round}: retry of {req}: {d:?}");
        let n = containers_labelled(docker, "iarnet.request", req)
            .await
            .len();
        assert_eq!(n, 1, "round {round}: retry of {req} left {n} containers");
        let mut b = books.lock().unwrap();
        b.inflight.remove(req);
        b.live.insert(req.clone(), d.state);
    }
    for req in &stopping {
        stop(client, req)
            .await
            .unwrap_or_else(|e| panic!("round {round}: retried stop of {req} failed: {e}"));
        let mut b = books.lock().unwrap();
        b.stopping.remove(req);
        b.live.remove(req);
        b.stopped.insert(req.clone());
    }
}

/// A test's seed (`IARNET_CRASH_SEED` replays one), node id, data dir and
/// log dir.
fn setup(prefix: &str) -> (u64, String, tempfile::TempDir, PathBuf) {
    let seed = std::env::var("IARNET_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let node_id = format!("{prefix}-{}", suffix());
    let data = tempfile::tempdir().expect("data dir");
    let logs: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&node_id);
    std::fs::create_dir_all(&logs).expect("log dir");
    (seed, node_id, data, logs)
}

/// Sends a storm of deploys and stops; returns their tasks.
fn storm(
    client: &ResourceServiceClient<Channel>,
    books: &Arc<Mutex<Books>>,
    round: usize,
    rng: &mut SmallRng,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for i in 0..DEPLOYS_PER_ROUND {
        let req = format!("crash-r{round}-{i}");
        books.lock().unwrap().inflight.insert(req.clone());
        let (mut c, books) = (client.clone(), books.clone());
        tasks.push(tokio::spawn(async move {
            if let Ok(d) = deploy(&mut c, &req).await {
                let mut b = books.lock().unwrap();
                b.inflight.remove(&req);
                b.live.insert(req, d.state);
            }
        }));
    }
    let candidates: Vec<String> = {
        let b = books.lock().unwrap();
        b.live
            .keys()
            .filter(|r| !b.stopping.contains(*r))
            .cloned()
            .collect()
    };
    for _ in 0..STOPS_PER_ROUND.min(candidates.len()) {
        let req = candidates[rng.random_range(0..candidates.len())].clone();
        if !books.lock().unwrap().stopping.insert(req.clone()) {
            continue;
        }
        let (mut c, books) = (client.clone(), books.clone());
        tasks.push(tokio::spawn(async move {
            if stop(&mut c, &req).await.is_ok() {
                let mut b = books.lock().unwrap();
                b.stopping.remove(&req);
                b.live.remove(&req);
                b.stopped.insert(req);
            }
        }));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deploys_and_stops_survive_sigkill() {
    ensure_test_image();
    let (seed, node_id, data, logs) = setup("crash");
    println!(
        "crash_recovery: seed {seed} (IARNET_CRASH_SEED={seed} replays), node {node_id}, logs in {}",
        logs.display()
    );
    let _cleanup = Cleanup(format!("{node_id}/docker"));
    let docker = engine().await;
    let mut rng = SmallRng::seed_from_u64(seed);
    let books = Arc::new(Mutex::new(Books::default()));

    for round in 0..=KILLS {
        let node = spawn(
            data.path(),
            &node_id,
            &logs.join(format!("node-{round}.log")),
        );
        let mut client = ready(&node).await;
        check_after_restart(&mut client, &docker, &node_id, &books, round).await;
        if round == KILLS {
            break;
        }
        let tasks = storm(&client, &books, round, &mut rng);
        let after = Duration::from_millis(rng.random_range(20..1500));
        tokio::time::sleep(after).await; // the random kill moment, not a wait on a condition
        let mut node = node;
        node.child.kill().expect("SIGKILL the node");
        node.child.wait().expect("the killed node is reaped");
        for t in tasks {
            let _ = t.await;
        }
        {
            let b = books.lock().unwrap();
            println!(
                "round {round}: killed after {after:?}; {} live, {} stopped acknowledged, {} deploys and {} stops in flight",
                b.live.len(),
                b.stopped.len(),
                b.inflight.len(),
                b.stopping.len()
            );
        }
        no_orphans(&docker, &node_id, data.path(), round).await;
    }
}

/// A deploy that waits for a provider nobody has yet: it queues at once.
fn waiting_spec(request_id: &str, priority: &str) -> pb::DeploySpec {
    pb::DeploySpec {
        required_labels: [("zone".to_string(), "not-built-yet".to_string())].into(),
        wait_for_capacity: true,
        queue_timeout: "1h".into(),
        priority: priority.into(),
        ..spec(request_id)
    }
}

async fn queue(client: &mut ResourceServiceClient<Channel>) -> Vec<pb::QueueEntry> {
    client
        .list_queue(pb::ListQueueRequest {})
        .await
        .expect("ListQueue")
        .into_inner()
        .entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_work_survives_sigkill_in_order() {
    ensure_test_image();
    let (seed, node_id, data, logs) = setup("crash-queue");
    println!("crash_recovery queue: seed {seed}, node {node_id}");
    let mut rng = SmallRng::seed_from_u64(seed);

    let node = spawn(data.path(), &node_id, &logs.join("node-0.log"));
    let mut client = ready(&node).await;
    // Acknowledged one by one: their order is known.
    let mut acked = Vec::new();
    for i in 0..12 {
        let priority = if rng.random_bool(0.5) {
            "interactive"
        } else {
            "batch"
        };
        let req = format!("{node_id}-q{i:02}");
        let d = deploy_spec(&mut client, waiting_spec(&req, priority))
            .await
            .unwrap();
        assert_eq!(d.state, "queued", "{d:?}");
        acked.push((priority == "batch", i, req));
    }
    // More arrive concurrently while the node is killed.
    let mut tasks = Vec::new();
    for i in 12..18 {
        let mut c = client.clone();
        let req = format!("{node_id}-q{i:02}");
        tasks.push(tokio::spawn(async move {
            deploy_spec(&mut c, waiting_spec(&req, "batch")).await
        }));
    }
    let after = Duration::from_millis(rng.random_range(0..200));
    tokio::time::sleep(after).await; // the random kill moment, not a wait on a condition
    let mut node = node;
    node.child.kill().expect("SIGKILL the node");
    node.child.wait().expect("the killed node is reaped");
    let mut late = Vec::new();
    for t in tasks {
        if let Ok(d) = t.await.unwrap() {
            late.push(d.request_id);
        }
    }
    acked.sort();
    let expected: Vec<String> = acked.into_iter().map(|(_, _, r)| r).collect();

    let node = spawn(data.path(), &node_id, &logs.join("node-1.log"));
    let mut client = ready(&node).await;
    let entries = queue(&mut client).await;
    let positions: Vec<u32> = entries.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=entries.len() as u32).collect::<Vec<_>>());
    let order: Vec<String> = entries.iter().map(|e| e.request_id.clone()).collect();
    assert_eq!(
        order[..expected.len()],
        expected[..],
        "killed after {after:?}: the acknowledged entries are back, in order"
    );
    // Those acknowledged during the kill are back too, behind the others
    // (batch, and younger).
    for r in &late {
        assert!(order[expected.len()..].contains(r), "{r} lost: {order:?}");
    }
    println!(
        "crash_recovery queue: killed after {after:?}; {} + {} acknowledged, {} queued after restart",
        expected.len(),
        late.len(),
        order.len()
    );
    for e in &entries {
        assert!(
            e.reason.contains("label zone=not-built-yet missing"),
            "{e:?}"
        );
        let d = stop(&mut client, &e.request_id).await.unwrap();
        assert_eq!(d.state, "stopped");
    }
    assert!(queue(&mut client).await.is_empty());
}

/// 200 deploys at once queue together, so their records share commits
/// (group commit). The node is killed while they are being acknowledged:
/// every one acknowledged is back after the restart, and the queue holds
/// no entry without its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_acknowledged_in_shared_commits_survives_sigkill() {
    const STORM: usize = 200;
    let (seed, node_id, data, logs) = setup("crash-batch");
    let mut rng = SmallRng::seed_from_u64(seed);

    let node = spawn(data.path(), &node_id, &logs.join("node-0.log"));
    let client = ready(&node).await;
    let (acks, mut first_ack) = tokio::sync::watch::channel(0usize);
    let acks = Arc::new(acks);
    let tasks: Vec<_> = (0..STORM)
        .map(|i| {
            let (mut c, acks) = (client.clone(), acks.clone());
            let req = format!("{node_id}-s{i:03}");
            tokio::spawn(async move {
                let d = deploy_spec(&mut c, waiting_spec(&req, "batch")).await;
                if let Ok(d) = &d {
                    assert_eq!(d.state, "queued", "{d:?}");
                    acks.send_modify(|n| *n += 1);
                }
                d.ok().map(|d| d.request_id)
            })
        })
        .collect();
    first_ack
        .wait_for(|n| *n > 0)
        .await
        .expect("a first acknowledgement");
    let after = Duration::from_millis(rng.random_range(0..40));
    tokio::time::sleep(after).await; // the random kill moment, not a wait on a condition
    let mut node = node;
    node.child.kill().expect("SIGKILL the node");
    node.child.wait().expect("the killed node is reaped");
    let mut acked = BTreeSet::new();
    for t in tasks {
        if let Some(r) = t.await.unwrap() {
            acked.insert(r);
        }
    }

    // The store file itself, read while the node is down: every queue
    // entry has its record, and every acknowledged deploy is there.
    {
        let store = RedbStore::open_dir(data.path()).expect("the store reopens");
        let records: BTreeSet<String> = store
            .deployments()
            .unwrap()
            .into_iter()
            .map(|r| r.request_id)
            .collect();
        let queued: BTreeSet<String> = store
            .queued()
            .unwrap()
            .into_iter()
            .map(|q| q.spec.request_id)
            .collect();
        assert!(queued.is_subset(&records), "a queue entry lost its record");
        let lost: Vec<_> = acked.difference(&queued).collect();
        assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    }
    let node = spawn(data.path(), &node_id, &logs.join("node-1.log"));
    let mut client = ready(&node).await;
    let order: BTreeSet<String> = queue(&mut client)
        .await
        .into_iter()
        .map(|e| e.request_id)
        .collect();
    assert!(
        acked.is_subset(&order),
        "acknowledged entries are queued again"
    );
    println!(
        "crash_recovery batch: seed {seed}, killed {after:?} after the first ack; {} of {STORM} acknowledged, {} queued after restart",
        acked.len(),
        order.len()
    );
}
