//! `iarnet.directory.v1.Directory`: what other nodes call to register where
//! deployments live, look them up, forward an operation to a deployment's
//! home, and gather a mesh-wide listing. The peer surface's rules apply
//! (certificates under mutual TLS, access lists, the CallProvider budget),
//! and every request names its sender, checked against its certificate.

use std::sync::Arc;

use serde_json::json;
use tonic::{Request, Response, Status};

use super::resources::answer_to_proto;
use super::services::service_to_proto;
use crate::node::shared::Shared;
use crate::placement::manager::{Filter, Op};
use crate::placement::Manager;
use crate::proto::directory as pb;
use crate::proto::directory::directory_server::Directory;
use crate::proto::resource as rpb;
use crate::security::Caller;

/// Locations one registration may carry (a registrar sends 1,000).
const MAX_LOCATIONS: usize = 10_000;
/// The most a listing asks one node for.
const MAX_LIST: u32 = 100_000;

pub struct DirectoryApi {
    shared: Arc<Shared>,
    manager: Arc<Manager>,
}

impl DirectoryApi {
    pub fn new(shared: Arc<Shared>, manager: Arc<Manager>) -> DirectoryApi {
        DirectoryApi { shared, manager }
    }

    /// The calling node, checked: running, and claiming its own id.
    fn caller<T>(&self, request: &Request<T>, from: &str) -> Result<Option<Caller>, Status> {
        self.shared.check_running()?;
        let caller = request.extensions().get::<Caller>().cloned();
        self.shared.security.check_claim(caller.as_ref(), from)?;
        if from.is_empty() {
            return Err(Status::invalid_argument(
                "from is empty: name the calling node",
            ));
        }
        Ok(caller)
    }
}

#[tonic::async_trait]
impl Directory for DirectoryApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        self.caller(&request, &request.get_ref().from)?;
        let req = request.into_inner();
        if req.locations.len() + req.forget.len() > MAX_LOCATIONS {
            return Err(Status::invalid_argument(format!(
                "{} locations and forgets in one registration; the limit is {MAX_LOCATIONS}",
                req.locations.len() + req.forget.len()
            )));
        }
        let from = req.from.clone();
        let accepted = self.manager.directory_register(&from, req);
        Ok(Response::new(pb::RegisterReply { accepted }))
    }

    async fn locate(
        &self,
        request: Request<pb::LocateRequest>,
    ) -> Result<Response<pb::LocateReply>, Status> {
        self.caller(&request, &request.get_ref().from)?;
        let ids = request.into_inner().ids;
        Ok(Response::new(pb::LocateReply {
            locations: self.manager.directory_locate(&ids).await,
        }))
    }

    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<rpb::Deployment>, Status> {
        let caller = self.caller(&request, &request.get_ref().from)?;
        let req = request.into_inner();
        let op = Op::from_proto(&req);
        let who = forwarded_for(caller, &req.from, &req.on_behalf_of);
        let answer = self
            .manager
            .local_op(op, &req.id)
            .await
            .map_err(Status::from);
        let event = match op {
            Op::Get => None,
            Op::Stop => Some("stop"),
            Op::RenewLease(_) => Some("renew_lease"),
            Op::ReleaseLease(_) => Some("release_lease"),
        };
        if let Some(event) = event {
            let (outcome, error) = match &answer {
                Ok(_) => ("ok", String::new()),
                Err(s) => ("failed", s.message().to_string()),
            };
            self.shared.audit.record(
                event,
                &who,
                outcome,
                json!({"id": req.id, "forwarded": true, "error": error}),
            );
        }
        Ok(Response::new(answer_to_proto(&answer?)))
    }

    async fn forward_service(
        &self,
        request: Request<pb::ForwardServiceRequest>,
    ) -> Result<Response<rpb::Service>, Status> {
        let caller = self.caller(&request, &request.get_ref().from)?;
        let req = request.into_inner();
        let who = forwarded_for(caller, &req.from, &req.on_behalf_of);
        let answer = self
            .manager
            .local_service(&req.id, req.scale_to)
            .await
            .map_err(Status::from);
        if let Some(replicas) = req.scale_to {
            let (outcome, error) = match &answer {
                Ok(_) => ("ok", String::new()),
                Err(s) => ("failed", s.message().to_string()),
            };
            self.shared.audit.record(
                "scale",
                &who,
                outcome,
                json!({"service": req.id, "replicas": replicas, "forwarded": true, "error": error}),
            );
        }
        Ok(Response::new(service_to_proto(
            &answer?,
            self.manager.node_id(),
        )))
    }

    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckReply>, Status> {
        self.caller(&request, &request.get_ref().from)?;
        let req = request.into_inner();
        if req.deployments.len() > MAX_LOCATIONS {
            return Err(Status::invalid_argument(format!(
                "{} deployments in one check; the limit is {MAX_LOCATIONS}",
                req.deployments.len()
            )));
        }
        Ok(Response::new(pb::CheckReply {
            verdicts: self
                .manager
                .check_attempts(&req.from, req.deployments)
                .await,
        }))
    }

    async fn list_local(
        &self,
        request: Request<pb::ListLocalRequest>,
    ) -> Result<Response<pb::ListLocalReply>, Status> {
        self.caller(&request, &request.get_ref().from)?;
        let req = request.into_inner();
        let filter = Filter::from_proto(req.filter);
        let limit = req.limit.min(MAX_LIST);
        Ok(Response::new(
            self.manager.list_here(&filter, &req.after, limit).await,
        ))
    }
}

/// Who a forwarded call acts for, for the audit log: the user the
/// forwarding node named, via that node.
fn forwarded_for(caller: Option<Caller>, from: &str, on_behalf_of: &str) -> String {
    let via = caller.map_or_else(|| format!("peer:{from}"), |c| c.to_string());
    if on_behalf_of.is_empty() {
        via
    } else {
        format!("{on_behalf_of} via {via}")
    }
}
