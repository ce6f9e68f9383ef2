//! The Kubernetes provider's tests' common part: a provider over kube's
//! mocked API service, the scripted answers, and the cluster objects they
//! carry. Both `kubernetes_provider` and `kubernetes_watch` include it.
// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports)]

pub use std::collections::BTreeMap;
pub use std::future::Future;
pub use std::time::Duration;

pub use futures::StreamExt;
pub use http::{Method, Request, Response};
pub use iarnet::resource::kubernetes::{KubeSettings, KubernetesProvider};
pub use iarnet::resource::validate::deployment_id;
pub use iarnet::resource::{
    DeploySpec, DeployState, LogOptions, PortSpec, Progress, ProgressSink, Provider, ProviderKind,
    ResourceError, Resources,
};
pub use kube::client::Body;
pub use serde_json::{json, Value};
pub use tonic::Code;
pub use tower_test::mock;

pub use super::fake_kube::{
    decode, list, route, status, Reply, ReplyBody, Script, WatchMode, Watches,
};

pub type Handle = Script;

pub const NS: &str = "iarnet";
pub const PODS: &str = "/api/v1/namespaces/iarnet/pods";
pub const LIVE: &str = "status.phase!=Succeeded,status.phase!=Failed";
pub const OWN: &str = "iarnet.managed=true,iarnet.provider=k8s-a";
pub const H100: &str = "NVIDIA-H100-80GB-HBM3";
pub const MI: u64 = 1 << 20;
pub const GI: u64 = 1 << 30;

pub fn settings() -> KubeSettings {
    KubeSettings {
        id: "k8s-a".into(),
        name: "cluster a".into(),
        namespace: NS.into(),
        node_id: "node-a".into(),
        labels: BTreeMap::from([("region".to_string(), "eu-west".to_string())]),
        limits: None,
        max_deployments: None,
    }
}

pub fn provider_with(settings: KubeSettings) -> (KubernetesProvider, Handle) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<ReplyBody>>();
    let client = kube::Client::new(svc, "default");
    let selector = format!("iarnet.managed=true,iarnet.provider={}", settings.id);
    let script = route(handle, PODS, &selector);
    (KubernetesProvider::new(client, settings), script)
}

pub fn provider() -> (KubernetesProvider, Handle) {
    provider_with(settings())
}

// ---- requests and answers -------------------------------------------------

pub fn query_of(uri: &http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Takes the next request, checks its method, path and exact query, and
/// returns its JSON body (Null when empty) and the way to answer it.
pub async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
    query: &[(&str, &str)],
) -> (Value, Reply) {
    let (req, reply) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
        .unwrap_or_else(|| panic!("the client went away; expected {method} {path}"));
    let (parts, body) = req.into_parts();
    assert_eq!(
        (&parts.method, parts.uri.path()),
        (&method, path),
        "unexpected call {}",
        parts.uri
    );
    let want: BTreeMap<String, String> = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(query_of(&parts.uri), want, "query of {method} {path}");
    let bytes = body.collect_bytes().await.expect("request body");
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    (json, reply)
}

pub fn answer(reply: Reply, code: u16, body: &Value) {
    reply.send_response(
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(ReplyBody::from(serde_json::to_vec(body).expect("json")))
            .expect("response"),
    );
}

pub fn answer_text(reply: Reply, text: &str) {
    reply.send_response(
        Response::builder()
            .status(200)
            .body(ReplyBody::from(text.as_bytes().to_vec()))
            .expect("response"),
    );
}

/// Answers the census: nodes, then the live pods of all namespaces.
pub async fn census(handle: &mut Handle, nodes: Vec<Value>, pods: Vec<Value>) {
    let (_, r) = expect(handle, Method::GET, "/api/v1/nodes", &[("limit", "500")]).await;
    answer(r, 200, &list(nodes));
    let (_, r) = expect(
        handle,
        Method::GET,
        "/api/v1/pods",
        &[("fieldSelector", LIVE), ("limit", "500")],
    )
    .await;
    answer(r, 200, &list(pods));
}

/// Answers a listing of nodes as a namespace-scoped service account gets it.
pub async fn refuse_nodes(handle: &mut Handle) {
    let (_, r) = expect(handle, Method::GET, "/api/v1/nodes", &[("limit", "500")]).await;
    let forbidden = status(
        403,
        "Forbidden",
        "nodes is forbidden: User \"system:serviceaccount:iarnet:default\" cannot list resource \"nodes\"",
    );
    answer(r, 403, &forbidden);
}

/// Runs `action` while `scenario` answers its calls; a failed expectation
/// in the scenario fails the test right there.
pub async fn run<T>(scenario: impl Future<Output = ()>, action: impl Future<Output = T>) -> T {
    tokio::join!(scenario, action).1
}

/// After the provider is gone, no call is left unanswered or unexpected.
pub async fn no_more_calls(p: KubernetesProvider, mut handle: Handle) {
    drop(p);
    let next = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("the client shuts down");
    if let Some((req, _)) = next {
        panic!("unexpected call {} {}", req.method(), req.uri());
    }
}

// ---- fixtures ---------------------------------------------------------------

pub fn node(name: &str, ready: bool, alloc: &[(&str, &str)]) -> Value {
    let alloc: serde_json::Map<String, Value> = alloc
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": alloc,
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": if ready { "True" } else { "False" }}
            ]
        }
    })
}

pub fn gpu_node(name: &str, product: &str, gpus: &str) -> Value {
    let mut n = node(
        name,
        true,
        &[("cpu", "8"), ("memory", "7990Mi"), ("nvidia.com/gpu", gpus)],
    );
    n["metadata"]["labels"]["nvidia.com/gpu.product"] = json!(product);
    n["spec"]["taints"] =
        json!([{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]);
    n
}

pub fn requests(r: &[(&str, &str)]) -> Value {
    let m: serde_json::Map<String, Value> =
        r.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({"requests": m})
}

pub fn other_pod(ns: &str, name: &str, node: Option<&str>, r: &[(&str, &str)]) -> Value {
    let mut spec = json!({"containers": [{"name": "c", "image": "x", "resources": requests(r)}]});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    json!({"metadata": {"name": name, "namespace": ns}, "spec": spec,
           "status": {"phase": if node.is_some() { "Running" } else { "Pending" }}})
}

/// A pod as this provider made it, in `phase`.
pub fn own_pod(name: &str, provider: &str, phase: &str, r: &[(&str, &str)]) -> Value {
    json!({
        "metadata": {
            "name": name, "namespace": NS, "uid": format!("uid-{name}"),
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": {"iarnet.managed": "true", "iarnet.provider": provider,
                       "iarnet.node": "node-a", "iarnet.request": "req"},
            "annotations": {"iarnet.request": "req"}
        },
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "main", "image": "busybox:1.36", "resources": requests(r)}]},
        "status": {"phase": phase}
    })
}

pub fn spec(request_id: &str, cpu_millis: u64, memory_bytes: u64, gpus: u32) -> DeploySpec {
    DeploySpec {
        request_id: request_id.into(),
        image: "busybox:1.36".into(),
        resources: Resources {
            cpu_millis,
            memory_bytes,
            gpus,
            storage_bytes: 0,
        },
        ..Default::default()
    }
}

pub fn res(cpu_millis: u64, memory_bytes: u64, gpus: u32, storage_bytes: u64) -> Resources {
    Resources {
        cpu_millis,
        memory_bytes,
        gpus,
        storage_bytes,
    }
}

/// Two usable nodes (one with two H100s) and three that do not count.
pub fn cluster_nodes() -> Vec<Value> {
    let mut cordoned = node("n4", true, &[("cpu", "16"), ("memory", "64Gi")]);
    cordoned["spec"]["unschedulable"] = json!(true);
    let mut control = node("n5", true, &[("cpu", "4"), ("memory", "8Gi")]);
    control["spec"]["taints"] =
        json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
    vec![
        node(
            "n1",
            true,
            &[
                ("cpu", "3800m"),
                ("memory", "16Gi"),
                ("ephemeral-storage", "100Gi"),
                ("pods", "110"),
            ],
        ),
        gpu_node("n2", H100, "2"),
        node("n3", false, &[("cpu", "64"), ("memory", "256Gi")]),
        cordoned,
        control,
    ]
}

pub fn with_status(mut pod: Value, status: Value) -> Value {
    pod["status"] = status;
    pod
}
