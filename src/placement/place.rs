//! The placement loop: rank the feasible providers from the cached view,
//! record the intent, send the deploy to the best candidate, and try the
//! next when its owner refuses.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use rand::rngs::SmallRng;
use tracing::{debug, info, warn};

use super::book::{candidate_of, intent, Book};
use super::feasible::Need;
use super::rank::Strategy;
use super::registry::Registry;
use crate::proto::resource as pb;
use crate::resource::validate::{deployment_id, validate};
use crate::resource::{Candidate, DeploySpec, Deployment, ProgressSink, ResourceError};
use crate::store::Stored;
use crate::sync::{lock, KeyLocks};

/// How many providers one deploy tries before giving up.
const MAX_ATTEMPTS: usize = 8;
/// Candidates ranked per round of the loop.
const RANKED_PER_ROUND: usize = 3;

/// Per-request choices for one deploy.
#[derive(Debug, Clone, Default)]
pub struct PlaceOptions {
    pub strategy: Option<Strategy>,
    pub region: Option<String>,
    pub provider_id: Option<String>,
}

/// A deploy's outcome: the deployment and where it went and why.
#[derive(Debug, Clone)]
pub struct Placed {
    pub deployment: Deployment,
    pub placement: pb::Placement,
}

/// Placement outcomes since start: (outcome, tier or reason) -> count.
#[derive(Debug, Default)]
pub struct Outcomes(Mutex<BTreeMap<(&'static str, &'static str), u64>>);

impl Outcomes {
    fn count(&self, outcome: &'static str, reason: &'static str) {
        *lock(&self.0).entry((outcome, reason)).or_default() += 1;
    }

    pub fn snapshot(&self) -> Vec<(String, String, u64)> {
        lock(&self.0)
            .iter()
            .map(|((o, r), n)| (o.to_string(), r.to_string(), *n))
            .collect()
    }
}

/// The parts of the manager one placement works with.
pub struct Placer<'a> {
    pub node_id: &'a str,
    /// The default; a request may name its own.
    pub strategy: Strategy,
    pub registry: &'a Registry,
    pub book: &'a Book,
    pub inflight: &'a KeyLocks,
    pub rng: &'a Mutex<SmallRng>,
    pub outcomes: &'a Outcomes,
}

impl Placer<'_> {
    pub async fn deploy(
        &self,
        spec: DeploySpec,
        opts: PlaceOptions,
        progress: ProgressSink,
    ) -> Result<Placed, ResourceError> {
        let result = self.place(spec, opts, progress).await;
        if let Err(e) = &result {
            self.outcomes.count("failed", e.kind());
        }
        result
    }

    async fn place(
        &self,
        spec: DeploySpec,
        opts: PlaceOptions,
        progress: ProgressSink,
    ) -> Result<Placed, ResourceError> {
        validate(&spec)?;
        let strategy = opts.strategy.unwrap_or(self.strategy);
        let id = deployment_id(&spec.request_id);
        let _held = self.inflight.lock(&spec.request_id).await;
        if let Some(placed) = self.retry(&id, &spec, strategy, &progress).await? {
            return Ok(placed);
        }

        let index = self.registry.index();
        let need = Need {
            resources: spec.resources,
            gpu_model: spec.gpu_model.as_deref(),
            required_labels: Some(&spec.required_labels),
            region: opts.region.as_deref(),
            provider_id: opts.provider_id.as_deref(),
        };
        let mut skip = HashSet::new();
        let mut refused = Vec::new();
        while skip.len() < MAX_ATTEMPTS {
            let ranked: Vec<Candidate> = {
                let mut rng = lock(self.rng);
                index
                    .rank(&need, strategy, RANKED_PER_ROUND, &skip, &mut rng)
                    .into_iter()
                    .cloned()
                    .collect()
            };
            if ranked.is_empty() {
                break;
            }
            for c in ranked {
                skip.insert(c.id.clone());
                // The intent is durable before the provider hears of it, so
                // a crash in between leaves a record that reconcile resolves.
                let mut rec = intent(&id, &spec, &c);
                self.book.persist(&rec).await?;
                let result = match self.registry.provider_for(&c) {
                    Ok(p) => p.deploy(&spec, progress.clone()).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(d) => {
                        if c.owner_id == self.node_id {
                            if let Some((p, _)) = self.registry.local(&c.id) {
                                self.registry.changed(&*p).await;
                            }
                        }
                        // Acknowledged only once the outcome is durable.
                        rec.observe(&d);
                        self.book.persist(&rec).await?;
                        let why = format!(
                            "{} tier, {} ({} free before)",
                            c.tier.as_str(),
                            strategy,
                            c.capacity.available()
                        );
                        info!(request = %spec.request_id, provider = %c.id, owner = %c.owner_id, %why, "deployment placed");
                        self.outcomes.count("placed", c.tier.as_str());
                        return Ok(placed(d, &c, strategy, &why, refused));
                    }
                    Err(e) if e.try_elsewhere() => {
                        self.book.forget(&id).await;
                        self.outcomes.count("refused", e.kind());
                        debug!(provider = %c.id, error = %e, "provider refused; trying the next");
                        refused.push(format!("{}: {e}", c.id));
                    }
                    Err(e) => {
                        self.book.forget(&id).await;
                        return Err(e);
                    }
                }
            }
        }
        Err(no_placement(&spec, index.len(), &refused))
    }

    /// A retry goes back to the provider the first attempt went to. None
    /// when there was no first attempt, or its provider refused the retry.
    async fn retry(
        &self,
        id: &str,
        spec: &DeploySpec,
        strategy: Strategy,
        progress: &ProgressSink,
    ) -> Result<Option<Placed>, ResourceError> {
        let Some(mut rec) = self.book.get(id) else {
            return Ok(None);
        };
        let c = candidate_of(&rec.placed_on);
        let p = self.registry.provider_for(&c)?;
        let before = rec.state();
        if before.is_final() || before == Stored::Placing {
            // A new container may be made: the intent comes first.
            rec.push(Stored::Placing);
            self.book.persist(&rec).await?;
        }
        match p.deploy(spec, progress.clone()).await {
            Ok(d) => {
                rec.observe(&d);
                self.book.persist(&rec).await?;
                Ok(Some(placed(
                    d,
                    &c,
                    strategy,
                    "retry of an earlier request",
                    vec![],
                )))
            }
            Err(e) if e.try_elsewhere() => {
                debug!(request = %spec.request_id, error = %e, "earlier provider refused the retry");
                self.book.forget(id).await;
                Ok(None)
            }
            Err(e) => {
                rec.push(Stored::Failed {
                    reason: e.to_string(),
                });
                if let Err(se) = self.book.persist(&rec).await {
                    warn!(request = %spec.request_id, error = %se, "cannot record a failed retry");
                }
                Err(e)
            }
        }
    }
}

fn placed(
    deployment: Deployment,
    c: &Candidate,
    strategy: Strategy,
    why: &str,
    refused: Vec<String>,
) -> Placed {
    Placed {
        deployment,
        placement: pb::Placement {
            provider_id: c.id.clone(),
            owner_id: c.owner_id.clone(),
            tier: c.tier.as_str().to_string(),
            strategy: strategy.as_str().to_string(),
            reason: why.to_string(),
            refused,
        },
    }
}

/// Why nothing took the request: what was looked at, or who refused.
fn no_placement(spec: &DeploySpec, looked: usize, refused: &[String]) -> ResourceError {
    ResourceError::NoPlacement(if refused.is_empty() {
        format!(
            "none of the {looked} known providers has {} free{}{} (see GetCapacity and ListProviders)",
            spec.resources,
            spec.gpu_model
                .as_ref()
                .map(|m| format!(" with a {m} GPU"))
                .unwrap_or_default(),
            if spec.required_labels.is_empty() {
                String::new()
            } else {
                format!(" and labels {:?}", spec.required_labels)
            },
        )
    } else {
        format!("every candidate refused: {}", refused.join("; "))
    })
}
