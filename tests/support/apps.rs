//! Helpers for application tests: repositories made with the `git`
//! program, and plain HTTP/1.1 calls to a node's API.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "iarnet tests")
        .env("GIT_AUTHOR_EMAIL", "tests@iarnet.invalid")
        .env("GIT_COMMITTER_NAME", "iarnet tests")
        .env("GIT_COMMITTER_EMAIL", "tests@iarnet.invalid")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with `files` committed on branch `main`; returns its path.
pub fn repo(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    commit(&dir, files, "first");
    dir
}

pub fn commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

pub fn http(addr: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).expect("HTTP API reachable");
    s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let v = serde_json::from_str(rest).unwrap_or(Value::String(rest.to_string()));
    (status, v)
}

/// Creates application `name` from the repository at `src` (asserting 201),
/// then deploys all its components: the deploy's status and answer.
pub fn create_and_deploy(addr: &str, name: &str, src: &Path, wait_seconds: u64) -> (u16, Value) {
    let (code, e) = http(
        addr,
        "POST",
        "/application/apps",
        Some(serde_json::json!({"name": name, "git_url": format!("file://{}", src.display())})),
    );
    assert_eq!(code, 201, "{e}");
    http(
        addr,
        "POST",
        &format!("/application/apps/{name}/deploy-components"),
        Some(serde_json::json!({"components": [], "wait_seconds": wait_seconds})),
    )
}

/// Removes what application `name` left on the engine: its containers,
/// its network and the image built for `built` (a component).
pub fn remove_from_engine(name: &str, built: &str) {
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!("docker rm -f $(docker ps -aq --filter label=iarnet-app={name}) >/dev/null 2>&1; docker network rm iarnet-app-{name} >/dev/null 2>&1; docker rmi $(docker images -q 'iarnet-app/{name}-{built}') >/dev/null 2>&1"),
        ])
        .status();
}
