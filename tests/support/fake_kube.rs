//! A small, stateful Kubernetes API for kube's client: one ready node and
//! the pods created through it, which a pretend kubelet starts at once.
//! It answers only the calls the Kubernetes provider makes (list nodes,
//! list, create, get, delete pods, read a pod's log), so the provider suite
//! can run the same contract against it as against the twin and Docker.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{json, Value};

#[derive(Default)]
struct State {
    /// Pods by namespace and name, as stored (with status and uid).
    pods: BTreeMap<(String, String), Value>,
    uids: u64,
}

/// The API server; clones share one state.
#[derive(Clone)]
pub struct FakeKube {
    state: Arc<Mutex<State>>,
    node: Value,
}

impl FakeKube {
    /// A cluster of one ready node that offers `cpu` and `memory`
    /// (Kubernetes quantities, e.g. "2" and "1Gi").
    pub fn new(cpu: &str, memory: &str) -> FakeKube {
        FakeKube {
            state: Arc::default(),
            node: json!({
                "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
                "spec": {},
                "status": {
                    "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True"}]
                }
            }),
        }
    }

    /// A kube client that talks to this server.
    pub fn client(&self, namespace: &str) -> kube::Client {
        kube::Client::new(self.clone(), namespace.to_string())
    }

    /// How many pods the cluster holds now.
    pub fn pod_count(&self) -> usize {
        self.state.lock().unwrap().pods.len()
    }

    fn handle(&self, method: &Method, path: &str, query: &str, body: &[u8]) -> (u16, Value) {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut state = self.state.lock().unwrap();
        match (method, parts.as_slice()) {
            (&Method::GET, ["api", "v1", "nodes"]) => (200, list(vec![self.node.clone()])),
            (&Method::GET, ["api", "v1", "pods"]) => {
                let live = state
                    .pods
                    .values()
                    .filter(|p| {
                        !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                    })
                    .cloned()
                    .collect();
                (200, list(live))
            }
            (&Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => {
                let selector = param(query, "labelSelector").unwrap_or_default();
                let items = state
                    .pods
                    .iter()
                    .filter(|((n, _), p)| n == ns && selects(&selector, p))
                    .map(|(_, p)| p.clone())
                    .collect();
                (200, list(items))
            }
            (&Method::POST, ["api", "v1", "namespaces", ns, "pods"]) => {
                let Ok(mut pod) = serde_json::from_slice::<Value>(body) else {
                    return (400, status(400, "BadRequest", "the body is not a pod"));
                };
                let name = pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let key = (ns.to_string(), name.clone());
                if state.pods.contains_key(&key) {
                    let msg = format!("pods \"{name}\" already exists");
                    return (409, status(409, "AlreadyExists", &msg));
                }
                state.uids += 1;
                pod["metadata"]["namespace"] = json!(ns);
                pod["metadata"]["uid"] = json!(format!("uid-{}", state.uids));
                pod["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                pod["spec"]["nodeName"] = json!("node-1");
                pod["status"] = json!({"phase": "Running", "startTime": "2026-01-01T00:00:01Z"});
                state.pods.insert(key, pod.clone());
                (201, pod)
            }
            (&Method::GET, ["api", "v1", "namespaces", ns, "pods", name]) => {
                match state.pods.get(&(ns.to_string(), name.to_string())) {
                    Some(p) => (200, p.clone()),
                    None => not_found(name),
                }
            }
            (&Method::DELETE, ["api", "v1", "namespaces", ns, "pods", name]) => {
                match state.pods.remove(&(ns.to_string(), name.to_string())) {
                    Some(p) => (200, p),
                    None => not_found(name),
                }
            }
            (&Method::GET, ["api", "v1", "namespaces", ns, "pods", name, "log"]) => {
                match state.pods.get(&(ns.to_string(), name.to_string())) {
                    Some(_) => (200, json!(format!("{name} started\n"))),
                    None => not_found(name),
                }
            }
            _ => (
                404,
                status(404, "NotFound", &format!("no route {method} {path}")),
            ),
        }
    }
}

impl tower::Service<Request<Body>> for FakeKube {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let path = parts.uri.path().to_string();
            let query = parts.uri.query().unwrap_or("").to_string();
            let (code, value) = api.handle(&parts.method, &path, &query, &bytes);
            // Logs are plain text; everything else is JSON.
            let bytes = match (&value, path.ends_with("/log") && code == 200) {
                (Value::String(text), true) => text.clone().into_bytes(),
                _ => serde_json::to_vec(&value).expect("json"),
            };
            Ok(Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(bytes))
                .expect("response"))
        })
    }
}

pub fn list(items: Vec<Value>) -> Value {
    json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
}

pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn not_found(name: &str) -> (u16, Value) {
    (
        404,
        status(404, "NotFound", &format!("pods \"{name}\" not found")),
    )
}

/// One query parameter, percent-decoded.
fn param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| decode(v))
    })
}

/// Percent-decodes a query value.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a pod's labels match an equality selector (`a=b,c=d`).
fn selects(selector: &str, pod: &Value) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        pod["metadata"]["labels"][k].as_str() == Some(v)
    })
}
