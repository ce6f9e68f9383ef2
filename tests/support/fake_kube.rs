//! A small, stateful Kubernetes API for kube's client: one ready node and
//! the pods created through it, which a pretend kubelet starts at once.
//! It answers only the calls the Kubernetes provider makes (list nodes,
//! list, watch, create, get, delete pods, read a pod's log), so the
//! provider suite can run the same contract against it as against the twin
//! and Docker.
//!
//! Also the pieces the scripted tests need beside tower-test's mock: a
//! response body that can stream (a watch), and [`route`], which answers
//! the provider's own pod watch aside from the ordered script.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// A response body: all at once, or chunks from a channel until its
/// sender goes (a watch stream).
pub enum ReplyBody {
    Once(Option<Bytes>),
    Stream(mpsc::UnboundedReceiver<Bytes>),
}

impl From<Vec<u8>> for ReplyBody {
    fn from(bytes: Vec<u8>) -> ReplyBody {
        ReplyBody::Once((!bytes.is_empty()).then(|| Bytes::from(bytes)))
    }
}

impl http_body::Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ReplyBody::Once(bytes) => {
                Poll::Ready(bytes.take().map(|b| Ok(http_body::Frame::data(b))))
            }
            ReplyBody::Stream(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(http_body::Frame::data(b)))),
        }
    }
}

/// One watch event as the API server writes it: a JSON line.
pub fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

#[derive(Default)]
struct State {
    /// Pods by namespace and name, as stored (with status and uid).
    pods: BTreeMap<(String, String), Value>,
    uids: u64,
    /// The latest resourceVersion handed out.
    version: u64,
    /// Every change: version, event type, namespace, the pod after it.
    events: Vec<(u64, &'static str, String, Value)>,
    /// Open watches: namespace, label selector, where their lines go.
    watches: Vec<(String, String, mpsc::UnboundedSender<Bytes>)>,
}

impl State {
    /// Records a change of `pod` in `ns` and tells the open watches.
    fn changed(&mut self, kind: &'static str, ns: &str, pod: &mut Value) {
        self.version += 1;
        pod["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.events
            .push((self.version, kind, ns.to_string(), pod.clone()));
        let line = watch_line(kind, pod);
        self.watches.retain(|(n, selector, tx)| {
            n != ns || !selects(selector, pod) || tx.send(line.clone()).is_ok()
        });
    }

    /// A watch of `ns` from `since`: the changes after it, then each new one.
    fn watch(&mut self, ns: &str, selector: &str, since: u64) -> ReplyBody {
        let (tx, rx) = mpsc::unbounded_channel();
        for (_, kind, _, pod) in self
            .events
            .iter()
            .filter(|(v, _, n, pod)| *v > since && n == ns && selects(selector, pod))
        {
            let _ = tx.send(watch_line(kind, pod));
        }
        self.watches
            .push((ns.to_string(), selector.to_string(), tx));
        ReplyBody::Stream(rx)
    }
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
                (200, versioned(list(live), state.version))
            }
            (&Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => {
                let selector = param(query, "labelSelector").unwrap_or_default();
                let items = state
                    .pods
                    .iter()
                    .filter(|((n, _), p)| n == ns && selects(&selector, p))
                    .map(|(_, p)| p.clone())
                    .collect();
                (200, versioned(list(items), state.version))
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
                state.changed("ADDED", ns, &mut pod);
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
                    Some(mut p) => {
                        state.changed("DELETED", ns, &mut p);
                        (200, p)
                    }
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
    type Response = Response<ReplyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ReplyBody>, Infallible>> + Send>>;

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
            if param(&query, "watch").as_deref() == Some("true") {
                let ns = path
                    .strip_prefix("/api/v1/namespaces/")
                    .and_then(|rest| rest.strip_suffix("/pods"))
                    .unwrap_or_default();
                let selector = param(&query, "labelSelector").unwrap_or_default();
                let since = param(&query, "resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let body = api.state.lock().unwrap().watch(ns, &selector, since);
                return Ok(Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(body)
                    .expect("response"));
            }
            let (code, value) = api.handle(&parts.method, &path, &query, &bytes);
            // Logs are plain text; everything else is JSON.
            let bytes = match (&value, path.ends_with("/log") && code == 200) {
                (Value::String(text), true) => text.clone().into_bytes(),
                _ => serde_json::to_vec(&value).expect("json"),
            };
            Ok(Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(ReplyBody::from(bytes))
                .expect("response"))
        })
    }
}

pub fn list(items: Vec<Value>) -> Value {
    json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// A listing as of `version`.
fn versioned(mut list: Value, version: u64) -> Value {
    list["metadata"]["resourceVersion"] = json!(version.to_string());
    list
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

// ---- the scripted mock's router -------------------------------------------------

pub type MockHandle = tower_test::mock::Handle<Request<Body>, Response<ReplyBody>>;
pub type Reply = tower_test::mock::SendResponse<Response<ReplyBody>>;

/// How the pod watch's requests (its list and its watches) are answered.
#[derive(Clone, Debug)]
pub enum WatchMode {
    /// Kept unanswered: the watch never syncs.
    Hold,
    /// The list holds these pods; a watch streams what the test pushes.
    Serve(Vec<Value>),
    /// Refused with this status code.
    Refuse(u16),
}

struct Watching {
    mode: WatchMode,
    /// Requests kept while holding: whether a watch (else the list), reply.
    held: Vec<(bool, Reply)>,
    lists: usize,
    watches: usize,
    /// Where pushed lines go: the latest watch stream.
    feed: Option<mpsc::UnboundedSender<Bytes>>,
    /// Lines pushed while no watch stream was open.
    backlog: Vec<Bytes>,
}

impl Watching {
    fn take(&mut self, watch: bool, reply: Reply) {
        if watch {
            self.watches += 1;
        } else {
            self.lists += 1;
        }
        self.answer(watch, reply);
    }

    fn answer(&mut self, watch: bool, reply: Reply) {
        match self.mode.clone() {
            WatchMode::Hold => self.held.push((watch, reply)),
            WatchMode::Refuse(code) => {
                let reason = if code == 403 {
                    "Forbidden"
                } else {
                    "InternalError"
                };
                let body = status(code, reason, "pods is forbidden: cannot watch");
                send(
                    reply,
                    code,
                    ReplyBody::from(serde_json::to_vec(&body).expect("json")),
                );
            }
            WatchMode::Serve(pods) if !watch => {
                let body = serde_json::to_vec(&list(pods)).expect("json");
                send(reply, 200, ReplyBody::from(body));
            }
            WatchMode::Serve(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                for line in self.backlog.drain(..) {
                    let _ = tx.send(line);
                }
                self.feed = Some(tx);
                send(reply, 200, ReplyBody::Stream(rx));
            }
        }
    }
}

fn send(reply: Reply, code: u16, body: ReplyBody) {
    reply.send_response(
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(body)
            .expect("response"),
    );
}

/// The test's side of the provider's pod watch.
#[derive(Clone)]
pub struct Watches(Arc<Mutex<Watching>>);

impl Watches {
    /// Answers the pod watch's requests (held ones too) from now on.
    pub fn set(&self, mode: WatchMode) {
        let mut w = self.0.lock().unwrap();
        w.mode = mode;
        for (watch, reply) in std::mem::take(&mut w.held) {
            w.answer(watch, reply);
        }
    }

    /// Sends a watch event (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`,
    /// `ERROR`) on the open watch stream, or on the next one.
    pub fn push(&self, kind: &str, object: &Value) {
        let line = watch_line(kind, object);
        let mut w = self.0.lock().unwrap();
        let line = match &w.feed {
            Some(tx) => match tx.send(line) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => line,
        };
        w.feed = None;
        w.backlog.push(line);
    }

    /// How many lists and watches of its pods the provider asked for.
    pub fn requests(&self) -> (usize, usize) {
        let w = self.0.lock().unwrap();
        (w.lists, w.watches)
    }

    /// Waits until the open watch stream's reader is gone (the provider
    /// stopped watching).
    pub async fn closed(&self) {
        let tx = self.0.lock().unwrap().feed.clone();
        tx.expect("a watch stream was opened").closed().await;
    }
}

/// The calls of the ordered script: all but the provider's pod watch.
pub struct Script {
    rx: mpsc::UnboundedReceiver<(Request<Body>, Reply)>,
    watches: Watches,
}

impl Script {
    /// The next call; None once the client is gone.
    pub async fn next_request(&mut self) -> Option<(Request<Body>, Reply)> {
        self.rx.recv().await
    }

    /// The pod watch's side, held until told otherwise.
    pub fn watches(&self) -> &Watches {
        &self.watches
    }
}

/// Splits the mock's calls: GETs of `pods_path` with `selector` that are
/// a watch (`watch=true`) or the watch's list (`resourceVersion=0`) go to
/// the returned [`Watches`]; every other call, in order, to the [`Script`].
pub fn route(mut handle: MockHandle, pods_path: &str, selector: &str) -> Script {
    let watches = Watches(Arc::new(Mutex::new(Watching {
        mode: WatchMode::Hold,
        held: Vec::new(),
        lists: 0,
        watches: 0,
        feed: None,
        backlog: Vec::new(),
    })));
    let (tx, rx) = mpsc::unbounded_channel();
    let side = watches.clone();
    let (pods_path, selector) = (pods_path.to_string(), selector.to_string());
    tokio::spawn(async move {
        while let Some((req, reply)) = handle.next_request().await {
            let query = req.uri().query().unwrap_or("");
            let own = req.method() == Method::GET
                && req.uri().path() == pods_path
                && param(query, "labelSelector").as_deref() == Some(selector.as_str());
            let watch = param(query, "watch").as_deref() == Some("true");
            let list = param(query, "resourceVersion").as_deref() == Some("0");
            if own && (watch || list) {
                side.0.lock().unwrap().take(watch, reply);
            } else if tx.send((req, reply)).is_err() {
                return;
            }
        }
    });
    Script { rx, watches }
}
