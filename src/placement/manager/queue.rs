//! The queue worker of a home node: one loop that wakes when the mesh view
//! or a local provider changes (a stop, a lease expiry, a node joining), when
//! a deploy is queued, and at the next queue_timeout; it expires what waited
//! too long and tries what could now fit, in queue order.
//!
//! No polling storm: a pass plans only over the providers whose advertised
//! entry changed since the last pass (all of them after an arrival),
//! takes from the plan what each try would take, and starts at most
//! [`TRIES_PER_PASS`]. The owner still admits under its own lock, so two
//! homes racing for the same capacity cannot both win it: the loser's entry
//! goes back to its place in line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Manager;
use crate::metrics::QueueMetrics;
use crate::placement::pending::{self, QueueEntry};
use crate::placement::place::{Attempt, Origin};
use crate::placement::rank::{Index, Strategy};
use crate::resource::{Candidate, DeploySpec, ProgressSink, Resources};
use crate::store::{now_ms, DeploymentRecord, PlacedOn, QueuedRecord, Stored};

/// Tries one pass may start.
pub const TRIES_PER_PASS: usize = 64;
/// Queued entries, from the head, that `/metrics` explains.
pub const BLOCKED_SAMPLE: usize = 256;

/// What the worker remembers between passes.
#[derive(Default)]
struct Seen {
    index: Option<Arc<Index>>,
    /// Health, free capacity and advertised version per provider at the last pass.
    last: HashMap<String, (bool, Resources, u64)>,
}

impl Seen {
    /// Providers that changed since the last pass (or appeared). Any change
    /// counts, not only growth: gossip may skip states, so a provider seen
    /// with 2 CPUs free, found full by a try, may next be seen with 2 free
    /// again; its new version says it is worth one more try.
    fn changed(&mut self, index: &Arc<Index>) -> Vec<Candidate> {
        if self.index.as_ref().is_some_and(|i| Arc::ptr_eq(i, index)) {
            return Vec::new();
        }
        self.index = Some(index.clone());
        let mut changed = Vec::new();
        let mut last = HashMap::with_capacity(index.len());
        for c in index.candidates() {
            let now = (c.healthy, c.capacity.available(), c.version);
            if self.last.get(&c.id) != Some(&now) {
                changed.push(c.clone());
            }
            last.insert(c.id.clone(), now);
        }
        self.last = last;
        changed
    }
}

impl Manager {
    /// Runs the queue until `cancel`. `tick` bounds how late a change the
    /// worker was not told about (a gossip update) is noticed: keep it at
    /// or under the gossip interval.
    pub async fn run_queue(self: Arc<Self>, tick: Duration, cancel: CancellationToken) {
        let mut seen = Seen::default();
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let until_deadline = self
                .pending
                .next_deadline()
                .map(|d| Duration::from_millis(d.saturating_sub(now_ms())))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.pending.woken() => {}
                _ = ticks.tick() => {}
                _ = tokio::time::sleep(until_deadline) => {}
            }
            self.expire_due().await;
            self.pass(&mut seen).await;
        }
    }

    /// One pass over what changed; returns how many queued deploys ran.
    async fn pass(&self, seen: &mut Seen) -> usize {
        let index = self.registry.index();
        self.exclude_by_spread(&index);
        let changed = seen.changed(&index);
        let tries = self
            .pending
            .plan(&changed, index.candidates(), TRIES_PER_PASS);
        let mut ran = 0;
        for t in tries {
            if self.try_queued(&t.id, &t.provider, &index).await {
                ran += 1;
            }
            // A try changes (or finds changed) what the view says of the
            // provider; its next entry, whatever it says, is worth a look.
            seen.last.remove(&t.provider);
        }
        ran
    }

    /// Keeps each strict-spread replica's excluded providers current, so
    /// it neither plans onto nor holds back a provider it may not use.
    pub(crate) fn exclude_by_spread(&self, index: &Index) {
        let placer = self.placer();
        for q in self.pending.spread_bound() {
            let forbidden = placer.spread_forbids(&q.id, &q.spec, &q.need(), index);
            self.pending.exclude(&q.id, forbidden);
        }
    }

    /// Tries one queued deploy on `provider`; true when it now runs.
    async fn try_queued(&self, id: &str, provider: &str, index: &Index) -> bool {
        let Some(q) = self.pending.get(id) else {
            return false;
        };
        let _held = self.inflight.lock(&q.spec.request_id).await;
        // Stopped or expired while this pass waited for the lock.
        let Some(q) = self.pending.remove(id) else {
            return false;
        };
        let Some(rec) = self
            .book
            .get(id)
            .filter(|r| matches!(r.state(), Stored::Queued { .. }))
        else {
            return false;
        };
        let mut need = q.need();
        need.provider_id = Some(provider);
        let strategy = q
            .strategy
            .as_deref()
            .and_then(|s| Strategy::parse(s).ok())
            .unwrap_or(self.strategy);
        let placer = self.placer();
        // A strict spread may rule the planned provider out.
        let forbidden = placer.spread_forbids(id, &q.spec, &need, index);
        let result = placer
            .attempt(
                id,
                &q.spec,
                &need,
                strategy,
                &ProgressSink::none(),
                index,
                &forbidden,
                Origin::Queued(&rec),
            )
            .await;
        let waited = now_ms().saturating_sub(q.enqueued_ms) as f64 / 1000.0;
        match result {
            Ok(Attempt::Placed(p)) => {
                self.queue_stats.unblocked.inc();
                self.queue_stats.wait_seconds.observe(waited);
                info!(deployment = %id, provider = %p.placement.provider_id, waited_secs = waited, "queued deployment unblocked");
                self.audit(
                    "queue",
                    "unblocked",
                    json!({"deployment": id, "request_id": q.spec.request_id, "provider": p.placement.provider_id, "owner": p.placement.owner_id, "waited_secs": waited}),
                );
                true
            }
            Ok(Attempt::Refused(_)) => {
                // Lost the race for it: back in line, same place.
                self.pending.insert_quiet(q);
                false
            }
            Err(e) => {
                let still_queued = self
                    .book
                    .get(id)
                    .is_some_and(|r| matches!(r.state(), Stored::Queued { .. }));
                if still_queued {
                    warn!(deployment = %id, error = %e, "cannot try a queued deployment; it stays queued");
                    self.pending.insert_quiet(q);
                } else {
                    self.queue_stats.wait_seconds.observe(waited);
                    self.audit(
                        "queue",
                        "failed",
                        json!({"deployment": id, "request_id": q.spec.request_id, "error": e.to_string()}),
                    );
                }
                false
            }
        }
    }

    /// Ends the wait of every deploy whose queue_timeout passed.
    async fn expire_due(&self) {
        for id in self.pending.due(now_ms()) {
            let Some(q) = self.pending.get(&id) else {
                continue;
            };
            let _held = self.inflight.lock(&q.spec.request_id).await;
            let Some(q) = self.pending.remove(&id) else {
                continue;
            };
            let Some(mut rec) = self.book.get(&id) else {
                continue;
            };
            let waited = Duration::from_millis(
                q.deadline_ms
                    .unwrap_or(q.enqueued_ms)
                    .saturating_sub(q.enqueued_ms),
            );
            let why = q.need().explain(self.registry.index().candidates()).text;
            let reason = format!(
                "waited its queue_timeout of {} and no provider could run it: {why}",
                humantime::format_duration(waited)
            );
            rec.push(Stored::Expired {
                reason: reason.clone(),
            });
            if let Err(e) = self.book.dequeue(&rec).await {
                warn!(deployment = %id, error = %e, "cannot record a queue timeout; it stays queued");
                self.pending.insert_quiet(q);
                continue;
            }
            self.queue_stats.timeouts.inc();
            self.queue_stats.wait_seconds.observe(waited.as_secs_f64());
            info!(deployment = %id, %reason, "queued deployment expired");
            self.audit(
                "queue",
                "expired",
                json!({"deployment": id, "request_id": q.spec.request_id, "reason": reason}),
            );
        }
    }

    /// The queue in order, each with why it waits now.
    /// Puts `rec`, given up where it ran, back in the queue at its next
    /// attempt (`rec.attempt`, already raised), waiting with `reason`.
    /// Without a deadline it waits for as long as it takes. False when the
    /// store refused (the caller's state is then unchanged on disk).
    pub(super) async fn requeue(
        &self,
        mut rec: DeploymentRecord,
        mut spec: DeploySpec,
        reason: String,
        deadline: Option<Duration>,
    ) -> bool {
        rec.placed_on = PlacedOn::default();
        rec.push(Stored::Queued { reason });
        spec.attempt = rec.attempt;
        let now = now_ms();
        let q = QueuedRecord {
            id: rec.id.clone(),
            strategy: None,
            region: None,
            provider_id: None,
            priority: spec.priority,
            seq: self.pending.reserve_seq(),
            enqueued_ms: now,
            deadline_ms: deadline.map(|d| now.saturating_add(d.as_millis() as u64)),
            wait_for_capacity: deadline.is_none(),
            spec,
        };
        if let Err(e) = self.book.enqueue(&q, &rec).await {
            warn!(deployment = %rec.id, error = %e, "cannot queue a deployment again");
            return false;
        }
        let placer = self.placer();
        let forbidden = placer.spread_forbids(&rec.id, &q.spec, &q.need(), &self.registry.index());
        self.pending.insert(q);
        self.pending.exclude(&rec.id, forbidden);
        true
    }

    pub fn queue(&self) -> Vec<(QueueEntry, String)> {
        let index = self.registry.index();
        let entries = self.pending.ordered();
        let of = entries.len();
        let placer = self.placer();
        entries
            .into_iter()
            .map(|e| {
                let need = e.record.need();
                let verdict = need.explain(index.candidates());
                let mut reason = pending::reason(&verdict, e.position, of);
                let r = &e.record;
                if let Some(why) = placer.spread_reason(&r.id, &r.spec, &need, &index) {
                    reason = format!("{reason}; {why}");
                }
                (e, reason)
            })
            .collect()
    }

    /// Why the head of the queue waits: its first [`BLOCKED_SAMPLE`]
    /// entries by what keeps most providers from each (see
    /// [`Verdict::blocker`](crate::placement::feasible::Verdict)), so a
    /// scrape costs the same whatever the queue's length.
    pub fn queue_blocked(&self) -> std::collections::BTreeMap<String, u64> {
        let index = self.registry.index();
        let mut out = std::collections::BTreeMap::new();
        for e in self.pending.head(BLOCKED_SAMPLE) {
            let verdict = e.record.need().explain(index.candidates());
            *out.entry(verdict.blocker).or_default() += 1;
        }
        out
    }

    /// Queued deploys by priority class.
    pub fn queued_by_class(&self) -> std::collections::BTreeMap<&'static str, usize> {
        self.pending.by_class()
    }

    /// The queue's counters and wait histogram, for `/metrics`.
    pub fn queue_metrics(&self) -> &QueueMetrics {
        &self.queue_stats
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
pub(super) mod tests;
