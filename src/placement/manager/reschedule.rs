//! Failover, the home's side: a deployment whose owner node the gossip
//! layer declared dead (not merely suspect) is placed again elsewhere,
//! once its reschedule policy's grace has passed, through the normal path
//! (ranking, the owner's admission), avoiding the dead node. The next
//! attempt's number is written durably before the replacement is placed,
//! and travels with it (a container label, the lease), so the old owner,
//! should it come back, can tell that its copy is stale.
//!
//! A deployment without a policy is reported lost (failed, with why).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Manager;
use crate::placement::place::{Attempt, Origin};
use crate::resource::{ProgressSink, ReschedulePolicy};
use crate::store::{now_ms, DeploymentRecord, Stored};
use crate::sync::Ticker;

/// Why a deployment is placed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The gossip layer declared its owner dead.
    OwnerDead,
    /// Its owner never made it: this node restarted before the owner
    /// answered, and the owner, asked since, does not know it.
    NeverMade,
}

/// When each deployment's owner was first seen gone, by deployment id.
#[derive(Default)]
pub(crate) struct Watch {
    gone_since: HashMap<String, u64>,
}

/// How long a deployment without a policy waits before it is reported lost.
const LOST_AFTER_MS: u64 = 10_000;

fn is_watched(r: &DeploymentRecord, me: &str) -> bool {
    r.placed_on.is_placed()
        && r.placed_on.owner_id != me
        && !r.adopted
        && match r.state() {
            Stored::Rescheduling { .. } => true,
            s => !s.is_final() && s != Stored::Stopping,
        }
}

impl Manager {
    /// Watches the owners of what this node placed until `cancel`.
    pub async fn run_reschedule(self: Arc<Self>, tick: Duration, cancel: CancellationToken) {
        let mut watch = Watch::default();
        let mut ticker = Ticker::new(tick);
        while ticker.tick(&cancel).await {
            self.confirm_round().await;
            self.reschedule_round(&mut watch).await;
            self.service_round().await;
        }
    }

    /// `rec` as the book holds it now, under its request's lock, if it is
    /// still watched (a stop or a finished try may have come first).
    async fn watched_now(
        &self,
        rec: &DeploymentRecord,
    ) -> Option<(crate::sync::KeyGuard<'_>, DeploymentRecord)> {
        let held = self.inflight.lock(&rec.request_id).await;
        let now = self
            .book
            .get(&rec.id)
            .filter(|r| is_watched(r, &self.node_id))?;
        Some((held, now))
    }

    /// One look at every watched deployment; returns how many were placed again.
    pub(crate) async fn reschedule_round(&self, watch: &mut Watch) -> usize {
        let ring = self.ring();
        // Alone in its view (just started, or cut off): nobody is dead yet.
        if ring.len() <= 1 {
            watch.gone_since.clear();
            return 0;
        }
        let now = now_ms();
        let watched = self.book.select(|r| is_watched(r, &self.node_id));
        let ids: HashSet<&str> = watched.iter().map(|r| r.id.as_str()).collect();
        watch.gone_since.retain(|id, _| ids.contains(id.as_str()));
        let mut placed = 0;
        for rec in watched {
            let alive = ring.member(&rec.placed_on.owner_id).is_some()
                && !matches!(rec.state(), Stored::Rescheduling { .. });
            if alive {
                watch.gone_since.remove(&rec.id);
                continue;
            }
            let since = *watch.gone_since.entry(rec.id.clone()).or_insert(now);
            let policy = rec.spec.as_ref().and_then(|s| s.reschedule);
            match policy {
                None if now.saturating_sub(since) >= LOST_AFTER_MS => {
                    self.report_lost(rec).await;
                }
                Some(p) if self.due(&rec, &p, since, now) => {
                    placed += usize::from(self.replace(rec, Cause::OwnerDead).await);
                }
                _ => {}
            }
        }
        placed
    }

    /// Whether the grace and the policy's delay have passed, and the policy
    /// allows another replacement.
    fn due(&self, rec: &DeploymentRecord, p: &ReschedulePolicy, since: u64, now: u64) -> bool {
        if now.saturating_sub(since) < p.after_ms {
            return false;
        }
        // Replacements so far: every attempt after the first.
        let earlier: Vec<u64> = rec.attempts.iter().skip(1).map(|a| a.at_ms).collect();
        let last = rec.attempts.last().map_or(0, |a| a.at_ms);
        let n = earlier.len() as u32 + 1;
        now.saturating_sub(last) >= p.delay(n) && p.allows(&earlier, now)
    }

    /// Places the next attempt of `rec`; true when it runs. A dead owner's
    /// providers are avoided.
    pub(crate) async fn replace(&self, rec: DeploymentRecord, cause: Cause) -> bool {
        let Some(mut spec) = rec.spec.clone() else {
            return false;
        };
        let Some((_held, mut rec)) = self.watched_now(&rec).await else {
            return false;
        };
        let from = rec.placed_on.owner_id.clone();
        let why = match cause {
            Cause::OwnerDead => format!("its owner node {from} was declared dead"),
            Cause::NeverMade => format!(
                "node {from} never made attempt {} (this node restarted before it answered)",
                rec.attempt.max(1)
            ),
        };
        // The next attempt's number is durable before anyone hears of it.
        if !matches!(rec.state(), Stored::Rescheduling { .. }) {
            if let Some(last) = rec.attempts.last_mut() {
                last.ended = why.clone();
            }
            rec.attempt = rec.attempt.max(1) + 1;
            rec.push(Stored::Rescheduling {
                reason: format!("{why}; placing attempt {} elsewhere", rec.attempt),
            });
            if let Err(e) = self.book.persist(&rec).await {
                warn!(deployment = %rec.id, error = %e, "cannot record a reschedule; tried again next round");
                return false;
            }
            self.failover.reschedules.inc();
        }
        spec.attempt = rec.attempt;
        spec.home = self.node_id.clone();
        let strategy = self.strategy;
        let index = self.registry.index();
        // Not back onto the dead node, even if a stale view still lists it.
        let avoid: HashSet<String> = match cause {
            Cause::OwnerDead => index
                .candidates()
                .iter()
                .filter(|c| c.owner_id == from)
                .map(|c| c.id.clone())
                .chain([rec.placed_on.provider_id.clone()])
                .collect(),
            Cause::NeverMade => HashSet::new(),
        };
        let need = crate::placement::feasible::Need {
            resources: spec.resources,
            gpu_model: spec.gpu_model.as_deref(),
            required_labels: Some(&spec.required_labels),
            region: None,
            provider_id: None,
            scope: Some(&spec.scope),
        };
        let result = self
            .placer()
            .attempt_spread(
                &rec.id,
                &spec,
                &need,
                strategy,
                &ProgressSink::none(),
                &index,
                &avoid,
                Origin::Replacing(&rec),
            )
            .await;
        match result {
            Ok(Attempt::Placed(placed)) => {
                info!(deployment = %rec.id, attempt = rec.attempt, from = %from, to = %placed.placement.owner_id, ?cause, "deployment rescheduled");
                self.audit(
                    "reschedule",
                    "placed",
                    serde_json::json!({"deployment": rec.id, "attempt": rec.attempt, "from": from, "provider": placed.placement.provider_id, "owner": placed.placement.owner_id}),
                );
                true
            }
            Ok(Attempt::Refused(refused)) => {
                // Nothing fits now: the replacement waits in the queue, in
                // priority order with the rest, for as long as it takes
                // (Nomad's blocked evaluations).
                let verdict = need.explain(index.candidates());
                let reason = format!(
                    "{why}; attempt {} waits for a provider: {}",
                    rec.attempt, verdict.text
                );
                let (id, attempt) = (rec.id.clone(), rec.attempt);
                if self.requeue(rec, spec, reason, None).await {
                    info!(deployment = %id, attempt, refused = refused.len(), "no provider took the replacement yet: queued");
                    self.audit(
                        "reschedule",
                        "queued",
                        serde_json::json!({"deployment": id, "attempt": attempt, "from": from}),
                    );
                }
                false
            }
            Err(e) => {
                warn!(deployment = %rec.id, error = %e, "reschedule failed");
                false
            }
        }
    }

    /// A deployment whose owner died and that may not move: failed, lost.
    async fn report_lost(&self, rec: DeploymentRecord) {
        let Some((_held, mut rec)) = self.watched_now(&rec).await else {
            return;
        };
        let reason = format!(
            "lost: its owner node {} was declared dead (deploy with a reschedule policy to have it placed again)",
            rec.placed_on.owner_id
        );
        rec.push(Stored::Failed { reason });
        match self.book.persist(&rec).await {
            Ok(()) => {
                self.failover.lost.inc();
            }
            Err(e) => warn!(deployment = %rec.id, error = %e, "cannot record a lost deployment"),
        }
    }
}
