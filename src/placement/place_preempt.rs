//! The home's preemption pass: a request that may preempt and that no
//! provider has room for is offered to the providers that could hold it
//! were they emptier, ranked as if they were; each owner evicts only what
//! the request outranks and needs gone (see `preempting.rs`), or refuses.

use std::collections::HashSet;

use super::feasible::Need;
use super::place::{Attempt, Origin, Placed, Placer};
use super::rank::{Index, Strategy};
use crate::lifecycle::queue::Fit;
use crate::resource::{DeploySpec, PreemptionPolicy, ProgressSink, ResourceError, Resources};

impl Placer<'_> {
    /// Places `spec` by preemption, or None when no owner could make room.
    pub(super) async fn place_by_preemption(
        &self,
        id: &str,
        spec: &DeploySpec,
        need: &Need<'_>,
        strategy: Strategy,
        progress: &ProgressSink,
        index: &Index,
    ) -> Result<Option<Placed>, ResourceError> {
        let emptied: Vec<_> = index
            .candidates()
            .iter()
            .filter(|c| matches!(need.fit(c), Fit::Later))
            .map(|c| {
                let mut c = c.clone();
                c.capacity.reserved = Resources::default();
                c.capacity.deployments = 0;
                c
            })
            .collect();
        if emptied.is_empty() {
            return Ok(None);
        }
        let mut preempting = spec.clone();
        preempting.preemption = PreemptionPolicy::LowerPriority;
        let attempt = self
            .attempt(
                id,
                &preempting,
                need,
                strategy,
                progress,
                &Index::build(emptied),
                &HashSet::new(),
                Origin::Fresh,
            )
            .await?;
        Ok(match attempt {
            Attempt::Placed(mut p) => {
                p.placement.reason = format!(
                    "{}; room made by evicting lower-priority preemptible work",
                    p.placement.reason
                );
                Some(*p)
            }
            Attempt::Refused(_) => None,
        })
    }
}
