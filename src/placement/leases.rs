//! The leases this node keeps as the owner of their deployments' providers:
//! the sans-IO [`Lease`] of each, durable in the node's store, with the
//! epoch counter that fences holders, and the signal that wakes the lease
//! worker (`manager/leases.rs`). Every change is committed before it is
//! answered, so an acknowledged grant or renewal survives a crash, and an
//! owner that restarts still expires what it granted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::json;
use tokio::sync::Notify;

use super::book::run_blocking;
use crate::audit::Audit;
use crate::lifecycle::lease::{Lease, LeaseError, LeaseEvent};
use crate::metrics::LeaseMetrics;
use crate::resource::{Deployment, LeaseState, LeaseTerms, LeaseView, ResourceError};
use crate::store::{now_ms, DeploymentRecord, LeaseRecord, PlacedOn, Store, StoreError};
use crate::sync::{lock, KeyGuard, KeyLocks};

/// How long a lease that ended stays answerable after its container is gone.
pub const ENDED_RETENTION_MS: u64 = 24 * 3_600_000;

#[derive(Default)]
struct Inner {
    records: HashMap<String, LeaseRecord>,
    /// The highest epoch granted so far (durable with every grant).
    epoch: u64,
}

pub struct Leases {
    node_id: String,
    store: Arc<dyn Store>,
    inner: Mutex<Inner>,
    /// One change per deployment at a time: a deploy, a renewal, a stop
    /// and an expiry of the same deployment never interleave.
    locks: KeyLocks,
    wake: Notify,
    stats: LeaseMetrics,
    audit: OnceLock<Arc<Audit>>,
}

fn refused(id: &str, e: LeaseError) -> ResourceError {
    ResourceError::Precondition(format!("deployment {id:?}: {e}"))
}

impl Leases {
    /// The leases `store` kept, and its epoch counter.
    pub fn open(node_id: &str, store: Arc<dyn Store>) -> Result<Leases, StoreError> {
        let records: HashMap<String, LeaseRecord> = store
            .leases()?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let epoch = records
            .values()
            .map(|r| r.lease.epoch)
            .max()
            .unwrap_or(0)
            .max(store.lease_epoch()?);
        Ok(Leases {
            node_id: node_id.to_string(),
            store,
            inner: Mutex::new(Inner { records, epoch }),
            locks: KeyLocks::new(),
            wake: Notify::new(),
            stats: LeaseMetrics::default(),
            audit: OnceLock::new(),
        })
    }

    pub fn set_audit(&self, audit: Arc<Audit>) {
        let _ = self.audit.set(audit);
    }

    fn audit(&self, outcome: &str, rec: &LeaseRecord) {
        if let Some(a) = self.audit.get() {
            let l = &rec.lease;
            a.record(
                "lease",
                &self.node_id,
                outcome,
                json!({
                    "deployment": rec.id, "provider": rec.provider_id, "holder": l.holder,
                    "epoch": l.epoch, "renewals": l.renewals, "expires_ms": l.expires_ms,
                }),
            );
        }
    }

    pub fn metrics(&self) -> &LeaseMetrics {
        &self.stats
    }

    /// Holds `id` against every other change of its lease.
    pub async fn lock(&self, id: &str) -> KeyGuard<'_> {
        self.locks.lock(id).await
    }

    pub fn get(&self, id: &str) -> Option<LeaseRecord> {
        lock(&self.inner).records.get(id).cloned()
    }

    /// The lease of `id` as a client sees it now.
    pub fn view(&self, id: &str) -> Option<LeaseView> {
        let inner = lock(&self.inner);
        let r = inner.records.get(id)?;
        Some(r.lease.view(now_ms(), r.stopped_ms.is_some()))
    }

    /// `d` with its lease, if it holds one.
    pub fn attach(&self, mut d: Deployment) -> Deployment {
        d.lease = self.view(&d.id);
        d
    }

    /// The deployment as it was when its container went, with its lease.
    pub fn last(&self, id: &str) -> Option<Deployment> {
        let r = self.get(id)?;
        let mut d = r.last.as_ref()?.to_deployment();
        d.lease = Some(r.lease.view(now_ms(), r.stopped_ms.is_some()));
        Some(d)
    }

    /// Leases by state, for `/metrics`.
    pub fn by_state(&self) -> [(&'static str, u64); 3] {
        let inner = lock(&self.inner);
        let count = |s: LeaseState| {
            inner
                .records
                .values()
                .filter(|r| r.lease.state == s)
                .count()
        };
        [
            LeaseState::Active,
            LeaseState::Released,
            LeaseState::Expired,
        ]
        .map(|s| (s.as_str(), count(s) as u64))
    }

    /// Wakes when a lease was granted or renewed (the next expiry moved).
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    async fn persist(&self, rec: LeaseRecord) -> Result<(), ResourceError> {
        let epoch = lock(&self.inner).epoch;
        let copy = rec.clone();
        run_blocking(&self.store, &self.node_id, move |s| {
            s.put_lease(&copy, epoch)
        })
        .await?;
        lock(&self.inner).records.insert(rec.id.clone(), rec);
        Ok(())
    }

    /// Grants a new lease on `id` (the caller holds its lock), durably,
    /// before the deployment is made. `before` is the lease it had, whose
    /// transitions it continues.
    pub async fn grant(
        &self,
        id: &str,
        provider_id: &str,
        terms: &LeaseTerms,
        before: Option<&LeaseRecord>,
    ) -> Result<LeaseRecord, ResourceError> {
        let epoch = {
            let mut inner = lock(&self.inner);
            inner.epoch += 1;
            inner.epoch
        };
        let transitions = before.map_or(0, |b| b.lease.transitions + 1);
        let rec = LeaseRecord {
            id: id.to_string(),
            provider_id: provider_id.to_string(),
            lease: Lease::grant(&terms.holder, terms.clone(), epoch, transitions, now_ms()),
            stopped_ms: None,
            last: None,
        };
        self.persist(rec.clone()).await?;
        self.stats.granted.inc();
        self.audit("granted", &rec);
        self.wake.notify_one();
        Ok(rec)
    }

    /// Undoes a grant whose deploy made nothing: the lease before it comes
    /// back, or none.
    pub async fn undo_grant(&self, id: &str, before: Option<LeaseRecord>) {
        let result = match before {
            Some(b) => self.persist(b).await,
            None => {
                lock(&self.inner).records.remove(id);
                let key = id.to_string();
                run_blocking(&self.store, &self.node_id, move |s| s.remove_lease(&key)).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(deployment = %id, error = %e, "cannot undo a lease grant; it expires on its own");
        }
    }

    fn leased(&self, id: &str) -> Result<LeaseRecord, ResourceError> {
        self.get(id).ok_or_else(|| {
            ResourceError::Precondition(format!(
                "deployment {id:?} holds no lease: deploy it with lease_ttl to get one"
            ))
        })
    }

    /// The holder renews: one more TTL from now (the caller holds the lock).
    pub async fn renew(&self, id: &str, epoch: Option<u64>) -> Result<LeaseView, ResourceError> {
        let mut rec = self.leased(id)?;
        rec.lease.fence(epoch).map_err(|e| refused(id, e))?;
        rec.lease.renew(now_ms()).map_err(|e| refused(id, e))?;
        self.persist(rec.clone()).await?;
        self.stats.renewed.inc();
        self.audit("renewed", &rec);
        self.wake.notify_one();
        Ok(rec.lease.view(now_ms(), rec.stopped_ms.is_some()))
    }

    /// The holder gives it back (the caller holds the lock); the caller
    /// then stops the deployment.
    pub async fn release(&self, id: &str, epoch: Option<u64>) -> Result<(), ResourceError> {
        let mut rec = self.leased(id)?;
        rec.lease.fence(epoch).map_err(|e| refused(id, e))?;
        rec.lease.release().map_err(|e| refused(id, e))?;
        self.persist(rec.clone()).await?;
        self.stats.released.inc();
        self.audit("released", &rec);
        Ok(())
    }

    /// The deployment's container is gone (the caller holds the lock): an
    /// active lease ends as released (a stop is a release), and `d`, what
    /// the stop answered, is kept to answer for it.
    pub async fn stopped(&self, id: &str, d: Option<&Deployment>) -> Result<(), ResourceError> {
        let Some(mut rec) = self.get(id) else {
            return Ok(());
        };
        if rec.lease.state == LeaseState::Active && rec.lease.release().is_ok() {
            self.stats.released.inc();
            self.audit("released", &rec);
        }
        rec.stopped_ms = Some(now_ms());
        if let Some(d) = d {
            let mut last = DeploymentRecord::new(
                id,
                &d.request_id,
                &d.image,
                PlacedOn {
                    provider_id: rec.provider_id.clone(),
                    ..PlacedOn::default()
                },
            );
            last.set_resources(d.resources);
            last.observe(d);
            rec.last = Some(last);
        }
        self.persist(rec).await
    }

    /// Active leases past their expiry, and ended ones whose container is
    /// not yet gone (a stop that failed is tried again).
    pub fn due(&self, now: u64) -> Vec<String> {
        lock(&self.inner)
            .records
            .values()
            .filter(|r| match r.lease.state {
                LeaseState::Active => r.lease.expires_ms <= now,
                _ => r.stopped_ms.is_none(),
            })
            .map(|r| r.id.clone())
            .collect()
    }

    /// The earliest expiry of an active lease.
    pub fn next_expiry(&self) -> Option<u64> {
        lock(&self.inner)
            .records
            .values()
            .filter(|r| r.lease.state == LeaseState::Active)
            .map(|r| r.lease.expires_ms)
            .min()
    }

    /// Lets time pass for `id` (the caller holds the lock): renews it by
    /// itself or ends it. Durable before it returns.
    pub async fn tick(&self, id: &str, now: u64) -> Result<Option<LeaseEvent>, ResourceError> {
        let Some(mut rec) = self.get(id) else {
            return Ok(None);
        };
        let event = rec.lease.tick(now);
        if event.is_none() {
            return Ok(None);
        }
        self.persist(rec.clone()).await?;
        match event {
            Some(LeaseEvent::AutoRenewed) => {
                self.stats.auto_renewed.inc();
                self.audit("auto_renewed", &rec);
            }
            Some(LeaseEvent::Expired) => {
                self.stats.expired.inc();
                self.audit("expired", &rec);
            }
            None => {}
        }
        Ok(event)
    }

    /// Forgets leases that ended more than [`ENDED_RETENTION_MS`] ago and
    /// whose container is gone.
    pub async fn prune(&self, now: u64) {
        let old: Vec<String> = lock(&self.inner)
            .records
            .values()
            .filter(|r| {
                r.stopped_ms
                    .is_some_and(|t| now.saturating_sub(t) > ENDED_RETENTION_MS)
            })
            .map(|r| r.id.clone())
            .collect();
        for id in old {
            let _held = self.lock(&id).await;
            let key = id.clone();
            if run_blocking(&self.store, &self.node_id, move |s| s.remove_lease(&key))
                .await
                .is_ok()
            {
                lock(&self.inner).records.remove(&id);
            }
        }
    }
}
