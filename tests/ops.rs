//! Operator surfaces of a real `iarnet` process with its Docker provider on
//! this machine's engine: the README's grpcurl commands run as written, the
//! HTTP API (JSON, metrics, probes) and the CLI client.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/docker.rs"]
mod docker_support;
#[path = "support/grpcurl.rs"]
mod grpcurl_support;

#[path = "ops/services.rs"]
mod services;

use docker_support::{ensure_test_image, Cleanup, TEST_IMAGE};
use grpcurl_support::grpcurl;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One node from the shipped config: its internal provider is this
/// machine's Docker engine.
struct Node {
    child: Child,
    grpc: String,
    http: String,
    _data: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// The shipped config on free loopback ports, plus `extra` flags and `env`.
    fn spawn(extra: &[&str], env: &[(&str, &str)]) -> Node {
        let grpc = format!("127.0.0.1:{}", free_port());
        Node::spawn_at(grpc, extra, env)
    }

    fn spawn_at(grpc: String, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let data = tempfile::tempdir().expect("temp dir");
        let http = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_iarnet"))
            .arg("--config")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml"))
            .args(["--peer-listen-addr", &grpc, "--listen-addr", &http])
            .args(["--mode", "standalone"])
            .args(extra)
            .arg("--data-dir")
            .arg(data.path())
            .env("IARNET_MDNS", "off")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the iarnet binary starts");
        Node {
            child,
            grpc,
            http,
            _data: data,
        }
    }

    /// A node with this machine's Docker engine as its provider, serving.
    fn start() -> Node {
        let node = Node::spawn(&[], &[]);
        wait_until("the node answers /healthz", || {
            http_get(&node.http, "/healthz").ok().filter(|r| r.0 == 200)
        });
        node
    }

    /// `iarnet <args> --addr <node>`.
    fn cli(&self, args: &[&str]) -> Output {
        let (cmd, rest) = args.split_first().expect("a subcommand");
        Command::new(env!("CARGO_BIN_EXE_iarnet"))
            .arg(cmd)
            .args(["--addr", &self.grpc])
            .args(rest)
            .output()
            .expect("the iarnet client runs")
    }

    fn provider_id(&self) -> String {
        let out = self.cli(&["providers", "--output", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("providers JSON");
        v["providers"][0]["id"]
            .as_str()
            .expect("the node has its Docker provider")
            .to_string()
    }
}

fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal HTTP/1.1 exchange: (status, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, rest.to_string()))
}

fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http(addr, "GET", path, None)
}

/// A command's stdout and stderr together.
fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The commands between the README's grpcurl-ops markers, one per entry
/// (backslash continuations joined).
fn readme_grpcurl_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- grpcurl-ops -->")
        .expect("README has a <!-- grpcurl-ops --> block");
    let end = readme[start..]
        .find("<!-- /grpcurl-ops -->")
        .expect("the grpcurl-ops block is closed")
        + start;
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in readme[start..end].lines() {
        let line = line.trim();
        if current.is_empty() && !line.starts_with("grpcurl ") {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                // A quoted argument may span lines.
                if current.matches('\'').count() % 2 == 1 {
                    current.push('\n');
                } else {
                    commands.push(std::mem::take(&mut current));
                }
            }
        }
    }
    commands
}

#[test]
fn readme_grpcurl_operations_run_against_a_node() {
    ensure_test_image();
    let node = Node::start();
    let _cleanup = Cleanup(node.provider_id());
    let commands = readme_grpcurl_commands();
    let methods: Vec<&str> = [
        "Admin/ListPeers",
        "ResourceService/ListProviders",
        "ResourceService/GetCapacity",
        "ResourceService/Deploy",
        "ResourceService/Logs",
        "ResourceService/Stop",
    ]
    .into_iter()
    .filter(|m| !commands.iter().any(|c| c.contains(m)))
    .collect();
    assert!(
        methods.is_empty(),
        "README lacks grpcurl examples for {methods:?}"
    );

    let mut transcript = String::new();
    for cmd in &commands {
        // The README's address and image, swapped for this node and the local image.
        let cmd = cmd
            .replacen("grpcurl", &grpcurl().display().to_string(), 1)
            .replace("localhost:50051", &node.grpc)
            .replace("busybox:1.36", TEST_IMAGE);
        let run = || {
            Command::new("sh")
                .args(["-c", &cmd])
                .output()
                .expect("sh runs")
        };
        // The container may not have printed yet when the deploy returns.
        let out = if cmd.contains("/Logs") {
            wait_until("the deployment's line shows in Logs", || {
                Some(run()).filter(|o| !o.status.success() || !o.stdout.is_empty())
            })
        } else {
            run()
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        transcript.push_str(&format!(
            "$ {cmd}\n{stdout}{}\n",
            String::from_utf8_lossy(&out.stderr)
        ));
        assert!(out.status.success(), "README command failed:\n{transcript}");
    }
    // The deploy printed its events, the logs its line, and stop ended it.
    for needle in [
        "\"placement\"",
        "hello from iarnet",
        "\"state\": \"stopped\"",
    ] {
        assert!(
            transcript.contains(needle),
            "{needle:?} missing:\n{transcript}"
        );
    }
}

#[test]
fn http_api_serves_json_metrics_and_probes() {
    let node = Node::start();
    let h = &node.http;

    assert_eq!(
        http_get(h, "/readyz").unwrap().0,
        200,
        "a node without seeds is ready"
    );
    let (code, cap) = http_get(h, "/resource/capacity").unwrap();
    assert_eq!(code, 200, "{cap}");
    let cap = json(&cap);
    for key in ["cpu", "memory", "gpu", "node", "mesh", "providers"] {
        assert!(cap.get(key).is_some(), "capacity lacks {key}: {cap}");
    }
    assert!(
        cap["cpu"].as_f64().unwrap() > 0.0,
        "Docker capacity counted: {cap}"
    );

    let (code, providers) = http_get(h, "/resource/providers").unwrap();
    assert_eq!(code, 200);
    let providers = json(&providers);
    let p = &providers["providers"][0];
    assert_eq!(p["type"], "docker", "{providers}");
    assert_eq!(p["tier"], "internal");
    assert_eq!(p["status"], "active");

    let (code, nodes) = http_get(h, "/peer/nodes").unwrap();
    assert_eq!(code, 200);
    let nodes = json(&nodes);
    assert_eq!(nodes["alive"], 1, "{nodes}");
    assert_eq!(nodes["nodes"][0]["is_self"], true);
    assert_eq!(nodes["nodes"][0]["providers"][0]["type"], "docker");

    // Bad input: the field is named, the status fits, nothing changes.
    let (code, err) = http(h, "POST", "/peer/nodes", Some(r#"{"adress":"x:1"}"#)).unwrap();
    assert_eq!(code, 400, "{err}");
    assert!(err.contains("adress") && err.contains("address"), "{err}");
    let (code, err) = http(h, "POST", "/peer/nodes", Some(r#"{"address":"nope"}"#)).unwrap();
    assert_eq!(code, 400, "{err}");
    assert!(err.contains("HOST:PORT"), "{err}");
    let (code, err) = http(
        h,
        "POST",
        "/resource/providers",
        Some(r#"{"type":"mesos","name":"m","endpoint":"tcp://127.0.0.1:1"}"#),
    )
    .unwrap();
    assert_eq!(code, 400, "{err}");
    assert!(err.contains("mesos"), "{err}");
    let (code, err) = http(
        h,
        "POST",
        "/resource/providers",
        Some(r#"{"type":"docker","name":"gone","host":"127.0.0.1","port":1}"#),
    )
    .unwrap();
    assert_eq!(code, 502, "a host that does not answer is refused: {err}");
    let after = json(&http_get(h, "/resource/providers").unwrap().1);
    assert_eq!(after["providers"].as_array().unwrap().len(), 1, "{after}");
    assert_eq!(http_get(h, "/nothing/here").unwrap().0, 404);
    let huge = format!(r#"{{"address":"{}"}}"#, "x".repeat(100_000));
    let (code, err) = http(h, "POST", "/peer/nodes", Some(&huge)).unwrap();
    assert_eq!(code, 413, "an oversized body is refused as such: {err}");

    let (code, metrics) = http_get(h, "/metrics").unwrap();
    assert_eq!(code, 200);
    for family in [
        "iarnet_peers{state=\"alive\"} 1",
        "iarnet_providers{tier=\"internal\"} 1",
        "iarnet_gossip_rounds_total",
        "iarnet_gossip_sent_bytes_total",
        "iarnet_deployments{state=\"running\"} 0",
        "# TYPE iarnet_deployments gauge",
        "# EOF",
    ] {
        assert!(
            metrics.contains(family),
            "{family:?} missing from /metrics:\n{metrics}"
        );
    }
}

/// No Docker for the readiness tests: the engine is not what they are about.
const NO_DOCKER: &[(&str, &str)] = &[("IARNET_DOCKER_HOST", "tcp://127.0.0.1:1")];

#[test]
fn readyz_waits_for_a_peer_when_seeded() {
    let dead_seed = format!("127.0.0.1:{}", free_port());
    let node = Node::spawn(&["--initial-peers", &dead_seed], NO_DOCKER);
    let (code, body) = wait_until("/healthz answers", || {
        http_get(&node.http, "/healthz")
            .ok()
            .filter(|r| r.0 == 200)?;
        http_get(&node.http, "/readyz").ok()
    });
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains(&dead_seed),
        "readiness says which seed it waits for: {body}"
    );
}

#[test]
fn cli_drives_a_deploy_end_to_end() {
    ensure_test_image();
    let node = Node::start();
    let _cleanup = Cleanup(node.provider_id());

    let peers = node.cli(&["peers"]);
    assert!(peers.status.success(), "{}", text(&peers));
    assert!(text(&peers).contains("(this node)") && text(&peers).contains("1 alive"));
    let cap = node.cli(&["capacity"]);
    assert!(
        text(&cap).contains("node") && text(&cap).contains("mesh"),
        "{}",
        text(&cap)
    );
    let providers = node.cli(&["providers"]);
    assert!(
        text(&providers).contains("internal"),
        "{}",
        text(&providers)
    );

    let deploy = node.cli(&[
        "deploy",
        "--image",
        TEST_IMAGE,
        "--cpu",
        "100m",
        "--memory",
        "32Mi",
        "--request-id",
        "cli-hello",
        "--",
        "sh",
        "-c",
        "echo hello from the cli; sleep 300",
    ]);
    assert!(deploy.status.success(), "{}", text(&deploy));
    assert!(text(&deploy).contains("placed on"), "{}", text(&deploy));

    let logs = wait_until("the container logged its line", || {
        let o = node.cli(&["logs", "cli-hello", "--tail", "10"]);
        Some(text(&o)).filter(|t| t.contains("hello from the cli"))
    });
    assert!(!logs.contains("error"), "{logs}");

    let status = node.cli(&["status", "cli-hello", "--output", "json"]);
    let status = json(&String::from_utf8_lossy(&status.stdout));
    assert_eq!(status["state"], "running", "{status}");

    // The mesh listing (the CLI's default), its filters and the count.
    let listed = node.cli(&["deployments"]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(
        text(&listed).contains("HOME") && text(&listed).contains("cli-hello"),
        "{}",
        text(&listed)
    );
    let page = json(&String::from_utf8_lossy(
        &node
            .cli(&["deployments", "--state", "running", "--output", "json"])
            .stdout,
    ));
    assert_eq!(page["nodes_answered"], 1, "{page}");
    assert_eq!(page["deployments"][0]["request_id"], "cli-hello", "{page}");
    let (code, body) = http_get(
        &node.http,
        "/resource/deployments?scope=mesh&state=running&image=busybox",
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let body = json(&body);
    assert_eq!(body["deployments"][0]["request_id"], "cli-hello", "{body}");
    assert_eq!(body["missing_nodes"], serde_json::json!([]), "{body}");
    let (code, body) = http_get(&node.http, "/resource/deployments?scope=galaxy").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("scope"), "{body}");
    let (code, body) = http_get(&node.http, "/resource/deployments?colour=red").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("colour"), "{body}");
    let (_, body) = http_get(&node.http, "/resource/capacity?deployments=true").unwrap();
    assert_eq!(json(&body)["deployments"]["running"], 1, "{body}");
    let cap = node.cli(&["capacity"]);
    assert!(
        text(&cap).contains("deployments in the mesh: 1 running"),
        "{}",
        text(&cap)
    );

    let stop = node.cli(&["stop", "cli-hello"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(text(&stop).contains("stopped"), "{}", text(&stop));

    // Following ends with the deployment.
    let short = node.cli(&[
        "deploy",
        "--image",
        TEST_IMAGE,
        "--cpu",
        "100m",
        "--memory",
        "16Mi",
        "--request-id",
        "cli-short",
        "--",
        "sh",
        "-c",
        "echo one; sleep 1; echo two",
    ]);
    assert!(short.status.success(), "{}", text(&short));
    let follow = node.cli(&["logs", "cli-short", "-f"]);
    assert!(follow.status.success(), "{}", text(&follow));
    assert!(text(&follow).contains("one\ntwo"), "{}", text(&follow));
    assert!(node.cli(&["stop", "cli-short"]).status.success());

    // Bad input and an absent node: one clear line each, exit 1.
    let bad = node.cli(&[
        "deploy", "--image", TEST_IMAGE, "--cpu", "1", "--memory", "lots",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).contains("memory"), "{}", text(&bad));
    let bad = node.cli(&[
        "deploy", "--image", TEST_IMAGE, "--cpu", "1", "--memory", "1Mi", "--env", "NOEQUALS",
    ]);
    assert!(
        text(&bad).contains("--env") && text(&bad).contains("KEY=VALUE"),
        "{}",
        text(&bad)
    );
    let away = Command::new(env!("CARGO_BIN_EXE_iarnet"))
        .args(["peers", "--addr", &format!("127.0.0.1:{}", free_port())])
        .output()
        .expect("runs");
    assert_eq!(away.status.code(), Some(1));
    assert!(
        text(&away).contains("cannot reach the iarnet node"),
        "{}",
        text(&away)
    );

    let health = node.cli(&["health"]);
    assert!(health.status.success() && text(&health).contains("SERVING"));
}

#[test]
fn a_node_whose_only_seed_is_itself_is_ready() {
    let grpc = format!("127.0.0.1:{}", free_port());
    let seed = grpc.clone();
    let node = Node::spawn_at(
        grpc,
        &["--advertise-addr", &seed, "--initial-peers", &seed],
        NO_DOCKER,
    );
    let ready = wait_until("a lone replica reports ready", || {
        http_get(&node.http, "/readyz").ok().filter(|r| r.0 == 200)
    });
    assert!(ready.1.contains("true"), "{}", ready.1);
}

#[test]
fn the_queue_shows_in_the_cli_the_http_api_grpcurl_and_metrics() {
    ensure_test_image();
    let node = Node::start();
    let _cleanup = Cleanup(node.provider_id());
    // No engine here has 512 cores: never, unless it waits for capacity.
    let huge = |extra: &[&str]| {
        let mut args = vec![
            "deploy",
            "--image",
            TEST_IMAGE,
            "--cpu",
            "512",
            "--memory",
            "16Mi",
            "--request-id",
            "cli-huge",
            "--priority",
            "batch",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sleep", "60"]);
        node.cli(&args)
    };
    let refused = huge(&[]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("FAILED_PRECONDITION") || text(&refused).contains("could ever run"),
        "{}",
        text(&refused)
    );
    assert!(
        text(&refused).contains("too small for cpu"),
        "{}",
        text(&refused)
    );
    let bad = huge(&["--queue-timeout", "soon"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("queue_timeout"), "{}", text(&bad));

    let queued = huge(&["--wait-for-capacity", "--queue-timeout", "1h"]);
    assert!(queued.status.success(), "{}", text(&queued));
    assert!(
        text(&queued).contains("queued") && text(&queued).contains("position 1 of 1"),
        "{}",
        text(&queued)
    );

    let table = node.cli(&["queue"]);
    assert!(table.status.success(), "{}", text(&table));
    assert!(
        text(&table).contains("cli-huge") && text(&table).contains("batch"),
        "{}",
        text(&table)
    );
    let listed = json(&String::from_utf8_lossy(
        &node.cli(&["queue", "--output", "json"]).stdout,
    ));
    let entry = &listed["entries"][0];
    assert_eq!(
        (entry["state"].as_str(), entry["position"].as_u64()),
        (Some("queued"), Some(1))
    );
    assert!(
        entry["reason"]
            .as_str()
            .unwrap()
            .contains("too small for cpu"),
        "{listed}"
    );
    let status = json(&String::from_utf8_lossy(
        &node.cli(&["status", "cli-huge", "--output", "json"]).stdout,
    ));
    assert_eq!(status["state"], "queued", "{status}");
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .contains("position 1 of 1"),
        "{status}"
    );

    let (code, body) = http_get(&node.http, "/resource/queue").unwrap();
    assert_eq!(code, 200, "{body}");
    let body = json(&body);
    assert_eq!(body["entries"][0]["request_id"], "cli-huge", "{body}");
    assert_eq!(body["entries"][0]["state"], "queued", "{body}");
    let (code, body) = http_get(&node.http, "/resource/deployments/cli-huge").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["state"], "queued", "{body}");
    let (_, metrics) = http_get(&node.http, "/metrics").unwrap();
    assert!(
        metrics.contains("iarnet_queued_deployments{priority=\"batch\"} 1")
            && metrics.contains("iarnet_queue_blocked{reason=\"too_small_cpu\"} 1"),
        "{metrics}"
    );

    let listed = Command::new(grpcurl())
        .args([
            "-plaintext",
            &node.grpc,
            "iarnet.resource.v1.ResourceService/ListQueue",
        ])
        .output()
        .expect("grpcurl runs");
    let listed = text(&listed);
    assert!(
        listed.contains("\"cli-huge\"") && listed.contains("\"queued\""),
        "{listed}"
    );

    let stop = node.cli(&["stop", "cli-huge"]);
    assert!(stop.status.success(), "{}", text(&stop));
    let (_, body) = http_get(&node.http, "/resource/queue").unwrap();
    assert_eq!(json(&body)["entries"], serde_json::json!([]), "{body}");
    let (_, body) = http_get(&node.http, "/resource/deployments/cli-huge").unwrap();
    assert_eq!(json(&body)["state"], "stopped", "{body}");
}

#[test]
fn leases_on_the_real_engine_through_the_cli_the_http_api_and_metrics() {
    ensure_test_image();
    let node = Node::start();
    let _cleanup = Cleanup(node.provider_id());
    let deploy = |request: &str, extra: &[&str]| {
        let mut args = vec![
            "deploy",
            "--image",
            TEST_IMAGE,
            "--cpu",
            "100m",
            "--memory",
            "16Mi",
            "--request-id",
            request,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sleep", "300"]);
        node.cli(&args)
    };
    let containers = |request: &str| {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=iarnet.request={request}"),
            ])
            .output()
            .expect("docker runs");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let reserved_cpu = || {
        let (_, body) = http_get(&node.http, "/resource/capacity").unwrap();
        json(&body)["node"]["reserved"]["cpu_millis"].as_u64()
    };

    // Bad lease input: one clear line naming the field, nothing made.
    let bad = deploy("cli-bad-lease", &["--max-renewals", "3"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).contains("max_renewals"), "{}", text(&bad));
    let bad = deploy("cli-bad-lease", &["--lease", "-5m"]);
    assert!(text(&bad).contains("lease_ttl"), "{}", text(&bad));
    assert_eq!(containers("cli-bad-lease"), 0);

    // A 2 s lease, renewed once by hand, runs out on the engine.
    let leased = deploy("cli-leased", &["--lease", "2s", "--max-renewals", "1"]);
    assert!(leased.status.success(), "{}", text(&leased));
    assert!(
        text(&leased).contains("lease:     active (LEASED)"),
        "{}",
        text(&leased)
    );
    assert_eq!(containers("cli-leased"), 1);
    let renew = node.cli(&["renew", "cli-leased"]);
    assert!(renew.status.success(), "{}", text(&renew));
    assert!(text(&renew).contains("1/1 renewals"), "{}", text(&renew));
    let again = node.cli(&["renew", "cli-leased"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("max_renewals"), "{}", text(&again));
    let (code, body) = http_get(&node.http, "/resource/deployments/cli-leased").unwrap();
    assert_eq!(code, 200, "{body}");
    let body = json(&body);
    assert_eq!(body["lease"]["state"], "active", "{body}");
    assert_eq!(body["lease"]["renewals"], 1, "{body}");
    let status = wait_until("the lease to run out and stop the container", || {
        let o = node.cli(&["status", "cli-leased", "--output", "json"]);
        let v = json(&String::from_utf8_lossy(&o.stdout));
        // The lease says TERMINATED once the owner has recorded the stop,
        // a moment after the engine reports it.
        (v["state"] == "stopped" && v["lease"]["seed_state"] == "TERMINATED").then_some(v)
    });
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .contains("lease (ttl 2s) expired"),
        "{status}"
    );
    assert_eq!(status["lease"]["seed_state"], "TERMINATED", "{status}");
    assert_eq!(containers("cli-leased"), 0, "the engine no longer has it");
    assert_eq!(reserved_cpu(), Some(0), "its CPU is free again");

    // Released over HTTP; a fenced or late renewal is refused.
    assert!(deploy("cli-released", &["--lease", "1h"]).status.success());
    assert_eq!(reserved_cpu(), Some(100));
    let (code, body) = http(
        &node.http,
        "POST",
        "/resource/deployments/cli-released/renew",
        Some(r#"{"epoch": 999}"#),
    )
    .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("epoch"), "{body}");
    let (code, body) = http(
        &node.http,
        "POST",
        "/resource/deployments/cli-released/release",
        None,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let body = json(&body);
    assert_eq!(
        (body["state"].as_str(), body["lease"]["state"].as_str()),
        (Some("stopped"), Some("released")),
        "{body}"
    );
    assert_eq!(containers("cli-released"), 0);
    assert_eq!(reserved_cpu(), Some(0));
    let late = node.cli(&["renew", "cli-released", "--output", "json"]);
    assert_eq!(late.status.code(), Some(1));
    assert!(text(&late).contains("released"), "{}", text(&late));

    let (_, metrics) = http_get(&node.http, "/metrics").unwrap();
    for needle in [
        "iarnet_lease_grants_total 2",
        "iarnet_lease_renewals_total{by=\"holder\"} 1",
        "iarnet_lease_expiries_total 1",
        "iarnet_lease_releases_total 1",
        "iarnet_leases{state=\"expired\"} 1",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
}
