//! The serving side of `CallProvider`: another node operates one of this
//! node's own providers. Only own providers are served, so a call never
//! hops further; the owner admits under the provider's own lock.

use futures::StreamExt;
use prost::Message;
use tonic::Status;

use super::ProviderMethod;
use crate::placement::registry::Registry;
use crate::proto::resource as pb;
use crate::resource::validate::validate;
use crate::resource::wire::{
    deployment_to_proto, progress_to_proto, provider_entry, spec_from_proto,
};
use crate::resource::{
    Candidate, DeploySpec, Deployment, LogOptions, ProgressSink, Provider, ResourceError,
};

use super::journal::Journals;

fn decode<M: Message + Default>(method: ProviderMethod, payload: &[u8]) -> Result<M, Status> {
    M::decode(payload).map_err(|e| {
        Status::invalid_argument(format!(
            "payload of {:?} is not a valid iarnet.resource.v1 message: {e}",
            method.as_str()
        ))
    })
}

/// The longest a remote caller may have room held (a gang's prepare).
const MAX_HOLD_MS: u64 = 300_000;

/// Runs `method` on one of this node's own providers for another node.
pub async fn serve_call(
    registry: &Registry,
    provider_id: &str,
    method: &str,
    payload: &[u8],
) -> Result<Vec<u8>, Status> {
    let me = registry.node_id();
    if !registry.allow_remote_access() {
        return Err(Status::permission_denied(format!(
            "node {me} has allow_remote_access off: its providers serve only local requests"
        )));
    }
    let Some((p, tier)) = registry.local(provider_id) else {
        return Err(Status::not_found(format!(
            "provider {provider_id:?} is not owned by node {me}; call the node that owns it (see ListProviders)"
        )));
    };
    let Some(method) = ProviderMethod::parse(method) else {
        return Err(Status::unimplemented(format!(
            "method {method:?} is not a provider operation: use capacity, deploy, status, logs, stop, renew_lease, release_lease, prepare, abort or progress"
        )));
    };
    let bytes = match method {
        ProviderMethod::Capacity => {
            let _: pb::CapacityCall = decode(method, payload)?;
            let d = crate::placement::registry::describe(&*p).await?;
            provider_entry(&Candidate::local(&d, tier, me)).encode_to_vec()
        }
        ProviderMethod::Deploy => {
            let call: pb::DeployCall = decode(method, payload)?;
            let spec = spec_from_proto(
                call.spec
                    .ok_or_else(|| Status::invalid_argument("DeployCall.spec is missing"))?,
            )?;
            validate(&spec)?;
            let d = deploy_journaled(registry.journals(), &*p, &spec).await?;
            registry.changed(&*p).await;
            deployment_to_proto(&d, me).encode_to_vec()
        }
        ProviderMethod::Progress => {
            let call: pb::ProgressCall = decode(method, payload)?;
            let page = registry
                .journals()
                .read(provider_id, &call.request_id, call.skip);
            pb::ProgressReply {
                events: page.events.into_iter().map(progress_to_proto).collect(),
                next: page.next,
                lost: page.lost,
                done: page.done,
                known: page.known,
            }
            .encode_to_vec()
        }
        ProviderMethod::Status => {
            let call: pb::StatusCall = decode(method, payload)?;
            deployment_to_proto(&p.status(&call.deployment_id).await?, me).encode_to_vec()
        }
        ProviderMethod::Stop => {
            let call: pb::StopCall = decode(method, payload)?;
            let d = p.stop(&call.deployment_id).await?;
            registry.changed(&*p).await;
            deployment_to_proto(&d, me).encode_to_vec()
        }
        ProviderMethod::RenewLease => {
            let call: pb::LeaseCall = decode(method, payload)?;
            let epoch = Some(call.epoch).filter(|e| *e > 0);
            deployment_to_proto(&p.renew_lease(&call.deployment_id, epoch).await?, me)
                .encode_to_vec()
        }
        ProviderMethod::ReleaseLease => {
            let call: pb::LeaseCall = decode(method, payload)?;
            let epoch = Some(call.epoch).filter(|e| *e > 0);
            let d = p.release_lease(&call.deployment_id, epoch).await?;
            registry.changed(&*p).await;
            deployment_to_proto(&d, me).encode_to_vec()
        }
        ProviderMethod::Prepare => {
            let call: pb::PrepareCall = decode(method, payload)?;
            let spec = spec_from_proto(
                call.spec
                    .ok_or_else(|| Status::invalid_argument("PrepareCall.spec is missing"))?,
            )?;
            validate(&spec)?;
            let ttl = std::time::Duration::from_millis(call.ttl_ms.clamp(1, MAX_HOLD_MS));
            p.prepare(&spec, ttl).await?;
            registry.changed(&*p).await;
            pb::PrepareReply {}.encode_to_vec()
        }
        ProviderMethod::Abort => {
            let call: pb::AbortCall = decode(method, payload)?;
            p.abort(&call.deployment_id).await?;
            registry.changed(&*p).await;
            pb::AbortReply {}.encode_to_vec()
        }
        ProviderMethod::Logs => {
            let call: pb::LogsCall = decode(method, payload)?;
            let ended = p.status(&call.deployment_id).await?.state().is_final();
            let all: Vec<pb::LogEntry> = p
                .logs(&call.deployment_id, LogOptions::default())
                .await?
                .filter_map(|l| async move { l.ok() })
                .map(|l| pb::LogEntry {
                    stderr: l.stderr,
                    text: l.text,
                })
                .collect()
                .await;
            let next = all.len() as u64;
            let mut lines: Vec<pb::LogEntry> = all.into_iter().skip(call.skip as usize).collect();
            if call.tail > 0 && lines.len() > call.tail as usize {
                lines.drain(..lines.len() - call.tail as usize);
            }
            pb::LogsReply { lines, ended, next }.encode_to_vec()
        }
    };
    Ok(bytes)
}

/// Deploys for another node, keeping what the deploy reports in its
/// journal while it runs, for the caller to poll.
async fn deploy_journaled(
    journals: &Journals,
    p: &dyn Provider,
    spec: &DeploySpec,
) -> Result<Deployment, ResourceError> {
    let journal = journals.start(p.id(), &spec.request_id);
    let (sink, mut events) = ProgressSink::channel();
    let deploy = p.deploy(spec, sink);
    tokio::pin!(deploy);
    let result = loop {
        tokio::select! {
            r = &mut deploy => break r,
            Some(e) = events.recv() => journal.lock().expect("journal lock").push(e),
        }
    };
    let mut j = journal.lock().expect("journal lock");
    while let Ok(e) = events.try_recv() {
        j.push(e);
    }
    j.finish();
    result
}
