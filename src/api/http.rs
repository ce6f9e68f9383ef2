//! The HTTP API on `listen_addr`: the JSON routes operators and dashboards
//! poll (`/resource/*`, `/peer/nodes`), Prometheus `/metrics`, and the
//! `/healthz` and `/readyz` probes. Every route calls the same code as its
//! gRPC twin, so the two surfaces cannot disagree.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request};

use crate::api::admin::AdminApi;
use crate::api::resources::ResourceApi;
use crate::metrics::Snapshot;
use crate::node::Shared;
use crate::placement::Manager;
use crate::proto::admin::admin_server::Admin;
use crate::proto::admin::{AddPeerRequest, ListPeersRequest};
use crate::proto::resource as pb;
use crate::proto::resource::resource_service_server::ResourceService;
use crate::security::{Caller, Surface};

/// Largest request body accepted (provider registrations are a few hundred bytes).
const MAX_BODY: usize = 64 << 10;

pub struct HttpApi {
    shared: Arc<Shared>,
    manager: Arc<Manager>,
    admin: AdminApi,
    resources: ResourceApi,
    /// Cancelled when the node starts leaving: readiness fails first.
    draining: CancellationToken,
}

impl HttpApi {
    pub fn new(
        shared: Arc<Shared>,
        manager: Arc<Manager>,
        resources: ResourceApi,
        draining: CancellationToken,
    ) -> Self {
        HttpApi {
            admin: AdminApi::new(shared.clone()),
            resources,
            shared,
            manager,
            draining,
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/resource/capacity", get(capacity))
            .route("/resource/providers", get(providers).post(register))
            .route("/peer/nodes", get(nodes).post(add_node))
            .fallback(not_found)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self)
    }

    /// The numbers behind `/metrics`, read at the moment of the scrape.
    pub async fn snapshot(&self) -> Snapshot {
        let mut peers: BTreeMap<String, u64> = ["alive", "suspect", "dead", "left"]
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        for e in self.shared.mesh().view().iter() {
            *peers.entry(e.status.as_str().to_string()).or_default() += 1;
        }
        let mut providers: BTreeMap<String, u64> = ["internal", "external", "discovered"]
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        for c in self.manager.candidates() {
            *providers.entry(c.tier.as_str().to_string()).or_default() += 1;
        }
        let mut deployments: BTreeMap<String, u64> = [
            "pending", "pulling", "starting", "running", "exited", "failed", "stopped",
        ]
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
        for d in self.manager.list_local().await {
            *deployments.entry(d.state().name().to_string()).or_default() += 1;
        }
        Snapshot {
            gossip: self.shared.stats.snapshot(),
            peers: peers.into_iter().collect(),
            providers: providers.into_iter().collect(),
            deployments: deployments.into_iter().collect(),
            placements: self.manager.placement_counts(),
            process: crate::metrics::process::ProcessStats::read(),
        }
    }
}

type Api = State<Arc<HttpApi>>;

/// An error body: `{"error": "...", "code": "invalid_argument"}`.
struct ApiError(tonic::Status, Option<StatusCode>);

impl ApiError {
    /// For routes that reach an address the caller gave: that address being
    /// down is a bad gateway, not this node being unavailable.
    fn upstream(s: tonic::Status) -> Self {
        let http = match s.code() {
            Code::Unavailable | Code::DeadlineExceeded => Some(StatusCode::BAD_GATEWAY),
            // The remote system refused its credentials, not the HTTP caller.
            Code::PermissionDenied | Code::Unauthenticated => Some(StatusCode::BAD_GATEWAY),
            _ => None,
        };
        ApiError(s, http)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.1.unwrap_or(match self.0.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                StatusCode::BAD_REQUEST
            }
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        });
        let body = json!({
            "error": self.0.message(),
            "code": crate::metrics::code_label(self.0.code()),
        });
        (status, Json(body)).into_response()
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        ApiError(s, None)
    }
}

fn bad_request(msg: String) -> ApiError {
    ApiError(tonic::Status::invalid_argument(msg), None)
}

/// Body parse failures name the problem (serde names the field): 400, or
/// 413 for a body over the limit and 415 for one that is not JSON.
fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    parsed.map(|Json(v)| v).map_err(|e| {
        let status = match e.status() {
            s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(
            tonic::Status::invalid_argument(format!("invalid JSON body: {}", e.body_text())),
            Some(status),
        )
    })
}

/// The same rules as the gRPC port: probes and metrics are the health
/// surface, the rest is management (tokens, rate limits).
async fn guard(
    State(api): Api,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let surface = match req.uri().path() {
        "/healthz" | "/readyz" | "/metrics" => Surface::Health,
        _ => Surface::Management,
    };
    let remote = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    match api
        .shared
        .security
        .admit_surface(surface, remote, None, auth.as_deref())
    {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(s) => ApiError(s, None).into_response(),
    }
}

/// A gRPC request carrying the HTTP caller, for the audit log.
fn as_caller<T>(caller: Option<Extension<Caller>>, body: T) -> Request<T> {
    let mut r = Request::new(body);
    if let Some(Extension(c)) = caller {
        r.extensions_mut().insert(c);
    }
    r
}

async fn not_found() -> ApiError {
    ApiError(
        tonic::Status::not_found(
            "no such route: see /resource/capacity, /resource/providers, /peer/nodes, /metrics, /healthz, /readyz",
        ),
        None,
    )
}

async fn healthz(State(api): Api) -> Response {
    match api.shared.check_running() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(s) => ApiError::from(s).into_response(),
    }
}

/// Ready once the node serves and has joined: it knows another live node,
/// or it has no seeds other than itself (the first node of a mesh, a lone
/// replica). Not ready while leaving.
async fn readyz(State(api): Api) -> Response {
    let why_not = if api.draining.is_cancelled() || api.shared.check_running().is_err() {
        Some("shutting down".to_string())
    } else {
        let mesh = api.shared.mesh();
        let me = mesh.info().id.clone();
        let others = mesh
            .view()
            .iter()
            .filter(|e| e.status == crate::mesh::Status::Alive && e.info.id != me)
            .count();
        let alone = api.shared.config.initial_peers.is_empty() || mesh.seeds_are_self();
        if others == 0 && !alone {
            Some(format!(
                "no live peer yet (seeds: {})",
                api.shared.config.initial_peers.join(", ")
            ))
        } else {
            None
        }
    };
    match why_not {
        None => (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason})),
        )
            .into_response(),
    }
}

async fn metrics(State(api): Api) -> Response {
    let text = api.shared.metrics.render(&api.snapshot().await);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

const GIB: f64 = (1u64 << 30) as f64;

/// Amounts in the seed's units (cores, GiB) plus the exact integers.
fn amounts(r: Option<&pb::Resources>) -> Value {
    let r = r.cloned().unwrap_or_default();
    let storage = (r.storage_bytes != u64::MAX).then_some(r.storage_bytes);
    json!({
        "cpu": r.cpu_millis as f64 / 1000.0,
        "memory": r.memory_bytes as f64 / GIB,
        "gpu": r.gpus,
        "storage": storage.map(|b| b as f64 / GIB),
        "cpu_millis": r.cpu_millis,
        "memory_bytes": r.memory_bytes,
        "storage_bytes": storage,
    })
}

fn capacity_json(c: Option<&pb::Capacity>) -> Value {
    let c = c.cloned().unwrap_or_default();
    json!({
        "total": amounts(c.total.as_ref()),
        "reserved": amounts(c.reserved.as_ref()),
        "available": amounts(c.available.as_ref()),
    })
}

async fn capacity(State(api): Api) -> Result<Json<Value>, ApiError> {
    let c = api
        .resources
        .get_capacity(Request::new(pb::GetCapacityRequest {}))
        .await?
        .into_inner();
    let node_total = c.node.as_ref().and_then(|n| n.total.as_ref());
    let mut out = amounts(node_total);
    let obj = out.as_object_mut().expect("amounts is an object");
    obj.insert(
        "units".into(),
        json!({"cpu": "cores", "memory": "GiB", "storage": "GiB (null: not accounted)"}),
    );
    obj.insert("node".into(), capacity_json(c.node.as_ref()));
    obj.insert("mesh".into(), capacity_json(c.mesh.as_ref()));
    obj.insert("providers".into(), json!(c.providers));
    Ok(Json(out))
}

fn provider_json(p: &pb::ProviderEntry) -> Value {
    let labels: BTreeMap<_, _> = p.labels.iter().collect();
    json!({
        "id": p.id,
        "name": p.name,
        "type": p.r#type,
        "tier": p.tier,
        "owner_id": p.owner_id,
        "endpoint": p.endpoint,
        "status": if p.healthy { "active" } else { "unhealthy" },
        "capacity": capacity_json(p.capacity.as_ref()),
        "labels": labels,
    })
}

async fn providers(State(api): Api) -> Result<Json<Value>, ApiError> {
    let list = api
        .resources
        .list_providers(Request::new(pb::ListProvidersRequest {}))
        .await?
        .into_inner();
    let providers: Vec<Value> = list.providers.iter().map(provider_json).collect();
    Ok(Json(json!({ "providers": providers })))
}

/// `POST /resource/providers`: `endpoint`, or `host` and `port` as in the
/// original API; a kubeconfig is named by its path on the node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    token: String,
    #[serde(default)]
    kubeconfig_path: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    tls_ca: String,
    #[serde(default)]
    tls_cert: String,
    #[serde(default)]
    tls_key: String,
    #[serde(default)]
    config: Option<RegistrationConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrationConfig {
    #[serde(default)]
    kubeconfig: Option<String>,
    #[serde(default)]
    kubeconfig_path: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

impl Registration {
    fn into_request(self) -> Result<pb::RegisterProviderRequest, ApiError> {
        let mut endpoint = self.endpoint;
        if !self.host.is_empty() {
            if !endpoint.is_empty() {
                return Err(bad_request(
                    "give either endpoint or host and port, not both".into(),
                ));
            }
            let port = self
                .port
                .ok_or_else(|| bad_request("port is missing: host needs a port".into()))?;
            let scheme = if self.kind == "docker" {
                "tcp"
            } else {
                "https"
            };
            endpoint = format!("{scheme}://{}:{port}", self.host);
        }
        let mut kubeconfig_path = self.kubeconfig_path;
        if let Some(cfg) = self.config {
            if cfg.kubeconfig.is_some() {
                return Err(bad_request(
                    "config.kubeconfig: inline kubeconfigs are not accepted (they would carry credentials through logs and proxies); put the file on the node and give config.kubeconfig_path".into(),
                ));
            }
            if cfg.namespace.is_some() {
                return Err(bad_request(
                    "config.namespace: an external cluster uses its kubeconfig's namespace; set kubernetes.namespace for the internal one".into(),
                ));
            }
            if let Some(p) = cfg.kubeconfig_path {
                kubeconfig_path = p;
            }
        }
        Ok(pb::RegisterProviderRequest {
            r#type: self.kind,
            name: self.name,
            endpoint,
            token: self.token,
            kubeconfig_path,
            labels: self.labels.into_iter().collect(),
            tls_ca: self.tls_ca,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
        })
    }
}

async fn register(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    parsed: Result<Json<Registration>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req = body(parsed)?.into_request()?;
    let entry = api
        .resources
        .register_provider(as_caller(caller, req))
        .await
        .map_err(ApiError::upstream)?
        .into_inner();
    Ok((StatusCode::CREATED, Json(provider_json(&entry))))
}

fn rfc3339_ago(secs: f64) -> Option<String> {
    if secs < 0.0 {
        return None;
    }
    let at = SystemTime::now().checked_sub(Duration::from_secs_f64(secs))?;
    Some(humantime::format_rfc3339_seconds(at).to_string())
}

async fn nodes(State(api): Api) -> Result<Json<Value>, ApiError> {
    let peers = api
        .admin
        .list_peers(Request::new(ListPeersRequest {
            include_tombstones: true,
        }))
        .await?
        .into_inner();
    let known: BTreeMap<String, (&'static str, bool)> = api
        .manager
        .candidates()
        .into_iter()
        .map(|c| (c.id.clone(), (c.kind.as_str(), c.healthy)))
        .collect();
    let nodes: Vec<Value> = peers
        .peers
        .iter()
        .map(|p| {
            let status = if p.state == "alive" {
                "active"
            } else {
                &p.state
            };
            let providers: Vec<Value> = p
                .providers
                .iter()
                .map(|id| {
                    // Providers of dead members are not placeable: no entry.
                    let (kind, healthy) = known.get(id).copied().unwrap_or(("unknown", false));
                    json!({
                        "id": id,
                        "type": kind,
                        "status": if healthy { "active" } else { "unhealthy" },
                    })
                })
                .collect();
            json!({
                "id": p.id,
                "name": p.name,
                "address": p.addr,
                "status": status,
                "state": p.state,
                "generation": p.generation,
                "incarnation": p.incarnation,
                "last_seen": rfc3339_ago(p.last_heard_secs),
                "is_self": p.is_self,
                "providers": providers,
            })
        })
        .collect();
    Ok(Json(json!({
        "nodes": nodes,
        "alive": peers.alive,
        "suspect": peers.suspect,
        "dead": peers.dead,
        "left": peers.left,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNode {
    address: String,
}

async fn add_node(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    parsed: Result<Json<AddNode>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let req = body(parsed)?;
    let added = api
        .admin
        .add_peer(as_caller(
            caller,
            AddPeerRequest {
                address: req.address,
            },
        ))
        .await
        .map_err(ApiError::upstream)?
        .into_inner();
    Ok(Json(
        json!({"id": added.id, "generation": added.generation}),
    ))
}
