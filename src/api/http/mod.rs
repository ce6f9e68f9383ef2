//! The HTTP API on `listen_addr`: the JSON routes operators and dashboards
//! poll (`/resource/*`, `/peer/nodes`), Prometheus `/metrics`, and the
//! `/healthz` and `/readyz` probes. Every route calls the same code as its
//! gRPC twin, so the two surfaces cannot disagree.

mod apps;
mod registration;
mod services;
mod swarm;
pub mod views;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request};

use crate::api::admin::AdminApi;
use crate::api::resources::ResourceApi;
use crate::app::Applications;
use crate::metrics::Snapshot;
use crate::node::shared::Shared;
use crate::placement::Manager;
use crate::proto::admin::admin_server::Admin;
use crate::proto::admin::{AddPeerRequest, ListPeersRequest};
use crate::proto::resource as pb;
use crate::proto::resource::resource_service_server::ResourceService;
use crate::security::{Caller, Surface};
use registration::Registration;
use views::{
    CapacityReport, DeploymentView, DeploymentsReport, ErrorBody, NodesReport, PeerAdded,
    ProviderView, ProvidersReport, QueueEntryView, QueueReport, Readiness,
};

/// Largest request body accepted (provider registrations are a few hundred bytes).
const MAX_BODY: usize = 64 << 10;

pub struct HttpApi {
    shared: Arc<Shared>,
    manager: Arc<Manager>,
    admin: AdminApi,
    resources: ResourceApi,
    swarm: crate::api::swarm::SwarmApi,
    apps: Arc<Applications>,
    /// Cancelled when the node starts leaving: readiness fails first.
    draining: CancellationToken,
}

impl HttpApi {
    pub fn new(
        shared: Arc<Shared>,
        manager: Arc<Manager>,
        resources: ResourceApi,
        apps: Arc<Applications>,
        draining: CancellationToken,
    ) -> Self {
        HttpApi {
            admin: AdminApi::new(shared.clone()),
            swarm: crate::api::swarm::SwarmApi::new(shared.clone(), manager.clone()),
            resources,
            apps,
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
            .route("/resource/deployments", get(deployments))
            .route("/resource/deployments/{id}", get(deployment))
            .route("/resource/deployments/{id}/renew", post(renew))
            .route("/resource/deployments/{id}/release", post(release))
            .route("/resource/queue", get(queue))
            .route("/resource/services", get(services::services))
            .route("/resource/services/{id}", get(services::service))
            .route("/resource/services/{id}/scale", post(services::scale))
            .route("/peer/nodes", get(nodes).post(add_node))
            .route(
                "/swarm/groups",
                get(swarm::groups).post(swarm::create_group),
            )
            .route("/swarm/groups/{name}/join", post(swarm::join_group))
            .route("/swarm/groups/{name}/leave", post(swarm::leave_group))
            .route("/swarm/pools", get(swarm::pools).post(swarm::create_pool))
            .route(
                "/swarm/pools/{name}",
                axum::routing::delete(swarm::delete_pool),
            )
            .route("/swarm/health", get(swarm::health_self))
            .route("/swarm/health/{node}", get(swarm::health))
            .merge(
                Router::new()
                    .route("/application/apps", get(apps::list).post(apps::create))
                    .route(
                        "/application/apps/{id}",
                        get(apps::get).delete(apps::delete),
                    )
                    .route("/application/apps/{id}/components", get(apps::components))
                    .route("/application/apps/{id}/analyze", post(apps::analyze))
                    .route(
                        "/application/apps/{id}/deploy-components",
                        post(apps::deploy),
                    )
                    .route("/application/apps/{id}/stop", post(apps::stop))
                    .route("/application/apps/{id}/pull", post(apps::pull))
                    .route("/application/apps/{id}/files", get(apps::tree))
                    .route(
                        "/application/apps/{id}/files/{*path}",
                        get(apps::read).put(apps::save),
                    )
                    // A saved file may be up to 1 MiB, escaped in JSON.
                    .layer(axum::extract::DefaultBodyLimit::max(
                        2 * crate::app::files::MAX_FILE_BYTES as usize + MAX_BODY,
                    )),
            )
            .fallback(not_found)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self)
    }

    /// Round trips per live peer, and the swarm's groups and pools.
    #[allow(clippy::type_complexity)]
    fn swarm_snapshot(&self) -> (Vec<(String, f64, f64)>, Vec<(String, u64, u64, bool)>, u64) {
        let stats = &self.shared.stats;
        let peers: Vec<(String, String)> = {
            let mesh = self.shared.mesh();
            let me = mesh.id().to_string();
            mesh.view()
                .iter()
                .filter(|e| !e.status.is_tombstone() && *e.info.id != *me)
                .map(|e| (e.info.id.to_string(), e.info.addr.clone()))
                .collect()
        };
        let rtts = peers
            .into_iter()
            .filter_map(|(id, addr)| {
                let ewma = stats.rtt(&addr)?.as_secs_f64();
                let p99 = stats.rtt_p99(&addr).map_or(0.0, |d| d.as_secs_f64());
                Some((id, ewma, p99))
            })
            .collect();
        let (groups, pools) = crate::node::swarm::read_swarm(&self.shared, |s, peers, now| {
            let me = s.id().to_string();
            let groups = s
                .groups(peers, now)
                .into_iter()
                .map(|g| {
                    let leads = g.leader.as_deref() == Some(me.as_str());
                    let term = if g.leader.is_some() { g.term } else { 0 };
                    (g.name, g.members.len() as u64, term, leads)
                })
                .collect();
            (groups, s.pools().len() as u64)
        });
        (rtts, groups, pools)
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
        let (peer_rtts, groups, pools) = self.swarm_snapshot();
        Snapshot {
            peer_rtts,
            groups,
            pools,
            gossip: self.shared.stats.snapshot(),
            peers: peers.into_iter().collect(),
            providers: providers.into_iter().collect(),
            deployments: deployments.into_iter().collect(),
            placements: self.manager.placement_counts(),
            process: crate::metrics::process::ProcessStats::read(),
            queued: ["interactive", "batch"]
                .iter()
                .map(|c| {
                    let n = self.manager.queued_by_class().get(c).copied().unwrap_or(0);
                    (c.to_string(), n as u64)
                })
                .collect(),
            queue: self.manager.queue_metrics().clone(),
            queue_blocked: self.manager.queue_blocked().into_iter().collect(),
            leases: self
                .manager
                .leases()
                .by_state()
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            lease: self.manager.leases().metrics().clone(),
            failover: self.manager.failover_metrics().clone(),
            services: self.manager.service_gauges(),
            applications: self.apps.status_counts().await,
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

/// The HTTP status a gRPC code stands for; the dashboard answers with the same.
pub fn http_status(code: Code) -> StatusCode {
    match code {
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
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.1.unwrap_or(http_status(self.0.code()));
        let body = ErrorBody {
            error: self.0.message().to_string(),
            code: crate::metrics::code_label(self.0.code()),
        };
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
            "no such route: see /ui/ (the dashboard), /application/apps, /resource/capacity, /resource/providers, /resource/deployments, /resource/queue, /peer/nodes, /metrics, /healthz, /readyz",
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
    let status = if why_not.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready: why_not.is_none(),
        reason: why_not,
    };
    (status, Json(body)).into_response()
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

/// Query parameters as given, repeated ones included.
type Params = axum::extract::Query<Vec<(String, String)>>;

async fn capacity(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    axum::extract::Query(params): Params,
) -> Result<Json<CapacityReport>, ApiError> {
    let mut count_deployments = false;
    for (k, v) in params {
        match k.as_str() {
            "deployments" => count_deployments = flag("deployments", &v)?,
            other => return Err(unknown_param(other, "deployments")),
        }
    }
    let c = api
        .resources
        .get_capacity(as_caller(
            caller,
            pb::GetCapacityRequest { count_deployments },
        ))
        .await?
        .into_inner();
    let mut report = CapacityReport::from(&c);
    if count_deployments && report.deployments.is_none() {
        report.deployments = Some(Default::default());
    }
    Ok(Json(report))
}

fn flag(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad_request(format!("{name}={v:?}: use true or false"))),
    }
}

fn unknown_param(name: &str, known: &str) -> ApiError {
    bad_request(format!(
        "unknown query parameter {name:?}; this route takes {known}"
    ))
}

/// `GET /resource/deployments?scope=mesh&state=running&label=team=ml&page_token=…`
fn list_request(params: Vec<(String, String)>) -> Result<pb::ListDeploymentsRequest, ApiError> {
    let mut req = pb::ListDeploymentsRequest::default();
    for (k, v) in params {
        match k.as_str() {
            "scope" => req.scope = v,
            "state" => req.state = v,
            "owner" | "owner_id" => req.owner_id = v,
            "provider" | "provider_id" => req.provider_id = v,
            "image" => req.image = v,
            "page_token" => req.page_token = v,
            "page_size" => {
                req.page_size = v
                    .parse()
                    .map_err(|_| bad_request(format!("page_size={v:?} is not a whole number")))?
            }
            "label" => {
                let Some((lk, lv)) = v.split_once('=') else {
                    return Err(bad_request(format!("label={v:?}: write label=KEY=VALUE")));
                };
                req.labels.insert(lk.to_string(), lv.to_string());
            }
            other => {
                return Err(unknown_param(
                    other,
                    "scope, state, owner, provider, image, label, page_size, page_token",
                ))
            }
        }
    }
    Ok(req)
}

async fn providers(State(api): Api) -> Result<Json<ProvidersReport>, ApiError> {
    let list = api
        .resources
        .list_providers(Request::new(pb::ListProvidersRequest {}))
        .await?
        .into_inner();
    Ok(Json(ProvidersReport {
        providers: list.providers.iter().map(ProviderView::from).collect(),
    }))
}

async fn deployments(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    axum::extract::Query(params): Params,
) -> Result<Json<DeploymentsReport>, ApiError> {
    let req = list_request(params)?;
    let list = api
        .resources
        .list_deployments(as_caller(caller, req))
        .await?
        .into_inner();
    Ok(Json(DeploymentsReport::from(&list)))
}

async fn deployment(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let d = api
        .resources
        .get_deployment(as_caller(caller, pb::GetDeploymentRequest { id }))
        .await?
        .into_inner();
    Ok(Json(DeploymentView::from(&d)))
}

/// The optional body of the lease routes: `{"epoch": 3}` acts only on that
/// lease; no body acts on whatever lease is current.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    #[serde(default)]
    epoch: u64,
}

fn lease_body(raw: &[u8]) -> Result<LeaseBody, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(LeaseBody::default());
    }
    serde_json::from_slice(raw).map_err(|e| {
        bad_request(format!(
            "invalid JSON body: {e} (send {{\"epoch\": N}} or nothing)"
        ))
    })
}

async fn renew(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<DeploymentView>, ApiError> {
    let epoch = lease_body(&raw)?.epoch;
    let d = api
        .resources
        .renew_lease(as_caller(caller, pb::RenewLeaseRequest { id, epoch }))
        .await?
        .into_inner();
    Ok(Json(DeploymentView::from(&d)))
}

async fn release(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<DeploymentView>, ApiError> {
    let epoch = lease_body(&raw)?.epoch;
    let d = api
        .resources
        .release_lease(as_caller(caller, pb::ReleaseLeaseRequest { id, epoch }))
        .await?
        .into_inner();
    Ok(Json(DeploymentView::from(&d)))
}

async fn queue(State(api): Api) -> Result<Json<QueueReport>, ApiError> {
    let list = api
        .resources
        .list_queue(Request::new(pb::ListQueueRequest {}))
        .await?
        .into_inner();
    Ok(Json(QueueReport {
        entries: list.entries.iter().map(QueueEntryView::from).collect(),
    }))
}

async fn register(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    parsed: Result<Json<Registration>, JsonRejection>,
) -> Result<(StatusCode, Json<ProviderView>), ApiError> {
    let req = body(parsed)?.into_request()?;
    let entry = api
        .resources
        .register_provider(as_caller(caller, req))
        .await
        .map_err(ApiError::upstream)?
        .into_inner();
    Ok((StatusCode::CREATED, Json(ProviderView::from(&entry))))
}

async fn nodes(State(api): Api) -> Result<Json<NodesReport>, ApiError> {
    Ok(Json(nodes_report(&api.admin, &api.manager).await?))
}

/// Members with the kind and health of each one's providers, for
/// `/peer/nodes` and the dashboard's mesh page.
pub async fn nodes_report(
    admin: &AdminApi,
    manager: &Manager,
) -> Result<NodesReport, tonic::Status> {
    let peers = admin
        .list_peers(Request::new(ListPeersRequest {
            include_tombstones: true,
        }))
        .await?
        .into_inner();
    let known: BTreeMap<String, (&'static str, bool)> = manager
        .candidates()
        .into_iter()
        .map(|c| (c.id.clone(), (c.kind.as_str(), c.healthy)))
        .collect();
    Ok(NodesReport::new(&peers, &known))
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
) -> Result<Json<PeerAdded>, ApiError> {
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
    Ok(Json(PeerAdded {
        id: added.id,
        generation: added.generation,
    }))
}
