//! The dashboard of real `iarnet` processes: every page over HTTP (status,
//! security headers, escaping of hostile names, CSRF and login), its live
//! stream, and the whole of it in headless Chromium (tests/browser).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[path = "support/apps.rs"]
mod apps_support;
#[path = "support/docker.rs"]
mod docker_support;

use docker_support::{ensure_test_image, Cleanup, TEST_IMAGE};

const TOKEN: &str = "browser-token-0123456789abcdef";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

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
    /// The shipped config on loopback ports (its provider: this machine's
    /// Docker engine), with `env` on top.
    fn start(seeds: &[&str], env: &[(&str, &str)]) -> Node {
        let data = tempfile::tempdir().expect("temp dir");
        let grpc = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iarnet"));
        cmd.arg("--config")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml"))
            .args(["--peer-listen-addr", &grpc, "--listen-addr", &http])
            .args(["--mode", "standalone"])
            .arg("--data-dir")
            .arg(data.path())
            .env("IARNET_MDNS", "off")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !seeds.is_empty() {
            cmd.args(["--initial-peers", &seeds.join(",")]);
        }
        let child = cmd.spawn().expect("the iarnet binary starts");
        let node = Node {
            child,
            grpc,
            http,
            _data: data,
        };
        wait_until("the node answers /healthz", || {
            get(&node.http, "/healthz", None)
                .ok()
                .filter(|r| r.0 == 200)
        });
        node
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

/// One HTTP/1.1 exchange: (status, headers, body).
fn exchange(addr: &str, head: &str, body: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{head}Host: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (h, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = h
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, h.to_lowercase(), rest.to_string()))
}

fn get(addr: &str, path: &str, cookie: Option<&str>) -> std::io::Result<(u16, String, String)> {
    let c = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    exchange(addr, &format!("GET {path} HTTP/1.1\r\n{c}"), "")
}

fn post_form(addr: &str, path: &str, cookie: &str, form: &[(&str, &str)]) -> (u16, String, String) {
    let body = serde_urlencoded::to_string(form).expect("form");
    exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        ),
        &body,
    )
    .expect("the node answers")
}

fn post_json(addr: &str, path: &str, json: &str) -> (u16, String) {
    let (s, _, b) = exchange(
        addr,
        &format!("POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Bearer {TOKEN}\r\n"),
        json,
    )
    .expect("the node answers");
    (s, b)
}

/// The session cookie a response sets.
fn cookie_of(headers: &str) -> String {
    headers
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string()
}

/// The CSRF token a page's forms carry.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"_csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 20;
    page[at..at + 64].to_string()
}

#[test]
fn pages_render_escaped_behind_login_and_csrf() {
    let token_env = format!("ops:{TOKEN}");
    let node = Node::start(&[], &[("IARNET_AUTH_TOKENS", &token_env)]);
    let a = &node.http;

    // Without a session: a page goes to the login form; a form gets 401.
    let (s, h, _) = get(a, "/ui/resources", None).unwrap();
    assert_eq!(s, 303);
    assert!(
        h.contains("location: /ui/login?next=%2fui%2fresources"),
        "{h}"
    );
    let (s, h, body) = get(a, "/ui/login", None).unwrap();
    assert_eq!(s, 200);
    assert!(
        h.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{h}"
    );
    assert!(h.contains("x-frame-options: deny"));
    assert!(!body.contains("<script>") && body.contains("<script src=\"/ui/assets/htmx.min.js"));
    let (s, _, _) = post_form(a, "/ui/deploy", "", &[("image", "x")]);
    assert_eq!(s, 401);

    // A wrong token is refused; the right one starts an HttpOnly session.
    let (s, _, body) = post_form(
        a,
        "/ui/login",
        "",
        &[("token", "nope-nope-nope-nope"), ("next", "/ui/mesh")],
    );
    assert_eq!(s, 401);
    assert!(body.contains("token: not accepted by this node"));
    assert!(
        !body.contains("nope-nope"),
        "a typed secret is never rendered back"
    );
    let (s, h, _) = post_form(
        a,
        "/ui/login",
        "",
        &[("token", TOKEN), ("next", "https://evil.example/")],
    );
    assert_eq!(s, 303);
    assert!(
        h.contains("location: /ui/\r") || h.ends_with("location: /ui/"),
        "only a dashboard path is followed: {h}"
    );
    assert!(
        h.contains("httponly") && h.contains("samesite=strict"),
        "{h}"
    );
    let cookie = cookie_of(&h);

    // A provider with hostile names and labels, registered over the API.
    let (s, b) = post_json(
        a,
        "/resource/providers",
        r#"{"type":"docker","name":"evil-name","endpoint":"unix:///var/run/docker.sock","labels":{"zone":"<script>alert(1)</script>","description":"<b>bold</b>"}}"#,
    );
    assert_eq!(s, 201, "{b}");
    // A swarm group and a pool whose description is markup.
    let (s, b) = post_json(a, "/swarm/groups", r#"{"name":"lab","max_members":3}"#);
    assert_eq!(s, 201, "{b}");
    let (s, b) = post_json(
        a,
        "/swarm/pools",
        r#"{"name":"gpus","selector":{"zone":"x"},"description":"<script>alert(2)</script>"}"#,
    );
    assert!(s == 200 || s == 201, "{s} {b}");

    for path in [
        "/ui/",
        "/ui/resources",
        "/ui/mesh",
        "/ui/deployments",
        "/ui/deploy",
        "/ui/apps",
    ] {
        let (s, h, body) = get(a, path, Some(&cookie)).unwrap();
        assert_eq!(s, 200, "{path}: {body}");
        assert!(h.contains("content-type: text/html"), "{path}");
        assert!(h.contains("cache-control: no-store"), "{path}");
        assert!(body.contains("signed in as <strong>ops</strong>"), "{path}");
        assert!(
            !body.contains("<script>alert"),
            "{path} renders a label as markup"
        );
        assert!(!body.contains(TOKEN), "{path} shows the token");
    }
    let (_, _, body) = get(a, "/ui/resources", Some(&cookie)).unwrap();
    assert!(
        body.contains("zone=&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );
    assert!(body.contains("description=&lt;b&gt;bold&lt;/b&gt;"));
    // The mesh page lists the group with its leader (this node) and the pool.
    let (_, _, body) = get(a, "/ui/mesh", Some(&cookie)).unwrap();
    assert!(
        body.contains("Swarm groups") && body.contains(">lab<"),
        "{body}"
    );
    assert!(body.contains("1 of 3"), "{body}");
    assert!(
        body.contains(">gpus<") && body.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "{body}"
    );
    let (s, _, _) = get(a, "/ui/deployments/iarnet-nope", Some(&cookie)).unwrap();
    assert_eq!(s, 404);

    // Forms need the session's CSRF token.
    let (_, _, page) = get(a, "/ui/mesh", Some(&cookie)).unwrap();
    let csrf = csrf_of(&page);
    let (s, _, body) = post_form(a, "/ui/mesh", &cookie, &[("address", "127.0.0.1:1")]);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("CSRF"));
    // A bad address: the form again, its field marked, the node unchanged.
    let (s, _, body) = post_form(
        a,
        "/ui/mesh",
        &cookie,
        &[("_csrf", &csrf), ("address", "no port")],
    );
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("id=\"f-address-error\""), "{body}");
    assert!(body.contains("aria-invalid=\"true\""));
    // A bad deploy names its field, with the status the API gives.
    let (s, _, body) = post_form(
        a,
        "/ui/deploy",
        &cookie,
        &[("_csrf", &csrf), ("image", ""), ("cpu", "lots")],
    );
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("field-error"), "{body}");
    let (s, _, body) = post_form(
        a,
        "/ui/deploy",
        &cookie,
        &[("_csrf", &csrf), ("image", "x"), ("command", "sh -c 'open")],
    );
    assert_eq!(s, 422);
    assert!(body.contains("quote is not closed"));
    // A form from another site is refused before anything happens.
    let (s, _, _) = exchange(
        a,
        &format!("POST /ui/logout HTTP/1.1\r\nCookie: {cookie}\r\nSec-Fetch-Site: cross-site\r\nContent-Type: application/x-www-form-urlencoded\r\n"),
        &format!("_csrf={csrf}"),
    )
    .unwrap();
    assert_eq!(s, 403);

    // The overview's stream sends its fragments.
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /ui/events?page=overview HTTP/1.1\r\nHost: {a}\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let mut lines = BufReader::new(s).lines();
    let mut events = Vec::new();
    while events.len() < 3 {
        let line = lines
            .next()
            .expect("the stream stays open")
            .expect("a line");
        if let Some(e) = line.strip_prefix("event: ") {
            events.push(e.to_string());
        }
    }
    assert_eq!(events, ["cards", "charts", "events"]);
    let (s, _, _) = get(a, "/ui/events?page=nonsense", Some(&cookie)).unwrap();
    assert_eq!(s, 400);

    // Logging out ends the session.
    let (s, h, _) = post_form(a, "/ui/logout", &cookie, &[("_csrf", &csrf)]);
    assert_eq!(s, 303);
    assert!(h.contains("max-age=0"));
    let (s, _, _) = get(a, "/ui/", Some(&cookie)).unwrap();
    assert_eq!(s, 303);

    // The static files are served with their types.
    let (s, h, body) = get(a, "/ui/assets/htmx.min.js", None).unwrap();
    assert_eq!(s, 200);
    assert!(h.contains("content-type: text/javascript"));
    assert!(body.contains("htmx"));
    let (s, _, _) = get(a, "/ui/assets/nope.js", None).unwrap();
    assert_eq!(s, 404);
}

/// The id of a node's own Docker provider.
fn provider_id(n: &Node) -> String {
    let (_, _, body) = exchange(
        &n.http,
        &format!("GET /resource/providers HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"),
        "",
    )
    .expect("the node answers");
    let v: serde_json::Value = serde_json::from_str(&body).expect("providers JSON");
    v["providers"][0]["id"]
        .as_str()
        .expect("a provider")
        .to_string()
}

/// Chromium and chromedriver from Debian (installed here when missing and
/// this is root, as `.ci/run` does), Selenium from PyPI at pinned versions.
fn browser_env() -> (PathBuf, PathBuf) {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    let have = |b: &str| Path::new(b).exists();
    if !have("/usr/bin/chromium") || !have("/usr/bin/chromedriver") {
        let ok = Command::new("sh")
            .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "this test needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver");
    }
    let py = PY
        .get_or_init(|| {
            let req = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/requirements.txt");
            let digest = std::fs::read(&req).expect("requirements.txt").len();
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-py-{digest}"));
            if dir.join("selenium").is_dir() {
                return dir;
            }
            let staging = dir.with_extension(format!("tmp{}", std::process::id()));
            let status = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--target",
                ])
                .arg(&staging)
                .arg("-r")
                .arg(&req)
                .status()
                .expect("python3 -m pip runs");
            assert!(
                status.success(),
                "pip could not install tests/browser/requirements.txt"
            );
            let _ = std::fs::rename(&staging, &dir);
            dir
        })
        .clone();
    let axe = py.join("axe_playwright_python/axe.min.js");
    assert!(axe.is_file(), "axe.min.js missing at {}", axe.display());
    (py, axe)
}

#[test]
fn dashboard_in_a_real_browser() {
    ensure_test_image();
    let (py, axe) = browser_env();
    let token_env = format!("ops:{TOKEN}");
    let a = Node::start(&[], &[("IARNET_AUTH_TOKENS", &token_env)]);
    let b = Node::start(&[&a.grpc], &[]);
    wait_until("node B sees node A", || {
        get(&b.http, "/peer/nodes", None)
            .ok()
            .filter(|(_, _, body)| body.matches("\"state\":\"alive\"").count() >= 2)
    });
    // What it deploys is gone at the end, even after a failure half-way.
    let _cleanup: Vec<Cleanup> = [&a, &b].iter().map(|n| Cleanup(provider_id(n))).collect();
    // An application to import: two services, one depending on the other.
    let repos = tempfile::tempdir().expect("temp dir");
    let app = apps_support::repo(
        repos.path(),
        "shop",
        &[(
            "docker-compose.yml",
            "services:\n  db:\n    image: iarnet-test/busybox:1\n  web:\n    image: iarnet-test/busybox:1\n    depends_on: [db]\n    ports: [\"8080:80\"]\n",
        )],
    );
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard_test.py");
    let out = Command::new("python3")
        .arg(&script)
        .env("PYTHONPATH", &py)
        .env("IARNET_A", format!("http://{}", a.http))
        .env("IARNET_B", format!("http://{}", b.http))
        .env("IARNET_TOKEN", TOKEN)
        .env("IARNET_IMAGE", TEST_IMAGE)
        .env("IARNET_APP_URL", format!("file://{}", app.display()))
        .env("IARNET_SHOTS", &shots)
        .env("AXE_JS", &axe)
        .output()
        .expect("python3 runs the browser script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser test failed:\n{text}");
    println!("{text}");
}
