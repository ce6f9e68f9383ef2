//! The cost of mutual TLS on CallProvider: p50/p99 latency and calls/s of
//! the same call to the same node, plaintext and over mTLS, in one run.
//!
//! `cargo bench --bench mtls`            full run
//! `cargo bench --bench mtls -- --quick` fewer calls
//!
//! Figures are printed with the ratio against plaintext; nothing is asserted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iarnet::config::{Config, TlsFiles};
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::proto::peer::peer_service_client::PeerServiceClient;
use iarnet::proto::peer::ProviderCallRequest;
use iarnet::proto::resource as pb;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::Resources;
use iarnet::security::certs::{self, Pem, Validity};
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

struct Setup {
    node: NodeHandle,
    channel: Channel,
}

fn provider() -> Arc<MemoryProvider> {
    let total = Resources {
        cpu_millis: 8000,
        memory_bytes: 16 << 30,
        gpus: 0,
        storage_bytes: u64::MAX,
    };
    Arc::new(MemoryProvider::new("bench-mem", total, BTreeMap::new()))
}

fn loose(id: &str) -> Config {
    let mut cfg = Config::loopback(id);
    // Measure the transport, not the rate limiter.
    cfg.security.rate_limit.peer_rate = 1e6;
    cfg.security.rate_limit.peer_burst = 1e6;
    cfg
}

async fn plaintext() -> Setup {
    let node = node::start_with(loose("bench-plain"), ProviderSetup::Given(vec![provider()]))
        .await
        .unwrap();
    let channel = Endpoint::from_shared(format!("http://{}", node.advertise_addr()))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap();
    Setup { node, channel }
}

async fn mtls(dir: &std::path::Path) -> Setup {
    let ca = certs::new_ca("bench", Validity::days(1)).unwrap();
    let server = certs::node_cert(&ca, "bench-tls", "iarnet", &[], Validity::days(1)).unwrap();
    let client = certs::node_cert(&ca, "bench-client", "iarnet", &[], Validity::days(1)).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let mut cfg = loose("bench-tls");
    cfg.node_id = None;
    cfg.security.tls = Some(TlsFiles {
        ca_file: write("ca.pem", &ca.cert),
        cert_file: write("node.pem", &server.cert),
        key_file: write("node-key.pem", &server.key),
    });
    let node = node::start_with(cfg, ProviderSetup::Given(vec![provider()]))
        .await
        .unwrap();
    let channel = tls_channel(&node.advertise_addr(), &ca, &client).await;
    Setup { node, channel }
}

async fn tls_channel(addr: &str, ca: &Pem, client: &Pem) -> Channel {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca.cert))
                .identity(Identity::from_pem(&client.cert, &client.key))
                .domain_name("iarnet"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn capacity_call() -> ProviderCallRequest {
    ProviderCallRequest {
        provider_id: "bench-mem".into(),
        method: "capacity".into(),
        payload: pb::CapacityCall {}.encode_to_vec(),
        caller_id: String::new(),
        on_behalf_of: String::new(),
    }
}

struct Figures {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

async fn measure(channel: &Channel, calls: usize, concurrency: usize) -> Figures {
    let mut client = PeerServiceClient::new(channel.clone());
    for _ in 0..200 {
        client.call_provider(capacity_call()).await.unwrap();
    }
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        client.call_provider(capacity_call()).await.unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    let pick = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut c = PeerServiceClient::new(channel.clone());
            tokio::spawn(async move {
                for _ in 0..calls / concurrency {
                    c.call_provider(capacity_call()).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let done = (calls / concurrency * concurrency) as f64;
    Figures {
        p50: pick(0.5),
        p99: pick(0.99),
        per_sec: done / started.elapsed().as_secs_f64(),
    }
}

/// New connections per second: what a node pays when peers (re)connect.
/// A fresh endpoint each time is first contact (a full handshake); one
/// endpoint connecting again is a reconnect, which resumes the TLS session
/// (the node keeps one endpoint per peer, so its reconnects do the same).
async fn connects(make: impl Fn() -> Endpoint, n: usize, reuse: bool) -> f64 {
    let shared = make();
    let started = Instant::now();
    for _ in 0..n {
        let endpoint = if reuse { shared.clone() } else { make() };
        let ch = endpoint.connect().await.unwrap();
        PeerServiceClient::new(ch)
            .call_provider(capacity_call())
            .await
            .unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let calls = if quick { 2_000 } else { 20_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let plain = plaintext().await;
        let tls = mtls(dir.path()).await;
        println!("# iarnet mTLS benchmark: CallProvider(capacity), {calls} calls, loopback");
        // Interleave the two so drift on a shared machine hits both.
        let mut rows: Vec<(&str, Vec<Figures>)> = vec![("plaintext", vec![]), ("mtls", vec![])];
        for _ in 0..3 {
            rows[0].1.push(measure(&plain.channel, calls / 3, 16).await);
            rows[1].1.push(measure(&tls.channel, calls / 3, 16).await);
        }
        let median = |fs: &[Figures], f: fn(&Figures) -> f64| {
            let mut v: Vec<f64> = fs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let stats: Vec<(f64, f64, f64)> = rows
            .iter()
            .map(|(_, fs)| {
                (
                    median(fs, |f| f.p50.as_secs_f64() * 1e6),
                    median(fs, |f| f.p99.as_secs_f64() * 1e6),
                    median(fs, |f| f.per_sec),
                )
            })
            .collect();
        println!("| transport | p50 µs | p99 µs | calls/s (16 concurrent) |");
        println!("|---|---|---|---|");
        for ((name, _), (p50, p99, rate)) in rows.iter().zip(&stats) {
            println!("| {name} | {p50:.0} | {p99:.0} | {rate:.0} |");
        }
        let (b, t) = (stats[0], stats[1]);
        println!(
            "ratio mtls/plaintext: p50 {:.2}x, p99 {:.2}x, calls/s {:.2}x",
            t.0 / b.0,
            t.1 / b.1,
            t.2 / b.2
        );

        let n = if quick { 50 } else { 300 };
        let plain_addr = plain.node.advertise_addr();
        let plain_endpoint = || Endpoint::from_shared(format!("http://{plain_addr}")).unwrap();
        let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        let cert = std::fs::read_to_string(dir.path().join("node.pem")).unwrap();
        let key = std::fs::read_to_string(dir.path().join("node-key.pem")).unwrap();
        let tls_addr = tls.node.advertise_addr();
        let tls_endpoint = || {
            Endpoint::from_shared(format!("https://{tls_addr}"))
                .unwrap()
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(&ca))
                        .identity(Identity::from_pem(&cert, &key))
                        .domain_name("iarnet"),
                )
                .unwrap()
        };
        for (what, reuse) in [
            ("first contact (full handshake)", false),
            ("reconnect (session resumed)", true),
        ] {
            let plain_connects = connects(plain_endpoint, n, reuse).await;
            let tls_connects = connects(tls_endpoint, n, reuse).await;
            println!(
                "new connection + first call, {what}: plaintext {plain_connects:.0}/s, mtls {tls_connects:.0}/s (ratio {:.2}x)",
                tls_connects / plain_connects
            );
        }
        plain.node.shutdown().await;
        tls.node.shutdown().await;
    });
}
