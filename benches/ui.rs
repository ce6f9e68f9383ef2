//! Dashboard benchmark, on one in-process node holding 1,000 providers
//! (in-memory twins) and 10,000 deployments.
//!
//! - render: each page loaded over HTTP, p50 and p99, against the JSON
//!   route that carries the same data (the baseline, same run);
//! - first load: the bytes of each page's HTML plus every script, style
//!   and icon it references (targets: HTML under 50 KB, all under 200 KB);
//! - live pages: CPU seconds and resident memory of the node during a
//!   deploy storm with 50 browsers' streams open (overview, resources,
//!   deployments, a deployment) against the same storm with none.
//!
//! `cargo bench --bench ui`             30 loads a page, a storm of 2,000
//! `cargo bench --bench ui -- --quick`  5 loads, a storm of 300
//!
//! Figures are printed; nothing is asserted.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iarnet::config::Config;
use iarnet::metrics::process::ProcessStats;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::placement::manager::PlaceOptions;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::{DeploySpec, ProgressSink, Provider, Resources};

const PROVIDERS: usize = 1_000;
const DEPLOYMENTS: usize = 10_000;
const CLIENTS: usize = 50;

fn spec(request_id: &str) -> DeploySpec {
    DeploySpec {
        request_id: request_id.into(),
        image: "bench/idle:1".into(),
        resources: Resources {
            cpu_millis: 10,
            memory_bytes: 4 << 20,
            gpus: 0,
            storage_bytes: 0,
        },
        ..Default::default()
    }
}

async fn start() -> NodeHandle {
    let providers: Vec<Arc<dyn Provider>> = (0..PROVIDERS)
        .map(|i| {
            Arc::new(MemoryProvider::new(
                &format!("mem-{i:04}"),
                Resources {
                    cpu_millis: 64_000,
                    memory_bytes: 256 << 30,
                    gpus: 0,
                    storage_bytes: 0,
                },
                BTreeMap::from([("zone".to_string(), format!("z{}", i % 4))]),
            )) as Arc<dyn Provider>
        })
        .collect();
    let mut cfg = Config::loopback("ui-bench");
    cfg.security.rate_limit.token_rate = 1e9;
    cfg.security.rate_limit.token_burst = 1e9;
    node::start_with(cfg, ProviderSetup::Given(providers))
        .await
        .expect("node starts")
}

/// Places `n` deployments named `{prefix}-{i}`, 64 at a time.
async fn deploy(node: &NodeHandle, prefix: &str, n: usize) {
    let m = node.manager().clone();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let m = m.clone();
        let id = format!("{prefix}-{i}");
        set.spawn(async move {
            m.deploy(spec(&id), PlaceOptions::default(), ProgressSink::none())
                .await
                .expect("placed");
        });
        if set.len() >= 64 {
            set.join_next().await;
        }
    }
    while set.join_next().await.is_some() {}
}

/// One GET on a fresh connection: (status, body bytes, time).
fn get(addr: &str, path: &str, cookie: &str) -> (u16, Vec<u8>, Duration) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let took = t0.elapsed();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, raw[split..].to_vec(), took)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

/// Loads `path` `n` times: (p50 ms, p99 ms, body bytes).
fn loads(addr: &str, path: &str, cookie: &str, n: usize) -> (f64, f64, usize) {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..n {
        let (status, body, took) = get(addr, path, cookie);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        bytes = body.len();
        times.push(took);
    }
    times.sort();
    (pct(&times, 0.5), pct(&times, 0.99), bytes)
}

/// The scripts, styles and icons a page references.
fn assets_of(html: &str) -> Vec<String> {
    html.match_indices("/ui/assets/")
        .map(|(i, _)| {
            let end = html[i..].find('"').map_or(html.len(), |e| i + e);
            html[i..end].replace("&amp;", "&")
        })
        .collect()
}

/// An open live page: counts the bytes its stream sends until stopped.
fn client(
    addr: String,
    page: String,
    cookie: String,
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
) {
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    write!(
        s,
        "GET /ui/events?page={page} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return,
            Ok(n) => {
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
}

/// A storm of `n` deploys then stops, with `clients` live pages open:
/// (seconds, CPU seconds, resident MiB after, stream MiB sent).
async fn storm(
    node: &NodeHandle,
    cookie: &str,
    tag: &str,
    n: usize,
    clients: usize,
) -> (f64, f64, f64, f64) {
    let addr = node.http_addr().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let pages = [
        "overview",
        "resources%3A1",
        "deployments%3A",
        "deployment%3Adep-0",
    ];
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (a, p, c) = (
                addr.clone(),
                pages[i % pages.len()].to_string(),
                cookie.to_string(),
            );
            let (s, b) = (stop.clone(), bytes.clone());
            std::thread::spawn(move || client(a, p, c, s, b))
        })
        .collect();
    // Let every stream send its first look before the storm.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = ProcessStats::read().expect("/proc");
    let t0 = Instant::now();
    deploy(node, &format!("storm-{tag}"), n).await;
    for i in 0..n {
        let id = iarnet::resource::validate::deployment_id(&format!("storm-{tag}-{i}"));
        node.manager().stop(&id).await.expect("stopped");
    }
    // What the storm changed reaches the pages within their refresh.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let took = t0.elapsed().as_secs_f64();
    let after = ProcessStats::read().expect("/proc");
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    (
        took,
        after.cpu_seconds - before.cpu_seconds,
        after.resident_memory_bytes as f64 / (1 << 20) as f64,
        bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n_loads, n_storm) = if quick { (5, 300) } else { (30, 2_000) };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let node = start().await;
        let t0 = Instant::now();
        deploy(&node, "dep", DEPLOYMENTS).await;
        println!(
            "setup: {PROVIDERS} providers, {DEPLOYMENTS} deployments placed in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let addr = node.http_addr().to_string();
        let a = addr.clone();
        let cookie = tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(&a).unwrap();
            write!(s, "GET /ui/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut raw = String::new();
            let _ = s.read_to_string(&mut raw);
            raw.lines()
                .find_map(|l| l.strip_prefix("set-cookie: "))
                .and_then(|c| c.split(';').next())
                .expect("a session cookie")
                .to_string()
        })
        .await
        .unwrap();
        let dep = iarnet::resource::validate::deployment_id("dep-0");

        let pages: Vec<(&str, String, &str)> = vec![
            ("overview", "/ui/".into(), "/resource/capacity"),
            ("resources", "/ui/resources".into(), "/resource/providers"),
            ("mesh", "/ui/mesh".into(), "/peer/nodes"),
            ("deployments", "/ui/deployments".into(), "/resource/deployments?scope=mesh&page_size=50"),
            ("deployment", format!("/ui/deployments/{dep}"), "/resource/deployments/dep-0"),
            ("deploy form", "/ui/deploy".into(), "/resource/queue"),
            ("applications", "/ui/apps".into(), "/application/apps"),
        ];
        println!("\nrender, {n_loads} loads each ({PROVIDERS} providers, {DEPLOYMENTS} deployments in the view)");
        println!("{:<13} {:>9} {:>9} {:>10} | {:<44} {:>9} {:>9} | {:>6}", "page", "p50 ms", "p99 ms", "HTML KB", "JSON baseline", "p50 ms", "p99 ms", "ratio");
        let (a, c) = (addr.clone(), cookie.clone());
        let first_loads = tokio::task::spawn_blocking(move || {
            let mut first = Vec::new();
            for (name, path, json) in &pages {
                let (p50, p99, bytes) = loads(&a, path, &c, n_loads);
                let (j50, j99, _) = loads(&a, json, "", n_loads);
                println!(
                    "{name:<13} {p50:>9.2} {p99:>9.2} {:>10.1} | {json:<44} {j50:>9.2} {j99:>9.2} | {:>5.2}x",
                    bytes as f64 / 1000.0,
                    p50 / j50
                );
                let (_, body, _) = get(&a, path, &c);
                let html = String::from_utf8_lossy(&body).to_string();
                let assets: usize = assets_of(&html)
                    .iter()
                    .map(|u| get(&a, u, &c).1.len())
                    .sum();
                first.push((name.to_string(), body.len(), assets));
            }
            first
        })
        .await
        .unwrap();
        println!("\nfirst load (no compression; targets: HTML < 50 KB, all < 200 KB)");
        for (name, html, assets) in first_loads {
            println!(
                "{name:<13} HTML {:>7.1} KB + scripts, style, icon {:>6.1} KB = {:>6.1} KB",
                html as f64 / 1000.0,
                assets as f64 / 1000.0,
                (html + assets) as f64 / 1000.0
            );
        }

        println!("\nlive pages during a storm of {n_storm} deploys and stops");
        let (t0s, cpu0, rss0, _) = storm(&node, &cookie, "none", n_storm, 0).await;
        let (t1s, cpu1, rss1, sent) = storm(&node, &cookie, "sse", n_storm, CLIENTS).await;
        println!("no live page:  {t0s:>6.2} s, CPU {cpu0:>6.2} s, resident {rss0:>7.1} MiB");
        println!(
            "{CLIENTS} live pages: {t1s:>6.2} s, CPU {cpu1:>6.2} s, resident {rss1:>7.1} MiB, streams sent {sent:.1} MiB"
        );
        println!(
            "ratio (50 pages / none): CPU {:.2}x, time {:.2}x",
            cpu1 / cpu0.max(1e-9),
            t1s / t0s.max(1e-9)
        );
        node.shutdown().await;
    });
}
