//! `peer.PeerService`: what other nodes call.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};

use super::limits;
use crate::node::gossip::Shared;
use crate::node::resources::observe_call;
use crate::node::stats::Stats;
use crate::placement::Manager;
use crate::proto::peer::peer_service_server::PeerService;
use crate::proto::peer::{
    ExchangeRequest, ExchangeResponse, ProviderCallRequest, ProviderCallResponse,
    ProviderExchangeRequest, ProviderExchangeResponse,
};
use crate::security::Caller;

/// Longest id or address accepted in a gossip record.
const MAX_FIELD: usize = 512;

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

fn check_len(field: &str, value: &str) -> Result<(), Status> {
    if value.len() > MAX_FIELD {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes long; the limit is {MAX_FIELD}",
            value.len()
        )));
    }
    Ok(())
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
            check_len("sender.id", &sender.id)?;
            check_len("sender.addr", &sender.addr)?;
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
        if let Err(e) = check_len("caller_id", &req.caller_id).and_then(|()| {
            self.shared
                .security
                .check_claim(caller.as_ref(), &req.caller_id)
        }) {
            observe_call::<()>(
                &self.shared,
                "server",
                req.method.clone(),
                &Err(e.clone()),
                started,
            );
            return Err(e);
        }
        let method = req.method.clone();
        let provider = req.provider_id.clone();
        let result = self.call_provider_inner(req).await;
        if matches!(method.as_str(), "deploy" | "stop") {
            // The owner's side of a placement: admitted (reserved) or refused here.
            let who = caller.map_or_else(|| "local".to_string(), |c| c.to_string());
            let (outcome, error) = match &result {
                Ok(_) => ("admitted", String::new()),
                Err(s) => ("refused", s.message().to_string()),
            };
            let event = if method == "deploy" {
                "admission"
            } else {
                "stop"
            };
            self.shared.audit.record(
                event,
                &who,
                outcome,
                serde_json::json!({"provider": provider, "error": error}),
            );
        }
        observe_call(&self.shared, "server", method, &result, started);
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
        check_len("provider_id", &req.provider_id)?;
        check_len("method", &req.method)?;
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
