//! The calling side of `CallProvider`: a provider owned by another node,
//! operated through that node.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use tracing::debug;

use crate::proto::peer::ProviderCallRequest;
use crate::proto::resource as pb;
use crate::resource::wire::{
    deployment_from_proto, gpu_from_proto, progress_from_proto, spec_to_proto,
};
use crate::resource::{
    Candidate, DeploySpec, Deployment, LogLine, LogOptions, LogStream, ProgressSink, Provider,
    ProviderDescriptor, ResourceError,
};

use super::{ProviderCaller, ProviderMethod};

/// Deadlines: a deploy may pull an image; everything else is quick.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(600);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_POLL: Duration = Duration::from_millis(500);
/// How often a deploy in flight on the owner is asked for its progress.
const PROGRESS_POLL: Duration = Duration::from_millis(250);

pub struct RemoteProvider {
    candidate: Candidate,
    caller: Arc<dyn ProviderCaller>,
    /// Who the calls are made for (the owner's audit log names them).
    on_behalf_of: String,
}

impl RemoteProvider {
    pub fn new(candidate: Candidate, caller: Arc<dyn ProviderCaller>) -> RemoteProvider {
        RemoteProvider {
            candidate,
            caller,
            on_behalf_of: String::new(),
        }
    }

    /// Calls made for `who`, a management client of this node.
    pub fn on_behalf_of(mut self, who: &str) -> RemoteProvider {
        self.on_behalf_of = who.to_string();
        self
    }

    async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: ProviderMethod,
        payload: Req,
        timeout: Duration,
    ) -> Result<Resp, ResourceError> {
        call(
            &*self.caller,
            &self.candidate,
            &self.on_behalf_of,
            method,
            payload,
            timeout,
        )
        .await
    }

    /// A lease call, answered by the owner, which keeps the lease.
    async fn lease(
        &self,
        method: ProviderMethod,
        deployment_id: &str,
        epoch: Option<u64>,
    ) -> Result<Deployment, ResourceError> {
        let d: pb::Deployment = self
            .call(
                method,
                pb::LeaseCall {
                    deployment_id: deployment_id.to_string(),
                    epoch: epoch.unwrap_or(0),
                },
                CALL_TIMEOUT,
            )
            .await?;
        Ok(deployment_from_proto(d))
    }
}

fn request(
    c: &Candidate,
    on_behalf_of: &str,
    method: ProviderMethod,
    payload: impl Message,
) -> ProviderCallRequest {
    ProviderCallRequest {
        provider_id: c.id.clone(),
        method: method.as_str().to_string(),
        payload: payload.encode_to_vec(),
        // The node's caller fills in its own id.
        caller_id: String::new(),
        on_behalf_of: on_behalf_of.to_string(),
    }
}

async fn call<Req: Message, Resp: Message + Default>(
    caller: &dyn ProviderCaller,
    c: &Candidate,
    on_behalf_of: &str,
    method: ProviderMethod,
    payload: Req,
    timeout: Duration,
) -> Result<Resp, ResourceError> {
    let resp = caller
        .call(
            &c.owner_addr,
            request(c, on_behalf_of, method, payload),
            timeout,
        )
        .await
        .map_err(|s| ResourceError::from_status(&c.id, &s))?;
    if !resp.success {
        return Err(ResourceError::Backend(format!(
            "node {} answered {method} on {} with an error: {}",
            c.owner_id, c.id, resp.error
        )));
    }
    Resp::decode(resp.response.as_slice()).map_err(|e| {
        ResourceError::Backend(format!(
            "node {} sent an undecodable {method} reply: {e}",
            c.owner_id
        ))
    })
}

/// Polls the owner for what a deploy in flight there reported, passing
/// each event on once, in order.
struct ProgressFollower {
    request_id: String,
    seen: u64,
    /// Off once the owner does not know the method (an older node).
    active: bool,
}

impl ProgressFollower {
    fn new(request_id: &str) -> ProgressFollower {
        ProgressFollower {
            request_id: request_id.to_string(),
            seen: 0,
            active: true,
        }
    }

    fn active(&self) -> bool {
        self.active
    }

    async fn poll(&mut self, remote: &RemoteProvider, progress: &ProgressSink) {
        if !self.active {
            return;
        }
        let call = pb::ProgressCall {
            request_id: self.request_id.clone(),
            skip: self.seen,
        };
        let c = &remote.candidate;
        let req = request(c, &remote.on_behalf_of, ProviderMethod::Progress, call);
        let reply = match remote
            .caller
            .call(&c.owner_addr, req, PROGRESS_POLL * 8)
            .await
        {
            // An older owner: the deploy goes on without progress, as before.
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                self.active = false;
                return;
            }
            Err(s) => Err(s.message().to_string()),
            Ok(r) if !r.success => Err(r.error),
            Ok(r) => pb::ProgressReply::decode(r.response.as_slice()).map_err(|e| e.to_string()),
        };
        // Progress is a courtesy: the deploy call decides the outcome.
        match reply {
            Ok(r) => {
                if r.lost > 0 {
                    debug!(request_id = %self.request_id, lost = r.lost, "deploy progress: the owner dropped events before they were read");
                }
                self.seen = self.seen.max(r.next);
                for e in r.events.into_iter().filter_map(progress_from_proto) {
                    progress.emit(e);
                }
            }
            Err(e) => {
                debug!(request_id = %self.request_id, error = %e, "deploy progress: poll failed")
            }
        }
    }
}

#[async_trait::async_trait]
impl Provider for RemoteProvider {
    fn id(&self) -> &str {
        &self.candidate.id
    }

    async fn describe(&self) -> Result<ProviderDescriptor, ResourceError> {
        let e: pb::ProviderEntry = self
            .call(ProviderMethod::Capacity, pb::CapacityCall {}, CALL_TIMEOUT)
            .await?;
        Ok(ProviderDescriptor {
            id: e.id,
            name: e.name,
            kind: self.candidate.kind,
            endpoint: e.endpoint,
            healthy: e.healthy,
            capacity: e.capacity.unwrap_or_default().into(),
            labels: e.labels.into_iter().collect(),
            gpus: e.gpus.iter().map(gpu_from_proto).collect(),
        })
    }

    async fn deploy(
        &self,
        spec: &DeploySpec,
        progress: ProgressSink,
    ) -> Result<Deployment, ResourceError> {
        let deploy = self.call(
            ProviderMethod::Deploy,
            pb::DeployCall {
                spec: Some(spec_to_proto(spec)),
            },
            DEPLOY_TIMEOUT,
        );
        let mut follow = ProgressFollower::new(&spec.request_id);
        let deployed: pb::Deployment = if progress.is_some() {
            tokio::pin!(deploy);
            loop {
                tokio::select! {
                    r = &mut deploy => break r?,
                    () = tokio::time::sleep(PROGRESS_POLL), if follow.active() => {
                        follow.poll(self, &progress).await;
                    }
                }
            }
        } else {
            deploy.await?
        };
        // What the owner reported after the last poll comes before the end.
        if progress.is_some() {
            follow.poll(self, &progress).await;
        }
        Ok(deployment_from_proto(deployed))
    }

    async fn status(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        let d: pb::Deployment = self
            .call(
                ProviderMethod::Status,
                pb::StatusCall {
                    deployment_id: deployment_id.to_string(),
                },
                CALL_TIMEOUT,
            )
            .await?;
        Ok(deployment_from_proto(d))
    }

    async fn list(&self) -> Result<Vec<Deployment>, ResourceError> {
        Err(ResourceError::Backend(
            "listing a remote provider's deployments is done on its owner".into(),
        ))
    }

    async fn logs(
        &self,
        deployment_id: &str,
        opts: LogOptions,
    ) -> Result<LogStream, ResourceError> {
        // CallProvider is unary: follow by polling for lines past those seen.
        let caller = self.caller.clone();
        let cand = self.candidate.clone();
        let who = self.on_behalf_of.clone();
        let id = deployment_id.to_string();
        let first: pb::LogsReply = self
            .call(
                ProviderMethod::Logs,
                pb::LogsCall {
                    deployment_id: id.clone(),
                    tail: opts.tail.unwrap_or(0),
                    skip: 0,
                },
                CALL_TIMEOUT,
            )
            .await?;
        struct Poll {
            seen: u64,
            pending: std::vec::IntoIter<pb::LogEntry>,
            ended: bool,
            follow: bool,
        }
        let start = Poll {
            seen: first.next,
            pending: first.lines.into_iter(),
            ended: first.ended,
            follow: opts.follow,
        };
        let stream = futures::stream::unfold(start, move |mut st| {
            let caller = caller.clone();
            let cand = cand.clone();
            let id = id.clone();
            let who = who.clone();
            async move {
                loop {
                    if let Some(e) = st.pending.next() {
                        let line = LogLine {
                            stderr: e.stderr,
                            text: e.text,
                        };
                        return Some((Ok(line), st));
                    }
                    if !st.follow || st.ended {
                        return None;
                    }
                    tokio::time::sleep(LOG_POLL).await;
                    let req = pb::LogsCall {
                        deployment_id: id.clone(),
                        tail: 0,
                        skip: st.seen,
                    };
                    match call::<_, pb::LogsReply>(
                        &*caller,
                        &cand,
                        &who,
                        ProviderMethod::Logs,
                        req,
                        CALL_TIMEOUT,
                    )
                    .await
                    {
                        Ok(r) => {
                            st.seen = r.next;
                            st.ended = r.ended;
                            st.pending = r.lines.into_iter();
                        }
                        // Gone since the first answer (stopped and
                        // removed): the follow is over.
                        Err(ResourceError::NotFound(_)) => return None,
                        Err(e) => {
                            st.ended = true;
                            return Some((Err(e), st));
                        }
                    }
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn renew_lease(
        &self,
        deployment_id: &str,
        epoch: Option<u64>,
    ) -> Result<Deployment, ResourceError> {
        self.lease(ProviderMethod::RenewLease, deployment_id, epoch)
            .await
    }

    async fn release_lease(
        &self,
        deployment_id: &str,
        epoch: Option<u64>,
    ) -> Result<Deployment, ResourceError> {
        self.lease(ProviderMethod::ReleaseLease, deployment_id, epoch)
            .await
    }

    async fn prepare(&self, spec: &DeploySpec, ttl: Duration) -> Result<(), ResourceError> {
        let _: pb::PrepareReply = self
            .call(
                ProviderMethod::Prepare,
                pb::PrepareCall {
                    spec: Some(spec_to_proto(spec)),
                    ttl_ms: ttl.as_millis() as u64,
                },
                CALL_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    async fn abort(&self, deployment_id: &str) -> Result<(), ResourceError> {
        let _: pb::AbortReply = self
            .call(
                ProviderMethod::Abort,
                pb::AbortCall {
                    deployment_id: deployment_id.to_string(),
                },
                CALL_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    async fn stop(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        let d: pb::Deployment = self
            .call(
                ProviderMethod::Stop,
                pb::StopCall {
                    deployment_id: deployment_id.to_string(),
                },
                CALL_TIMEOUT,
            )
            .await?;
        Ok(deployment_from_proto(d))
    }
}
