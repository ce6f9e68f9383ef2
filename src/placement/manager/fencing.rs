//! Fencing, so a replica never runs twice once the network heals. An owner
//! that runs deployments placed by other nodes asks each home, in bounded
//! batches, whether the attempt it runs is still the current one: at its
//! start (a restart), whenever a member joins or comes back (a heal), and
//! every few rounds. A copy whose home has placed a newer attempt elsewhere
//! is stopped. The home answers from its durable record; a copy it does
//! not know is left alone (a wiped home must not stop the mesh's work).
//! The same loop stops copies whose home stayed away past their
//! `stop_after_disconnect` (see `disconnect.rs`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::disconnect::Disconnected;
use super::Manager;
use crate::proto::directory as pb;
use crate::store::{DeploymentRecord, Stored};
use crate::sync::Ticker;

/// Deployments per check call.
const CHECK_BATCH: usize = 500;
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// A full round at least this often, in ticks.
const ROUND_EVERY: u32 = 30;

impl Manager {
    /// Checks this node's foreign-homed copies until `cancel`, and stops
    /// those whose home stayed out of reach past their
    /// `stop_after_disconnect` (see `disconnect.rs`).
    pub async fn run_fencing(self: Arc<Self>, tick: Duration, cancel: CancellationToken) {
        let mut known: HashSet<(String, u64)> = HashSet::new();
        let mut disconnected = Disconnected::default();
        let mut ticker = Ticker::new(tick);
        let mut since_round = ROUND_EVERY;
        while ticker.tick(&cancel).await {
            let ring = self.ring();
            let now: HashSet<(String, u64)> = ring
                .members()
                .iter()
                .map(|m| (m.id.clone(), m.generation))
                .collect();
            // Someone joined or came back: their copies may be stale.
            let heard_again = now.difference(&known).next().is_some();
            let ids: HashSet<String> = now.iter().map(|(id, _)| id.clone()).collect();
            let lost_member = known.iter().any(|(id, _)| !ids.contains(id));
            known = now;
            self.disconnect_round(&mut disconnected, &ids, lost_member)
                .await;
            since_round += 1;
            if heard_again || since_round >= ROUND_EVERY {
                since_round = 0;
                self.fence_round().await;
            }
        }
    }

    /// Asks the homes of this node's copies; stops the stale ones. Returns
    /// how many were stopped.
    pub async fn fence_round(&self) -> usize {
        let Some(caller) = self.registry.discovery().directory() else {
            return 0;
        };
        let ring = self.ring();
        // home -> (provider, deployment id, attempt)
        let mut by_home: BTreeMap<String, Vec<(String, String, u32)>> = BTreeMap::new();
        for (p, c) in self.registry.local_candidates() {
            let Ok(list) = p.list().await else { continue };
            for d in list {
                let foreign = !d.home.is_empty() && d.home != self.node_id;
                if foreign && !d.state().is_final() && ring.member(&d.home).is_some() {
                    by_home.entry(d.home.clone()).or_default().push((
                        c.id.clone(),
                        d.id,
                        d.attempt.max(1),
                    ));
                }
            }
        }
        let mut stopped = 0;
        for (home, copies) in by_home {
            let Some(addr) = ring.member(&home).map(|m| m.addr.clone()) else {
                continue;
            };
            for batch in copies.chunks(CHECK_BATCH) {
                let req = pb::CheckRequest {
                    from: self.node_id.clone(),
                    deployments: batch
                        .iter()
                        .map(|(_, id, attempt)| pb::AttemptOf {
                            id: id.clone(),
                            attempt: *attempt,
                            ..Default::default()
                        })
                        .collect(),
                };
                let verdicts = match caller.check(&addr, req, CHECK_TIMEOUT).await {
                    Ok(r) => r.verdicts,
                    Err(e) => {
                        warn!(home = %home, error = %e, "cannot check attempts with their home; asked again later");
                        continue;
                    }
                };
                for v in verdicts.into_iter().filter(|v| v.stale) {
                    let Some((provider, _, attempt)) = batch.iter().find(|(_, id, _)| *id == v.id)
                    else {
                        continue;
                    };
                    stopped += usize::from(self.fence(provider, &v.id, *attempt, &home, &v).await);
                }
            }
        }
        stopped
    }

    /// Stops one stale copy.
    async fn fence(
        &self,
        provider: &str,
        id: &str,
        attempt: u32,
        home: &str,
        v: &pb::Verdict,
    ) -> bool {
        let Some((p, _)) = self.registry.local(provider) else {
            return false;
        };
        match p.stop(id).await {
            Ok(_) => {
                info!(deployment = %id, attempt, current = v.current, home = %home, "stale attempt stopped (fenced)");
                self.failover.fenced.inc();
                self.audit(
                    "fenced",
                    "stopped",
                    json!({"deployment": id, "attempt": attempt, "current": v.current, "home": home, "reason": v.reason}),
                );
                self.registry.changed(&*p).await;
                true
            }
            Err(e) => {
                warn!(deployment = %id, error = %e, "cannot stop a stale attempt; tried again next round");
                false
            }
        }
    }

    /// The home's answer: for each deployment it placed, whether the asker's
    /// attempt is stale. A deployment it reported lost whose copy turns out
    /// to run (its owner came back) is found again.
    pub async fn check_attempts(&self, from: &str, asked: Vec<pb::AttemptOf>) -> Vec<pb::Verdict> {
        let mut out = Vec::with_capacity(asked.len());
        for a in asked {
            let Some(rec) = self.book.get(&a.id).filter(|r| !r.adopted) else {
                out.push(pb::Verdict {
                    id: a.id,
                    current: 0,
                    stale: false,
                    reason: format!("node {} keeps no record of it", self.node_id),
                });
                continue;
            };
            let current = rec.attempt.max(1);
            if !a.preempted_by.is_empty() && rec.placed_on.owner_id == from {
                self.requeue_preempted(&a.id, a.attempt, &a.preempted_by)
                    .await;
            }
            let stale = a.attempt < current;
            if !stale && is_lost(&rec) && rec.placed_on.owner_id == from {
                self.found_again(&rec.id, from).await;
            }
            out.push(pb::Verdict {
                reason: if stale {
                    format!(
                        "attempt {current} replaced it on node {}",
                        rec.placed_on.owner_id
                    )
                } else {
                    String::new()
                },
                id: a.id,
                current,
                stale,
            });
        }
        out
    }

    async fn found_again(&self, id: &str, owner: &str) {
        let Some(rec) = self.book.get(id) else { return };
        let _held = self.inflight.lock(&rec.request_id).await;
        // Still lost under the lock: a stop or a new attempt may have come first.
        let Some(mut rec) = self.book.get(id).filter(is_lost) else {
            return;
        };
        rec.push(Stored::Running);
        if let Err(e) = self.book.persist(&rec).await {
            warn!(deployment = %id, error = %e, "cannot record a lost deployment found again");
        } else {
            info!(deployment = %id, owner = %owner, "deployment reported lost runs again: its owner is back");
        }
    }
}

/// Whether the home reported the deployment lost (its owner went silent).
fn is_lost(rec: &DeploymentRecord) -> bool {
    matches!(rec.state(), Stored::Failed { reason } if reason.starts_with("lost:"))
}
