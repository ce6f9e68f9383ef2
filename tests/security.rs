//! Who may talk to a node, on real nodes over 127.0.0.1: mutual TLS between
//! peers (wrong CA, expired and missing certificates, spoofed identities),
//! management tokens, access lists and rate limits.

mod common;

use std::time::{Duration, SystemTime};

use common::{all_see_alive, wait_until};
use iarnet::config::{Config, TlsFiles, Token};
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::proto::admin::admin_client::AdminClient;
use iarnet::proto::admin::GetNodeRequest;
use iarnet::proto::peer::peer_service_client::PeerServiceClient;
use iarnet::proto::peer::{ExchangeRequest, Member, ProviderCallRequest};
use iarnet::security::certs::{self, Pem, Validity};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

struct Pki {
    dir: tempfile::TempDir,
    ca: Pem,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: certs::new_ca("test", Validity::days(1)).unwrap(),
        }
    }

    fn node(&self, id: &str, validity: Validity) -> Pem {
        certs::node_cert(&self.ca, id, "iarnet", &[], validity).unwrap()
    }

    /// Writes the CA and a node certificate and returns the config's files.
    fn files(&self, id: &str) -> TlsFiles {
        let node = self.node(id, Validity::days(1));
        let dir = self.dir.path();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        TlsFiles {
            ca_file: write("ca.pem", &self.ca.cert),
            cert_file: write(&format!("{id}.pem"), &node.cert),
            key_file: write(&format!("{id}-key.pem"), &node.key),
        }
    }
}

async fn start(cfg: Config) -> NodeHandle {
    node::start_with(cfg, ProviderSetup::Given(Vec::new()))
        .await
        .expect("node starts")
}

fn tls_config(id: &str, pki: &Pki, seeds: &[String]) -> Config {
    let mut cfg = Config::loopback(id);
    cfg.node_id = None;
    cfg.initial_peers = seeds.to_vec();
    cfg.security.tls = Some(pki.files(id));
    cfg
}

/// A channel to `addr` over TLS trusting `ca`, presenting `client` if given.
async fn tls_channel(addr: &str, ca: &str, client: Option<&Pem>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("iarnet");
    if let Some(c) = client {
        tls = tls.identity(Identity::from_pem(&c.cert, &c.key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// A plaintext channel to a node's gRPC port.
async fn plain_channel(node: &NodeHandle) -> Channel {
    Endpoint::from_shared(format!("http://{}", node.advertise_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn hello(id: &str) -> ExchangeRequest {
    ExchangeRequest {
        sender: Some(Member {
            id: id.into(),
            addr: "127.0.0.1:1".into(),
            generation: 1,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A peer call over `channel`: Ok, or the gRPC code (transport failures
/// surface as UNAVAILABLE or UNKNOWN).
async fn exchange(channel: Channel, sender: &str) -> Result<(), Code> {
    PeerServiceClient::new(channel)
        .exchange_peers(hello(sender))
        .await
        .map(drop)
        .map_err(|s| s.code())
}

#[tokio::test]
async fn mtls_peers_join_and_strangers_are_refused() {
    let pki = Pki::new();
    let a = start(tls_config("tls-a", &pki, &[])).await;
    let b = start(tls_config("tls-b", &pki, &[a.advertise_addr()])).await;
    assert_eq!(a.id(), "tls-a", "with TLS the certificate names the node");
    let ids = vec![a.id(), b.id()];
    wait_until(
        "two TLS nodes to see each other",
        Duration::from_secs(20),
        || all_see_alive(&[&a, &b], &ids),
    )
    .await;
    let addr = a.advertise_addr();

    // A certificate from the right CA for the right id: accepted.
    let c_cert = pki.node("tls-c", Validity::days(1));
    let ch = tls_channel(&addr, &pki.ca.cert, Some(&c_cert))
        .await
        .unwrap();
    assert_eq!(exchange(ch.clone(), "tls-c").await, Ok(()));

    // The same certificate claiming another node's identity: refused.
    assert_eq!(exchange(ch, "tls-b").await, Err(Code::PermissionDenied));

    // No client certificate: the handshake succeeds (management clients use
    // tokens), the peer call does not.
    let ch = tls_channel(&addr, &pki.ca.cert, None).await.unwrap();
    assert_eq!(
        exchange(ch.clone(), "tls-c").await,
        Err(Code::Unauthenticated)
    );
    let node = AdminClient::new(ch)
        .get_node(GetNodeRequest {})
        .await
        .expect("management without a client certificate is served");
    assert_eq!(node.into_inner().id, "tls-a");

    // A certificate from another CA: refused during the handshake.
    let other = Pki::new();
    let stranger = other.node("tls-x", Validity::days(1));
    refused_in_handshake(&addr, &pki.ca.cert, &stranger).await;

    // An expired certificate from the right CA: refused during the handshake.
    let expired = pki.node(
        "tls-old",
        Validity {
            not_before: SystemTime::now() - Duration::from_secs(10 * 86_400),
            lifetime: Duration::from_secs(86_400),
        },
    );
    refused_in_handshake(&addr, &pki.ca.cert, &expired).await;

    // A plaintext client gets nowhere either.
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(exchange(ch, "tls-c").await.is_err());
    }

    // A node with a certificate from another CA never joins.
    let mut cfg = tls_config("tls-x", &other, std::slice::from_ref(&addr));
    cfg.security.tls = Some(other.files("tls-x"));
    let x = start(cfg).await;
    wait_until(
        "b to gossip a few more rounds",
        Duration::from_secs(10),
        || {
            (b.stats().rounds >= 10)
                .then_some(())
                .ok_or_else(|| "few rounds".into())
        },
    )
    .await;
    assert!(
        common::find(&a, "tls-x").is_none() && common::find(&x, "tls-a").is_none(),
        "a node of another CA joined: {:?}",
        a.members()
    );
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("iarnet_refusals_total{surface=\"peer\",reason=\"spoofed\"} 1"),
        "{metrics}"
    );
}

/// The client's TLS handshake with a bad certificate is refused by the
/// server: the first call fails at the transport, never reaching a service.
async fn refused_in_handshake(addr: &str, ca: &str, cert: &Pem) {
    // TLS 1.3 clients finish their side before the server checks the
    // certificate, so the refusal may show on the connect or the first call.
    match tls_channel(addr, ca, Some(cert)).await {
        Err(_) => {}
        Ok(ch) => {
            let status = PeerServiceClient::new(ch)
                .exchange_peers(hello("tls-x"))
                .await
                .expect_err("a certificate the CA did not sign or that expired is refused");
            assert!(
                matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Internal
                ),
                "{status:?}"
            );
            assert!(
                !status.message().contains("client certificate"),
                "{status:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_node_whose_id_contradicts_its_certificate_does_not_start() {
    let pki = Pki::new();
    let mut cfg = tls_config("tls-real", &pki, &[]);
    cfg.node_id = Some("tls-other".into());
    let err = node::start_with(cfg, ProviderSetup::Given(Vec::new()))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("tls-real"), "{err}");
}

#[tokio::test]
async fn management_calls_need_a_valid_token_and_health_stays_open() {
    let mut cfg = Config::loopback("tok-a");
    cfg.security.tokens = vec![Token {
        name: "ci".into(),
        secret: "s3cret-s3cret-s3cret".into(),
    }];
    let a = start(cfg).await;
    let ch = plain_channel(&a).await;
    let get_node = |token: Option<&str>| {
        let mut req = tonic::Request::new(GetNodeRequest {});
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", t.parse().unwrap());
        }
        let mut client = AdminClient::new(ch.clone());
        async move { client.get_node(req).await.map(drop).map_err(|s| s.code()) }
    };
    assert_eq!(get_node(None).await, Err(Code::Unauthenticated));
    assert_eq!(
        get_node(Some("Bearer wrong-wrong-wrong")).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        get_node(Some("s3cret-s3cret-s3cret")).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(get_node(Some("Bearer s3cret-s3cret-s3cret")).await, Ok(()));

    let health = HealthClient::new(ch.clone())
        .check(HealthCheckRequest::default())
        .await;
    assert!(health.is_ok(), "health stays open: {health:?}");
    // Peers do not use tokens.
    assert_eq!(exchange(ch, "tok-b").await, Ok(()));
}

#[tokio::test]
async fn access_lists_refuse_nodes_and_networks_and_are_counted() {
    let mut cfg = Config::loopback("acl-a");
    cfg.security.access.deny_nodes = vec!["acl-bad".into()];
    let a = start(cfg).await;
    let ch = plain_channel(&a).await;
    assert_eq!(
        exchange(ch.clone(), "acl-bad").await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(exchange(ch.clone(), "acl-good").await, Ok(()));
    let call = PeerServiceClient::new(ch.clone())
        .call_provider(ProviderCallRequest {
            provider_id: "p".into(),
            method: "capacity".into(),
            caller_id: "acl-bad".into(),
            on_behalf_of: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(call.code(), Code::PermissionDenied, "{call:?}");
    assert!(call.message().contains("access.deny_nodes"), "{call:?}");
    assert!(
        common::find(&a, "acl-bad").is_none(),
        "a denied node's gossip changed nothing"
    );

    let mut cfg = Config::loopback("acl-b");
    cfg.security.access.allow_networks = vec!["10.0.0.0/8".parse().unwrap()];
    let b = start(cfg).await;
    let ch = plain_channel(&b).await;
    for _ in 0..3 {
        assert_eq!(
            exchange(ch.clone(), "acl-good").await,
            Err(Code::PermissionDenied)
        );
    }
    let metrics = b.metrics().await;
    assert!(
        metrics.contains("iarnet_refusals_total{surface=\"peer\",reason=\"not_allowed\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_peer_over_its_rate_gets_resource_exhausted_with_a_retry_hint() {
    let mut cfg = Config::loopback("rate-a");
    cfg.security.rate_limit.peer_rate = 0.5;
    cfg.security.rate_limit.peer_burst = 2.0;
    let a = start(cfg).await;
    let ch = plain_channel(&a).await;
    let mut client = PeerServiceClient::new(ch.clone());
    client.exchange_peers(hello("rate-b")).await.unwrap();
    client.exchange_peers(hello("rate-b")).await.unwrap();
    let s = client.exchange_peers(hello("rate-b")).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    let hint: u64 = s
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a retry hint");
    assert!(hint > 0 && hint <= 2_000, "{hint}");
    // Management has its own budget.
    AdminClient::new(ch)
        .get_node(GetNodeRequest {})
        .await
        .expect("management is not starved by a noisy peer");
}

/// One HTTP/1.1 exchange on a blocking socket: (status, body).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, rest.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_needs_the_token_and_the_audit_log_names_who_asked() {
    use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
    use iarnet::proto::resource::DeploySpec;
    use iarnet::resource::memory::MemoryProvider;
    use iarnet::resource::Resources;

    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut cfg = Config::loopback("audit-a");
    cfg.security.audit_path = Some(audit.clone());
    cfg.security.tokens = vec![Token {
        name: "ci".into(),
        secret: "s3cret-s3cret-s3cret".into(),
    }];
    let provider = MemoryProvider::new(
        "audit-mem",
        Resources {
            cpu_millis: 2000,
            memory_bytes: 4 << 30,
            gpus: 0,
            storage_bytes: u64::MAX,
        },
        Default::default(),
    );
    let a = node::start_with(
        cfg,
        ProviderSetup::Given(vec![std::sync::Arc::new(provider)]),
    )
    .await
    .unwrap();
    let h = a.http_addr().to_string();
    let call = move |method: &'static str,
                     path: &'static str,
                     token: Option<&'static str>,
                     body: &'static str| {
        let h = h.clone();
        tokio::task::spawn_blocking(move || http(&h, method, path, token, body))
    };
    let token = Some("s3cret-s3cret-s3cret");
    assert_eq!(
        call("GET", "/resource/capacity", None, "").await.unwrap().0,
        401
    );
    assert_eq!(
        call(
            "GET",
            "/resource/capacity",
            Some("wrong-wrong-wrong-wrong"),
            ""
        )
        .await
        .unwrap()
        .0,
        401
    );
    assert_eq!(
        call("GET", "/resource/capacity", token, "")
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(call("GET", "/healthz", None, "").await.unwrap().0, 200);
    assert_eq!(call("GET", "/metrics", None, "").await.unwrap().0, 200);
    let (code, _) = call("POST", "/peer/nodes", token, r#"{"address":"127.0.0.1:1"}"#)
        .await
        .unwrap();
    assert_eq!(code, 502);

    let ch = plain_channel(&a).await;
    let mut api = ResourceServiceClient::new(ch);
    let deploy = |request_id: &str, cpu: &str| {
        let mut r = tonic::Request::new(DeploySpec {
            request_id: request_id.into(),
            image: "busybox:latest".into(),
            cpu: cpu.into(),
            memory: "64Mi".into(),
            ..Default::default()
        });
        r.metadata_mut().insert(
            "authorization",
            "Bearer s3cret-s3cret-s3cret".parse().unwrap(),
        );
        r
    };
    let mut events = api
        .deploy(deploy("audit-r1", "500m"))
        .await
        .unwrap()
        .into_inner();
    while let Some(e) = events.message().await.unwrap() {
        drop(e);
    }
    assert_eq!(
        api.deploy(deploy("audit-r2", "0"))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let records: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |event: &str, outcome: &str| {
        records
            .iter()
            .find(|r| r["event"] == event && r["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {event}/{outcome} record in {records:#?}"))
    };
    assert_eq!(find("config", "loaded")["detail"]["tokens"][0], "ci");
    assert!(find("refusal", "unauthenticated")["who"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1"));
    assert!(find("add_peer", "unreachable")["who"]
        .as_str()
        .unwrap()
        .starts_with("token:ci"));
    let placed = find("placement", "placed");
    assert!(placed["who"].as_str().unwrap().starts_with("token:ci"));
    assert_eq!(placed["detail"]["provider"], "audit-mem");
    assert_eq!(placed["detail"]["request"]["request_id"], "audit-r1");
    assert!(find("deploy", "invalid")["detail"]["error"]
        .as_str()
        .unwrap()
        .contains("cpu"));
    assert!(
        !std::fs::read_to_string(&audit).unwrap().contains("s3cret"),
        "no secret in the audit log"
    );
}

/// GET over HTTPS trusting `ca` (verifying the mesh's server name): the status line.
async fn https_get(addr: std::net::SocketAddr, ca: &str, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("iarnet").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: iarnet\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok(text.lines().next().unwrap_or_default().to_string())
}

#[tokio::test]
async fn with_tls_on_the_http_api_is_https_only() {
    let pki = Pki::new();
    let a = start(tls_config("https-a", &pki, &[])).await;
    let status = https_get(a.http_addr(), &pki.ca.cert, "/healthz")
        .await
        .unwrap();
    assert!(status.contains("200"), "{status}");
    let stranger = Pki::new();
    assert!(
        https_get(a.http_addr(), &stranger.ca.cert, "/healthz")
            .await
            .is_err(),
        "a client that does not trust the mesh CA cannot verify the node"
    );
    // Plain HTTP gets no answer.
    let plain = tokio::task::spawn_blocking({
        let h = a.http_addr().to_string();
        move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(h).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut raw = String::new();
            let _ = s.read_to_string(&mut raw);
            raw
        }
    })
    .await
    .unwrap();
    assert!(!plain.contains("200 OK"), "{plain}");
}
