//! Known peers kept in the store: the addresses of live members, saved
//! periodically and at shutdown, and used as extra seeds at the next start
//! so a restarted node rejoins without waiting on its configured seeds.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::shared::Shared;
use crate::mesh::Status;
use crate::store::Store;

/// The addresses of the members this node sees alive, itself excluded.
pub fn live_addrs(shared: &Shared) -> Vec<String> {
    let mesh = shared.mesh();
    let me = mesh.id().to_string();
    let mut out: Vec<String> = mesh
        .view()
        .iter()
        .filter(|e| e.status == Status::Alive && *e.info.id != *me)
        .map(|e| e.info.addr.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Saves the live peers unless there are none (a node alone keeps the
/// last list it had, which is what it wants at its next start).
pub async fn save(shared: &Shared, store: &Arc<dyn Store>) {
    let addrs = live_addrs(shared);
    if addrs.is_empty() {
        return;
    }
    let store = store.clone();
    let saved = tokio::task::spawn_blocking(move || store.set_peers(&addrs)).await;
    match saved {
        Ok(Ok(())) => debug!("known peers saved"),
        Ok(Err(e)) => warn!(error = %e, "cannot save known peers"),
        Err(e) => warn!(error = %e, "saving known peers did not finish"),
    }
}

/// Saves the live peers every `every` until cancelled.
pub async fn save_loop(
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tick.tick() => save(&shared, &store).await,
        }
    }
}

/// `configured` seeds followed by the saved peers not among them.
pub fn seeds(configured: &[String], store: &dyn Store) -> Vec<String> {
    let mut out = configured.to_vec();
    match store.peers() {
        Ok(saved) => {
            for a in saved {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        Err(e) => warn!(error = %e, "cannot read known peers; using the configured seeds only"),
    }
    out
}
