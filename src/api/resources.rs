//! `iarnet.resource.v1.ResourceService`: capacity, providers, deployments.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use serde_json::{json, Value};

use crate::api::services::service_to_proto;
use crate::audit::Audit;
use crate::placement::manager::{
    Answer, Filter, Op, ServiceAnswer, DEFAULT_PAGE, LIST_DEADLINE, MAX_PAGE,
};
use crate::placement::{Manager, PlaceOptions, QueueEntry};
use crate::proto::resource as pb;
use crate::proto::resource::resource_service_server::ResourceService;
use crate::resource::wire::{
    deployment_to_proto, progress_to_proto, provider_entry, spec_from_proto,
};
use crate::resource::{Capacity, LogOptions, ProgressSink, Tier};
use crate::security::who;
use crate::sync::TokenBucket;

pub struct ResourceApi {
    manager: Arc<Manager>,
    audit: Arc<Audit>,
    /// Deploys run in tasks the node owns: a caller that hangs up does not
    /// cut a placement in half, and the node waits for them when it stops.
    deploys: TaskTracker,
    stop: CancellationToken,
    /// The node, for deploys addressed to a swarm group (absent in tests
    /// that run the API over a bare manager).
    shared: Option<Arc<crate::node::shared::Shared>>,
}

impl ResourceApi {
    /// A service as this node or its home answered for it.
    fn service_answer(&self, answer: ServiceAnswer) -> pb::Service {
        match answer {
            ServiceAnswer::Here(v) => service_to_proto(&v, self.manager.node_id()),
            ServiceAnswer::Home(p) => *p,
        }
    }

    pub fn new(
        manager: Arc<Manager>,
        audit: Arc<Audit>,
        deploys: TaskTracker,
        stop: CancellationToken,
    ) -> ResourceApi {
        ResourceApi {
            manager,
            audit,
            deploys,
            stop,
            shared: None,
        }
    }

    /// Routes group deploys through the node's view of the swarm.
    pub fn with_shared(mut self, shared: Arc<crate::node::shared::Shared>) -> ResourceApi {
        self.shared = Some(shared);
        self
    }
}

/// Lines per second one log stream may send, and its burst: a chatty
/// container cannot make a node stream without bound.
const LOG_LINES_PER_SEC: f64 = 2_000.0;
const LOG_BURST: f64 = 10_000.0;
/// Longest log line sent; longer ones are cut and marked.
const MAX_LOG_LINE: usize = 64 << 10;

/// Now on tokio's clock, so paused-time tests see the pacing.
fn tokio_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" …[line cut at 64 KiB]");
    }
}

fn outcome<T>(r: &Result<T, Status>) -> (&'static str, Value) {
    match r {
        Ok(_) => ("ok", Value::Null),
        Err(s) => (
            "failed",
            json!({"code": crate::metrics::code_label(s.code()), "message": s.message()}),
        ),
    }
}

pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn sum(caps: impl Iterator<Item = Capacity>) -> Capacity {
    caps.fold(None, |a: Option<Capacity>, c| {
        Some(a.map_or(c, |a| a.plus(&c)))
    })
    .unwrap_or_default()
}

/// A deployment as any node answered for it, naming its owner and home.
pub fn answer_to_proto(a: &Answer) -> pb::Deployment {
    let mut p = deployment_to_proto(&a.deployment, &a.owner);
    p.home_id = a.home.clone();
    p
}

/// `scope`: "" or "node" (false), "mesh" (true); anything else is refused.
fn mesh_scope(scope: &str) -> Result<bool, Status> {
    match scope {
        "" | "node" => Ok(false),
        "mesh" => Ok(true),
        other => Err(Status::invalid_argument(format!(
            "scope {other:?} is not a listing scope: use \"node\" (this node's) or \"mesh\" (every node's)"
        ))),
    }
}

fn page_size(asked: u32) -> Result<u32, Status> {
    match asked {
        0 => Ok(DEFAULT_PAGE),
        n if n <= MAX_PAGE => Ok(n),
        n => Err(Status::invalid_argument(format!(
            "page_size {n} is over the {MAX_PAGE} a page may hold: ask for fewer and follow next_page_token"
        ))),
    }
}

/// A queued deploy on the wire.
pub fn queue_entry(e: &QueueEntry, reason: &str) -> pb::QueueEntry {
    let q = &e.record;
    let now = crate::store::now_ms();
    pb::QueueEntry {
        id: q.id.clone(),
        request_id: q.spec.request_id.clone(),
        position: e.position as u32,
        priority: q.priority.class.as_str().to_string(),
        priority_value: q.priority.value,
        age_secs: now.saturating_sub(q.enqueued_ms) as f64 / 1000.0,
        expires_in_secs: q
            .deadline_ms
            .map_or(0.0, |d| d.saturating_sub(now) as f64 / 1000.0),
        reason: reason.to_string(),
        image: q.spec.image.clone(),
        resources: Some(q.spec.resources.into()),
        wait_for_capacity: q.wait_for_capacity,
        state: "queued".to_string(),
    }
}

#[tonic::async_trait]
impl ResourceService for ResourceApi {
    async fn get_capacity(
        &self,
        request: Request<pb::GetCapacityRequest>,
    ) -> Result<Response<pb::GetCapacityResponse>, Status> {
        let all = self.manager.candidates();
        let own = all.iter().filter(|c| c.tier != Tier::Discovered);
        let (deployments, missing_nodes) = if request.into_inner().count_deployments {
            let (counts, missing) = self.manager.count_mesh(LIST_DEADLINE).await;
            (counts.into_iter().collect(), missing)
        } else {
            Default::default()
        };
        Ok(Response::new(pb::GetCapacityResponse {
            node: Some(sum(own.map(|c| c.capacity)).into()),
            mesh: Some(sum(all.iter().filter(|c| c.healthy).map(|c| c.capacity)).into()),
            providers: all.len() as u32,
            deployments,
            missing_nodes,
        }))
    }

    async fn list_providers(
        &self,
        _: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        Ok(Response::new(pb::ListProvidersResponse {
            providers: self
                .manager
                .candidates()
                .iter()
                .map(provider_entry)
                .collect(),
        }))
    }

    async fn register_provider(
        &self,
        request: Request<pb::RegisterProviderRequest>,
    ) -> Result<Response<pb::ProviderEntry>, Status> {
        let who = who(&request);
        let req = request.into_inner();
        let (kind, name, endpoint) = (req.r#type.clone(), req.name.clone(), req.endpoint.clone());
        let added = async {
            let provider =
                crate::node::providers::connect_external(self.manager.node_id(), &req.into())
                    .await?;
            self.manager.add_provider(provider, Tier::External).await
        }
        .await
        .map_err(Status::from);
        let (result, error) = outcome(&added);
        // The endpoint, never a credential.
        self.audit.record(
            "register_provider",
            &who,
            result,
            json!({"type": kind, "name": name, "endpoint": endpoint, "error": error}),
        );
        let desc = added?;
        let c = self
            .manager
            .candidates()
            .into_iter()
            .find(|c| c.id == desc.id)
            .ok_or_else(|| Status::internal("provider vanished right after registration"))?;
        Ok(Response::new(provider_entry(&c)))
    }

    async fn unregister_provider(
        &self,
        request: Request<pb::UnregisterProviderRequest>,
    ) -> Result<Response<pb::UnregisterProviderResponse>, Status> {
        let who = who(&request);
        let id = request.into_inner().id;
        let removed = self.manager.remove_provider(&id).map_err(Status::from);
        let (result, error) = outcome(&removed);
        self.audit.record(
            "unregister_provider",
            &who,
            result,
            json!({"id": id, "error": error}),
        );
        removed?;
        Ok(Response::new(pb::UnregisterProviderResponse {}))
    }

    type DeployStream = EventStream<pb::DeployEvent>;

    async fn deploy(
        &self,
        request: Request<pb::DeploySpec>,
    ) -> Result<Response<Self::DeployStream>, Status> {
        let who = who(&request);
        let forwarded = request
            .metadata()
            .contains_key(super::group_deploy::FORWARDED);
        let authorization = request.metadata().get("authorization").cloned();
        let raw = request.into_inner();
        let (request_id, image) = (raw.request_id.clone(), raw.image.clone());
        let as_sent = (!raw.group.is_empty()).then(|| raw.clone());
        let refused = |s: Status| {
            self.audit.record(
                "deploy",
                &who,
                "invalid",
                json!({"request_id": request_id, "image": image, "error": s.message()}),
            );
            s
        };
        let opts = PlaceOptions::from_proto(&raw).map_err(|e| refused(e.into()))?;
        let replicas = raw.replicas;
        if !raw.service.is_empty() {
            return Err(refused(Status::invalid_argument(
                "service: set by the home node for its replicas; deploy with replicas instead",
            )));
        }
        let spec = spec_from_proto(raw).map_err(|e| refused(e.into()))?;
        crate::resource::validate::validate(&spec).map_err(|e| refused(e.into()))?;
        if let (Some(shared), Some(group), Some(raw)) = (&self.shared, &spec.scope.group, as_sent) {
            use super::group_deploy::{forward, route, Route};
            if let Route::Leader { id, addr } = route(shared, group, forwarded).map_err(refused)? {
                let stream = forward(shared, &addr, raw, authorization).await?;
                self.audit.record(
                    "deploy",
                    &who,
                    "forwarded",
                    json!({"request_id": request_id, "group": group, "leader": id}),
                );
                return Ok(Response::new(stream));
            }
        }
        if spec.spread.is_some() && replicas == 0 {
            return Err(refused(Status::invalid_argument(
                "spread: keeps the replicas of a service apart; set replicas too",
            )));
        }
        if opts.gang.is_some() && replicas == 0 {
            return Err(refused(Status::invalid_argument(
                "gang: places the replicas of a service all or nothing; set replicas too",
            )));
        }
        if replicas > 0 {
            let (tx, rx) = mpsc::channel(64);
            let (manager, audit, stop) =
                (self.manager.clone(), self.audit.clone(), self.stop.clone());
            self.deploys.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = crate::api::services::deploy_service(&manager, &audit, &who, spec, opts, replicas, tx) => {}
                }
            });
            return Ok(Response::new(ReceiverStream::new(rx).boxed()));
        }
        let audit = self.audit.clone();
        let asked = json!({"request_id": spec.request_id, "image": spec.image, "resources": spec.resources.to_string()});
        let (tx, rx) = mpsc::channel(64);
        let (sink, mut progress) = ProgressSink::channel();
        let manager = self.manager.clone();
        let stop = self.stop.clone();
        self.deploys.spawn(async move {
            let deploy = manager.deploy(spec, opts, sink);
            tokio::pin!(deploy);
            let result = loop {
                tokio::select! {
                    biased;
                    // The node is going away: what was recorded stays,
                    // and reconcile settles it at the next start.
                    _ = stop.cancelled() => return,
                    r = &mut deploy => break r,
                    Some(p) = progress.recv() => {
                        let _ = tx.send(Ok(progress_to_proto(p))).await;
                    }
                }
            };
            while let Ok(p) = progress.try_recv() {
                let _ = tx.send(Ok(progress_to_proto(p))).await;
            }
            use pb::deploy_event::Event;
            match &result {
                Ok(placed) => {
                    let p = &placed.placement;
                    let queued = p.provider_id.is_empty();
                    audit.record(
                        "placement",
                        &who,
                        if queued { "queued" } else { "placed" },
                        json!({
                            "request": asked, "provider": p.provider_id, "owner": p.owner_id,
                            "tier": p.tier, "strategy": p.strategy, "reason": p.reason,
                            "refused": p.refused, "deployment": placed.deployment.id,
                        }),
                    );
                }
                Err(e) => audit.record(
                    "placement",
                    &who,
                    "failed",
                    json!({
                        "request": asked, "code": e.kind(), "error": e.to_string(),
                    }),
                ),
            }
            match result {
                Ok(placed) => {
                    let owner = placed.placement.owner_id.clone();
                    let _ = tx
                        .send(Ok(pb::DeployEvent {
                            event: Some(Event::Placement(placed.placement)),
                        }))
                        .await;
                    let _ = tx
                        .send(Ok(pb::DeployEvent {
                            event: Some(Event::Deployment(deployment_to_proto(
                                &placed.deployment,
                                &owner,
                            ))),
                        }))
                        .await;
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx).boxed()))
    }

    async fn get_deployment(
        &self,
        request: Request<pb::GetDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let who = who(&request);
        let id = request.into_inner().id;
        let a = self.manager.anywhere(Op::Get, &id, &who).await?;
        Ok(Response::new(answer_to_proto(&a)))
    }

    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        let req = request.into_inner();
        let filter = Filter::of(&req);
        if mesh_scope(&req.scope)? {
            let size = page_size(req.page_size)?;
            let page = self
                .manager
                .list_mesh(&filter, &req.page_token, size, LIST_DEADLINE)
                .await;
            return Ok(Response::new(pb::ListDeploymentsResponse {
                deployments: page.deployments,
                next_page_token: page.next,
                missing_nodes: page.missing,
                nodes_answered: page.answered as u32,
            }));
        }
        let all = self.manager.list().await;
        let me = self.manager.node_id();
        Ok(Response::new(pb::ListDeploymentsResponse {
            deployments: all
                .iter()
                .map(|(d, owner)| {
                    let mut p = deployment_to_proto(d, owner);
                    if self.manager.placed_here(&d.id) {
                        p.home_id = me.to_string();
                    }
                    p
                })
                .filter(|p| filter.matches(p))
                .collect(),
            nodes_answered: 1,
            ..Default::default()
        }))
    }

    type StreamDeploymentsStream = EventStream<pb::DeploymentsChunk>;

    async fn stream_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<Self::StreamDeploymentsStream>, Status> {
        let filter = Filter::of(request.get_ref());
        let (tx, rx) = mpsc::channel(16);
        let (parts_tx, mut parts) = mpsc::channel(16);
        let manager = self.manager.clone();
        let stop = self.stop.clone();
        self.deploys.spawn(async move {
            let fan = manager.stream_mesh(&filter, LIST_DEADLINE, parts_tx);
            let relay = async {
                while let Some((node_id, deployments)) = parts.recv().await {
                    let chunk = pb::DeploymentsChunk {
                        node_id,
                        deployments,
                        ..Default::default()
                    };
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => {}
                (missing, ()) = async { tokio::join!(fan, relay) } => {
                    let _ = tx
                        .send(Ok(pb::DeploymentsChunk {
                            missing_nodes: missing,
                            done: true,
                            ..Default::default()
                        }))
                        .await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx).boxed()))
    }

    async fn list_queue(
        &self,
        _: Request<pb::ListQueueRequest>,
    ) -> Result<Response<pb::ListQueueResponse>, Status> {
        Ok(Response::new(pb::ListQueueResponse {
            entries: self
                .manager
                .queue()
                .iter()
                .map(|(e, reason)| queue_entry(e, reason))
                .collect(),
        }))
    }

    type LogsStream = EventStream<pb::LogEntry>;

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let who = who(&request);
        let req = request.into_inner();
        let opts = LogOptions {
            tail: Some(req.tail).filter(|t| *t > 0),
            follow: req.follow,
        };
        let lines = self.manager.logs_anywhere(&req.id, opts, &who).await?;
        // Paces the stream (slows it down, never drops lines).
        let mut pace = TokenBucket::new(LOG_LINES_PER_SEC, LOG_BURST, tokio_now());
        Ok(Response::new(
            lines
                .then(move |l| {
                    let wait = pace.take_paced(tokio_now());
                    async move {
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                        l.map(|mut l| {
                            truncate(&mut l.text, MAX_LOG_LINE);
                            pb::LogEntry {
                                stderr: l.stderr,
                                text: l.text,
                            }
                        })
                        .map_err(Status::from)
                    }
                })
                .boxed(),
        ))
    }

    async fn stop(
        &self,
        request: Request<pb::StopRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let who = who(&request);
        let id = request.into_inner().id;
        let stopped = self
            .manager
            .anywhere(Op::Stop, &id, &who)
            .await
            .map_err(Status::from);
        let (result, error) = outcome(&stopped);
        self.audit
            .record("stop", &who, result, json!({"id": id, "error": error}));
        Ok(Response::new(answer_to_proto(&stopped?)))
    }

    async fn renew_lease(
        &self,
        request: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let who = who(&request);
        let req = request.into_inner();
        self.lease(LeaseOp::Renew, &who, req.id, req.epoch).await
    }

    async fn release_lease(
        &self,
        request: Request<pb::ReleaseLeaseRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let who = who(&request);
        let req = request.into_inner();
        self.lease(LeaseOp::Release, &who, req.id, req.epoch).await
    }

    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        let who = who(&request);
        let id = request.into_inner().id;
        let answer = self.manager.service_anywhere(&id, None, &who).await?;
        Ok(Response::new(self.service_answer(answer)))
    }

    async fn list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let node = self.manager.node_id();
        let services = self
            .manager
            .services()
            .await
            .iter()
            .map(|v| service_to_proto(v, node))
            .collect();
        Ok(Response::new(pb::ListServicesResponse { services }))
    }

    async fn scale(
        &self,
        request: Request<pb::ScaleRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        let who = who(&request);
        let req = request.into_inner();
        let scaled = self
            .manager
            .service_anywhere(&req.id, Some(req.replicas), &who)
            .await
            .map_err(Status::from);
        let (result, error) = outcome(&scaled);
        self.audit.record(
            "scale",
            &who,
            result,
            json!({"service": req.id, "replicas": req.replicas, "error": error}),
        );
        Ok(Response::new(self.service_answer(scaled?)))
    }
}

#[derive(Debug, Clone, Copy)]
enum LeaseOp {
    Renew,
    Release,
}

impl ResourceApi {
    /// Renews or releases a lease through its owner, and audits who asked.
    async fn lease(
        &self,
        op: LeaseOp,
        who: &str,
        id: String,
        epoch: u64,
    ) -> Result<Response<pb::Deployment>, Status> {
        let fenced = Some(epoch).filter(|e| *e > 0);
        let (event, op) = match op {
            LeaseOp::Renew => ("renew_lease", Op::RenewLease(fenced)),
            LeaseOp::Release => ("release_lease", Op::ReleaseLease(fenced)),
        };
        let done = self
            .manager
            .anywhere(op, &id, who)
            .await
            .map_err(Status::from);
        let (result, error) = outcome(&done);
        self.audit.record(
            event,
            who,
            result,
            json!({"id": id, "epoch": epoch, "error": error}),
        );
        Ok(Response::new(answer_to_proto(&done?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_log_stream_is_paced_after_its_burst_and_long_lines_are_cut() {
        let t0 = Instant::now();
        let mut pace = TokenBucket::new(LOG_LINES_PER_SEC, LOG_BURST, t0);
        for _ in 0..LOG_BURST as usize {
            assert_eq!(pace.take_paced(t0), Duration::ZERO);
        }
        let wait = pace.take_paced(t0);
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(1),
            "{wait:?}"
        );
        // A second later the bucket has refilled by the rate.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..(LOG_LINES_PER_SEC as usize - 2) {
            assert_eq!(pace.take_paced(t1), Duration::ZERO);
        }

        let mut line = "é".repeat(MAX_LOG_LINE);
        truncate(&mut line, MAX_LOG_LINE);
        assert!(line.len() < MAX_LOG_LINE + 40 && line.ends_with("64 KiB]"));
        let mut short = "ok".to_string();
        truncate(&mut short, MAX_LOG_LINE);
        assert_eq!(short, "ok");
    }
}
