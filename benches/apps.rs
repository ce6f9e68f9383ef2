//! Applications benchmark.
//!
//! - clone + analyse: the fixture (a Compose file of 4 services) and a
//!   repository generated here with 10,000 files in 50 components (one
//!   Dockerfile directory each), created through the HTTP API from a
//!   `file://` URL; the baseline measured in the same run is a plain
//!   `git clone --depth 1` of the same repository.
//! - rollout: 10 components on the real Docker engine (4 levels: 4, 3, 2,
//!   1), deployed with one call (each level in parallel) against the same
//!   components deployed one call at a time in dependency order.
//! - build-context transfer: a 64 MiB context sent to another node's
//!   provider (the in-memory twin of a builder, so only the transfer and
//!   the checks are timed) in 256 KiB checksummed chunks over gRPC, against
//!   the same bytes written over a plain loopback TCP socket.
//!
//! `cargo bench --bench apps`             5 runs of each clone, 3 rollouts
//! `cargo bench --bench apps -- --quick`  1 run each
//!
//! Figures are printed; nothing is asserted.

#[path = "../tests/support/docker.rs"]
mod docker_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iarnet::config::Config;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::resource::docker::{DockerProvider, DockerSettings};
use iarnet::resource::{Provider, Resources};
use iarnet::store::MemoryStore;
use serde_json::{json, Value};

use docker_support::{ensure_test_image, suffix, TEST_IMAGE};

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@iarnet.invalid")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@iarnet.invalid")
        .status()
        .expect("git runs")
        .success();
    assert!(ok, "git {args:?}");
}

fn repo(dir: &Path, files: &[(String, String)]) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    for (p, t) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, t).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "bench"]);
}

fn http(addr: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, serde_json::from_str(rest).unwrap_or(Value::Null))
}

async fn start(id: &str, ws: &Path, providers: Vec<Arc<dyn Provider>>) -> NodeHandle {
    let mut cfg = Config::loopback(id);
    cfg.workspace_dir = ws.to_path_buf();
    node::start_with_store(
        cfg,
        ProviderSetup::Given(providers),
        Arc::new(MemoryStore::new()),
    )
    .await
    .unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn clone_and_analyse(
    addr: &str,
    src: &Path,
    runs: usize,
    tmp: &Path,
) -> (Duration, Duration, usize) {
    let url = format!("file://{}", src.display());
    let mut ours = Vec::new();
    let mut base = Vec::new();
    let mut components = 0;
    for i in 0..runs {
        let name = format!("bench-{}-{i}", suffix());
        let t = Instant::now();
        let (code, e) = http(
            addr,
            "POST",
            "/application/apps",
            Some(json!({"name": name, "git_url": url})),
        );
        assert_eq!(code, 201, "{e}");
        let (code, a) = http(
            addr,
            "POST",
            &format!("/application/apps/{name}/analyze"),
            None,
        );
        ours.push(t.elapsed());
        assert_eq!(code, 200, "{a}");
        components = a["components"].as_array().map_or(0, Vec::len);
        http(addr, "DELETE", &format!("/application/apps/{name}"), None);
        let dest: PathBuf = tmp.join(format!("plain-{name}"));
        let t = Instant::now();
        let ok = Command::new("git")
            .args([
                "clone",
                "-q",
                "--depth",
                "1",
                "--single-branch",
                "--branch",
                "main",
                &url,
            ])
            .arg(&dest)
            .status()
            .unwrap()
            .success();
        base.push(t.elapsed());
        assert!(ok);
        let _ = std::fs::remove_dir_all(&dest);
    }
    (median(ours), median(base), components)
}

const FIXTURE: &str = "services:\n  init: {image: busybox, command: [sh, -c, 'echo ok']}\n  db:\n    image: postgres:16\n    healthcheck: {test: [CMD-SHELL, 'pg_isready'], interval: 1s}\n  cache: {build: ./cache}\n  api:\n    build: ./api\n    ports: ['8080']\n    depends_on:\n      init: {condition: service_completed_successfully}\n      db: {condition: service_healthy}\n      cache: {condition: service_started}\n";

fn ten_components() -> String {
    let levels: [&[&str]; 4] = [
        &["a0", "a1", "a2", "a3"],
        &["b0", "b1", "b2"],
        &["c0", "c1"],
        &["d0"],
    ];
    let mut s = String::from("services:\n");
    for (l, names) in levels.iter().enumerate() {
        for n in names.iter() {
            s += &format!("  {n}:\n    image: {TEST_IMAGE}\n    command: [sleep, '3600']\n    deploy: {{resources: {{limits: {{cpus: '0.1', memory: 32M}}}}}}\n");
            if l > 0 {
                s += &format!("    depends_on: [{}]\n", levels[l - 1].join(", "));
            }
        }
    }
    s
}

fn cleanup(name: &str) {
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!("docker rm -f $(docker ps -aq --filter label=iarnet-app={name}) >/dev/null 2>&1; docker network rm iarnet-app-{name} >/dev/null 2>&1"),
        ])
        .status();
}

/// A tar of a Dockerfile and `size` bytes of noise.
fn big_context(size: usize) -> bytes::Bytes {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut tar = tar::Builder::new(Vec::with_capacity(size + 4096));
    for (name, data) in [
        ("Dockerfile", &b"FROM scratch\nCOPY . /\n"[..]),
        ("blob", &noise),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data).unwrap();
    }
    tar.into_inner().unwrap().into()
}

/// The same bytes over a plain loopback TCP connection, read to the end.
async fn tcp_copy(data: &bytes::Bytes) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        buf.len()
    });
    let t = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(data).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(reader.await.unwrap(), data.len());
    t.elapsed()
}

/// Build-context transfer to another node's owner vs plain TCP.
async fn context_transfer(runs: usize, tmp: &Path) {
    use iarnet::placement::PlaceOptions;
    use iarnet::resource::memory::MemoryProvider;
    use iarnet::resource::{BuildLog, DeploySpec};

    let mb = |n: usize, d: Duration| n as f64 / (1 << 20) as f64 / d.as_secs_f64();
    let room = Resources {
        cpu_millis: 8000,
        memory_bytes: 8 << 30,
        gpus: 0,
        storage_bytes: 0,
    };
    let twin =
        Arc::new(MemoryProvider::new("bench-build-b", room, Default::default()).with_builder());
    let mut cfg = Config::loopback("bench-build-b");
    cfg.workspace_dir = tmp.join("wb");
    let b = node::start_with(
        cfg,
        ProviderSetup::Given(vec![twin.clone() as Arc<dyn Provider>]),
    )
    .await
    .unwrap();
    let mut cfg = Config::loopback("bench-build-a");
    cfg.workspace_dir = tmp.join("wa");
    cfg.initial_peers = vec![b.advertise_addr()];
    let a = node::start_with(cfg, ProviderSetup::Given(Vec::new()))
        .await
        .unwrap();
    let spec = DeploySpec {
        request_id: "bench-build".into(),
        image: "x".into(),
        ..Default::default()
    };
    let builder = loop {
        let found = a
            .manager()
            .builders_for(&spec, &PlaceOptions::default(), 1, "bench");
        if let Some((_, b)) = found.into_iter().next() {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ctx = big_context(64 << 20);
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    let args = Default::default();
    for _ in 0..runs {
        let t = Instant::now();
        builder
            .build_image(
                ctx.clone(),
                "Dockerfile",
                "bench/ctx:1",
                &args,
                BuildLog::none(),
            )
            .await
            .expect("the twin builds");
        ours.push(t.elapsed());
        base.push(tcp_copy(&ctx).await);
    }
    assert_eq!(twin.built().len(), runs);
    assert_eq!(twin.built()[0].context_bytes, ctx.len());
    a.shutdown().await;
    b.shutdown().await;
    let (o, t) = (median(ours), median(base));
    println!();
    println!(
        "build-context transfer to another node's owner, {} MiB (median of {runs})",
        ctx.len() >> 20
    );
    println!(
        "  gRPC, 256 KiB chunks, SHA-256 each + whole : {} ({:.0} MiB/s)",
        ms(o),
        mb(ctx.len(), o)
    );
    println!(
        "  plain loopback TCP, same bytes              : {} ({:.0} MiB/s)",
        ms(t),
        mb(ctx.len(), t)
    );
    println!(
        "  throughput ratio                            : {:.2}x",
        t.as_secs_f64() / o.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 1 } else { 5 };
    let tmp = tempfile::tempdir().unwrap();
    context_transfer(runs, tmp.path()).await;

    // Clone + analyse.
    let fixture = tmp.path().join("fixture");
    repo(
        &fixture,
        &[
            ("compose.yaml".into(), FIXTURE.into()),
            ("cache/Dockerfile".into(), "FROM busybox\n".into()),
            ("api/Dockerfile".into(), "FROM busybox\n".into()),
            (
                "api/package.json".into(),
                "{\"dependencies\": {\"express\": \"4\"}}".into(),
            ),
        ],
    );
    let large = tmp.path().join("large");
    let mut files = Vec::new();
    for c in 0..50 {
        files.push((
            format!("svc{c:02}/Dockerfile"),
            "FROM busybox\nEXPOSE 8080\n".into(),
        ));
        files.push((
            format!("svc{c:02}/go.mod"),
            "module x\nrequire github.com/gin-gonic/gin v1\n".into(),
        ));
        for f in 0..198 {
            files.push((
                format!("svc{c:02}/src/f{f:03}.go"),
                format!("package main // {c} {f}\n"),
            ));
        }
    }
    repo(&large, &files);
    let n = start("bench-apps", &tmp.path().join("ws"), Vec::new()).await;
    let addr = n.http_addr().to_string();
    println!(
        "clone + analyse through the HTTP API (median of {runs}) vs plain `git clone --depth 1`"
    );
    println!(
        "{:<28} {:>11} {:>12} {:>14} {:>7}",
        "repository", "components", "iarnet", "git clone", "ratio"
    );
    for (label, src) in [
        ("fixture (4 services)", &fixture),
        ("10,000 files, 50 comps", &large),
    ] {
        let (ours, base, comps) = clone_and_analyse(&addr, src, runs, tmp.path()).await;
        println!(
            "{label:<28} {comps:>11} {:>12} {:>14} {:>6.2}x",
            ms(ours),
            ms(base),
            ours.as_secs_f64() / base.as_secs_f64()
        );
    }
    n.shutdown().await;

    // Rollout of 10 components: one call vs one at a time.
    ensure_test_image();
    let dag = tmp.path().join("dag");
    repo(&dag, &[("compose.yaml".into(), ten_components())]);
    let provider = DockerProvider::connect(DockerSettings {
        id: format!("bench-apps-{}", suffix()),
        name: "bench".into(),
        endpoint: None,
        tls: None,
        limits: Some(Resources {
            cpu_millis: 8000,
            memory_bytes: 8 << 30,
            gpus: 0,
            storage_bytes: 0,
        }),
        max_deployments: None,
        labels: Default::default(),
        node_id: "bench-apps-docker".into(),
        gpus: Vec::new(),
    })
    .await
    .expect("the local Docker engine");
    let n = start(
        "bench-apps-docker",
        &tmp.path().join("ws2"),
        vec![Arc::new(provider)],
    )
    .await;
    let addr = n.http_addr().to_string();
    let url = format!("file://{}", dag.display());
    let order = ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "c0", "c1", "d0"];
    let rollouts = if quick { 1 } else { 3 };
    let (mut dag_t, mut seq_t) = (Vec::new(), Vec::new());
    for _ in 0..rollouts {
        for sequential in [false, true] {
            let name = format!("roll-{}", suffix());
            let (code, e) = http(
                &addr,
                "POST",
                "/application/apps",
                Some(json!({"name": name, "git_url": url})),
            );
            assert_eq!(code, 201, "{e}");
            http(
                &addr,
                "POST",
                &format!("/application/apps/{name}/analyze"),
                None,
            );
            let t = Instant::now();
            if sequential {
                for c in order {
                    let (code, e) = http(
                        &addr,
                        "POST",
                        &format!("/application/apps/{name}/deploy-components"),
                        Some(json!({"components": [c]})),
                    );
                    assert_eq!(code, 200, "{e}");
                }
            } else {
                let (code, e) = http(
                    &addr,
                    "POST",
                    &format!("/application/apps/{name}/deploy-components"),
                    Some(json!({})),
                );
                assert_eq!(code, 200, "{e}");
            }
            let took = t.elapsed();
            let (_, app) = http(&addr, "GET", &format!("/application/apps/{name}"), None);
            assert_eq!(app["status"], "running", "{app}");
            if sequential {
                seq_t.push(took)
            } else {
                dag_t.push(took)
            }
            cleanup(&name);
            http(
                &addr,
                "DELETE",
                &format!("/application/apps/{name}?force=true"),
                None,
            );
        }
    }
    n.shutdown().await;
    let (d, s) = (median(dag_t), median(seq_t));
    println!();
    println!("deploy to all running, 10 components in 4 levels, real Docker engine (median of {rollouts})");
    println!("  one call, levels in parallel : {}", ms(d));
    println!("  one component at a time      : {}", ms(s));
    println!(
        "  ratio                        : {:.2}x",
        d.as_secs_f64() / s.as_secs_f64()
    );
}
