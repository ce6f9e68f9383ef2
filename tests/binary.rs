//! The `iarnet` binary end to end: shipped config, grpcurl, health, SIGTERM, bad config.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/grpcurl.rs"]
mod grpcurl_support;
use grpcurl_support::grpcurl;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

struct Running {
    child: Child,
    addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_shipped(data: &Path) -> Running {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let http = format!("127.0.0.1:{}", free_port());
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
    let child = Command::new(env!("CARGO_BIN_EXE_iarnet"))
        .arg("--config")
        .arg(&config)
        .args([
            "--peer-listen-addr",
            &addr,
            "--listen-addr",
            &http,
            "--data-dir",
        ])
        .arg(data)
        .env("IARNET_MDNS", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the iarnet binary starts");
    Running { child, addr }
}

fn run_grpcurl(args: &[&str]) -> Output {
    Command::new(grpcurl())
        .args(args)
        .output()
        .expect("grpcurl runs")
}

/// Retries a grpcurl call until it succeeds (the node is still binding).
fn grpcurl_ok(args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run_grpcurl(args);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "grpcurl {args:?} kept failing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn shipped_config_serves_reflection_health_and_admin_then_stops_on_sigterm() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut node = start_shipped(data.path());
    let addr = node.addr.clone();

    let list = grpcurl_ok(&["-plaintext", &addr, "list"]);
    for service in [
        "peer.PeerService",
        "iarnet.admin.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            list.contains(service),
            "{service} missing from `grpcurl list`:\n{list}"
        );
    }
    let health = grpcurl_ok(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");
    let peers = grpcurl_ok(&["-plaintext", &addr, "iarnet.admin.v1.Admin/ListPeers"]);
    assert!(
        peers.contains("\"isSelf\": true") && peers.contains("\"alive\": 1"),
        "{peers}"
    );
    let node_id = std::fs::read_to_string(data.path().join("node-id")).expect("node id persisted");
    let info = grpcurl_ok(&["-plaintext", &addr, "iarnet.admin.v1.Admin/GetNode"]);
    assert!(info.contains(node_id.trim()), "{info}");

    let bad = run_grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"address":"not an address"}"#,
        &addr,
        "iarnet.admin.v1.Admin/AddPeer",
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("HOST:PORT"),
        "{err}"
    );

    let pid = node.child.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.child.try_wait().expect("wait works") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn bad_configuration_lists_every_problem_and_binds_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "colour: blue\ngossip:\n  fanout: 0\nresource_limits:\n  memory: 16Gb\n",
    )
    .expect("write");
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_iarnet"))
        .arg("--config")
        .arg(&file)
        .args([
            "--peer-listen-addr",
            &format!("127.0.0.1:{port}"),
            "--initial-peers",
            "nope",
        ])
        .env("IARNET_CPU_LIMIT", "lots")
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "colour",
        "gossip.fanout",
        "resource_limits.memory",
        "resource_limits.cpu",
        "initial_peers",
    ] {
        assert!(err.contains(key), "{key} not reported:\n{err}");
    }
    TcpListener::bind(("127.0.0.1", port)).expect("the port was never bound");
}

fn iarnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iarnet"))
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn an_operator_turns_on_mutual_tls_and_tokens_with_iarnet_cert_and_a_few_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = dir.path().join("pki");
    let (pki_s, node_dir) = (pki.to_str().unwrap(), pki.join("n1"));
    let node_s = node_dir.to_str().unwrap();
    assert!(iarnet(&["cert", "ca", "--out", pki_s]).status.success());
    let made = iarnet(&[
        "cert", "node", "--ca-dir", pki_s, "--id", "n1", "--out", node_s,
    ]);
    assert!(made.status.success(), "{made:?}");
    let missing = iarnet(&[
        "cert",
        "node",
        "--ca-dir",
        "/nonexistent",
        "--id",
        "x",
        "--out",
        node_s,
    ]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("iarnet cert ca"),
        "{missing:?}"
    );

    let addr = format!("127.0.0.1:{}", free_port());
    let secret = "0123456789abcdef0123";
    let ca = node_dir.join("ca.pem");
    let _node = Running {
        child: Command::new(env!("CARGO_BIN_EXE_iarnet"))
            .args(["--peer-listen-addr", &addr, "--listen-addr"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("IARNET_MODE", "standalone")
            .env("IARNET_MDNS", "off")
            .env("IARNET_TLS_CA_FILE", &ca)
            .env("IARNET_TLS_CERT_FILE", node_dir.join("node.pem"))
            .env("IARNET_TLS_KEY_FILE", node_dir.join("node-key.pem"))
            .env("IARNET_AUTH_TOKENS", format!("ops:{secret}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the iarnet binary starts"),
        addr: addr.clone(),
    };
    let ca_s = ca.to_str().unwrap();
    let tls = ["-cacert", ca_s, "-servername", "iarnet"];
    let auth = format!("authorization: Bearer {secret}");
    let list = grpcurl_ok(&[&tls[..], &[&addr, "list"]].concat());
    assert!(
        list.contains("iarnet.admin.v1.Admin"),
        "reflection stays open: {list}"
    );
    let info = grpcurl_ok(
        &[
            &tls[..],
            &["-H", &auth, &addr, "iarnet.admin.v1.Admin/GetNode"],
        ]
        .concat(),
    );
    assert!(
        info.contains("\"n1\""),
        "the certificate named the node: {info}"
    );
    let denied = run_grpcurl(&[&tls[..], &[&addr, "iarnet.admin.v1.Admin/GetNode"]].concat());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Unauthenticated"),
        "{denied:?}"
    );
    let plain = run_grpcurl(&["-plaintext", &addr, "iarnet.admin.v1.Admin/GetNode"]);
    assert!(
        !plain.status.success(),
        "plaintext is refused on a TLS port"
    );

    let cli = iarnet(&[
        "peers", "--addr", &addr, "--tls-ca", ca_s, "--token", secret,
    ]);
    assert!(cli.status.success(), "{cli:?}");
    assert!(
        String::from_utf8_lossy(&cli.stdout).contains("n1"),
        "{cli:?}"
    );
    let cli = iarnet(&["peers", "--addr", &addr, "--tls-ca", ca_s]);
    assert_eq!(cli.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&cli.stderr).contains("requires a token"),
        "{cli:?}"
    );
}
