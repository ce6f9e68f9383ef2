//! The book of deployments this node placed: one durable record each,
//! written before a provider hears of a deploy and after it answers, and
//! the lookups that find where a deployment lives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing::warn;

use super::registry::Registry;
use crate::resource::validate::deployment_id;
use crate::resource::{Candidate, Provider, ResourceError};
use crate::store::{DeploymentRecord, PlacedOn, QueuedRecord, Store, StoreError};

/// Where a deployment was found: the provider that holds it, the node that
/// owns that provider, and the deployment id (a request id resolved).
pub struct Found {
    pub provider: Arc<dyn Provider>,
    pub owner: String,
    pub id: String,
}

pub struct Book {
    node_id: String,
    /// By deployment id; the store holds the same, durably.
    records: Mutex<HashMap<String, DeploymentRecord>>,
    store: Arc<dyn Store>,
}

impl Book {
    pub fn new(
        node_id: &str,
        store: Arc<dyn Store>,
        records: HashMap<String, DeploymentRecord>,
    ) -> Book {
        Book {
            node_id: node_id.to_string(),
            records: Mutex::new(records),
            store,
        }
    }

    /// A book starting from what `store` holds.
    pub fn open(node_id: &str, store: Arc<dyn Store>) -> Result<Book, StoreError> {
        let records = store
            .deployments()?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        Ok(Book::new(node_id, store, records))
    }

    fn records(&self) -> MutexGuard<'_, HashMap<String, DeploymentRecord>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The record under exactly this deployment id.
    pub fn get(&self, id: &str) -> Option<DeploymentRecord> {
        self.records().get(id).cloned()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.records().contains_key(id)
    }

    /// The record for a deployment id or the request id it came from.
    pub fn record(&self, id: &str) -> Option<DeploymentRecord> {
        let records = self.records();
        records
            .get(id)
            .or_else(|| records.get(&deployment_id(id)))
            .cloned()
    }

    /// What `f` makes of each record it takes, without copying the records.
    pub fn filter_map<T>(&self, f: impl Fn(&DeploymentRecord) -> Option<T>) -> Vec<T> {
        self.records().values().filter_map(f).collect()
    }

    /// Every record that `keep` selects.
    pub fn select(&self, keep: impl Fn(&DeploymentRecord) -> bool) -> Vec<DeploymentRecord> {
        self.records()
            .values()
            .filter(|r| keep(r))
            .cloned()
            .collect()
    }

    /// Runs a store operation on the blocking pool: a commit is an fsync.
    pub async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ResourceError> {
        run_blocking(&self.store, &self.node_id, op).await
    }

    /// One small commit inline, for rare operator-driven changes.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Writes `rec` durably, then makes it the one this node answers with.
    pub async fn persist(&self, rec: &DeploymentRecord) -> Result<(), ResourceError> {
        let copy = rec.clone();
        self.blocking(move |s| s.put_deployment(&copy)).await?;
        self.records().insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// Queues a deploy: its entry and its `Queued` record in one commit.
    pub async fn enqueue(
        &self,
        q: &QueuedRecord,
        rec: &DeploymentRecord,
    ) -> Result<(), ResourceError> {
        let (qc, rc) = (q.clone(), rec.clone());
        self.blocking(move |s| s.put_queued(&qc, &rc)).await?;
        self.records().insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// Takes a deploy out of the queue, writing what became of it (placing,
    /// expired, stopped) in the same commit.
    pub async fn dequeue(&self, rec: &DeploymentRecord) -> Result<(), ResourceError> {
        let rc = rec.clone();
        self.blocking(move |s| s.remove_queued(&rc.id, &rc)).await?;
        self.records().insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// Drops the record of a deploy that made nothing. A failure only
    /// leaves a stale intent, which reconcile resolves at the next start.
    pub async fn forget(&self, id: &str) {
        self.records().remove(id);
        let key = id.to_string();
        if let Err(e) = self.blocking(move |s| s.remove_deployment(&key)).await {
            warn!(deployment = %id, error = %e, "cannot drop a record from the store");
        }
    }

    /// The provider holding deployment `id`: recorded at placement, else
    /// searched among this node's providers (deployments other nodes placed here).
    async fn holder(&self, registry: &Registry, id: &str) -> Result<Found, ResourceError> {
        let on = self.records().get(id).map(|r| r.placed_on.clone());
        if let Some(on) = on {
            if !on.is_placed() {
                return Err(ResourceError::Precondition(format!(
                    "deployment {id:?} has no provider yet: it waits in node {}'s queue (see GetDeployment for why)",
                    self.node_id
                )));
            }
            return Ok(Found {
                provider: registry.provider_for(&candidate_of(&on))?,
                owner: on.owner_id,
                id: id.to_string(),
            });
        }
        for p in registry.providers() {
            if p.status(id).await.is_ok() {
                return Ok(Found {
                    provider: p,
                    owner: self.node_id.clone(),
                    id: id.to_string(),
                });
            }
        }
        Err(ResourceError::NotFound(format!(
            "deployment {id:?} is unknown to node {}: ask the node that placed it, or ListDeployments",
            self.node_id
        )))
    }

    /// Finds a deployment by its id, or by the request id it was derived
    /// from (what a user chose, so scripts need not parse the deploy's answer).
    pub async fn find(&self, registry: &Registry, id: &str) -> Result<Found, ResourceError> {
        let derived = deployment_id(id);
        // A request id this node placed: answered from the records, no
        // provider asked about an id it cannot know.
        let placed_here = {
            let records = self.records();
            !records.contains_key(id) && records.contains_key(&derived)
        };
        if placed_here {
            return self.holder(registry, &derived).await;
        }
        match self.holder(registry, id).await {
            Err(ResourceError::NotFound(why)) => self
                .holder(registry, &derived)
                .await
                .map_err(|_| ResourceError::NotFound(why)),
            found => found,
        }
    }
}

/// Runs a store operation of `node_id`'s store on the blocking pool.
pub async fn run_blocking<T: Send + 'static>(
    store: &Arc<dyn Store>,
    node_id: &str,
    op: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ResourceError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || op(&*store))
        .await
        .map_err(|e| store_unavailable(node_id, e.to_string()))?
        .map_err(|e| store_unavailable(node_id, e.to_string()))
}

fn store_unavailable(node_id: &str, error: String) -> ResourceError {
    ResourceError::Unavailable {
        provider: format!("{node_id} (its store)"),
        reason: format!("{error}; nothing was acknowledged, retry with the same request id"),
    }
}

/// Where a deployment went, as the store keeps it.
pub fn placed_on(c: &Candidate) -> PlacedOn {
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
pub fn candidate_of(on: &PlacedOn) -> Candidate {
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
        version: 0,
        gpus: Vec::new(),
    }
}
