//! Applications from Git on real nodes: repositories made by the test with
//! the `git` program, served over `file://` and a real `git daemon`, the
//! HTTP API, a durable store across a restart, and a rollout on the real
//! Docker engine.

#[path = "support/apps.rs"]
mod apps_support;
mod common;
#[path = "support/docker.rs"]
mod docker_support;
#[path = "support/grpcurl.rs"]
mod grpcurl_support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use iarnet::config::Config;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::resource::docker::{DockerProvider, DockerSettings};
use iarnet::resource::{Provider, Resources};
use iarnet::store::{RedbStore, Store};
use serde_json::{json, Value};

use apps_support::{commit, create_and_deploy, git, http, remove_from_engine, repo};
use docker_support::{ensure_test_image, suffix, TEST_IMAGE};

/// A grpcurl call: its JSON answer, or its stderr (which names the code).
fn grpc(addr: &str, method: &str, body: Value) -> Result<Value, String> {
    let out = Command::new(grpcurl_support::grpcurl())
        .args([
            "-plaintext",
            "-max-time",
            "60",
            "-d",
            &body.to_string(),
            addr,
        ])
        .arg(format!("iarnet.application.v1.ApplicationService/{method}"))
        .output()
        .expect("grpcurl runs");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn config(id: &str, workspace: &Path) -> Config {
    let mut cfg = Config::loopback(id);
    cfg.workspace_dir = workspace.to_path_buf();
    cfg
}

async fn start(id: &str, workspace: &Path, store: Arc<dyn Store>) -> NodeHandle {
    node::start_with_store(
        config(id, workspace),
        ProviderSetup::Given(Vec::new()),
        store,
    )
    .await
    .expect("node starts")
}

const COMPOSE: &str = "services:\n  web:\n    build: web\n    ports: ['8080']\n    environment: {API: 'http://api:9000'}\n  api:\n    image: busybox\n    ports: ['9000']\n";

#[tokio::test(flavor = "multi_thread")]
async fn an_application_is_cloned_analysed_edited_pulled_and_kept_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let src = repo(
        tmp.path(),
        "shop",
        &[
            ("compose.yaml", COMPOSE),
            ("web/Dockerfile", "FROM busybox\n"),
            ("web/package.json", r#"{"dependencies": {"react": "18"}}"#),
        ],
    );
    let first = git(&src, &["rev-parse", "HEAD"]);
    let workspace = tmp.path().join("ws");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_dir(&tmp.path().join("data")).unwrap());
    let n = start("apps-1", &workspace, store.clone()).await;
    let addr = n.http_addr().to_string();
    let url = format!("file://{}", src.display());

    let (code, app) = http(
        &addr,
        "POST",
        "/application/apps",
        Some(json!({"name": "Shop", "git_url": url, "branch": "main"})),
    );
    assert_eq!(code, 201, "{app}");
    assert_eq!(app["id"], "shop");
    assert_eq!(app["commit"]["sha"], first.as_str());
    assert_eq!(app["status"], "created");
    assert!(workspace.join("shop/compose.yaml").is_file());
    let (code, again) = http(
        &addr,
        "POST",
        "/application/apps",
        Some(json!({"name": "shop", "git_url": url})),
    );
    assert_eq!(code, 409, "{again}");

    let (code, a) = http(&addr, "POST", "/application/apps/shop/analyze", None);
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["components"][0]["id"], "web");
    assert_eq!(a["components"][0]["type"], "web");
    assert_eq!(a["components"][0]["framework"], "react");
    assert_eq!(
        a["dag"]["edges"],
        json!([{"from": "web", "to": "api", "type": "http"}])
    );
    let (_, comps) = http(&addr, "GET", "/application/apps/shop/components", None);
    assert_eq!(comps["components"][1]["status"], "not_deployed", "{comps}");

    // The code browser: the tree, a file, an edit that shows as a change.
    let (code, tree) = http(&addr, "GET", "/application/apps/shop/files", None);
    assert_eq!(code, 200);
    let paths: Vec<&str> = tree["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["compose.yaml", "web", "web/Dockerfile", "web/package.json"]
    );
    let (code, f) = http(
        &addr,
        "GET",
        "/application/apps/shop/files/web/Dockerfile",
        None,
    );
    assert_eq!((code, f["content"].as_str()), (200, Some("FROM busybox\n")));
    let (code, _) = http(
        &addr,
        "PUT",
        "/application/apps/shop/files/web/Dockerfile",
        Some(json!({"content": "FROM busybox\nEXPOSE 8080\n"})),
    );
    assert_eq!(code, 200);
    let (_, app) = http(&addr, "GET", "/application/apps/shop", None);
    assert_eq!(app["modified_files"], json!(["web/Dockerfile"]));

    // A pull keeps edits unless forced, then moves to the new commit.
    let second = commit(&src, &[("README.md", "shop\n")], "second");
    let (code, e) = http(&addr, "POST", "/application/apps/shop/pull", None);
    assert_eq!(code, 409, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("web/Dockerfile"),
        "{e}"
    );
    let (code, app) = http(
        &addr,
        "POST",
        "/application/apps/shop/pull",
        Some(json!({"force": true})),
    );
    assert_eq!(code, 200, "{app}");
    assert_eq!(app["commit"]["sha"], second.as_str());
    assert_eq!(app["commit"]["message"], "second");
    assert_eq!(app["modified_files"], json!([]));
    http(&addr, "POST", "/application/apps/shop/analyze", None);

    // A restarted node still knows the application and its analysis.
    n.shutdown().await;
    let n = start("apps-1", &workspace, store.clone()).await;
    let addr = n.http_addr().to_string();
    let (code, list) = http(&addr, "GET", "/application/apps", None);
    assert_eq!(code, 200);
    assert_eq!(list["applications"][0]["id"], "shop");
    assert_eq!(list["applications"][0]["commit"]["sha"], second.as_str());
    assert_eq!(list["applications"][0]["components_count"], 2);

    let (code, _) = http(&addr, "DELETE", "/application/apps/shop", None);
    assert_eq!(code, 200);
    assert!(!workspace.join("shop").exists());
    let (code, _) = http(&addr, "GET", "/application/apps/shop", None);
    assert_eq!(code, 404);
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_get_clear_errors_and_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let good = repo(
        tmp.path(),
        "good",
        &[("compose.yaml", COMPOSE), ("web/Dockerfile", "FROM x\n")],
    );
    let cycle = repo(
        tmp.path(),
        "cycle",
        &[(
            "compose.yaml",
            "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n",
        )],
    );
    let unknown = repo(
        tmp.path(),
        "unknown",
        &[(
            "compose.yaml",
            "services:\n  a: {image: x, depends_on: [ghost]}\n",
        )],
    );
    let unsupported = repo(
        tmp.path(),
        "unsupported",
        &[(
            "compose.yaml",
            "services:\n  a: {image: x, volumes: ['d:/d']}\n",
        )],
    );
    let workspace = tmp.path().join("ws");
    let n = start(
        "apps-2",
        &workspace,
        Arc::new(iarnet::store::MemoryStore::new()),
    )
    .await;
    let addr = n.http_addr().to_string();
    let create = |name: &str, url: String, branch: &str| {
        http(
            &addr,
            "POST",
            "/application/apps",
            Some(json!({"name": name, "git_url": url, "branch": branch})),
        )
    };
    let file = |p: &Path| format!("file://{}", p.display());

    let (code, e) = create("x", "/not/a/url".into(), "main");
    assert_eq!(code, 400, "{e}");
    assert!(
        e["error"].as_str().unwrap().starts_with("invalid git_url"),
        "{e}"
    );
    let (code, e) = create("x", "git://127.0.0.1:1/nothing".into(), "main");
    assert_eq!(code, 503, "{e}");
    assert!(e["error"].as_str().unwrap().contains("cannot reach"), "{e}");
    let (code, e) = create("x", file(&good), "nope");
    assert_eq!(code, 404, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("branch `nope`"),
        "{e}"
    );
    let (code, e) = create("x", file(&tmp.path().join("missing")), "main");
    assert_eq!(code, 404, "{e}");
    let leftovers: Vec<_> = std::fs::read_dir(&workspace)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "half-made checkouts left: {leftovers:?}"
    );
    let (_, list) = http(&addr, "GET", "/application/apps", None);
    assert_eq!(list["applications"], json!([]));

    for (name, path, expect) in [
        ("cycle", &cycle, "dependency cycle: a -> b -> a"),
        (
            "unknown",
            &unknown,
            "depends on `ghost`, which is not a component",
        ),
        (
            "unsupported",
            &unsupported,
            "services.a.volumes: not supported",
        ),
    ] {
        let (code, _) = create(name, file(path), "main");
        assert_eq!(code, 201);
        let (code, e) = http(
            &addr,
            "POST",
            &format!("/application/apps/{name}/analyze"),
            None,
        );
        assert_eq!(code, 400, "{name}: {e}");
        assert_eq!(e["code"], "invalid_argument");
        assert!(e["error"].as_str().unwrap().contains(expect), "{name}: {e}");
        let (code, e) = http(
            &addr,
            "POST",
            &format!("/application/apps/{name}/deploy-components"),
            Some(json!({})),
        );
        assert_eq!(code, 400, "{name}: {e}");
    }

    let (code, e) = http(
        &addr,
        "GET",
        "/application/apps/cycle/files/..%2F..%2Fetc%2Fpasswd",
        None,
    );
    assert_eq!(code, 400, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("leaves the checkout"),
        "{e}"
    );
    let (code, e) = http(
        &addr,
        "PUT",
        "/application/apps/cycle/files/.git/config",
        Some(json!({"content": "x"})),
    );
    assert_eq!(code, 400, "{e}");
    let (code, _) = http(&addr, "GET", "/application/apps/cycle", None);
    assert_eq!(code, 200, "the application is intact");
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_is_cloned_from_a_git_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let src = repo(
        tmp.path(),
        "served",
        &[("Procfile", "web: ./run\nworker: ./work\n")],
    );
    let sha = git(&src, &["rev-parse", "HEAD"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut daemon = Command::new("git")
        .args([
            "daemon",
            "--export-all",
            "--reuseaddr",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", tmp.path().display()),
        ])
        .spawn()
        .expect("git daemon starts");
    let n = start(
        "apps-3",
        &tmp.path().join("ws"),
        Arc::new(iarnet::store::MemoryStore::new()),
    )
    .await;
    let grpc_addr = n.local_addr().to_string();
    let url = format!("git://127.0.0.1:{port}/served");
    let mut created = Err(String::new());
    // The daemon takes a moment to listen.
    for _ in 0..50 {
        created = grpc(
            &grpc_addr,
            "CreateApplication",
            json!({"name": "served", "git_url": url, "branch": "main"}),
        );
        match &created {
            Err(e) if e.contains("Unavailable") => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            _ => break,
        }
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let created = created.expect("CreateApplication over gRPC");
    assert_eq!(created["commit"]["sha"], sha.as_str());
    let a = grpc(&grpc_addr, "AnalyzeApplication", json!({"id": "served"})).unwrap();
    assert_eq!(a["source"], "procfile");
    assert_eq!(a["components"][1]["type"], "worker");
    let files = grpc(&grpc_addr, "ListFiles", json!({"id": "served"})).unwrap();
    assert_eq!(files["entries"][0]["path"], "Procfile");
    let e = grpc(
        &grpc_addr,
        "ReadFile",
        json!({"id": "served", "path": "../../etc/passwd"}),
    )
    .unwrap_err();
    assert!(
        e.contains("InvalidArgument") && e.contains("leaves the checkout"),
        "{e}"
    );
    let e = grpc(&grpc_addr, "GetApplication", json!({"id": "ghost"})).unwrap_err();
    assert!(e.contains("NotFound"), "{e}");
    n.shutdown().await;
}

/// Git's smart HTTP transport: `git http-backend` behind Python's CGI
/// server (which runs it as `nobody` when started by root, so the files it
/// serves are world-readable and `safe.directory` lets it read them).
#[tokio::test(flavor = "multi_thread")]
async fn a_repository_is_cloned_and_pulled_over_smart_http() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = repo(tmp.path(), "src", &[("Procfile", "web: ./run\n")]);
    let repos = tmp.path().join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            "repos/app.git",
        ],
    );
    let www = tmp.path().join("www");
    std::fs::create_dir_all(www.join("cgi-bin")).unwrap();
    let script = www.join("cgi-bin/git");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexport GIT_PROJECT_ROOT={} GIT_HTTP_EXPORT_ALL=1 HOME=/tmp XDG_CONFIG_HOME=/tmp\nexport GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'\nexec git http-backend\n",
            repos.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    Command::new("chmod")
        .args(["-R", "a+rX", tmp.path().to_str().unwrap()])
        .status()
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("python3")
        .current_dir(&www)
        .args([
            "-m",
            "http.server",
            "--cgi",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 serves CGI");
    let n = start(
        "apps-http",
        &tmp.path().join("ws"),
        Arc::new(iarnet::store::MemoryStore::new()),
    )
    .await;
    let addr = n.http_addr().to_string();
    let url = format!("http://127.0.0.1:{port}/cgi-bin/git/app.git");
    let mut created = (0, Value::Null);
    // The server takes a moment to listen.
    for _ in 0..100 {
        created = http(
            &addr,
            "POST",
            "/application/apps",
            Some(json!({"name": "over-http", "git_url": url, "branch": "main"})),
        );
        if created.0 != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = git(&src, &["rev-parse", "HEAD"]);
    let second = commit(
        &src,
        &[("Procfile", "web: ./run\nworker: ./work\n")],
        "second",
    );
    git(
        &src,
        &[
            "push",
            "-q",
            repos.join("app.git").to_str().unwrap(),
            "main",
        ],
    );
    let (pulled_code, pulled) = http(
        &addr,
        "POST",
        "/application/apps/over-http/pull",
        Some(json!({})),
    );
    let (missing_code, missing) = http(
        &addr,
        "POST",
        "/application/apps",
        Some(
            json!({"name": "nothing", "git_url": format!("http://127.0.0.1:{port}/cgi-bin/git/nothing.git")}),
        ),
    );
    let _ = server.kill();
    let _ = server.wait();
    n.shutdown().await;
    assert_eq!(created.0, 201, "{}", created.1);
    assert_eq!(created.1["commit"]["sha"], first.as_str());
    assert_eq!(pulled_code, 200, "{pulled}");
    assert_eq!(pulled["commit"]["sha"], second.as_str(), "{pulled}");
    assert_eq!(missing_code, 404, "{missing}");
}

/// Containers of this engine labelled with the application, by component.
fn started_at(container: &str) -> (String, String) {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.StartedAt}} {{.State.FinishedAt}}",
            container,
        ])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (a, b) = s.split_once(' ').unwrap_or((&s, ""));
    (a.to_string(), b.to_string())
}

fn logs(container: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", container])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn components_start_in_dependency_order_and_reach_each_other() {
    ensure_test_image();
    let tmp = tempfile::tempdir().unwrap();
    let compose = format!(
        r#"services:
  init:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "sleep 1; echo seeded"]
  db:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "mkdir -p /www && echo db-ok > /www/index.html && sleep 2 && touch /tmp/ready && exec httpd -f -p 5432 -h /www"]
    ports: ["5432"]
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 500ms
      retries: 60
  api:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "echo addr=$$DB_ADDR; wget -q -O- http://$$DB_ADDR/; wget -q -O- http://db:5432/; exec sleep 300"]
    depends_on:
      init: {{condition: service_completed_successfully}}
      db: {{condition: service_healthy}}
      cache: {{condition: service_started}}
  cache:
    build: ./cache
"#
    );
    let dockerfile = format!(
        "FROM {TEST_IMAGE}\nCOPY . /ctx\nCMD [\"sh\", \"-c\", \"ls /ctx; echo built-image-ran; exec sleep 300\"]\n"
    );
    let src = repo(
        tmp.path(),
        "ordered",
        &[
            ("compose.yaml", &compose),
            ("cache/Dockerfile", &dockerfile),
            ("cache/.dockerignore", "secret.txt\n"),
            ("cache/hello.txt", "hello\n"),
            ("cache/secret.txt", "do not ship\n"),
        ],
    );
    let id = format!("t-app-{}", suffix());
    let provider = DockerProvider::connect(DockerSettings {
        id: id.clone(),
        name: "apps test".into(),
        endpoint: None,
        tls: None,
        limits: Some(Resources {
            cpu_millis: 4000,
            memory_bytes: 4 << 30,
            gpus: 0,
            storage_bytes: 0,
        }),
        max_deployments: None,
        labels: Default::default(),
        node_id: "apps-4".into(),
        gpus: Vec::new(),
    })
    .await
    .expect("the local Docker engine");
    let providers: Vec<Arc<dyn Provider>> = vec![Arc::new(provider)];
    let n = node::start_with_store(
        config("apps-4", &tmp.path().join("ws")),
        ProviderSetup::Given(providers),
        Arc::new(iarnet::store::MemoryStore::new()),
    )
    .await
    .unwrap();
    let addr = n.http_addr().to_string();
    let name = format!("ordered-{}", suffix());
    let (code, app) = create_and_deploy(&addr, &name, &src, 120);
    let cleanup = || remove_from_engine(&name, "cache");
    if code != 200 {
        cleanup();
        panic!("deploy: {code} {app}");
    }
    let comp = |c: &str| -> Value {
        app["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == c)
            .cloned()
            .unwrap()
    };
    // The engine's container of a component, found by its labels.
    let container = |c: &str| {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=iarnet-app={name}"),
                "--filter",
                &format!("label=iarnet-component={c}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (init_start, init_end) = started_at(&container("init"));
    let (db_start, _) = started_at(&container("db"));
    let (api_start, _) = started_at(&container("api"));
    let result = std::panic::catch_unwind(|| {
        assert_eq!(comp("init")["exit_code"], 0, "{app}");
        assert_eq!(comp("db")["health"], "healthy", "{app}");
        assert!(
            init_end <= api_start,
            "api started before init finished: {init_end} > {api_start}"
        );
        // db becomes healthy 2 s after it starts: api waits for that.
        assert!(
            !api_start.is_empty() && db_start < api_start,
            "{db_start} / {api_start}"
        );
        let endpoint = &comp("api")["endpoints"]["db"];
        assert_eq!(endpoint["via"], "published", "{app}");
        let _ = init_start;
    });
    let cache_logs = logs(&container("cache"));
    let built = comp("cache")["image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api = container("api");
    let mut seen = String::new();
    for _ in 0..100 {
        seen = logs(&api);
        if seen.matches("db-ok").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, stopped) = http(
        &addr,
        "POST",
        &format!("/application/apps/{name}/stop"),
        Some(json!({})),
    );
    cleanup();
    n.shutdown().await;
    result.unwrap();
    assert_eq!(
        seen.matches("db-ok").count(),
        2,
        "api reaches db by its published address and by its alias: {seen}"
    );
    assert_eq!(code, 200, "{stopped}");
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert!(
        built.starts_with(&format!("iarnet-app/{name}-cache:")),
        "{built}"
    );
    assert!(cache_logs.contains("built-image-ran"), "{cache_logs}");
    assert!(cache_logs.contains("hello.txt"), "{cache_logs}");
    assert!(
        !cache_logs.contains("secret.txt"),
        ".dockerignore honoured: {cache_logs}"
    );
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iarnet"))
        .args(args)
        .output()
        .expect("the iarnet binary runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_creates_analyses_browses_and_removes_an_application() {
    let tmp = tempfile::tempdir().unwrap();
    let src = repo(
        tmp.path(),
        "clishop",
        &[
            ("compose.yaml", COMPOSE),
            ("web/Dockerfile", "FROM busybox\n"),
        ],
    );
    let n = start(
        "apps-5",
        &tmp.path().join("ws"),
        Arc::new(iarnet::store::MemoryStore::new()),
    )
    .await;
    let addr = n.local_addr().to_string();
    let url = format!("file://{}", src.display());
    let (ok, text) = cli(&["app", "create", "--addr", &addr, "clishop", &url]);
    assert!(ok, "{text}");
    assert!(text.contains("clishop (created)"), "{text}");
    let (ok, text) = cli(&["app", "analyze", "--addr", &addr, "clishop"]);
    assert!(ok, "{text}");
    assert!(text.contains("web -> api (http)"), "{text}");
    let (ok, text) = cli(&["app", "files", "--addr", &addr, "clishop", "web/Dockerfile"]);
    assert_eq!((ok, text.as_str()), (true, "FROM busybox\n"));
    let (ok, text) = cli(&["app", "ls", "--addr", &addr, "-o", "json"]);
    assert!(ok, "{text}");
    let list: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(list["applications"][0]["status"], "analyzed");
    let (ok, text) = cli(&["app", "deploy", "--addr", &addr, "clishop", "ghost"]);
    assert!(!ok && text.contains("`ghost` is not a component"), "{text}");
    let (ok, text) = cli(&["app", "rm", "--addr", &addr, "clishop"]);
    assert!(ok, "{text}");
    assert!(!tmp.path().join("ws/clishop").exists());
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_over_max_checkout_size_is_refused_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    // Random bytes: git cannot compress them below the limit.
    let big: String = (0..(3 << 20) / 16)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect();
    let src = repo(
        tmp.path(),
        "big",
        &[("blob.txt", &big), ("Procfile", "web: x\n")],
    );
    let mut cfg = config("apps-6", &tmp.path().join("ws"));
    cfg.max_checkout_bytes = 1 << 20;
    let n = node::start_with_store(
        cfg,
        ProviderSetup::Given(Vec::new()),
        Arc::new(iarnet::store::MemoryStore::new()),
    )
    .await
    .unwrap();
    let addr = n.http_addr().to_string();
    let (code, e) = http(
        &addr,
        "POST",
        "/application/apps",
        Some(json!({"name": "big", "git_url": format!("file://{}", src.display())})),
    );
    assert_eq!(code, 400, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("over this node's limit of 1 MiB"),
        "{e}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("ws"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    n.shutdown().await;
}
