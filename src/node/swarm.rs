//! Drives the sans-IO swarm state (`crate::swarm`) from the node: one step
//! per gossip round and after every change, with the membership view and
//! the wall clock; and answers what the swarm API asks of the view.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::shared::Shared;
use crate::proto::peer::NodeMeta;
use crate::proto::resource as rpb;
use crate::store::Store;
use crate::swarm::{peers_of, pools, wall_ms, Peer, Swarm};
use crate::sync::lock;

/// Runs `f` over the swarm state and the other members, then steps and
/// publishes this node's record, so a change is gossiped at once.
pub fn with_swarm<R>(shared: &Shared, f: impl FnOnce(&mut Swarm, &[Peer<'_>], u64) -> R) -> R {
    let now = wall_ms();
    let mut mesh = shared.mesh();
    let (out, meta, withdrawn) = {
        let peers = peers_of(&mesh);
        let mut swarm = lock(&shared.swarm);
        let out = f(&mut swarm, &peers, now);
        let meta = swarm.step(&peers, now);
        (out, meta, swarm.take_withdrawn())
    };
    mesh.set_meta(meta);
    drop(mesh);
    for (group, why) in withdrawn {
        warn!(%group, "left a swarm group: {why}");
        shared.audit.record(
            "swarm.group.withdraw",
            "iarnet",
            "ok",
            serde_json::json!({"group": group, "why": why}),
        );
    }
    out
}

/// Reads the swarm state and the other members without changing anything.
pub fn read_swarm<R>(shared: &Shared, f: impl FnOnce(&Swarm, &[Peer<'_>], u64) -> R) -> R {
    let mesh = shared.mesh();
    let peers = peers_of(&mesh);
    let swarm = lock(&shared.swarm);
    f(&swarm, &peers, wall_ms())
}

/// Takes back the groups and pools a previous run saved in `store`.
pub fn restore(shared: &Shared, store: &dyn Store) {
    let saved = match store.swarm() {
        Ok(Some(doc)) => doc,
        Ok(None) => return,
        Err(e) => {
            warn!(error = %e, "cannot read the saved swarm groups and pools");
            return;
        }
    };
    match NodeMeta::decode(saved.as_slice()) {
        Ok(meta) => lock(&shared.swarm).restore(meta),
        Err(e) => {
            warn!(error = %e, "the saved swarm groups and pools do not decode; starting without")
        }
    }
}

/// Saves the groups and pools when they changed since the last save.
async fn save(shared: &Shared, store: &Arc<dyn Store>) {
    let Some(meta) = lock(&shared.swarm).take_unsaved() else {
        return;
    };
    let (store, doc) = (store.clone(), meta.encode_to_vec());
    match tokio::task::spawn_blocking(move || store.set_swarm(&doc)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "cannot save the swarm groups and pools"),
        Err(e) => warn!(error = %e, "saving the swarm groups and pools did not finish"),
    }
}

/// One step per gossip round: adopt rosters and pools, take office where
/// this node should lead, publish; and save what changed.
pub async fn swarm_loop(shared: Arc<Shared>, store: Arc<dyn Store>, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(shared.config.gossip.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = interval.tick() => {
                with_swarm(&shared, |_, _, _| ());
                save(&shared, &store).await;
            }
        }
    }
    save(&shared, &store).await;
}

/// Puts the swarm labels (groups, models, pools) on candidates owned by
/// the members of `mesh`, this node included.
pub fn decorate(shared: &Shared, candidates: &mut [crate::resource::Candidate]) {
    let mesh = shared.mesh();
    let pools = lock(&shared.swarm).pools();
    for c in candidates {
        let meta = mesh
            .view()
            .get(&c.owner_id)
            .and_then(|e| e.providers.as_ref())
            .and_then(|s| s.meta.as_ref());
        pools::decorate(c, meta, &pools);
    }
}

/// A node's advertised providers' capacity, summed.
pub fn capacity_of(sets: &[&rpb::Capacity]) -> rpb::Capacity {
    let mut sum = rpb::Capacity {
        total: Some(rpb::Resources::default()),
        reserved: Some(rpb::Resources::default()),
        available: Some(rpb::Resources::default()),
        ..Default::default()
    };
    for c in sets {
        for (into, from) in [
            (&mut sum.total, &c.total),
            (&mut sum.reserved, &c.reserved),
            (&mut sum.available, &c.available),
        ] {
            let (into, from) = (into.get_or_insert_default(), from.unwrap_or_default());
            into.cpu_millis += from.cpu_millis;
            into.memory_bytes += from.memory_bytes;
            into.gpus += from.gpus;
            into.storage_bytes = into.storage_bytes.saturating_add(from.storage_bytes);
        }
        sum.deployments += c.deployments;
    }
    sum
}

/// A member's record beside its providers, as this node holds it.
pub fn meta_of(shared: &Shared, id: &str) -> Option<NodeMeta> {
    let mesh = shared.mesh();
    if id == mesh.id() {
        return Some(lock(&shared.swarm).meta());
    }
    mesh.view()
        .get(id)
        .and_then(|e| e.providers.as_ref())
        .and_then(|s| s.meta.clone())
}

/// How long a health check waits for the node it checks.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);
