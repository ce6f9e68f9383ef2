//! The resource manager of one node, assembled from the placement stages:
//! the [`Registry`] of providers (this node's own and those the mesh
//! advertises) with its ranking index, the [`Book`] of deployment records,
//! the placement loop (`place.rs`), and the serving side of `CallProvider`.
//! It also answers for deployments: status, logs, stop and listing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tonic::Status;
use tracing::warn;

use super::book::{candidate_of, Book, Found};
use super::call::serve::serve_call;
use super::leased::Leased;
use super::leases::Leases;
use super::pending::Pending;
use super::place::{queued_view, Outcomes, Placer};
use super::preempting::Preempting;
use super::rank::{Index, Strategy};
use super::registry::{Discovery, Registry};
use super::reserving::Reserving;
use crate::audit::Audit;
use crate::resource::{
    Candidate, DeployState, Deployment, LogOptions, LogStream, Provider, ProviderDescriptor,
    ResourceError, Tier,
};
use crate::store::{DeploymentRecord, MemoryStore, ProviderRecord, Store, StoreError, Stored};
use crate::sync::KeyLocks;

/// How long a home waits for another node's answer on a status before it
/// answers from its record (the owner may be suspect or cut off).
const REMOTE_STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

mod anywhere;
mod builds;
mod disconnect;
mod fencing;
mod gang;
mod leases;
mod listing;
mod preemption;
mod queue;
mod reconcile;
mod registration;
mod reschedule;
mod service_anywhere;
mod services;
mod unconfirmed;
pub use super::place::{PlaceOptions, Placed};
use crate::resource::{DeploySpec, ProgressSink};
pub use anywhere::{Answer, Op};
pub use listing::{Filter, MeshPage, DEFAULT_PAGE, LIST_DEADLINE, MAX_PAGE};
pub use queue::TRIES_PER_PASS;
pub use reconcile::Reconciled;
pub use service_anywhere::ServiceAnswer;
pub use services::ServiceView;

pub struct Manager {
    node_id: String,
    strategy: Strategy,
    registry: Registry,
    /// Deployments placed through this node; the provider is recorded
    /// (durably) before the deploy is sent so that a retry, also after a
    /// restart, finds it.
    book: Book,
    /// One deploy or stop per request id at a time.
    inflight: KeyLocks,
    rng: Mutex<SmallRng>,
    outcomes: Outcomes,
    /// Deploys waiting at this home for capacity (see `queue.rs`).
    pending: Pending,
    queue_stats: crate::metrics::QueueMetrics,
    /// Where queue events are recorded, once the node has one.
    audit: OnceLock<Arc<Audit>>,
    /// Leases on this node's own providers (it is their owner).
    leases: Arc<Leases>,
    /// Where every deployment in the mesh lives (see `anywhere.rs`).
    directory: super::directory::Directory,
    /// What this node's providers ran at the last scan, for the directory.
    owned: Mutex<registration::Owned>,
    /// Failovers since start (see `reschedule.rs`).
    failover: crate::metrics::FailoverMetrics,
    /// Services this node is the home of (see `services.rs`).
    services: services::Services,
    /// Evictions by this node's providers, reported to their homes (see
    /// `preemption.rs`).
    evicted_tx: tokio::sync::mpsc::UnboundedSender<super::preempting::Evicted>,
    evicted_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<super::preempting::Evicted>>>,
    /// Placements on other nodes a restart left unconfirmed (see
    /// `unconfirmed.rs`).
    unconfirmed: Mutex<std::collections::HashSet<String>>,
}

impl Manager {
    /// A manager whose records live in memory only.
    pub fn new(
        node_id: &str,
        discovery: Arc<dyn Discovery>,
        strategy: Strategy,
        allow_remote_access: bool,
        seed: u64,
    ) -> Manager {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let book = Book::new(node_id, store.clone(), HashMap::new());
        let leases = Leases::open(node_id, store).expect("an empty in-memory store always reads");
        Manager::with_book(
            node_id,
            discovery,
            strategy,
            allow_remote_access,
            seed,
            book,
            Pending::default(),
            leases,
            services::Services::default(),
        )
    }

    /// A manager that keeps its records in `store`, starting from the
    /// records already there (see `reconcile`).
    pub fn open(
        node_id: &str,
        discovery: Arc<dyn Discovery>,
        strategy: Strategy,
        allow_remote_access: bool,
        seed: u64,
        store: Arc<dyn Store>,
    ) -> Result<Manager, StoreError> {
        let book = Book::open(node_id, store.clone())?;
        // An entry whose record moved on (a crash after a try began) is
        // stale: the record is what reconcile settles.
        let mut queued = Vec::new();
        for q in store.queued()? {
            match book.get(&q.id) {
                Some(rec) if matches!(rec.state(), Stored::Queued { .. }) => queued.push(q),
                Some(rec) => store.remove_queued(&q.id, &rec)?,
                None => warn!(deployment = %q.id, "a queue entry without its record is ignored"),
            }
        }
        let services = services::Services::restore(store.services()?);
        let leases = Leases::open(node_id, store)?;
        let unconfirmed = unconfirmed::at_start(&book, node_id);
        let manager = Manager::with_book(
            node_id,
            discovery,
            strategy,
            allow_remote_access,
            seed,
            book,
            Pending::restore(queued),
            leases,
            services,
        );
        *manager
            .unconfirmed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = unconfirmed;
        Ok(manager)
    }

    #[allow(clippy::too_many_arguments)]
    fn with_book(
        node_id: &str,
        discovery: Arc<dyn Discovery>,
        strategy: Strategy,
        allow_remote_access: bool,
        seed: u64,
        book: Book,
        pending: Pending,
        leases: Leases,
        services: services::Services,
    ) -> Manager {
        let (evicted_tx, evicted_rx) = preemption::channel();
        Manager {
            evicted_tx,
            evicted_rx,
            node_id: node_id.to_string(),
            strategy,
            registry: Registry::new(node_id, discovery, allow_remote_access),
            book,
            inflight: KeyLocks::new(),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            outcomes: Outcomes::default(),
            pending,
            queue_stats: Default::default(),
            audit: OnceLock::new(),
            leases: Arc::new(leases),
            directory: Default::default(),
            owned: Default::default(),
            failover: Default::default(),
            services,
            unconfirmed: Default::default(),
        }
    }

    /// Records queue and lease events in the node's audit log.
    pub fn set_audit(&self, audit: Arc<Audit>) {
        self.leases.set_audit(audit.clone());
        let _ = self.audit.set(audit);
    }

    fn audit(&self, event: &str, outcome: &str, detail: serde_json::Value) {
        if let Some(a) = self.audit.get() {
            a.record(event, &self.node_id, outcome, detail);
        }
    }

    fn placer(&self) -> Placer<'_> {
        Placer {
            node_id: &self.node_id,
            strategy: self.strategy,
            registry: &self.registry,
            book: &self.book,
            inflight: &self.inflight,
            rng: &self.rng,
            outcomes: &self.outcomes,
            pending: &self.pending,
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn default_strategy(&self) -> Strategy {
        self.strategy
    }

    pub fn allow_remote_access(&self) -> bool {
        self.registry.allow_remote_access()
    }

    /// Adds one of this node's providers and advertises it; an external
    /// one is recorded so that the next start reconnects it. The node keeps
    /// the leases of what runs on it, may evict preemptible work, and holds
    /// room for gangs.
    pub async fn add_provider(
        &self,
        provider: Arc<dyn Provider>,
        tier: Tier,
    ) -> Result<ProviderDescriptor, ResourceError> {
        let leased = Arc::new(Leased::new(provider, self.leases.clone()));
        let preempting = Arc::new(Preempting::new(leased, self.evicted_tx.clone()));
        let provider = Arc::new(Reserving::new(preempting));
        let desc = self.registry.add(provider, tier).await?;
        if tier == Tier::External {
            // The endpoint is already stripped of credentials (see
            // ProviderDescriptor); nothing secret reaches the store.
            let rec = ProviderRecord {
                id: desc.id.clone(),
                name: desc.name.clone(),
                kind: desc.kind.as_str().to_string(),
                endpoint: desc.endpoint.clone(),
                labels: desc.labels.clone(),
                max_deployments: desc.capacity.max_deployments,
            };
            if let Err(e) = self.book.blocking(move |s| s.put_provider(&rec)).await {
                warn!(provider = %desc.id, error = %e, "cannot record the provider");
            }
        }
        Ok(desc)
    }

    /// Removes an external provider; internal ones stay.
    pub fn remove_provider(&self, id: &str) -> Result<(), ResourceError> {
        self.registry.remove(id)?;
        // Rare and operator-driven: one commit inline is fine here.
        if let Err(e) = self.book.store().remove_provider(id) {
            warn!(provider = %id, error = %e, "cannot forget the provider in the store");
        }
        Ok(())
    }

    /// Places and starts a deployment: ranks the feasible providers from the
    /// cached view and tries them in order until one admits it; when none
    /// does, queues it here (see `PlaceOptions::queue_timeout`).
    pub async fn deploy(
        &self,
        spec: DeploySpec,
        opts: PlaceOptions,
        progress: ProgressSink,
    ) -> Result<Placed, ResourceError> {
        self.placer().deploy(spec, opts, progress).await
    }

    /// A record of a deploy that never reached a provider, as a client sees
    /// it: a queued one says why it waits now and where it stands in line.
    fn unplaced_view(&self, rec: &DeploymentRecord) -> Deployment {
        if !matches!(rec.state(), Stored::Queued { .. }) {
            return rec.to_deployment();
        }
        let reason = self.placer().queued_reason(&rec.id).unwrap_or_default();
        queued_view(rec, &reason)
    }

    /// Placement outcomes since start: "placed" by tier (a retry answered by
    /// the earlier provider is not a new placement), "refused" (one candidate
    /// said no) and "failed" (the whole request) by error kind.
    pub fn placement_counts(&self) -> Vec<(String, String, u64)> {
        self.outcomes.snapshot()
    }

    /// Re-reads every local provider's capacity and health; advertises changes.
    pub async fn refresh(&self) {
        self.registry.refresh().await;
    }

    /// Tests one of this node's providers again now; see `Registry::retest`.
    pub async fn retest(&self, id: &str) -> Option<Result<(), String>> {
        self.registry.retest(id).await
    }

    /// The ranking index over `candidates()`, rebuilt only when the mesh
    /// view or a local provider changed since the last decision.
    pub fn index(&self) -> Arc<Index> {
        self.registry.index()
    }

    /// Every provider this node can place on, best tier first.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.registry.candidates()
    }

    /// Asks the provider; a container that is gone (stopped and removed,
    /// or lost in a restart) is answered from its record.
    pub async fn status(&self, id: &str) -> Result<(Deployment, String), ResourceError> {
        let stored = self.book.record(id);
        if let Some(rec) = stored.as_ref().filter(|r| !r.placed_on.is_placed()) {
            return Ok((self.unplaced_view(rec), self.node_id.clone()));
        }
        if let Some(rec) = stored
            .as_ref()
            .filter(|r| self.owner_gone(&r.placed_on.owner_id))
        {
            // Not a call that would wait out its timeout on a dead or
            // cut-off node: the record's last word, as below.
            return Ok((rec.to_deployment(), rec.placed_on.owner_id.clone()));
        }
        let found = match self.book.find(&self.registry, id).await {
            Ok(f) if f.owner != self.node_id => {
                // An owner that does not answer soon (suspect, cut off) is
                // answered for from the record below, not waited out.
                match tokio::time::timeout(REMOTE_STATUS_WAIT, f.provider.status(&f.id)).await {
                    Ok(answer) => answer.map(|d| (d, f.owner)),
                    Err(_) => Err(ResourceError::Unavailable {
                        provider: f.provider.id().to_string(),
                        reason: format!(
                            "node {} did not answer within {REMOTE_STATUS_WAIT:?}",
                            f.owner
                        ),
                    }),
                }
            }
            Ok(f) => f.provider.status(&f.id).await.map(|d| (d, f.owner)),
            Err(e) => Err(e),
        };
        match (found, stored) {
            (Ok((mut d, owner)), stored) => {
                self.note(&d).await;
                if let Some(rec) = stored {
                    // Where it ran before, from the home's record.
                    d.attempts = rec.attempts;
                    d.attempt = d.attempt.max(rec.attempt);
                }
                Ok((d, owner))
            }
            // Gone, or its owner does not answer (dead, cut off): the
            // record's last word, which failover and fencing keep current.
            (Err(ResourceError::NotFound(_) | ResourceError::Unavailable { .. }), Some(rec)) => {
                Ok((rec.to_deployment(), rec.placed_on.owner_id))
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Whether `owner` is another node that this node's view no longer
    /// holds alive (alone in its view, just started or cut off, it holds
    /// nobody gone).
    fn owner_gone(&self, owner: &str) -> bool {
        if owner == self.node_id {
            return false;
        }
        let ring = self.ring();
        ring.len() > 1 && ring.member(owner).is_none()
    }

    /// Failovers since start, for `/metrics`.
    pub fn failover_metrics(&self) -> &crate::metrics::FailoverMetrics {
        &self.failover
    }

    /// Whether this node placed deployment (or request) `id` and keeps its record.
    pub fn placed_here(&self, id: &str) -> bool {
        self.book.record(id).is_some_and(|r| !r.adopted)
    }

    /// Keeps the record of a deployment placed here in step with an end
    /// its provider reported (an exit, a lease that ran out), so that it is
    /// answered right once its container is gone.
    async fn note(&self, d: &Deployment) {
        if !d.state().is_final() {
            return;
        }
        let Some(rec) = self.book.get(&d.id) else {
            return;
        };
        if rec.state().is_final() || !rec.placed_on.is_placed() {
            return;
        }
        let _held = self.inflight.lock(&rec.request_id).await;
        // Re-read under the request's lock: a stop that held it has recorded
        // its own end (the exit seen here is often the one the stop caused),
        // and writing back the copy read above would undo it.
        let Some(mut rec) = self.book.get(&d.id) else {
            return;
        };
        if rec.state().is_final() || rec.state() == Stored::Stopping {
            return;
        }
        rec.observe(d);
        if let Err(e) = self.book.persist(&rec).await {
            warn!(deployment = %d.id, error = %e, "cannot record how a deployment ended");
        }
    }

    pub async fn logs(&self, id: &str, opts: LogOptions) -> Result<LogStream, ResourceError> {
        let f = self.book.find(&self.registry, id).await?;
        f.provider.logs(&f.id, opts).await
    }

    /// Stops a deployment: `Stopping` is recorded before the provider is
    /// asked and `Stopped` before the answer, so an acknowledged stop
    /// survives a crash. Stopping what is already stopped answers the record.
    pub async fn stop(&self, id: &str) -> Result<(Deployment, String), ResourceError> {
        let Some(rec) = self.book.record(id) else {
            let Found {
                provider,
                owner,
                id,
            } = self.book.find(&self.registry, id).await?;
            let d = provider.stop(&id).await?;
            if owner == self.node_id {
                self.registry.changed(&*provider).await;
            }
            return Ok((d, owner));
        };
        let _held = self.inflight.lock(&rec.request_id).await;
        // Re-read under the request's lock: a deploy may have just finished.
        let mut rec = self.book.get(&rec.id).unwrap_or(rec);
        let owner = rec.placed_on.owner_id.clone();
        if rec.state() == Stored::Stopped {
            return Ok((rec.to_deployment(), owner));
        }
        if !rec.placed_on.is_placed() {
            return self.stop_unplaced(rec).await;
        }
        let p = self.registry.provider_for(&candidate_of(&rec.placed_on))?;
        let before = rec.state();
        rec.push(Stored::Stopping);
        self.book.persist(&rec).await?;
        let d = match p.stop(&rec.id).await {
            Ok(d) => d,
            Err(ResourceError::NotFound(_)) => {
                // Nothing runs under this id: what the caller wanted.
                let mut d = rec.to_deployment();
                d.push_state(DeployState::Stopped);
                d
            }
            Err(e) => {
                rec.push(before);
                if let Err(se) = self.book.persist(&rec).await {
                    warn!(deployment = %rec.id, error = %se, "cannot record a failed stop");
                }
                return Err(e);
            }
        };
        rec.observe(&d);
        rec.push(Stored::Stopped);
        self.book.persist(&rec).await?;
        if owner == self.node_id {
            self.registry.changed(&*p).await;
        }
        Ok((d, owner))
    }

    /// Stops a deploy that never left the queue (or expired there): it
    /// leaves the queue and is recorded stopped, in one commit.
    async fn stop_unplaced(
        &self,
        mut rec: DeploymentRecord,
    ) -> Result<(Deployment, String), ResourceError> {
        let taken = self.pending.remove(&rec.id);
        if matches!(rec.state(), Stored::Queued { .. }) {
            rec.push(Stored::Stopped);
            if let Err(e) = self.book.dequeue(&rec).await {
                if let Some(q) = taken {
                    self.pending.insert_quiet(q);
                }
                return Err(e);
            }
            self.audit(
                "queue",
                "stopped",
                serde_json::json!({"deployment": rec.id, "request_id": rec.request_id}),
            );
        }
        Ok((rec.to_deployment(), self.node_id.clone()))
    }

    /// Deployments this node placed, and those on its own providers; a
    /// placed one whose container is gone is answered from its record.
    pub async fn list(&self) -> Vec<(Deployment, String)> {
        let mut out: BTreeMap<String, (Deployment, String)> = self
            .list_local()
            .await
            .into_iter()
            .map(|d| (d.id.clone(), (d, self.node_id.clone())))
            .collect();
        let rest: Vec<DeploymentRecord> = self.book.select(|r| !out.contains_key(&r.id));
        for rec in rest {
            if !rec.placed_on.is_placed() {
                out.insert(
                    rec.id.clone(),
                    (self.unplaced_view(&rec), self.node_id.clone()),
                );
                continue;
            }
            let owner = rec.placed_on.owner_id.clone();
            let live = if owner != self.node_id {
                match self.registry.provider_for(&candidate_of(&rec.placed_on)) {
                    Ok(p) => p.status(&rec.id).await.ok(),
                    Err(_) => None,
                }
            } else {
                None
            };
            let d = live.unwrap_or_else(|| rec.to_deployment());
            out.insert(rec.id.clone(), (d, owner));
        }
        out.into_values().collect()
    }

    /// Deployments on this node's own providers only: no remote calls, and
    /// summed over the mesh each deployment counts once.
    pub async fn list_local(&self) -> Vec<Deployment> {
        let mut out = Vec::new();
        for p in self.registry.providers() {
            match p.list().await {
                Ok(ds) => out.extend(ds),
                Err(e) => warn!(provider = %p.id(), error = %e, "cannot list deployments"),
            }
        }
        out
    }

    /// Runs `method` on one of this node's own providers for another node.
    pub async fn serve_call(
        &self,
        provider_id: &str,
        method: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, Status> {
        serve_call(&self.registry, provider_id, method, payload).await
    }
}

/// A mesh that advertises nothing, for tests of one manager alone.
#[cfg(test)]
pub(crate) struct NoMesh;

#[cfg(test)]
impl Discovery for NoMesh {
    fn discovered(&self) -> Vec<Candidate> {
        Vec::new()
    }
    fn publish(&self, _: Vec<crate::proto::peer::ProviderInfo>) {}
    fn caller(&self) -> Arc<dyn super::ProviderCaller> {
        unreachable!("no remote providers in this test")
    }
    fn version(&self) -> u64 {
        0
    }
}
