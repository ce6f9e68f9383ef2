//! Stop after disconnect, the owner's side: a deployment that asks for it
//! (`stop_after_disconnect`) is stopped by its owner once its home has
//! stayed out of view (declared dead by the gossip layer) that long, as
//! Nomad's `disconnect.stop_on_client_after`. A minority side of a
//! partition so gives up work the majority has placed again, before the
//! heal; fencing catches what is left when the heal comes first.
//!
//! The owner lists its providers only when a member left its view (or at
//! start), so the common case costs one set comparison per tick.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use tracing::{info, warn};

use super::Manager;
use crate::resource::ResourceError;
use crate::store::now_ms;

#[derive(Debug, Clone)]
struct Watched {
    provider: String,
    home: String,
    /// When this owner saw the home gone (Unix ms).
    since: u64,
    after_ms: u64,
}

/// Deployments whose home is out of view, by deployment id.
#[derive(Default)]
pub(crate) struct Disconnected {
    watched: HashMap<String, Watched>,
    scanned: bool,
}

impl Manager {
    /// One tick: `members` are the ids in view now; `lost_member` says one
    /// left since the last tick. Returns how many copies it stopped.
    pub(crate) async fn disconnect_round(
        &self,
        d: &mut Disconnected,
        members: &HashSet<String>,
        lost_member: bool,
    ) -> usize {
        let now = now_ms();
        if lost_member || !d.scanned {
            d.scanned = true;
            for (p, c) in self.registry.local_candidates() {
                let Ok(list) = p.list().await else { continue };
                for dep in list {
                    let Some(after_ms) = dep.stop_after_disconnect_ms else {
                        continue;
                    };
                    let foreign = !dep.home.is_empty() && dep.home != self.node_id;
                    if foreign && !dep.state().is_final() && !members.contains(&dep.home) {
                        d.watched.entry(dep.id).or_insert(Watched {
                            provider: c.id.clone(),
                            home: dep.home,
                            since: now,
                            after_ms,
                        });
                    }
                }
            }
        }
        // A home back in view keeps its work.
        d.watched.retain(|_, w| !members.contains(&w.home));
        let due: Vec<(String, Watched)> = d
            .watched
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.since) >= w.after_ms)
            .map(|(id, w)| (id.clone(), w.clone()))
            .collect();
        let mut stopped = 0;
        for (id, w) in due {
            let Some((p, _)) = self.registry.local(&w.provider) else {
                d.watched.remove(&id);
                continue;
            };
            match p.stop(&id).await {
                Ok(_) => {
                    d.watched.remove(&id);
                    stopped += 1;
                    info!(deployment = %id, home = %w.home, after_ms = w.after_ms, "home out of reach too long: stopped (stop_after_disconnect)");
                    self.failover.disconnect_stops.inc();
                    self.audit(
                        "disconnect",
                        "stopped",
                        json!({"deployment": id, "home": w.home, "after_ms": w.after_ms}),
                    );
                    self.registry.changed(&*p).await;
                }
                Err(ResourceError::NotFound(_)) => {
                    d.watched.remove(&id);
                }
                Err(e) => {
                    warn!(deployment = %id, error = %e, "cannot stop a disconnected deployment; tried again next tick");
                }
            }
        }
        stopped
    }
}
