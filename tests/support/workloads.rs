//! Workloads of a container-mesh test as the host sees them: grpcurl calls
//! to a node, the deploy body of a test workload, and the containers the
//! engine runs for a request or a service (counted by label).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{json, Value};

use crate::docker_support::TEST_IMAGE;
use crate::grpcurl_support::grpcurl;
use crate::node_image::{docker, docker_ok, Run, RUN_LABEL};

/// A grpcurl call from the host: the messages it printed, or its stderr.
pub fn call(addr: &str, method: &str, body: Option<&Value>) -> Result<Vec<Value>, String> {
    let mut cmd = Command::new(grpcurl());
    cmd.args(["-plaintext", "-max-time", "60"]);
    if let Some(body) = body {
        cmd.arg("-d").arg(body.to_string());
    }
    let out = cmd.arg(addr).arg(method).output().expect("grpcurl runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("grpcurl printed unparsable JSON ({e}):\n{text}"))
}

#[track_caller]
pub fn call_ok(addr: &str, method: &str, body: Option<&Value>) -> Vec<Value> {
    call(addr, method, body).unwrap_or_else(|e| panic!("grpcurl {method} on {addr} failed:\n{e}"))
}

pub fn deploy_body(run: &Run, request_id: &str) -> Value {
    json!({
        "request_id": request_id,
        "image": TEST_IMAGE,
        "command": ["sh", "-c"],
        "args": ["echo hello-from-iarnet; sleep 300"],
        "cpu": "100m",
        "memory": "32Mi",
        "labels": { RUN_LABEL: run.prefix },
    })
}

/// The placement and deployment events of a Deploy stream.
pub fn placed(events: &[Value]) -> (Value, Value) {
    let find = |key: &str| {
        events
            .iter()
            .find_map(|e| e.get(key).cloned())
            .unwrap_or_else(|| panic!("no {key} event in the Deploy stream: {events:?}"))
    };
    (find("placement"), find("deployment"))
}

/// Workload containers of a request, as the engine lists them.
pub fn workloads(request_id: &str) -> Vec<String> {
    docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=iarnet.request={request_id}"),
    ])
    .split_whitespace()
    .map(String::from)
    .collect()
}

/// A running container of a service replica, from its labels.
#[derive(Debug)]
pub struct ReplicaCopy {
    pub node: String,
    pub attempt: String,
}

/// The running containers of service `svc` by replica index.
pub fn replica_copies(svc: &str) -> BTreeMap<String, Vec<ReplicaCopy>> {
    let ids = docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=iarnet.service={svc}"),
    ]);
    let mut copies: BTreeMap<String, Vec<ReplicaCopy>> = BTreeMap::new();
    for id in ids.split_whitespace() {
        let Ok(line) = docker(&[
            "inspect",
            "-f",
            r#"{{.State.Running}} {{index .Config.Labels "iarnet.replica"}} {{index .Config.Labels "iarnet.node"}} {{index .Config.Labels "iarnet.attempt"}}"#,
            id,
        ]) else {
            continue; // removed meanwhile
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let ["true", replica, node, attempt] = fields[..] {
            copies
                .entry(replica.to_string())
                .or_default()
                .push(ReplicaCopy {
                    node: node.to_string(),
                    attempt: attempt.to_string(),
                });
        }
    }
    copies
}

/// Every container of service `svc`, running or not.
pub fn workloads_of_service(svc: &str) -> Vec<String> {
    docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=iarnet.service={svc}"),
    ])
    .split_whitespace()
    .map(String::from)
    .collect()
}

pub fn str_field<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}
