//! Applications across nodes: an image built from source on another node's
//! provider (the context sent to its owner in checksummed chunks, the
//! build's output streamed back), components on two nodes' providers that
//! reach each other through published endpoints, and the build service's
//! answers to bad input.

#[path = "support/apps.rs"]
mod apps_support;
mod common;
#[path = "support/docker.rs"]
mod docker_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use iarnet::config::Config;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::placement::call::build::{requests, CHUNK};
use iarnet::proto::build::image_build_client::ImageBuildClient;
use iarnet::proto::build::{build_event, build_request, BuildHeader, BuildRequest};
use iarnet::resource::docker::{DockerProvider, DockerSettings};
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::{Provider, Resources};
use serde_json::{json, Value};

use apps_support::{create_and_deploy, http, remove_from_engine, repo};
use common::wait_until;
use docker_support::{ensure_test_image, suffix, TEST_IMAGE};

const WAIT: Duration = Duration::from_secs(30);

fn room() -> Resources {
    Resources {
        cpu_millis: 8000,
        memory_bytes: 16 << 30,
        gpus: 0,
        storage_bytes: 0,
    }
}

fn site(s: &str) -> BTreeMap<String, String> {
    [("site".to_string(), s.to_string())].into()
}

async fn start(
    id: &str,
    seeds: &[String],
    providers: Vec<Arc<dyn Provider>>,
    workspace: &Path,
    remote_access: bool,
) -> NodeHandle {
    let mut cfg = Config::loopback(id);
    cfg.initial_peers = seeds.to_vec();
    cfg.workspace_dir = workspace.to_path_buf();
    cfg.resources.allow_remote_access = remote_access;
    node::start_with(cfg, ProviderSetup::Given(providers))
        .await
        .expect("node starts on 127.0.0.1:0")
}

/// Waits until `node` can place on every provider in `ids`.
async fn sees(node: &NodeHandle, ids: &[&str]) {
    wait_until("providers to be discovered", WAIT, || {
        let have: Vec<String> = node
            .manager()
            .candidates()
            .into_iter()
            .map(|c| c.id)
            .collect();
        if ids.iter().all(|i| have.iter().any(|h| h == i)) {
            Ok(())
        } else {
            Err(format!("{} sees {have:?}", node.id()))
        }
    })
    .await;
}

fn component(app: &Value, id: &str) -> Value {
    app["components"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("no component {id} in {app}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_component_is_built_on_another_nodes_provider_and_runs_there() {
    let tmp = tempfile::tempdir().unwrap();
    let builder = Arc::new(MemoryProvider::new("mesh-b-mem", room(), site("b")).with_builder());
    let b = start(
        "mesh-b",
        &[],
        vec![builder.clone() as Arc<dyn Provider>],
        &tmp.path().join("wb"),
        true,
    )
    .await;
    let plain: Arc<dyn Provider> = Arc::new(MemoryProvider::new("mesh-a-mem", room(), site("a")));
    let a = start(
        "mesh-a",
        &[b.advertise_addr()],
        vec![plain],
        &tmp.path().join("wa"),
        true,
    )
    .await;
    sees(&a, &["mesh-a-mem", "mesh-b-mem"]).await;
    let src = repo(
        tmp.path(),
        "remote-build",
        &[
            (
                "compose.yaml",
                "services:\n  db:\n    image: iarnet-test/busybox:1\n    deploy: {placement: {constraints: [\"node.labels.site==a\"]}}\n  api:\n    build: {context: ./api, args: {FLAVOUR: plain}}\n    ports: [\"8080\"]\n    depends_on: [db]\n",
            ),
            (
                "api/Dockerfile",
                "FROM iarnet-test/busybox:1\nCOPY . /app\nCMD [\"sh\"]\n",
            ),
            ("api/.dockerignore", "secret.txt\n"),
            ("api/app.txt", "hello\n"),
            ("api/secret.txt", "do not ship\n"),
        ],
    );
    let addr = a.http_addr().to_string();
    let (code, e) = http(
        &addr,
        "POST",
        "/application/apps",
        Some(json!({"name": "remote-build", "git_url": format!("file://{}", src.display())})),
    );
    assert_eq!(code, 201, "{e}");
    let (code, app) = http(
        &addr,
        "POST",
        "/application/apps/remote-build/deploy-components",
        Some(json!({"components": [], "wait_seconds": 30})),
    );
    assert_eq!(code, 200, "{app}");

    // Built by node b's provider, from the context node a packed.
    let built = builder.built();
    assert_eq!(built.len(), 1, "{built:?}");
    let image = &built[0];
    assert!(
        image.tag.starts_with("iarnet-app/remote-build-api:"),
        "{image:?}"
    );
    assert_eq!(image.args.get("FLAVOUR").map(String::as_str), Some("plain"));
    assert!(image.files.iter().any(|f| f == "app.txt"), "{image:?}");
    assert!(
        !image.files.iter().any(|f| f == "secret.txt"),
        ".dockerignore honoured: {image:?}"
    );

    // The view shows the build and where each component runs.
    let api = component(&app, "api");
    assert_eq!(api["build"]["status"], "built", "{api}");
    assert_eq!(api["build"]["provider_id"], "mesh-b-mem", "{api}");
    assert_eq!(api["build"]["owner_id"], "mesh-b", "{api}");
    let log: Vec<&str> = api["build"]["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        log,
        [
            "Step 1/3 : FROM iarnet-test/busybox:1",
            "Step 2/3 : COPY . /app",
            "Step 3/3 : CMD [\"sh\"]",
            &format!("Successfully tagged {}", image.tag),
        ],
        "{api}"
    );
    assert_eq!(api["provider_id"], "mesh-b-mem", "{api}");
    assert_eq!(api["owner_id"], "mesh-b", "{api}");
    assert_eq!(api["image"], image.tag.as_str(), "{api}");
    let db = component(&app, "db");
    assert_eq!(db["provider_id"], "mesh-a-mem", "{db}");
    assert_eq!(db["placement"]["site"], "a", "{db}");

    // Both sides counted the build call.
    for (n, side) in [(&b, "server"), (&a, "client")] {
        let (_, m) = http(&n.http_addr().to_string(), "GET", "/metrics", None);
        let want = format!(
            r#"iarnet_provider_call_seconds_count{{side="{side}",method="build",code="ok"}} 1"#
        );
        assert!(m.as_str().unwrap_or_default().contains(&want), "{want}");
    }

    a.shutdown().await;
    b.shutdown().await;
}

fn header(provider: &str, size: u64) -> BuildHeader {
    BuildHeader {
        caller_id: "a-test".into(),
        provider_id: provider.into(),
        tag: "iarnet-test/built:1".into(),
        dockerfile: "Dockerfile".into(),
        context_size: size,
        ..Default::default()
    }
}

/// A tar holding one Dockerfile.
fn context() -> bytes::Bytes {
    let mut tar = tar::Builder::new(Vec::new());
    let text = b"FROM scratch\nCOPY . /\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "Dockerfile", &text[..]).unwrap();
    tar.into_inner().unwrap().into()
}

/// One Build call: the events, or the status it ended with.
async fn build(
    addr: &str,
    reqs: Vec<BuildRequest>,
) -> Result<Vec<build_event::Event>, tonic::Status> {
    let mut client = ImageBuildClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut events = client.build(tokio_stream::iter(reqs)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(e) = events.message().await? {
        out.extend(e.event);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_build_service_refuses_bad_contexts_and_builds_nothing_from_them() {
    let tmp = tempfile::tempdir().unwrap();
    let builder = Arc::new(MemoryProvider::new("bs-mem", room(), site("b")).with_builder());
    let plain: Arc<dyn Provider> = Arc::new(MemoryProvider::new("bs-plain", room(), site("b")));
    let b = start(
        "bs-b",
        &[],
        vec![builder.clone() as Arc<dyn Provider>, plain],
        tmp.path(),
        true,
    )
    .await;
    let addr = b.advertise_addr();
    let ctx = context();

    let mut damaged: Vec<BuildRequest> = requests(header("bs-mem", 0), ctx.clone(), 100).collect();
    if let Some(build_request::Part::Chunk(c)) = &mut damaged[2].part {
        let mut data = c.data.to_vec();
        data[0] ^= 0xff;
        c.data = data.into();
    }
    let e = build(&addr, damaged).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::DataLoss, "{e:?}");
    assert!(e.message().contains("offset 100"), "{e:?}");

    let mut cut: Vec<BuildRequest> = requests(header("bs-mem", 0), ctx.clone(), 100).collect();
    cut.pop();
    let e = build(&addr, cut).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::DataLoss, "{e:?}");

    let huge = vec![BuildRequest {
        part: Some(build_request::Part::Header(header("bs-mem", u64::MAX))),
    }];
    let e = build(&addr, huge).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("max_checkout_size"), "{e:?}");

    let e = build(
        &addr,
        requests(header("nope", 0), ctx.clone(), CHUNK).collect(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = build(
        &addr,
        requests(header("bs-plain", 0), ctx.clone(), CHUNK).collect(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    let mut no_file = header("bs-mem", 0);
    no_file.dockerfile = "missing/Dockerfile".into();
    let e = build(&addr, requests(no_file, ctx.clone(), CHUNK).collect())
        .await
        .unwrap_err();
    assert!(
        e.message().contains("Cannot locate specified Dockerfile"),
        "{e:?}"
    );
    assert!(builder.built().is_empty(), "nothing built from bad input");

    // The same node still builds a good context, output streamed back.
    let events = build(
        &addr,
        requests(header("bs-mem", 0), ctx.clone(), 100).collect(),
    )
    .await
    .unwrap();
    assert!(
        matches!(&events[0], build_event::Event::Received(r) if r.bytes == ctx.len() as u64 && r.chunks as usize == ctx.len().div_ceil(100)),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], build_event::Event::Line(l) if l == "Step 1/2 : FROM scratch"),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(build_event::Event::Done(d)) if d.tag == "iarnet-test/built:1" && d.lines == 3),
        "{events:?}"
    );
    assert_eq!(builder.built().len(), 1);
    b.shutdown().await;

    // A node that keeps its providers to itself builds for nobody else.
    let closed = Arc::new(MemoryProvider::new("bs-closed", room(), site("c")).with_builder());
    let c = start(
        "bs-c",
        &[],
        vec![closed.clone() as Arc<dyn Provider>],
        tmp.path(),
        false,
    )
    .await;
    let e = build(
        &c.advertise_addr(),
        requests(header("bs-closed", 0), ctx, CHUNK).collect(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(closed.built().is_empty());
    c.shutdown().await;
}

fn docker_provider_settings(id: &str, node: &str, site_label: &str) -> DockerSettings {
    DockerSettings {
        id: id.into(),
        name: id.into(),
        endpoint: None,
        tls: None,
        limits: Some(Resources {
            cpu_millis: 4000,
            memory_bytes: 4 << 30,
            gpus: 0,
            storage_bytes: 0,
        }),
        max_deployments: None,
        labels: site(site_label),
        node_id: node.into(),
        gpus: Vec::new(),
    }
}

fn container_logs(app: &str, component: &str) -> String {
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("docker logs $(docker ps -aq --filter label=iarnet-app={app} --filter label=iarnet-component={component}) 2>&1"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn components_on_two_nodes_reach_each_other_and_an_image_is_built_on_the_other_node() {
    ensure_test_image();
    let tmp = tempfile::tempdir().unwrap();
    let tag = suffix();
    let (pa, pb) = (format!("xa-{tag}"), format!("xb-{tag}"));
    let b_provider = DockerProvider::connect(docker_provider_settings(&pb, "apps-xb", "b"))
        .await
        .expect("the local Docker engine");
    let b = start(
        "apps-xb",
        &[],
        vec![Arc::new(b_provider)],
        &tmp.path().join("wb"),
        true,
    )
    .await;
    let a_provider = DockerProvider::connect(docker_provider_settings(&pa, "apps-xa", "a"))
        .await
        .expect("the local Docker engine");
    let a = start(
        "apps-xa",
        &[b.advertise_addr()],
        vec![Arc::new(a_provider)],
        &tmp.path().join("wa"),
        true,
    )
    .await;
    sees(&a, &[&pa, &pb]).await;
    let name = format!("xnode-{tag}");
    let compose = format!(
        r#"services:
  db:
    build: ./db
    ports: ["5432"]
    deploy: {{placement: {{constraints: ["node.labels.site==b"]}}}}
  api:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "echo addr=$$DB_ADDR; for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- http://$$DB_ADDR/ && break; sleep 1; done; exec sleep 300"]
    depends_on: [db]
    deploy: {{placement: {{constraints: ["node.labels.site==a"]}}}}
"#
    );
    let dockerfile = format!(
        "FROM {TEST_IMAGE}\nRUN mkdir -p /www && echo db-on-b > /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"5432\", \"-h\", \"/www\"]\n"
    );
    let src = repo(
        tmp.path(),
        "xnode",
        &[("compose.yaml", &compose), ("db/Dockerfile", &dockerfile)],
    );
    let addr = a.http_addr().to_string();
    let (code, app) = create_and_deploy(&addr, &name, &src, 120);
    let mut seen = String::new();
    if code == 200 {
        for _ in 0..200 {
            seen = container_logs(&name, "api");
            if seen.contains("db-on-b") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (stop_code, stopped) = http(
        &addr,
        "POST",
        &format!("/application/apps/{name}/stop"),
        Some(json!({})),
    );
    remove_from_engine(&name, "db");
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(code, 200, "deploy: {app}");
    let db = component(&app, "db");
    let api = component(&app, "api");
    assert_eq!(db["owner_id"], "apps-xb", "{db}");
    assert_eq!(db["provider_id"], pb.as_str(), "{db}");
    assert_eq!(db["build"]["owner_id"], "apps-xb", "{db}");
    assert_eq!(db["build"]["status"], "built", "{db}");
    assert!(
        db["build"]["log"]
            .to_string()
            .contains("Successfully tagged iarnet-app/"),
        "the engine's output came back: {db}"
    );
    assert_eq!(api["owner_id"], "apps-xa", "{api}");
    assert_eq!(api["endpoints"]["db"]["via"], "published", "{api}");
    assert!(
        seen.contains("db-on-b"),
        "api on node a reached db on node b by its published endpoint: {seen}"
    );
    assert_eq!(stop_code, 200, "{stopped}");
}
