//! The placement loop: rank the feasible providers from the cached view,
//! record the intent, send the deploy to the best candidate, and try the
//! next when its owner refuses. When none admits it, the deploy is refused
//! (it could never run anywhere, or it asked not to wait) or queued at this
//! node, its home, with the reason it waits.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::SmallRng;
use tracing::{debug, info, warn};

use super::book::{candidate_of, placed_on, Book};
use super::feasible::{Need, Verdict};
use super::pending::{self, Pending};
use super::rank::{Index, Strategy};
use super::registry::Registry;
use crate::lifecycle::priority::Priority;
use crate::proto::resource as pb;
use crate::resource::validate::{deployment_id, validate};
use crate::resource::wire::priority_from_proto;
use crate::resource::{
    Candidate, DeploySpec, Deployment, PreemptionPolicy, ProgressSink, ResourceError,
};
use crate::store::{now_ms, DeploymentRecord, PlacedOn, QueuedRecord, Stored};
use crate::sync::{lock, KeyLocks};

/// How many providers one deploy tries before giving up.
const MAX_ATTEMPTS: usize = 8;
/// Candidates ranked per round of the loop.
const RANKED_PER_ROUND: usize = 3;
/// The best candidates a newcomer checks against the queue before taking one.
const NEAR: usize = MAX_ATTEMPTS * RANKED_PER_ROUND;

/// Per-request choices for one deploy. The default fails at once when
/// nothing admits it; the API's default waits (see `DEFAULT_QUEUE_TIMEOUT`).
#[derive(Debug, Clone, Default)]
pub struct PlaceOptions {
    pub strategy: Option<Strategy>,
    pub region: Option<String>,
    pub provider_id: Option<String>,
    pub priority: Priority,
    /// Whether owners may evict lower-priority work to admit it.
    pub preemption: PreemptionPolicy,
    /// How long it may wait in the queue; zero refuses it at once.
    pub queue_timeout: Duration,
    /// Wait even when no provider in the mesh could ever hold it.
    pub wait_for_capacity: bool,
    /// With replicas: placed all or nothing, each owner holding room this
    /// long for its replica until the home commits (see `gang.rs`).
    pub gang: Option<Duration>,
}

/// How long a deploy waits in the queue when it does not say.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The longest wait a deploy may ask for.
pub const MAX_QUEUE_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);

impl PlaceOptions {
    /// The placement fields of a Deploy request, each error naming its field.
    pub fn from_proto(raw: &pb::DeploySpec) -> Result<PlaceOptions, ResourceError> {
        let strategy = match raw.strategy.as_str() {
            "" => None,
            s => Some(Strategy::parse(s).map_err(|why| ResourceError::invalid("strategy", why))?),
        };
        let priority = priority_from_proto(&raw.priority, raw.priority_value)?;
        let preemption = PreemptionPolicy::parse(&raw.preemption_policy)
            .map_err(|why| ResourceError::invalid("preemption_policy", why))?;
        Ok(PlaceOptions {
            strategy,
            region: Some(raw.region.clone()).filter(|r| !r.is_empty()),
            provider_id: Some(raw.provider_id.clone()).filter(|p| !p.is_empty()),
            priority,
            preemption,
            queue_timeout: queue_timeout(&raw.queue_timeout)?,
            wait_for_capacity: raw.wait_for_capacity,
            gang: gang_timeout(raw.gang, &raw.gang_timeout)?,
        })
    }

    pub(crate) fn need<'a>(&'a self, spec: &'a DeploySpec) -> Need<'a> {
        Need {
            resources: spec.resources,
            gpu_model: spec.gpu_model.as_deref(),
            required_labels: Some(&spec.required_labels),
            region: self.region.as_deref(),
            provider_id: self.provider_id.as_deref(),
            scope: Some(&spec.scope),
        }
    }
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
    pub pending: &'a Pending,
}

/// Where a placement starts from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin<'r> {
    /// A new deploy: its record is made here.
    Fresh,
    /// A deploy leaving the queue: its record's history carries on, and it
    /// leaves the queue in the commit that records the outcome.
    Queued(&'r DeploymentRecord),
    /// A replacement for an attempt whose owner died: the record (already
    /// at the new attempt) carries on.
    Replacing(&'r DeploymentRecord),
}

impl<'r> Origin<'r> {
    fn base(self) -> Option<&'r DeploymentRecord> {
        match self {
            Origin::Fresh => None,
            Origin::Queued(r) | Origin::Replacing(r) => Some(r),
        }
    }
}

/// What one pass of the loop came to.
pub(crate) enum Attempt {
    Placed(Box<Placed>),
    /// Nobody admitted it; who refused, with why.
    Refused(Vec<String>),
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
        mut spec: DeploySpec,
        opts: PlaceOptions,
        progress: ProgressSink,
    ) -> Result<Placed, ResourceError> {
        validate(&spec)?;
        self.stamp(&mut spec, &opts);
        let strategy = opts.strategy.unwrap_or(self.strategy);
        let id = deployment_id(&spec.request_id);
        let _held = self.inflight.lock(&spec.request_id).await;
        if let Some(placed) = self.retry(&id, &spec, strategy, &progress).await? {
            return Ok(placed);
        }

        let index = self.registry.index();
        let need = opts.need(&spec);
        // Capacity that deploys of its priority or higher wait for is
        // theirs first: a deploy that may wait leaves those providers to
        // them, and goes behind them when nothing else fits.
        let spoken = if opts.queue_timeout.is_zero() {
            HashSet::new()
        } else {
            let near: Vec<Candidate> = {
                let mut rng = lock(self.rng);
                index
                    .rank(&need, strategy, NEAR, &HashSet::new(), &mut rng)
                    .into_iter()
                    .cloned()
                    .collect()
            };
            let spoken = self.pending.spoken_for(opts.priority, &near);
            if !near.is_empty() && spoken.len() == near.len() {
                let verdict = need.explain(index.candidates());
                return self.enqueue(&id, spec, &opts, &verdict).await;
            }
            spoken
        };
        let refused = match self
            .attempt_spread(
                &id,
                &spec,
                &need,
                strategy,
                &progress,
                &index,
                &spoken,
                Origin::Fresh,
            )
            .await?
        {
            Attempt::Placed(p) => return Ok(*p),
            Attempt::Refused(r) => r,
        };
        let mut verdict = need.explain(index.candidates());
        if verdict.never() && !opts.wait_for_capacity {
            return Err(ResourceError::NeverFits(verdict.text));
        }
        if opts.preemption == PreemptionPolicy::LowerPriority {
            if let Some(placed) = self
                .place_by_preemption(&id, &spec, &need, strategy, &progress, &index)
                .await?
            {
                return Ok(placed);
            }
        }
        if let Some(why) = self.spread_reason(&id, &spec, &need, &index) {
            verdict.text = format!("{}; {why}", verdict.text);
        }
        if opts.queue_timeout.is_zero() {
            return Err(no_placement(&spec, index.len(), &refused));
        }
        self.enqueue(&id, spec, &opts, &verdict).await
    }

    /// What the home writes into a spec before any owner sees it.
    fn stamp(&self, spec: &mut DeploySpec, opts: &PlaceOptions) {
        if let Some(lease) = spec.lease.as_mut().filter(|l| l.holder.is_empty()) {
            // Held by its home unless the client named a holder.
            lease.holder = self.node_id.to_string();
        }
        // The home says which placement this is, and owners preempt only
        // on the pass that asks them to; a client sets neither.
        spec.home = self.node_id.to_string();
        spec.priority = opts.priority;
        spec.preemption = PreemptionPolicy::Never;
        spec.attempt = self
            .book
            .get(&deployment_id(&spec.request_id))
            .map_or(1, |r| r.attempt.max(1));
    }

    /// Places `spec` on `c`, whose owner holds room for it (a gang's
    /// commit): the view's idea of its free capacity is not consulted.
    pub(crate) async fn place_on(
        &self,
        mut spec: DeploySpec,
        opts: &PlaceOptions,
        c: &Candidate,
        progress: ProgressSink,
    ) -> Result<Placed, ResourceError> {
        validate(&spec)?;
        self.stamp(&mut spec, opts);
        let strategy = opts.strategy.unwrap_or(self.strategy);
        let id = deployment_id(&spec.request_id);
        let _held = self.inflight.lock(&spec.request_id).await;
        if let Some(placed) = self.retry(&id, &spec, strategy, &progress).await? {
            return Ok(placed);
        }
        let mut held = c.clone();
        held.capacity.reserved = crate::resource::Resources::default();
        held.capacity.deployments = 0;
        let index = Index::build(vec![held]);
        let need = opts.need(&spec);
        match self
            .attempt(
                &id,
                &spec,
                &need,
                strategy,
                &progress,
                &index,
                &HashSet::new(),
                Origin::Fresh,
            )
            .await?
        {
            Attempt::Placed(p) => Ok(*p),
            Attempt::Refused(refused) => Err(no_placement(&spec, 1, &refused)),
        }
    }

    /// One pass: rank, record the intent, deploy, try the next.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn attempt(
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
        let mut skip = avoid.clone();
        let mut refused = Vec::new();
        let mut tried = 0;
        while tried < MAX_ATTEMPTS {
            let ranked: Vec<Candidate> = {
                let mut rng = lock(self.rng);
                index
                    .rank(need, strategy, RANKED_PER_ROUND, &skip, &mut rng)
                    .into_iter()
                    .cloned()
                    .collect()
            };
            if ranked.is_empty() {
                break;
            }
            for c in ranked {
                skip.insert(c.id.clone());
                tried += 1;
                // The intent is durable before the provider hears of it, so
                // a crash in between leaves a record that reconcile resolves.
                let mut rec = match origin.base() {
                    Some(base) => {
                        let mut rec = base.clone();
                        rec.placed_on = placed_on(&c);
                        rec
                    }
                    None => DeploymentRecord::new(id, &spec.request_id, &spec.image, placed_on(&c)),
                };
                rec.set_resources(spec.resources);
                rec.labels = spec.labels.clone();
                rec.note_attempt(spec.attempt.max(1), &c.id, &c.owner_id);
                if spec.reschedule.is_some() || spec.replica_of.is_some() || spec.preemptible {
                    // Kept to place it again should its owner die or
                    // evict it, and to find its siblings.
                    rec.spec = Some(spec.clone());
                }
                rec.push(Stored::Placing);
                self.book.persist(&rec).await?;
                let result = match self.registry.provider_for(&c) {
                    Ok(p) => p.deploy(spec, progress.clone()).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(d) => {
                        if c.owner_id == self.node_id {
                            if let Some((p, _)) = self.registry.local(&c.id) {
                                self.registry.changed(&*p).await;
                            }
                        }
                        // Acknowledged only once the outcome is durable;
                        // one from the queue leaves it in the same commit.
                        rec.observe(&d);
                        if matches!(origin, Origin::Queued(_)) {
                            self.book.dequeue(&rec).await?;
                        } else {
                            self.book.persist(&rec).await?;
                        }
                        let why = format!(
                            "{} tier, {} ({} free before)",
                            c.tier.as_str(),
                            strategy,
                            c.capacity.available()
                        );
                        info!(request = %spec.request_id, provider = %c.id, owner = %c.owner_id, %why, "deployment placed");
                        self.outcomes.count("placed", c.tier.as_str());
                        return Ok(Attempt::Placed(Box::new(placed(
                            d, &c, strategy, &why, refused,
                        ))));
                    }
                    Err(e) if e.try_elsewhere() => {
                        self.undo(id, origin).await?;
                        self.outcomes.count("refused", e.kind());
                        debug!(provider = %c.id, error = %e, "provider refused; trying the next");
                        refused.push(format!("{}: {e}", c.id));
                    }
                    Err(e) => {
                        match origin {
                            Origin::Fresh => self.book.forget(id).await,
                            Origin::Queued(_) | Origin::Replacing(_) => {
                                rec.push(Stored::Failed {
                                    reason: e.to_string(),
                                });
                                if matches!(origin, Origin::Queued(_)) {
                                    self.book.dequeue(&rec).await?;
                                } else {
                                    self.book.persist(&rec).await?;
                                }
                            }
                        }
                        return Err(e);
                    }
                }
            }
        }
        Ok(Attempt::Refused(refused))
    }

    /// A refused try made nothing: a fresh deploy forgets its intent, one
    /// from the queue or a replacement goes back to its record as it was.
    async fn undo(&self, id: &str, origin: Origin<'_>) -> Result<(), ResourceError> {
        match origin.base() {
            Some(base) => self.book.persist(base).await,
            None => {
                self.book.forget(id).await;
                Ok(())
            }
        }
    }

    /// Nothing admits it now, but something could: it waits at this home,
    /// durably, in priority order.
    async fn enqueue(
        &self,
        id: &str,
        spec: DeploySpec,
        opts: &PlaceOptions,
        verdict: &Verdict,
    ) -> Result<Placed, ResourceError> {
        let now = now_ms();
        let q = QueuedRecord {
            id: id.to_string(),
            strategy: opts.strategy.map(|s| s.as_str().to_string()),
            region: opts.region.clone(),
            provider_id: opts.provider_id.clone(),
            priority: opts.priority,
            seq: self.pending.reserve_seq(),
            enqueued_ms: now,
            deadline_ms: Some(now.saturating_add(opts.queue_timeout.as_millis() as u64)),
            wait_for_capacity: opts.wait_for_capacity,
            spec,
        };
        let mut rec =
            DeploymentRecord::new(id, &q.spec.request_id, &q.spec.image, PlacedOn::default());
        rec.set_resources(q.spec.resources);
        rec.labels = q.spec.labels.clone();
        rec.push(Stored::Queued {
            reason: verdict.text.clone(),
        });
        self.book.enqueue(&q, &rec).await?;
        let priority = q.priority;
        let forbidden = self.spread_forbids(id, &q.spec, &q.need(), &self.registry.index());
        self.pending.insert(q);
        self.pending.exclude(id, forbidden);
        let (position, of) = self.pending.position(id).unwrap_or((1, 1));
        let reason = pending::reason(verdict, position, of);
        info!(deployment = %id, %priority, %reason, "deployment queued");
        self.outcomes.count("queued", priority.class.as_str());
        Ok(Placed {
            deployment: queued_view(&rec, &reason),
            placement: pb::Placement {
                reason: format!("queued: {reason}"),
                ..Default::default()
            },
        })
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
        if let Stored::Queued { reason } = rec.state() {
            // Already waiting: the same request answers the same entry.
            let reason = self.queued_reason(id).unwrap_or(reason);
            return Ok(Some(Placed {
                deployment: queued_view(&rec, &reason),
                placement: pb::Placement {
                    reason: format!("queued: {reason}"),
                    ..Default::default()
                },
            }));
        }
        if !rec.placed_on.is_placed() {
            // Expired or stopped in the queue: a retry queues or places anew.
            self.book.forget(id).await;
            return Ok(None);
        }
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

/// How long a gang's owners hold room when the request does not say.
pub const DEFAULT_GANG_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a gang may have room held.
pub const MAX_GANG_TIMEOUT: Duration = Duration::from_secs(300);

/// The hold of a gang, or None when the request is not one.
fn gang_timeout(gang: bool, text: &str) -> Result<Option<Duration>, ResourceError> {
    let text = text.trim();
    if !gang {
        if !text.is_empty() {
            return Err(ResourceError::invalid(
                "gang_timeout",
                "applies to a gang only: set gang (and replicas) too, or leave it empty",
            ));
        }
        return Ok(None);
    }
    if text.is_empty() {
        return Ok(Some(DEFAULT_GANG_TIMEOUT));
    }
    let d = humantime::parse_duration(text).map_err(|e| {
        ResourceError::invalid(
            "gang_timeout",
            format!("{text:?} is not a duration ({e}): write e.g. \"10s\""),
        )
    })?;
    if d < Duration::from_millis(100) || d > MAX_GANG_TIMEOUT {
        return Err(ResourceError::invalid(
            "gang_timeout",
            format!("{text:?} is out of range: use 100ms to 5m"),
        ));
    }
    Ok(Some(d))
}

/// `"10m"`, `"90s"`, `"0"` (fail at once); empty is the default.
pub fn queue_timeout(text: &str) -> Result<Duration, ResourceError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(DEFAULT_QUEUE_TIMEOUT);
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let d = humantime::parse_duration(text).map_err(|e| {
        ResourceError::invalid(
            "queue_timeout",
            format!(
                "{text:?} is not a duration ({e}): write e.g. \"5m\", or \"0\" to fail at once"
            ),
        )
    })?;
    if d > MAX_QUEUE_TIMEOUT {
        return Err(ResourceError::invalid(
            "queue_timeout",
            format!("{text:?} is longer than the 30d a deploy may wait"),
        ));
    }
    Ok(d)
}

/// A queued deployment as a client sees it: its current reason last.
pub fn queued_view(rec: &DeploymentRecord, reason: &str) -> Deployment {
    let mut d = rec.to_deployment();
    if let Some(last) = d.history.last_mut() {
        if matches!(last.state, crate::resource::DeployState::Queued(_)) {
            last.state = crate::resource::DeployState::Queued(reason.to_string());
        }
    }
    d
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
