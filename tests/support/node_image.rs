//! iarnet nodes as containers of the image built from the repository's
//! Dockerfile, on this machine's Docker engine, with no registry: the image,
//! a cleanup guard for one run's containers, networks and volumes, container
//! control, bounded waits, and blocking gRPC calls to a node.
//!
//! The image is built once per process: a temporary context holds the
//! Dockerfile, .dockerignore, config.yaml and `prebuilt/iarnet` (this build's
//! binary without debug info), and both stage bases are the local stand-in
//! from `build-base-image.sh` (`IARNET_TEST_BASE_IMAGE` names another base
//! that has a shell, e.g. `debian:bookworm-slim` where a registry is reachable).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use iarnet::proto::admin;
use iarnet::proto::admin::admin_client::AdminClient;
use iarnet::proto::peer::ProviderInfo;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The registry-free stand-in for the runtime base (and, with a prebuilt
/// binary, for the build stage's base).
pub const BASE_IMAGE: &str = "iarnet-local/runtime-base:bookworm";
/// Repository of the node images built here; the tag names the binary.
pub const NODE_REPO: &str = "iarnet-test/node";
/// Label on everything a [`Run`] creates.
pub const RUN_LABEL: &str = "iarnet-test.run";
/// The node's gRPC port (the Dockerfile's EXPOSE).
pub const GRPC_PORT: u16 = 50051;

// ----- images --------------------------------------------------------------

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The base both Dockerfile stages are built from here.
pub fn base_image() -> String {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        if let Ok(base) = std::env::var("IARNET_TEST_BASE_IMAGE") {
            return base;
        }
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("iarnet-base-image");
        let out = Command::new("sh")
            .arg(repo_path("tests/support/build-base-image.sh"))
            .arg(BASE_IMAGE)
            .arg(&cache)
            .output()
            .expect("sh runs tests/support/build-base-image.sh");
        assert!(
            out.status.success(),
            "building {BASE_IMAGE} failed (it needs docker, apt-get download, dpkg-deb and flock):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        BASE_IMAGE.to_string()
    })
    .clone()
}

/// The iarnet binary under test: this build's, or `IARNET_TEST_NODE_BIN`
/// (another build, e.g. a release one).
pub fn node_bin() -> PathBuf {
    std::env::var_os("IARNET_TEST_NODE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_iarnet")),
        PathBuf::from,
    )
}

/// The node image for this build's `iarnet` binary, built once per process
/// from the real Dockerfile (and kept by tag across runs of the same binary).
pub fn node_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(build_node_image).clone()
}

fn build_node_image() -> String {
    let base = base_image();
    let bin = node_bin();
    // debug or release: images of the two profiles live side by side.
    let profile = bin
        .parent()
        .and_then(Path::file_name)
        .map_or("bin".into(), |p| p.to_string_lossy().into_owned());
    let ctx = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("iarnet-node-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ctx);
    std::fs::create_dir_all(ctx.join("prebuilt")).expect("create the build context");
    for file in ["Dockerfile", ".dockerignore", "config.yaml"] {
        std::fs::copy(repo_path(file), ctx.join(file))
            .unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    let prebuilt = ctx.join("prebuilt/iarnet");
    let strip = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&bin)
        .arg(&prebuilt)
        .status();
    if !strip.is_ok_and(|s| s.success()) {
        // No binutils: ship it with its debug info (bigger, same behaviour).
        std::fs::copy(&bin, &prebuilt).expect("copy the iarnet binary");
    }

    let mut hash = std::hash::DefaultHasher::new();
    for file in [
        "Dockerfile",
        ".dockerignore",
        "config.yaml",
        "prebuilt/iarnet",
    ] {
        hash.write(&std::fs::read(ctx.join(file)).expect("read the build context"));
    }
    hash.write(base.as_bytes());
    let tag = format!("{profile}-{:016x}", hash.finish());
    let image = format!("{NODE_REPO}:{tag}");

    if docker(&["image", "inspect", &image]).is_err() {
        let out = Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args([
                "build",
                "--quiet",
                "--label",
                "iarnet-test.image=node",
                "-t",
                &image,
            ])
            .arg("--build-arg")
            .arg(format!("RUST_IMAGE={base}"))
            .arg("--build-arg")
            .arg(format!("RUNTIME_IMAGE={base}"))
            .arg(&ctx)
            .output()
            .expect("docker build runs");
        assert!(
            out.status.success(),
            "docker build of {image} from the Dockerfile failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The build stage stays behind untagged; older images of the same
        // profile only take space.
        let _ = docker(&[
            "image",
            "prune",
            "-f",
            "--filter",
            "label=iarnet.stage=build",
        ]);
        if let Ok(tags) = docker(&["images", NODE_REPO, "--format", "{{.Tag}}"]) {
            for old in tags
                .lines()
                .filter(|t| t.starts_with(&format!("{profile}-")) && *t != tag)
            {
                let _ = docker(&["rmi", &format!("{NODE_REPO}:{old}")]);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&ctx);
    image
}

// ----- the docker CLI --------------------------------------------------------

/// Runs `docker ARGS`: trimmed stdout, or an error with stderr.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {args:?} did not run: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `docker ARGS`, which must succeed.
#[track_caller]
pub fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// The group owning the engine's socket (what `--group-add` needs).
pub fn docker_socket_gid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/var/run/docker.sock")
        .expect("the Docker engine's socket at /var/run/docker.sock")
        .gid()
}

/// Each container's IP per network (empty for a stopped one), in `names` order.
pub fn ips(names: &[String]) -> Vec<BTreeMap<String, String>> {
    let mut args = vec!["inspect", "-f", "{{json .NetworkSettings.Networks}}"];
    args.extend(names.iter().map(String::as_str));
    let Ok(out) = docker(&args) else {
        return vec![BTreeMap::new(); names.len()];
    };
    out.lines()
        .map(|line| {
            let nets: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            nets.as_object()
                .into_iter()
                .flatten()
                .filter_map(|(net, v)| {
                    let ip = v.get("IPAddress")?.as_str()?;
                    (!ip.is_empty()).then(|| (net.clone(), ip.to_string()))
                })
                .collect()
        })
        .collect()
}

/// A container's IP on `network`.
pub fn ip_on(name: &str, network: &str) -> Option<String> {
    ips(&[name.to_string()]).pop()?.remove(network)
}

/// One `docker stats` sample (about 2 s) of each container: (CPU %, memory in MiB).
pub fn stats(names: &[String]) -> Result<Vec<(f64, f64)>, String> {
    let mut args = vec![
        "stats",
        "--no-stream",
        "--format",
        "{{.CPUPerc}} {{.MemUsage}}",
    ];
    args.extend(names.iter().map(String::as_str));
    let out = docker(&args)?;
    out.lines()
        .map(|line| {
            let mut it = line.split_whitespace();
            let cpu = it.next().and_then(|c| c.trim_end_matches('%').parse().ok());
            let mem = it.next().and_then(parse_size);
            cpu.zip(mem)
                .ok_or_else(|| format!("unreadable docker stats line {line:?}"))
        })
        .collect()
}

/// "12.3MiB" (docker's units) in MiB.
fn parse_size(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let mib = match unit {
        "B" => n / 1048576.0,
        "KiB" | "kB" => n / 1024.0,
        "MiB" | "MB" => n,
        "GiB" | "GB" => n * 1024.0,
        _ => return None,
    };
    Some(mib)
}

// ----- one run's containers ------------------------------------------------

/// What one test or bench run creates, under a unique name prefix, all
/// labelled `iarnet-test.run=<prefix>`. Dropping it (also on a panic)
/// removes the run's containers (nodes and the workloads they started),
/// networks and volumes.
pub struct Run {
    pub prefix: String,
    /// More container label filters to clean up (e.g. `iarnet.node=<id>`).
    extra: Mutex<Vec<String>>,
}

/// One node container.
pub struct NodeSpec<'a> {
    /// Short name; the container (and DNS) name is `<prefix>-<name>`.
    pub name: &'a str,
    /// Networks to attach, the first at creation.
    pub networks: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Mount the engine's socket: the node gets an internal Docker provider.
    pub docker_socket: bool,
}

impl Run {
    pub fn new(kind: &str) -> Run {
        let prefix = format!("iarnet-{kind}-{:08x}", rand::random::<u32>());
        Run {
            prefix,
            extra: Mutex::default(),
        }
    }

    fn label(&self) -> String {
        format!("{RUN_LABEL}={}", self.prefix)
    }

    /// `<prefix>-<short>`: the name of a container, network or volume.
    pub fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// Also removes containers labelled `filter` (`key=value`) at the end.
    pub fn clean_label(&self, filter: String) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(filter);
    }

    /// A user-defined bridge network (embedded DNS resolves container names).
    pub fn network(&self, short: &str) -> String {
        let name = self.name(short);
        docker_ok(&["network", "create", "--label", &self.label(), &name]);
        name
    }

    /// Creates and starts a node container running `image`, its data dir
    /// on a volume of its own (kept across stop/start). Returns its name.
    pub fn node(&self, image: &str, spec: &NodeSpec) -> String {
        let name = self.create_node(image, spec);
        docker_ok(&["start", &name]);
        name
    }

    /// [`Run::node`] without the start.
    pub fn create_node(&self, image: &str, spec: &NodeSpec) -> String {
        let name = self.name(spec.name);
        let volume = format!("{name}-data");
        docker_ok(&["volume", "create", "--label", &self.label(), &volume]);
        let mut args: Vec<String> = [
            "create",
            "--name",
            &name,
            "--hostname",
            &name,
            "--label",
            &self.label(),
            "--network",
            &spec.networks[0],
            "-v",
            &format!("{volume}:/var/lib/iarnet/data"),
            "--stop-timeout",
            "15",
        ]
        .map(String::from)
        .to_vec();
        for (k, v) in &spec.env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        if spec.docker_socket {
            args.extend([
                "-v".into(),
                "/var/run/docker.sock:/var/run/docker.sock".into(),
                "--group-add".into(),
                docker_socket_gid().to_string(),
            ]);
        }
        args.push(image.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_ok(&args);
        for net in &spec.networks[1..] {
            docker_ok(&["network", "connect", net, &name]);
        }
        name
    }

    fn containers(&self) -> Vec<String> {
        let mut filters = vec![self.label()];
        filters.extend(
            self.extra
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        let mut ids = Vec::new();
        for f in filters {
            if let Ok(out) = docker(&["ps", "-aq", "--filter", &format!("label={f}")]) {
                ids.extend(out.split_whitespace().map(String::from));
            }
        }
        ids.sort();
        ids.dedup();
        ids
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // Read the nodes' last words before removing them: they explain a failed wait.
        let mut logs = String::new();
        if std::thread::panicking() {
            let label = format!("label={}", self.label());
            let nodes = docker(&["ps", "-aq", "--filter", &label]).unwrap_or_default();
            for id in nodes.split_whitespace() {
                let name = docker(&["inspect", "-f", "{{.Name}}", id]).unwrap_or_default();
                if let Ok(out) = Command::new("docker")
                    .args(["logs", "--tail", "40", id])
                    .output()
                {
                    logs.push_str(&format!("----- last log lines of {name}\n"));
                    logs.push_str(&strip_ansi(&String::from_utf8_lossy(&out.stdout)));
                    logs.push_str(&strip_ansi(&String::from_utf8_lossy(&out.stderr)));
                }
            }
        }
        let ids = self.containers();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            let _ = docker(&args);
        }
        let filter = format!("label={}", self.label());
        for kind in ["network", "volume"] {
            if let Ok(out) = docker(&[kind, "ls", "-q", "--filter", &filter]) {
                for id in out.split_whitespace() {
                    let _ = docker(&[kind, "rm", id]);
                }
            }
        }
        // Never panic here (a closed stderr would abort an unwinding test).
        use std::io::Write;
        let _ = std::io::stderr().write_all(logs.as_bytes());
    }
}

/// Log lines without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn start(name: &str) {
    docker_ok(&["start", name]);
}

/// Graceful: SIGTERM, then the node drains (the container's stop timeout is 15s).
pub fn stop(name: &str) {
    docker_ok(&["stop", name]);
}

/// SIGKILL: a crash, no goodbye.
pub fn kill(name: &str) {
    docker_ok(&["kill", name]);
}

pub fn connect(network: &str, name: &str) {
    docker_ok(&["network", "connect", network, name]);
}

pub fn disconnect(network: &str, name: &str) {
    docker_ok(&["network", "disconnect", network, name]);
}

// ----- waits ---------------------------------------------------------------

/// Polls `check` every `every` until it yields a value. Past `limit` it
/// panics naming `what` and the state `check` last reported.
#[track_caller]
pub fn wait_until<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(v) => return v,
            Err(state) => state,
        };
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}; last observed:\n{last}");
        }
        std::thread::sleep(every);
    }
}

/// Bound on crash detection for `n` members, from the gossip settings (see
/// config.yaml): the next round, two failed opening calls before the first
/// suspicion, the lone-suspicion timeout `suspicion_max_mult * suspicion_mult
/// * max(1, log10 n)` rounds (confirmations only shorten it), and
/// `ceil(log_fanout n) + 1` rounds for the verdict to reach everyone.
pub fn detection_bound(interval: Duration, n: usize) -> Duration {
    let g = iarnet::config::Config::shipped().gossip;
    let n = n.max(2) as f64;
    let suspicion = g.suspicion_max_mult * g.suspicion_mult * n.log10().max(1.0);
    let spread = (n.ln() / (g.fanout.max(2) as f64).ln()).ceil() + 1.0;
    interval.mul_f64(1.0 + suspicion + spread) + g.call_timeout * 2
}

// ----- gRPC to a node (blocking) ---------------------------------------------

pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the gRPC helpers")
    })
}

/// A fresh connection per call: nodes restart and change address.
async fn channel(addr: &str) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| format!("{addr}: {e}"))
}

/// True when the node's gRPC health service says SERVING.
pub fn serving(addr: &str) -> Result<bool, String> {
    rt().block_on(async {
        let mut client = HealthClient::new(channel(addr).await?);
        let reply = client
            .check(HealthCheckRequest::default())
            .await
            .map_err(|s| format!("{addr}: {}", s.message()))?;
        Ok(reply.into_inner().status == ServingStatus::Serving as i32)
    })
}

async fn admin(addr: &str) -> Result<AdminClient<Channel>, String> {
    Ok(AdminClient::new(channel(addr).await?))
}

pub fn get_node(addr: &str) -> Result<admin::NodeInfo, String> {
    rt().block_on(async {
        admin(addr)
            .await?
            .get_node(admin::GetNodeRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("{addr}: GetNode: {}", s.message()))
    })
}

pub fn list_peers(
    addr: &str,
    include_tombstones: bool,
) -> Result<admin::ListPeersResponse, String> {
    rt().block_on(async {
        admin(addr)
            .await?
            .list_peers(admin::ListPeersRequest { include_tombstones })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("{addr}: ListPeers: {}", s.message()))
    })
}

pub fn list_providers(addr: &str) -> Result<Vec<ProviderInfo>, String> {
    rt().block_on(async {
        admin(addr)
            .await?
            .list_providers(admin::ListProvidersRequest {})
            .await
            .map(|r| r.into_inner().providers)
            .map_err(|s| format!("{addr}: ListProviders: {}", s.message()))
    })
}

/// `addr` of a container reached on its IP (the host routes to every bridge).
pub fn grpc_addr(ip: &str) -> String {
    format!("{ip}:{GRPC_PORT}")
}
