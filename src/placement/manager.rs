//! The resource manager of one node: its own providers (internal and
//! external), the ones other nodes advertise (discovered), placement, and
//! the serving side of `CallProvider`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use futures::StreamExt;
use prost::Message;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::proto::peer::ProviderInfo;
use crate::proto::resource as pb;
use crate::resource::validate::{deployment_id, validate};
use crate::resource::wire::{deployment_to_proto, spec_from_proto};
use crate::resource::{
    DeploySpec, Deployment, LogOptions, LogStream, ProgressSink, Provider, ProviderDescriptor,
    ProviderKind, ResourceError, Tier,
};
use crate::store::{
    DeploymentRecord, MemoryStore, PlacedOn, ProviderRecord, Store, StoreError, Stored,
};
use crate::sync::KeyLocks;

use super::proxy::{ProviderCaller, RemoteProvider};
use super::rank::{Candidate, Index, Need, Strategy};

mod reconcile;
pub use reconcile::Reconciled;

/// What the manager needs from the mesh.
pub trait Discovery: Send + Sync + 'static {
    /// Providers that other live nodes advertise.
    fn discovered(&self) -> Vec<Candidate>;
    /// Advertises this node's providers to the mesh.
    fn publish(&self, providers: Vec<ProviderInfo>);
    /// Reaches other nodes' `CallProvider`.
    fn caller(&self) -> Arc<dyn ProviderCaller>;
    /// Changes whenever `discovered` may answer differently (the view hash).
    fn version(&self) -> u64;
}

/// Status codes carried in `ProviderInfo.status`.
pub const PROVIDER_HEALTHY: i32 = 1;
pub const PROVIDER_UNHEALTHY: i32 = 2;

/// How many providers one deploy tries before giving up.
const MAX_ATTEMPTS: usize = 8;

/// An index and the (discovery, local) versions it was built at.
type CachedIndex = ((u64, u64), Arc<Index>);

struct Local {
    provider: Arc<dyn Provider>,
    tier: Tier,
    desc: ProviderDescriptor,
}

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

/// The provider operations `serve_call` answers (CallProvider `method`).
pub const PROVIDER_METHODS: &[&str] = &["capacity", "deploy", "status", "logs", "stop"];

pub struct Manager {
    node_id: String,
    discovery: Arc<dyn Discovery>,
    strategy: Strategy,
    allow_remote_access: bool,
    locals: RwLock<BTreeMap<String, Local>>,
    /// Deployments placed through this node, by deployment id; the provider
    /// is recorded (durably) before the deploy is sent so that a retry,
    /// also after a restart, finds it.
    records: Mutex<HashMap<String, DeploymentRecord>>,
    store: Arc<dyn Store>,
    inflight: KeyLocks,
    rng: Mutex<SmallRng>,
    published: Mutex<Option<Vec<ProviderInfo>>>,
    /// Bumped on every change to a local provider's descriptor.
    local_version: std::sync::atomic::AtomicU64,
    /// The ranking index and the (discovery, local) versions it was built at.
    index: Mutex<Option<CachedIndex>>,
    /// Placement outcomes since start: (outcome, tier or reason) -> count.
    outcomes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
        Manager::with_records(
            node_id,
            discovery,
            strategy,
            allow_remote_access,
            seed,
            Arc::new(MemoryStore::new()),
            HashMap::new(),
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
        let records = store
            .deployments()?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        Ok(Manager::with_records(
            node_id,
            discovery,
            strategy,
            allow_remote_access,
            seed,
            store,
            records,
        ))
    }

    fn with_records(
        node_id: &str,
        discovery: Arc<dyn Discovery>,
        strategy: Strategy,
        allow_remote_access: bool,
        seed: u64,
        store: Arc<dyn Store>,
        records: HashMap<String, DeploymentRecord>,
    ) -> Manager {
        Manager {
            node_id: node_id.to_string(),
            discovery,
            strategy,
            allow_remote_access,
            locals: RwLock::default(),
            records: Mutex::new(records),
            store,
            inflight: KeyLocks::new(),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            // A node starts advertising nothing.
            published: Mutex::new(Some(Vec::new())),
            local_version: Default::default(),
            index: Mutex::default(),
            outcomes: Mutex::default(),
        }
    }

    fn count(&self, outcome: &'static str, reason: &'static str) {
        *lock(&self.outcomes).entry((outcome, reason)).or_default() += 1;
    }

    /// Placement outcomes since start: "placed" by tier (a retry answered by
    /// the earlier provider is not a new placement), "refused" (one candidate
    /// said no) and "failed" (the whole request) by error kind.
    pub fn placement_counts(&self) -> Vec<(String, String, u64)> {
        lock(&self.outcomes)
            .iter()
            .map(|((o, r), n)| (o.to_string(), r.to_string(), *n))
            .collect()
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn default_strategy(&self) -> Strategy {
        self.strategy
    }

    pub fn allow_remote_access(&self) -> bool {
        self.allow_remote_access
    }

    /// Adds one of this node's providers and advertises it.
    pub async fn add_provider(
        &self,
        provider: Arc<dyn Provider>,
        tier: Tier,
    ) -> Result<ProviderDescriptor, ResourceError> {
        let desc = provider.describe().await?;
        {
            let mut locals = self.locals.write().unwrap_or_else(PoisonError::into_inner);
            if locals.contains_key(&desc.id) {
                return Err(ResourceError::invalid(
                    "name",
                    format!(
                        "a provider with id {:?} is already registered on this node",
                        desc.id
                    ),
                ));
            }
            locals.insert(
                desc.id.clone(),
                Local {
                    provider,
                    tier,
                    desc: desc.clone(),
                },
            );
        }
        self.bump();
        info!(provider = %desc.id, kind = desc.kind.as_str(), tier = tier.as_str(), capacity = %desc.capacity.total, "provider added");
        if tier == Tier::External {
            // The endpoint is already stripped of credentials (see
            // ProviderDescriptor); nothing secret reaches the store.
            let rec = ProviderRecord {
                id: desc.id.clone(),
                name: desc.name.clone(),
                kind: desc.kind.as_str().to_string(),
                endpoint: desc.endpoint.clone(),
                labels: desc.labels.clone(),
            };
            if let Err(e) = self.blocking(move |s| s.put_provider(&rec)).await {
                warn!(provider = %desc.id, error = %e, "cannot record the provider");
            }
        }
        self.publish();
        Ok(desc)
    }

    /// Removes an external provider; internal ones stay.
    pub fn remove_provider(&self, id: &str) -> Result<(), ResourceError> {
        {
            let mut locals = self.locals.write().unwrap_or_else(PoisonError::into_inner);
            match locals.get(id).map(|l| l.tier) {
                None => {
                    return Err(ResourceError::NotFound(format!(
                        "provider {id:?} is not registered on node {}; see ListProviders",
                        self.node_id
                    )))
                }
                Some(Tier::Internal) => {
                    return Err(ResourceError::invalid(
                        "id",
                        format!("{id:?} is this node's internal provider; only external providers can be unregistered"),
                    ))
                }
                Some(_) => {
                    locals.remove(id);
                }
            }
        }
        // Rare and operator-driven: one commit inline is fine here.
        if let Err(e) = self.store.remove_provider(id) {
            warn!(provider = %id, error = %e, "cannot forget the provider in the store");
        }
        self.bump();
        info!(provider = %id, "provider removed");
        self.publish();
        Ok(())
    }

    fn local(&self, id: &str) -> Option<(Arc<dyn Provider>, Tier)> {
        let locals = self.locals.read().unwrap_or_else(PoisonError::into_inner);
        locals.get(id).map(|l| (l.provider.clone(), l.tier))
    }

    /// Re-reads every local provider's capacity and health; advertises changes.
    pub async fn refresh(&self) {
        let providers: Vec<Arc<dyn Provider>> = {
            let locals = self.locals.read().unwrap_or_else(PoisonError::into_inner);
            locals.values().map(|l| l.provider.clone()).collect()
        };
        for p in providers {
            self.refresh_one(&*p).await;
        }
        self.publish();
    }

    async fn refresh_one(&self, p: &dyn Provider) {
        let desc = p.describe().await;
        let mut locals = self.locals.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = locals.get_mut(p.id()) {
            match desc {
                Ok(d) if d == l.desc => {}
                Ok(d) => {
                    l.desc = d;
                    self.bump();
                }
                Err(e) => {
                    if l.desc.healthy {
                        warn!(provider = %p.id(), error = %e, "provider is unhealthy");
                        self.bump();
                    }
                    l.desc.healthy = false;
                }
            }
        }
    }

    fn bump(&self) {
        self.local_version
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The ranking index over `candidates()`, rebuilt only when the mesh
    /// view or a local provider changed since the last decision.
    pub fn index(&self) -> Arc<Index> {
        let key = (
            self.discovery.version(),
            self.local_version
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        if let Some((k, index)) = lock(&self.index).as_ref() {
            if *k == key {
                return index.clone();
            }
        }
        let index = Arc::new(Index::build(self.candidates()));
        *lock(&self.index) = Some((key, index.clone()));
        index
    }

    fn publish(&self) {
        let infos: Vec<ProviderInfo> = if self.allow_remote_access {
            let locals = self.locals.read().unwrap_or_else(PoisonError::into_inner);
            locals.values().map(|l| provider_info(&l.desc)).collect()
        } else {
            // Remote access off: nothing is offered to other nodes.
            Vec::new()
        };
        let mut last = lock(&self.published);
        if last.as_ref() != Some(&infos) {
            *last = Some(infos.clone());
            self.discovery.publish(infos);
        }
    }

    /// Every provider this node can place on, best tier first.
    /// One of this node's own providers, as the ranking sees it.
    fn local_candidate(&self, l: &Local) -> Candidate {
        Candidate {
            id: l.desc.id.clone(),
            name: l.desc.name.clone(),
            kind: l.desc.kind,
            tier: l.tier,
            owner_id: self.node_id.clone(),
            owner_addr: String::new(),
            healthy: l.desc.healthy,
            capacity: l.desc.capacity,
            labels: l.desc.labels.clone(),
        }
    }

    pub fn candidates(&self) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = {
            let locals = self.locals.read().unwrap_or_else(PoisonError::into_inner);
            locals.values().map(|l| self.local_candidate(l)).collect()
        };
        let mine: HashSet<String> = out.iter().map(|c| c.id.clone()).collect();
        out.extend(
            self.discovery
                .discovered()
                .into_iter()
                .filter(|c| c.owner_id != self.node_id && !mine.contains(&c.id)),
        );
        out.sort_by(|a, b| (a.tier, &a.id).cmp(&(b.tier, &b.id)));
        out
    }

    fn provider_for(&self, c: &Candidate) -> Result<Arc<dyn Provider>, ResourceError> {
        if c.owner_id == self.node_id {
            return self.local(&c.id).map(|(p, _)| p).ok_or_else(|| {
                ResourceError::NotFound(format!("provider {:?} is no longer registered", c.id))
            });
        }
        Ok(Arc::new(RemoteProvider::new(
            c.clone(),
            self.discovery.caller(),
        )))
    }

    /// Places and starts a deployment: ranks the feasible providers from the
    /// cached view and tries them in order until one admits it.
    pub async fn deploy(
        &self,
        spec: DeploySpec,
        opts: PlaceOptions,
        progress: ProgressSink,
    ) -> Result<Placed, ResourceError> {
        let result = self.place(spec, opts, progress).await;
        if let Err(e) = &result {
            self.count("failed", e.kind());
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

        // A retry: go back to the provider the first attempt went to.
        let previous = lock(&self.records).get(&id).cloned();
        if let Some(mut rec) = previous {
            let c = candidate_of(&rec.placed_on);
            let p = self.provider_for(&c)?;
            let before = rec.state();
            if before.is_final() || before == Stored::Placing {
                // A new container may be made: the intent comes first.
                rec.push(Stored::Placing);
                self.persist(&rec).await?;
            }
            match p.deploy(&spec, progress.clone()).await {
                Ok(d) => {
                    rec.observe(&d);
                    self.persist(&rec).await?;
                    return Ok(self.placed(d, &c, strategy, "retry of an earlier request", vec![]));
                }
                Err(e) if e.try_elsewhere() => {
                    debug!(request = %spec.request_id, error = %e, "earlier provider refused the retry");
                    self.forget(&id).await;
                }
                Err(e) => {
                    rec.push(Stored::Failed {
                        reason: e.to_string(),
                    });
                    if let Err(se) = self.persist(&rec).await {
                        warn!(request = %spec.request_id, error = %se, "cannot record a failed retry");
                    }
                    return Err(e);
                }
            }
        }

        let index = self.index();
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
                let mut rng = lock(&self.rng);
                index
                    .rank(&need, strategy, 3, &skip, &mut rng)
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
                self.persist(&rec).await?;
                let result = match self.provider_for(&c) {
                    Ok(p) => p.deploy(&spec, progress.clone()).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(d) => {
                        if c.owner_id == self.node_id {
                            if let Some((p, _)) = self.local(&c.id) {
                                self.refresh_one(&*p).await;
                                self.publish();
                            }
                        }
                        // Acknowledged only once the outcome is durable.
                        rec.observe(&d);
                        self.persist(&rec).await?;
                        let why = format!(
                            "{} tier, {} ({} free before)",
                            c.tier.as_str(),
                            strategy,
                            c.capacity.available()
                        );
                        info!(request = %spec.request_id, provider = %c.id, owner = %c.owner_id, %why, "deployment placed");
                        self.count("placed", c.tier.as_str());
                        return Ok(self.placed(d, &c, strategy, &why, refused));
                    }
                    Err(e) if e.try_elsewhere() => {
                        self.forget(&id).await;
                        self.count("refused", e.kind());
                        debug!(provider = %c.id, error = %e, "provider refused; trying the next");
                        refused.push(format!("{}: {e}", c.id));
                    }
                    Err(e) => {
                        self.forget(&id).await;
                        return Err(e);
                    }
                }
            }
        }
        let looked = index.len();
        Err(ResourceError::NoPlacement(if refused.is_empty() {
            format!(
                "none of the {looked} known providers has {} free{}{} (see GetCapacity and ListProviders)",
                spec.resources,
                spec.gpu_model.as_ref().map(|m| format!(" with a {m} GPU")).unwrap_or_default(),
                if spec.required_labels.is_empty() { String::new() } else { format!(" and labels {:?}", spec.required_labels) },
            )
        } else {
            format!("every candidate refused: {}", refused.join("; "))
        }))
    }

    /// Runs a store operation on the blocking pool: a commit is an fsync.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ResourceError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || op(&*store))
            .await
            .map_err(|e| store_unavailable(&self.node_id, e.to_string()))?
            .map_err(|e| store_unavailable(&self.node_id, e.to_string()))
    }

    /// Writes `rec` durably, then makes it the one this node answers with.
    async fn persist(&self, rec: &DeploymentRecord) -> Result<(), ResourceError> {
        let copy = rec.clone();
        self.blocking(move |s| s.put_deployment(&copy)).await?;
        lock(&self.records).insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// Drops the record of a deploy that made nothing. A failure only
    /// leaves a stale intent, which reconcile resolves at the next start.
    async fn forget(&self, id: &str) {
        lock(&self.records).remove(id);
        let key = id.to_string();
        if let Err(e) = self.blocking(move |s| s.remove_deployment(&key)).await {
            warn!(deployment = %id, error = %e, "cannot drop a record from the store");
        }
    }

    fn placed(
        &self,
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

    /// The provider holding deployment `id`: recorded at placement, else
    /// searched among this node's providers (deployments other nodes placed here).
    async fn holder(&self, id: &str) -> Result<(Arc<dyn Provider>, String), ResourceError> {
        let rec = lock(&self.records).get(id).map(|r| r.placed_on.clone());
        if let Some(on) = rec {
            return Ok((self.provider_for(&candidate_of(&on))?, on.owner_id));
        }
        let providers: Vec<Arc<dyn Provider>> = {
            let locals = self.locals.read().unwrap_or_else(PoisonError::into_inner);
            locals.values().map(|l| l.provider.clone()).collect()
        };
        for p in providers {
            if p.status(id).await.is_ok() {
                return Ok((p, self.node_id.clone()));
            }
        }
        Err(ResourceError::NotFound(format!(
            "deployment {id:?} is unknown to node {}: ask the node that placed it, or ListDeployments",
            self.node_id
        )))
    }

    /// `id` is a deployment id, or the request id it was derived from (what
    /// a user chose, so scripts need not parse the deploy's answer).
    async fn find(&self, id: &str) -> Result<(Arc<dyn Provider>, String, String), ResourceError> {
        let derived = deployment_id(id);
        // A request id this node placed: answered from the records, no
        // provider asked about an id it cannot know. One guard only.
        let placed_here = {
            let records = lock(&self.records);
            !records.contains_key(id) && records.contains_key(&derived)
        };
        if placed_here {
            let (p, owner) = self.holder(&derived).await?;
            return Ok((p, owner, derived));
        }
        match self.holder(id).await {
            Ok((p, owner)) => Ok((p, owner, id.to_string())),
            Err(ResourceError::NotFound(why)) => match self.holder(&derived).await {
                Ok((p, owner)) => Ok((p, owner, derived)),
                Err(_) => Err(ResourceError::NotFound(why)),
            },
            Err(e) => Err(e),
        }
    }

    /// The record for a deployment id or the request id it came from.
    fn record(&self, id: &str) -> Option<DeploymentRecord> {
        let records = lock(&self.records);
        records
            .get(id)
            .or_else(|| records.get(&deployment_id(id)))
            .cloned()
    }

    /// Asks the provider; a container that is gone (stopped and removed,
    /// or lost in a restart) is answered from its record.
    pub async fn status(&self, id: &str) -> Result<(Deployment, String), ResourceError> {
        let stored = self.record(id);
        let found = match self.find(id).await {
            Ok((p, owner, key)) => p.status(&key).await.map(|d| (d, owner)),
            Err(e) => Err(e),
        };
        match (found, stored) {
            (Ok(d), _) => Ok(d),
            (Err(ResourceError::NotFound(_)), Some(rec)) => {
                Ok((rec.to_deployment(), rec.placed_on.owner_id))
            }
            (Err(e), _) => Err(e),
        }
    }

    pub async fn logs(&self, id: &str, opts: LogOptions) -> Result<LogStream, ResourceError> {
        let (p, _, id) = self.find(id).await?;
        p.logs(&id, opts).await
    }

    /// Stops a deployment: `Stopping` is recorded before the provider is
    /// asked and `Stopped` before the answer, so an acknowledged stop
    /// survives a crash. Stopping what is already stopped answers the record.
    pub async fn stop(&self, id: &str) -> Result<(Deployment, String), ResourceError> {
        let Some(rec) = self.record(id) else {
            let (p, owner, id) = self.find(id).await?;
            let d = p.stop(&id).await?;
            if owner == self.node_id {
                self.refresh_one(&*p).await;
                self.publish();
            }
            return Ok((d, owner));
        };
        let _held = self.inflight.lock(&rec.request_id).await;
        // Re-read under the request's lock: a deploy may have just finished.
        let mut rec = lock(&self.records).get(&rec.id).cloned().unwrap_or(rec);
        let owner = rec.placed_on.owner_id.clone();
        if rec.state() == Stored::Stopped {
            return Ok((rec.to_deployment(), owner));
        }
        let p = self.provider_for(&candidate_of(&rec.placed_on))?;
        let before = rec.state();
        rec.push(Stored::Stopping);
        self.persist(&rec).await?;
        let d = match p.stop(&rec.id).await {
            Ok(d) => d,
            Err(ResourceError::NotFound(_)) => {
                // Nothing runs under this id: what the caller wanted.
                let mut d = rec.to_deployment();
                d.push_state(crate::resource::DeployState::Stopped);
                d
            }
            Err(e) => {
                rec.push(before);
                if let Err(se) = self.persist(&rec).await {
                    warn!(deployment = %rec.id, error = %se, "cannot record a failed stop");
                }
                return Err(e);
            }
        };
        rec.observe(&d);
        rec.push(Stored::Stopped);
        self.persist(&rec).await?;
        if owner == self.node_id {
            self.refresh_one(&*p).await;
            self.publish();
        }
        Ok((d, owner))
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
        let rest: Vec<DeploymentRecord> = lock(&self.records)
            .values()
            .filter(|r| !out.contains_key(&r.id))
            .cloned()
            .collect();
        for rec in rest {
            let owner = rec.placed_on.owner_id.clone();
            let live = if owner != self.node_id {
                match self.provider_for(&candidate_of(&rec.placed_on)) {
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
        let providers: Vec<Arc<dyn Provider>> = {
            let locals = self.locals.read().unwrap_or_else(PoisonError::into_inner);
            locals.values().map(|l| l.provider.clone()).collect()
        };
        let mut out = Vec::new();
        for p in providers {
            match p.list().await {
                Ok(ds) => out.extend(ds),
                Err(e) => warn!(provider = %p.id(), error = %e, "cannot list deployments"),
            }
        }
        out
    }

    // ----- the serving side of CallProvider -------------------------------

    /// Runs `method` on one of this node's own providers for another node.
    /// Only own providers are served, so a call never hops further.
    pub async fn serve_call(
        &self,
        provider_id: &str,
        method: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, Status> {
        if !self.allow_remote_access {
            return Err(Status::permission_denied(format!(
                "node {} has allow_remote_access off: its providers serve only local requests",
                self.node_id
            )));
        }
        let Some((p, tier)) = self.local(provider_id) else {
            return Err(Status::not_found(format!(
                "provider {provider_id:?} is not owned by node {}; call the node that owns it (see ListProviders)",
                self.node_id
            )));
        };
        fn decode<M: Message + Default>(method: &str, payload: &[u8]) -> Result<M, Status> {
            M::decode(payload).map_err(|e| {
                Status::invalid_argument(format!(
                    "payload of {method:?} is not a valid iarnet.resource.v1 message: {e}"
                ))
            })
        }
        let me = &self.node_id;
        let bytes = match method {
            "capacity" => {
                let _: pb::CapacityCall = decode(method, payload)?;
                let d = p.describe().await?;
                pb::ProviderEntry {
                    id: d.id,
                    name: d.name,
                    r#type: d.kind.as_str().to_string(),
                    tier: tier.as_str().to_string(),
                    owner_id: me.clone(),
                    healthy: d.healthy,
                    capacity: Some(d.capacity.into()),
                    labels: d.labels.into_iter().collect(),
                    endpoint: String::new(),
                }
                .encode_to_vec()
            }
            "deploy" => {
                let call: pb::DeployCall = decode(method, payload)?;
                let spec = spec_from_proto(call.spec.ok_or_else(|| {
                    Status::invalid_argument("DeployCall.spec is missing")
                })?)?;
                validate(&spec)?;
                let d = p.deploy(&spec, ProgressSink::none()).await?;
                self.refresh_one(&*p).await;
                self.publish();
                deployment_to_proto(&d, me).encode_to_vec()
            }
            "status" => {
                let call: pb::StatusCall = decode(method, payload)?;
                deployment_to_proto(&p.status(&call.deployment_id).await?, me).encode_to_vec()
            }
            "stop" => {
                let call: pb::StopCall = decode(method, payload)?;
                let d = p.stop(&call.deployment_id).await?;
                self.refresh_one(&*p).await;
                self.publish();
                deployment_to_proto(&d, me).encode_to_vec()
            }
            "logs" => {
                let call: pb::LogsCall = decode(method, payload)?;
                let ended = p.status(&call.deployment_id).await?.state().is_final();
                let all: Vec<pb::LogEntry> = p
                    .logs(&call.deployment_id, LogOptions::default())
                    .await?
                    .filter_map(|l| async move { l.ok() })
                    .map(|l| pb::LogEntry {
                        stderr: l.stderr,
                        text: l.text,
                    })
                    .collect()
                    .await;
                let next = all.len() as u64;
                let mut lines: Vec<pb::LogEntry> =
                    all.into_iter().skip(call.skip as usize).collect();
                if call.tail > 0 && lines.len() > call.tail as usize {
                    lines.drain(..lines.len() - call.tail as usize);
                }
                pb::LogsReply { lines, ended, next }.encode_to_vec()
            }
            other => {
                return Err(Status::unimplemented(format!(
                    "method {other:?} is not a provider operation: use capacity, deploy, status, logs or stop"
                )))
            }
        };
        Ok(bytes)
    }
}

fn store_unavailable(node_id: &str, error: String) -> ResourceError {
    ResourceError::Unavailable {
        provider: format!("{node_id} (its store)"),
        reason: format!("{error}; nothing was acknowledged, retry with the same request id"),
    }
}

/// Where a deployment went, as the store keeps it.
fn placed_on(c: &Candidate) -> PlacedOn {
    PlacedOn {
        provider_id: c.id.clone(),
        provider_name: c.name.clone(),
        kind: c.kind.as_str().to_string(),
        tier: c.tier.as_str().to_string(),
        owner_id: c.owner_id.clone(),
        owner_addr: c.owner_addr.clone(),
    }
}

/// Enough of a candidate to reach its provider again.
fn candidate_of(on: &PlacedOn) -> Candidate {
    Candidate {
        id: on.provider_id.clone(),
        name: on.provider_name.clone(),
        kind: on.kind(),
        tier: on.tier(),
        owner_id: on.owner_id.clone(),
        owner_addr: on.owner_addr.clone(),
        healthy: true,
        capacity: Default::default(),
        labels: Default::default(),
    }
}

/// The record written before a deploy is sent to `c`.
fn intent(id: &str, spec: &DeploySpec, c: &Candidate) -> DeploymentRecord {
    let mut rec = DeploymentRecord {
        id: id.to_string(),
        request_id: spec.request_id.clone(),
        image: spec.image.clone(),
        cpu_millis: 0,
        memory_bytes: 0,
        gpus_wanted: 0,
        storage_bytes: 0,
        placed_on: placed_on(c),
        gpus: Vec::new(),
        history: Vec::new(),
        adopted: false,
    };
    rec.set_resources(spec.resources);
    rec.push(Stored::Placing);
    rec
}

/// How a provider is advertised in gossip: identity, kind, health,
/// capacity and labels; never credentials.
pub fn provider_info(d: &ProviderDescriptor) -> ProviderInfo {
    ProviderInfo {
        id: d.id.clone(),
        name: d.name.clone(),
        r#type: d.kind.as_str().to_string(),
        status: if d.healthy {
            PROVIDER_HEALTHY
        } else {
            PROVIDER_UNHEALTHY
        },
        labels: d.labels.clone().into_iter().collect(),
        capacity: Some(d.capacity.into()),
        ..Default::default()
    }
}

/// A discovered provider as a placement candidate.
pub fn candidate_from_gossip(p: &ProviderInfo, owner_addr: &str) -> Candidate {
    Candidate {
        id: p.id.clone(),
        name: p.name.clone(),
        kind: ProviderKind::parse(&p.r#type).unwrap_or(ProviderKind::Memory),
        tier: Tier::Discovered,
        owner_id: p.owner_id.clone(),
        owner_addr: owner_addr.to_string(),
        healthy: p.status == PROVIDER_HEALTHY,
        capacity: p.capacity.unwrap_or_default().into(),
        labels: p.labels.clone().into_iter().collect(),
    }
}

pub fn provider_entry(c: &Candidate) -> pb::ProviderEntry {
    pb::ProviderEntry {
        id: c.id.clone(),
        name: c.name.clone(),
        r#type: c.kind.as_str().to_string(),
        tier: c.tier.as_str().to_string(),
        owner_id: c.owner_id.clone(),
        healthy: c.healthy,
        capacity: Some(c.capacity.into()),
        labels: c.labels.clone().into_iter().collect(),
        endpoint: String::new(),
    }
}
