//! Placing one replica of a service under its spread: the providers that
//! would break the skew are skipped first; a soft spread then falls back
//! to any provider, a strict one reports the constraint instead.

use std::collections::HashSet;

use super::feasible::Need;
use super::place::{Attempt, Origin, Placer};
use super::rank::{Index, Strategy};
use super::spread::{self, Choice, Sibling};
use crate::resource::{DeploySpec, ProgressSink, ResourceError, Spread};
use crate::store::{DeploymentRecord, Stored};

/// Whether `r` is a replica of `service` that holds its place now: placed,
/// not ended, not being moved.
fn holds_a_place(r: &DeploymentRecord, service: &str) -> bool {
    r.spec
        .as_ref()
        .and_then(|s| s.replica_of.as_ref())
        .is_some_and(|of| of.service == service)
        && r.placed_on.is_placed()
        && !r.state().is_final()
        && !matches!(r.state(), Stored::Rescheduling { .. } | Stored::Stopping)
}

impl Placer<'_> {
    /// Where the other replicas of `spec`'s service run now.
    pub(crate) fn siblings(&self, id: &str, spec: &DeploySpec) -> Vec<Sibling> {
        let Some(of) = &spec.replica_of else {
            return Vec::new();
        };
        self.book.filter_map(|r| {
            (r.id != id && holds_a_place(r, &of.service)).then(|| Sibling {
                provider_id: r.placed_on.provider_id.clone(),
                owner_id: r.placed_on.owner_id.clone(),
            })
        })
    }

    /// The spread's choice for replica `id`, or None without a spread.
    pub(crate) fn spread_choice(
        &self,
        id: &str,
        spec: &DeploySpec,
        need: &Need<'_>,
        index: &Index,
    ) -> Option<(Spread, Choice)> {
        let spread = spec.spread.clone().filter(|_| spec.replica_of.is_some())?;
        // Eligible: could hold it at all, wherever pinned (the queue pins
        // a try to one provider; the domains are the mesh's).
        let mut any = need.clone();
        any.provider_id = None;
        let eligible = |c: &crate::resource::Candidate| {
            !matches!(any.fit(c), crate::lifecycle::queue::Fit::Never)
        };
        let siblings = self.siblings(id, spec);
        let choice = spread::choose(&spread, index.candidates(), eligible, &siblings);
        Some((spread, choice))
    }

    /// What a strict spread adds to the reason a replica waits: said only
    /// when it rules out a provider that has room now.
    pub(crate) fn spread_reason(
        &self,
        id: &str,
        spec: &DeploySpec,
        need: &Need<'_>,
        index: &Index,
    ) -> Option<String> {
        let (spread, choice) = self.spread_choice(id, spec, need, index)?;
        let mut any = need.clone();
        any.provider_id = None;
        let ruled_out = index
            .candidates()
            .iter()
            .filter(|c| choice.skip.contains(&c.id) && any.feasible(c))
            .count();
        (spread.strict && ruled_out > 0).then(|| {
            format!(
                "{spread} rules out {ruled_out} provider(s) with room ({})",
                spread::describe(&spread.key, &choice.counts)
            )
        })
    }

    /// Why queued deploy `id` waits now, its spread included.
    pub(crate) fn queued_reason(&self, id: &str) -> Option<String> {
        let index = self.registry.index();
        let mut reason = self.pending.reason(id, index.candidates())?;
        let q = self.pending.get(id)?;
        // A deployment that waits again (evicted, or its owner died) says
        // why its last attempt ended.
        if let Some(ended) = self
            .book
            .get(id)
            .and_then(|r| r.attempts.last().map(|a| a.ended.clone()))
            .filter(|e| !e.is_empty())
        {
            reason = format!("{ended}; {reason}");
        }
        Some(match self.spread_reason(id, &q.spec, &q.need(), &index) {
            Some(why) => format!("{reason}; {why}"),
            None => reason,
        })
    }

    /// Providers a strict spread rules out for replica `id`.
    pub(crate) fn spread_forbids(
        &self,
        id: &str,
        spec: &DeploySpec,
        need: &Need<'_>,
        index: &Index,
    ) -> HashSet<String> {
        match self.spread_choice(id, spec, need, index) {
            Some((s, c)) if s.strict => c.skip,
            _ => HashSet::new(),
        }
    }

    /// `attempt`, keeping the spread of `spec`'s service where it has one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn attempt_spread(
        &self,
        id: &str,
        spec: &DeploySpec,
        need: &Need<'_>,
        strategy: Strategy,
        progress: &ProgressSink,
        index: &Index,
        avoid: &HashSet<String>,
        origin: Origin<'_>,
    ) -> Result<Attempt, ResourceError> {
        let Some((spread, choice)) = self.spread_choice(id, spec, need, index) else {
            return self
                .attempt(id, spec, need, strategy, progress, index, avoid, origin)
                .await;
        };
        let mut first = avoid.clone();
        first.extend(choice.skip.iter().cloned());
        let outcome = self
            .attempt(id, spec, need, strategy, progress, index, &first, origin)
            .await?;
        match outcome {
            Attempt::Refused(_) if !spread.strict && !choice.skip.is_empty() => {
                // A preference only: the skew grows rather than the wait.
                self.attempt(id, spec, need, strategy, progress, index, avoid, origin)
                    .await
            }
            Attempt::Refused(mut refused) if spread.strict => {
                refused.push(format!(
                    "{spread}: {}",
                    spread::describe(&spread.key, &choice.counts)
                ));
                Ok(Attempt::Refused(refused))
            }
            other => Ok(other),
        }
    }
}
