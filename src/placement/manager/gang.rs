//! Gangs, the home's side: the replicas of a service placed all or
//! nothing (Ray's STRICT placement groups, a two-phase commit without a
//! coordinator log). The home picks a provider for every replica from its
//! view, asks each owner to hold room (prepare), and commits (deploys)
//! only when every owner agreed; otherwise it gives every hold back. A
//! hold the home never resolves (it died, the abort was lost) lapses on
//! its owner after the gang's timeout (see `reserving.rs`).
//!
//! A gang that cannot be held now is refused at once with the reason,
//! never queued half-placed and never left waiting on an infeasible group.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::future::join_all;
use tracing::{info, warn};

use super::Manager;
use crate::lifecycle::queue::Fit;
use crate::placement::place::{PlaceOptions, Placed};
use crate::placement::spread;
use crate::resource::validate::deployment_id;
use crate::resource::{Candidate, DeploySpec, ProgressSink, ResourceError};
use crate::sync::lock;

/// Why a gang could not be placed, as the client reads it.
fn refused(n: usize, why: String) -> ResourceError {
    ResourceError::NoPlacement(format!(
        "gang of {n} replicas: {why}; a gang is placed whole or not at all, so nothing was started"
    ))
}

impl Manager {
    /// Places every one of `specs` or none: prepare on each chosen
    /// owner, then commit. On any refusal the holds are given back.
    pub(super) async fn place_gang(
        &self,
        specs: Vec<DeploySpec>,
        opts: &PlaceOptions,
        hold: Duration,
        progress: ProgressSink,
    ) -> Result<Vec<Placed>, ResourceError> {
        let n = specs.len();
        let chosen = self.choose_bundles(&specs[0], opts, n)?;
        let prepared = join_all(specs.iter().zip(&chosen).map(|(s, c)| async move {
            let p = self
                .registry
                .provider_for(c)
                .map_err(|e| format!("{}: {e}", c.id))?;
            p.prepare(s, hold)
                .await
                .map_err(|e| format!("{}: {e}", c.id))
        }))
        .await;
        let refusals: Vec<String> = prepared
            .iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect();
        if !refusals.is_empty() {
            self.give_back(&specs, &chosen, &prepared).await;
            return Err(refused(
                n,
                format!(
                    "{} of {n} owners could not hold room ({})",
                    refusals.len(),
                    refusals.join("; ")
                ),
            ));
        }
        let placer = self.placer();
        let committed = join_all(
            specs
                .iter()
                .zip(&chosen)
                .map(|(s, c)| placer.place_on(s.clone(), opts, c, progress.clone())),
        )
        .await;
        if committed.iter().all(Result::is_ok) {
            info!(replicas = n, "gang placed");
            return Ok(committed.into_iter().map(Result::unwrap).collect());
        }
        // All or nothing: what started is stopped, what is held given back.
        let mut why = Vec::new();
        for (r, s) in committed.iter().zip(&specs) {
            match r {
                Ok(p) => {
                    if let Err(e) = self.stop(&p.deployment.id).await {
                        warn!(deployment = %p.deployment.id, error = %e, "cannot stop a replica of a gang that failed");
                    }
                }
                Err(e) => why.push(format!("{}: {e}", s.request_id)),
            }
        }
        let all: Vec<Result<(), String>> = vec![Ok(()); n];
        self.give_back(&specs, &chosen, &all).await;
        Err(refused(n, format!("commit failed ({})", why.join("; "))))
    }

    /// Aborts the holds that `prepared` says were granted.
    async fn give_back<T>(
        &self,
        specs: &[DeploySpec],
        chosen: &[Candidate],
        prepared: &[Result<T, String>],
    ) {
        join_all(
            specs
                .iter()
                .zip(chosen)
                .zip(prepared)
                .filter(|(_, r)| r.is_ok())
                .map(|((s, c), _)| async move {
                    let id = deployment_id(&s.request_id);
                    let result = match self.registry.provider_for(c) {
                        Ok(p) => p.abort(&id).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = result {
                        // The hold lapses on its owner by itself.
                        warn!(deployment = %id, provider = %c.id, error = %e, "cannot give a gang's hold back; it lapses");
                    }
                }),
        )
        .await;
    }

    /// A provider for each of `n` replicas of `spec`, from the view: room
    /// counted as it is handed out, the spread kept where asked.
    fn choose_bundles(
        &self,
        spec: &DeploySpec,
        opts: &PlaceOptions,
        n: usize,
    ) -> Result<Vec<Candidate>, ResourceError> {
        let index = self.registry.index();
        let need = opts.need(spec);
        let strategy = opts.strategy.unwrap_or(self.strategy);
        let mut room: Vec<Candidate> = {
            let mut rng = lock(&self.rng);
            index
                .rank(&need, strategy, index.len(), &HashSet::new(), &mut rng)
                .into_iter()
                .cloned()
                .collect()
        };
        // Replicas per spread value, over every provider that could hold one.
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        if let Some(s) = &spec.spread {
            for c in index.candidates() {
                if !matches!(need.fit(c), Fit::Never) {
                    if let Some(d) = spread::domain(&s.key, c) {
                        counts.entry(d).or_default();
                    }
                }
            }
        }
        let domain = |c: &Candidate| spec.spread.as_ref().and_then(|s| spread::domain(&s.key, c));
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let pick = room
                .iter()
                .enumerate()
                .filter(|(_, c)| c.capacity.admits(&spec.resources))
                .min_by_key(|(k, c)| {
                    let used = domain(c).and_then(|d| counts.get(&d).copied());
                    (used.unwrap_or(0), *k)
                })
                .map(|(k, _)| k);
            let Some(k) = pick else {
                let verdict = need.explain(index.candidates());
                return Err(refused(n, format!("room for {i} now ({})", verdict.text)));
            };
            room[k].capacity.take(&spec.resources);
            if let Some(d) = domain(&room[k]) {
                *counts.entry(d).or_default() += 1;
            }
            out.push(room[k].clone());
        }
        if let Some(s) = spec.spread.as_ref().filter(|s| s.strict) {
            let skew = spread::skew(&counts);
            if skew > s.max_skew {
                return Err(refused(
                    n,
                    format!(
                        "spread over {} cannot keep max_skew {} ({})",
                        s.key,
                        s.max_skew,
                        spread::describe(&s.key, &counts)
                    ),
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "gang_tests.rs"]
mod tests;
