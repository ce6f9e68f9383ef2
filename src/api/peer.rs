//! `peer.PeerService`: what other nodes call.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};

use crate::mesh::limits;
use crate::metrics::calls::{observe_call, Side};
use crate::metrics::gossip::Stats;
use crate::node::shared::Shared;
use crate::placement::{Manager, ProviderMethod};
use crate::proto::peer::peer_service_server::PeerService;
use crate::proto::peer::{
    ExchangeRequest, ExchangeResponse, ProviderCallRequest, ProviderCallResponse,
    ProviderExchangeRequest, ProviderExchangeResponse,
};
use crate::security::Caller;

pub struct PeerApi {
    shared: Arc<Shared>,
    manager: Arc<Manager>,
}

impl PeerApi {
    pub fn new(shared: Arc<Shared>, manager: Arc<Manager>) -> PeerApi {
        PeerApi { shared, manager }
    }

    /// Counts a served gossip call: `request_len` bytes in, the reply out.
    fn count<R: Message>(&self, request_len: usize, reply: &R) {
        Stats::add(&self.shared.stats.bytes_received, request_len);
        Stats::add(&self.shared.stats.bytes_sent, reply.encoded_len());
    }
}

#[tonic::async_trait]
impl PeerService for PeerApi {
    async fn exchange_peers(
        &self,
        request: Request<ExchangeRequest>,
    ) -> Result<Response<ExchangeResponse>, Status> {
        self.shared.check_running()?;
        let caller = request.extensions().get::<Caller>().cloned();
        let req = request.into_inner();
        limits::exchange_request(&req)?;
        if let Some(sender) = &req.sender {
            self.shared
                .security
                .check_claim(caller.as_ref(), &sender.id)?;
            if sender.id.is_empty() || sender.addr.is_empty() {
                return Err(Status::invalid_argument(
                    "sender.id and sender.addr must be set (or leave sender out entirely, as the original protocol does)",
                ));
            }
        }
        let len = req.encoded_len();
        let resp = self.shared.mesh().handle_exchange(self.shared.now(), req);
        self.count(len, &resp);
        Ok(Response::new(resp))
    }

    async fn exchange_providers(
        &self,
        request: Request<ProviderExchangeRequest>,
    ) -> Result<Response<ProviderExchangeResponse>, Status> {
        self.shared.check_running()?;
        let caller = request.extensions().get::<Caller>().cloned();
        let req = request.into_inner();
        limits::provider_request(&req)?;
        self.shared
            .security
            .check_claim(caller.as_ref(), &req.sender_id)?;
        let len = req.encoded_len();
        let resp = self.shared.mesh().handle_providers(req);
        self.count(len, &resp);
        Ok(Response::new(resp))
    }

    async fn call_provider(
        &self,
        request: Request<ProviderCallRequest>,
    ) -> Result<Response<ProviderCallResponse>, Status> {
        let started = std::time::Instant::now();
        let caller = request.extensions().get::<Caller>().cloned();
        let req = request.into_inner();
        let label = ProviderMethod::label(&req.method);
        let checked = limits::provider_call(&req)
            .map_err(Status::from)
            .and_then(|()| {
                self.shared
                    .security
                    .check_claim(caller.as_ref(), &req.caller_id)
            });
        if let Err(e) = checked {
            observe_call::<()>(
                &self.shared.metrics,
                Side::Server,
                label,
                &Err(e.clone()),
                started,
            );
            return Err(e);
        }
        let method = ProviderMethod::parse(&req.method);
        let provider = req.provider_id.clone();
        let req_on_behalf_of = req.on_behalf_of.clone();
        let result = self.call_provider_inner(req).await;
        if let Some(method) = method.filter(|m| m.changes_workloads()) {
            // The owner's side of a placement: admitted (reserved) or refused here.
            let mut who = caller.map_or_else(|| "local".to_string(), |c| c.to_string());
            if !req_on_behalf_of.is_empty() {
                who = format!("{req_on_behalf_of} via {who}");
            }
            let (outcome, error) = match &result {
                Ok(_) => ("admitted", String::new()),
                Err(s) => ("refused", s.message().to_string()),
            };
            let event = match method {
                ProviderMethod::Deploy => "admission",
                other => other.as_str(),
            };
            self.shared.audit.record(
                event,
                &who,
                outcome,
                serde_json::json!({"provider": provider, "error": error}),
            );
        }
        observe_call(&self.shared.metrics, Side::Server, label, &result, started);
        result
    }
}

impl PeerApi {
    async fn call_provider_inner(
        &self,
        req: ProviderCallRequest,
    ) -> Result<Response<ProviderCallResponse>, Status> {
        self.shared.check_running()?;
        if req.provider_id.is_empty() {
            return Err(Status::invalid_argument(
                "provider_id is empty: name a provider listed by iarnet.admin.v1.Admin/ListProviders",
            ));
        }
        if req.method.is_empty() {
            return Err(Status::invalid_argument(
                "method is empty: name the provider operation to call",
            ));
        }
        let response = self
            .manager
            .serve_call(&req.provider_id, &req.method, &req.payload)
            .await?;
        Ok(Response::new(ProviderCallResponse {
            success: true,
            response,
            error: String::new(),
        }))
    }
}
