//! Preemption, both sides. As an owner, this node reports each deployment
//! its providers evicted (see `preempting.rs`) to the deployment's home,
//! retrying while the home is out of reach. As a home, it queues such a
//! deployment again, at the next attempt, with the reason
//! "preempted by <id>", so it runs again once something has room.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Manager;
use crate::placement::place::DEFAULT_QUEUE_TIMEOUT;
use crate::placement::preempting::Evicted;
use crate::proto::directory as pb;
use crate::store::{now_ms, Stored};

/// How long an owner keeps trying to tell a home of an eviction.
const REPORT_FOR: Duration = Duration::from_secs(600);
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The prefix of the reason a preempted deployment waits with.
pub const PREEMPTED_BY: &str = "preempted by";

impl Manager {
    /// Reports this node's evictions to their homes until `cancel`.
    pub async fn run_preemptions(self: Arc<Self>, tick: Duration, cancel: CancellationToken) {
        let Some(mut evicted) = crate::sync::lock(&self.evicted_rx).take() else {
            return;
        };
        let mut unsent: Vec<(Evicted, u64)> = Vec::new();
        let mut retry = tokio::time::interval(tick.max(Duration::from_millis(50)));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                e = evicted.recv() => match e {
                    Some(e) => {
                        self.failover.preemptions.inc();
                        self.audit(
                            "preempt",
                            "evicted",
                            json!({"deployment": e.id, "provider": e.provider_id, "attempt": e.attempt, "home": e.home, "by": e.by}),
                        );
                        if !self.report_eviction(&e).await {
                            unsent.push((e, now_ms()));
                        }
                    }
                    None => return,
                },
                _ = retry.tick(), if !unsent.is_empty() => {
                    let mut still = Vec::new();
                    for (e, since) in unsent.drain(..) {
                        if self.report_eviction(&e).await {
                            continue;
                        }
                        if now_ms().saturating_sub(since) < REPORT_FOR.as_millis() as u64 {
                            still.push((e, since));
                        } else {
                            warn!(deployment = %e.id, home = %e.home, "gave up telling its home of an eviction; it stays stopped");
                        }
                    }
                    unsent = still;
                }
            }
        }
    }

    /// Tells `e`'s home; true once it heard (or there is no home to tell).
    async fn report_eviction(&self, e: &Evicted) -> bool {
        if e.home.is_empty() {
            return true;
        }
        if e.home == self.node_id {
            self.requeue_preempted(&e.id, e.attempt, &e.by).await;
            return true;
        }
        let (Some(caller), Some(addr)) = (
            self.registry.discovery().directory(),
            self.ring().member(&e.home).map(|m| m.addr.clone()),
        ) else {
            return false;
        };
        let req = pb::CheckRequest {
            from: self.node_id.clone(),
            deployments: vec![pb::AttemptOf {
                id: e.id.clone(),
                attempt: e.attempt,
                preempted_by: e.by.clone(),
            }],
        };
        match caller.check(&addr, req, REPORT_TIMEOUT).await {
            Ok(_) => true,
            Err(err) => {
                warn!(deployment = %e.id, home = %e.home, error = %err, "cannot report an eviction to its home yet");
                false
            }
        }
    }

    /// The home's side: attempt `attempt` of `id` was evicted for `by`; it
    /// waits in the queue again at the next attempt. Anything else (a newer
    /// attempt, a stop, a deployment without its spec) is left as it is.
    pub(crate) async fn requeue_preempted(&self, id: &str, attempt: u32, by: &str) {
        let Some(rec) = self.book.get(id) else { return };
        let _held = self.inflight.lock(&rec.request_id).await;
        let Some(mut rec) = self.book.get(id) else {
            return;
        };
        let state = rec.state();
        if rec.attempt.max(1) != attempt
            || !rec.placed_on.is_placed()
            || matches!(state, Stored::Stopping | Stored::Stopped)
        {
            return;
        }
        let reason = format!("{PREEMPTED_BY} {by}");
        let Some(spec) = rec.spec.clone() else {
            rec.push(Stored::Failed { reason });
            if let Err(e) = self.book.persist(&rec).await {
                warn!(deployment = %id, error = %e, "cannot record a preempted deployment");
            }
            return;
        };
        if let Some(last) = rec.attempts.last_mut() {
            last.ended = reason.clone();
        }
        rec.attempt = attempt + 1;
        let next = rec.attempt;
        if !self
            .requeue(rec, spec, reason, Some(DEFAULT_QUEUE_TIMEOUT))
            .await
        {
            return;
        }
        self.failover.preempted_requeued.inc();
        info!(deployment = %id, attempt = next, %by, "preempted deployment queued again");
        self.audit(
            "preempt",
            "requeued",
            json!({"deployment": id, "attempt": next, "by": by}),
        );
    }
}

/// A channel for a manager's providers to report evictions on.
pub(super) fn channel() -> (
    mpsc::UnboundedSender<Evicted>,
    std::sync::Mutex<Option<mpsc::UnboundedReceiver<Evicted>>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, std::sync::Mutex::new(Some(rx)))
}

#[cfg(test)]
#[path = "preemption_tests.rs"]
mod tests;
