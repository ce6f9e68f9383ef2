//! Services, the home's side: a deploy with `replicas: N` becomes N
//! ordinary deployments whose request ids are derived from the service id
//! and the replica index (so a retry finds the same ones), placed one by
//! one under the service's spread. The service record (the spec and the
//! wanted count) is durable before any replica is placed; each replica is
//! rescheduled on its own when its owner dies, and a replica that could
//! not be placed at all is tried again by the service round.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::{info, warn};

use super::Manager;
use crate::placement::place::{PlaceOptions, Placed};
use crate::placement::rank::Strategy;
use crate::placement::spread;
use crate::resource::service::{replica_request_id, MAX_REPLICAS};
use crate::resource::validate::{deployment_id, validate};
use crate::resource::{
    DeploySpec, DeployState, Deployment, ProgressSink, ReplicaOf, ResourceError,
};
use crate::store::{now_ms, ServiceRecord};
use crate::sync::lock;

/// How long a replica that could not be placed waits before the service
/// round tries it again.
const RETRY_MISSING_MS: u64 = 5_000;

/// A service as a client sees it.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub record: ServiceRecord,
    /// The replicas that have a record, by index, with their owner.
    pub replicas: Vec<(u32, Deployment, String)>,
    pub running: u32,
    pub per_domain: BTreeMap<String, u32>,
    pub skew: u32,
}

/// The services this node is the home of, and when a missing replica was
/// last tried.
#[derive(Default)]
pub(crate) struct Services {
    records: std::sync::Mutex<BTreeMap<String, ServiceRecord>>,
    tried: std::sync::Mutex<HashMap<String, u64>>,
    /// Services with a replica above the wanted count that did not stop.
    unstopped: std::sync::Mutex<HashSet<String>>,
}

impl Services {
    pub(crate) fn restore(records: Vec<ServiceRecord>) -> Services {
        let ids = records.iter().map(|r| r.id.clone()).collect();
        Services {
            records: std::sync::Mutex::new(
                records.into_iter().map(|r| (r.id.clone(), r)).collect(),
            ),
            tried: Default::default(),
            // A restart may have cut a scale down short.
            unstopped: std::sync::Mutex::new(ids),
        }
    }

    fn get(&self, id: &str) -> Option<ServiceRecord> {
        lock(&self.records).get(id).cloned()
    }

    fn all(&self) -> Vec<ServiceRecord> {
        lock(&self.records).values().cloned().collect()
    }
}

fn replica_spec(rec: &ServiceRecord, index: u32) -> DeploySpec {
    let mut spec = rec.spec.clone();
    spec.request_id = replica_request_id(&rec.id, index);
    spec.replica_of = Some(ReplicaOf {
        service: rec.id.clone(),
        index,
    });
    spec
}

fn options(rec: &ServiceRecord) -> PlaceOptions {
    PlaceOptions {
        strategy: rec
            .strategy
            .as_deref()
            .and_then(|s| Strategy::parse(s).ok()),
        region: rec.region.clone(),
        provider_id: rec.provider_id.clone(),
        priority: rec.priority,
        preemption: rec.spec.preemption,
        queue_timeout: std::time::Duration::from_millis(rec.queue_timeout_ms),
        wait_for_capacity: rec.wait_for_capacity,
        gang: None,
    }
}

fn service_key(id: &str) -> String {
    format!("service/{id}")
}

impl Manager {
    /// Makes (or, for a retry, finds) service `spec.request_id` with
    /// `replicas` replicas and places them; a retry with another count
    /// scales it. An error placing the first replica of a new service (a
    /// bad spec, nothing could ever hold it) leaves nothing behind.
    pub async fn deploy_service(
        &self,
        mut spec: DeploySpec,
        opts: PlaceOptions,
        replicas: u32,
        progress: ProgressSink,
    ) -> Result<(ServiceView, Vec<Placed>), ResourceError> {
        if replicas == 0 || replicas > MAX_REPLICAS {
            return Err(ResourceError::invalid(
                "replicas",
                format!("{replicas}: a service has 1 to {MAX_REPLICAS} replicas"),
            ));
        }
        validate(&spec)?;
        let longest = replica_request_id(&spec.request_id, replicas - 1);
        if longest.len() > 128 {
            return Err(ResourceError::invalid(
                "request_id",
                format!("replica ids such as {longest:?} would pass 128 characters: use a shorter request_id"),
            ));
        }
        if spec.spread.is_some() && replicas == 1 {
            info!(service = %spec.request_id, "a spread over one replica keeps nothing apart");
        }
        // Each replica carries on through its owner's death unless told otherwise.
        spec.reschedule.get_or_insert_with(Default::default);
        let id = spec.request_id.clone();
        let _held = self.inflight.lock(&service_key(&id)).await;
        let fresh = self.services.get(&id).is_none();
        let rec = match self.services.get(&id) {
            Some(mut rec) => {
                rec.replicas = replicas;
                rec.stopped = false;
                rec
            }
            None => ServiceRecord {
                id: id.clone(),
                spec,
                replicas,
                strategy: opts.strategy.map(|s| s.as_str().to_string()),
                region: opts.region.clone(),
                provider_id: opts.provider_id.clone(),
                priority: opts.priority,
                queue_timeout_ms: opts.queue_timeout.as_millis() as u64,
                wait_for_capacity: opts.wait_for_capacity,
                created_ms: now_ms(),
                stopped: false,
            },
        };
        self.put_service(&rec).await?;
        let mut placed = Vec::new();
        let gang = opts.gang.filter(|_| fresh);
        if let Some(hold) = gang {
            let specs = (0..replicas).map(|i| replica_spec(&rec, i)).collect();
            match self
                .place_gang(specs, &options(&rec), hold, progress.clone())
                .await
            {
                Ok(p) => placed = p,
                Err(e) => {
                    self.forget_service(&id).await;
                    return Err(e);
                }
            }
        }
        for index in (0..replicas).filter(|_| gang.is_none()) {
            match self
                .deploy(replica_spec(&rec, index), options(&rec), progress.clone())
                .await
            {
                Ok(p) => placed.push(p),
                Err(e) if index == 0 && fresh => {
                    self.forget_service(&id).await;
                    return Err(e);
                }
                Err(e) => {
                    warn!(service = %id, index, error = %e, "a replica could not be placed; tried again later");
                    lock(&self.services.tried).insert(replica_request_id(&id, index), now_ms());
                }
            }
        }
        self.stop_beyond(&rec).await;
        self.audit(
            "service",
            if fresh { "created" } else { "scaled" },
            serde_json::json!({"service": id, "replicas": replicas, "placed": placed.len()}),
        );
        Ok((self.service_view(&rec).await, placed))
    }

    async fn put_service(&self, rec: &ServiceRecord) -> Result<(), ResourceError> {
        let r = rec.clone();
        self.book.blocking(move |s| s.put_service(&r)).await?;
        lock(&self.services.records).insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    async fn forget_service(&self, id: &str) {
        let key = id.to_string();
        if let Err(e) = self.book.blocking(move |s| s.remove_service(&key)).await {
            warn!(service = %id, error = %e, "cannot forget a service that placed nothing");
        }
        lock(&self.services.records).remove(id);
    }

    /// Sets the wanted count: places the missing replicas, stops the
    /// highest ones beyond it.
    pub async fn scale(&self, id: &str, replicas: u32) -> Result<ServiceView, ResourceError> {
        if replicas > MAX_REPLICAS {
            return Err(ResourceError::invalid(
                "replicas",
                format!("{replicas}: a service has at most {MAX_REPLICAS} replicas"),
            ));
        }
        let _held = self.inflight.lock(&service_key(id)).await;
        let mut rec = self.services.get(id).ok_or_else(|| not_here(id))?;
        let longest = replica_request_id(id, replicas.saturating_sub(1));
        if longest.len() > 128 {
            return Err(ResourceError::invalid(
                "replicas",
                format!("replica ids such as {longest:?} would pass 128 characters"),
            ));
        }
        let before = rec.replicas;
        rec.replicas = replicas;
        rec.stopped = replicas == 0;
        self.put_service(&rec).await?;
        for index in 0..replicas {
            if self.replica_holds(&rec, index) {
                continue;
            }
            let spec = replica_spec(&rec, index);
            if let Err(e) = self.deploy(spec, options(&rec), ProgressSink::none()).await {
                warn!(service = %id, index, error = %e, "a replica could not be placed; tried again later");
                lock(&self.services.tried).insert(replica_request_id(id, index), now_ms());
            }
        }
        self.stop_beyond(&rec).await;
        info!(service = %id, from = before, to = replicas, "service scaled");
        self.failover.scales.inc();
        self.audit(
            "service",
            "scaled",
            serde_json::json!({"service": id, "from": before, "to": replicas}),
        );
        Ok(self.service_view(&rec).await)
    }

    /// Whether replica `index` has a record that is not over (queued,
    /// placed, running, being moved).
    fn replica_holds(&self, rec: &ServiceRecord, index: u32) -> bool {
        let rid = deployment_id(&replica_request_id(&rec.id, index));
        self.book.get(&rid).is_some_and(|r| !r.state().is_final())
    }

    /// Stops every replica at or above the wanted count, highest first.
    async fn stop_beyond(&self, rec: &ServiceRecord) {
        let mut beyond: Vec<(u32, String)> = self.book.filter_map(|r| {
            let of = r.spec.as_ref()?.replica_of.as_ref()?;
            (of.service == rec.id && of.index >= rec.replicas && !r.state().is_final())
                .then(|| (of.index, r.id.clone()))
        });
        beyond.sort_by_key(|b| std::cmp::Reverse(b.0));
        let mut all = true;
        for (index, id) in beyond {
            match self.stop(&id).await {
                Ok(_) => info!(service = %rec.id, index, "replica stopped by a scale down"),
                Err(e) => {
                    all = false;
                    warn!(service = %rec.id, index, error = %e, "cannot stop a replica; tried again later")
                }
            }
        }
        let mut unstopped = lock(&self.services.unstopped);
        if all {
            unstopped.remove(&rec.id);
        } else {
            unstopped.insert(rec.id.clone());
        }
    }

    /// One look at every service: replicas that could not be placed are
    /// tried again (at most every few seconds each), and those above the
    /// wanted count that did not stop are stopped. Returns how many were
    /// placed.
    pub(crate) async fn service_round(&self) -> usize {
        let now = now_ms();
        let mut placed = 0;
        for rec in self.services.all() {
            let Some(_held) = self.inflight.try_lock(&service_key(&rec.id)) else {
                continue;
            };
            for index in 0..rec.replicas {
                let rid = replica_request_id(&rec.id, index);
                // A record of any kind is the replica's own life (restart,
                // reschedule, a stop by hand); only a missing one is made.
                if self.book.contains(&deployment_id(&rid)) {
                    continue;
                }
                let last = lock(&self.services.tried).get(&rid).copied().unwrap_or(0);
                if now.saturating_sub(last) < RETRY_MISSING_MS {
                    continue;
                }
                lock(&self.services.tried).insert(rid.clone(), now);
                match self
                    .deploy(
                        replica_spec(&rec, index),
                        options(&rec),
                        ProgressSink::none(),
                    )
                    .await
                {
                    Ok(_) => placed += 1,
                    Err(e) => {
                        warn!(service = %rec.id, index, error = %e, "a replica still cannot be placed")
                    }
                }
            }
            if lock(&self.services.unstopped).contains(&rec.id) {
                self.stop_beyond(&rec).await;
            }
        }
        placed
    }

    /// Service `id`, kept here.
    pub async fn service(&self, id: &str) -> Result<ServiceView, ResourceError> {
        let rec = self.services.get(id).ok_or_else(|| not_here(id))?;
        Ok(self.service_view(&rec).await)
    }

    /// Every service kept here, by id.
    pub async fn services(&self) -> Vec<ServiceView> {
        let mut out = Vec::new();
        for rec in self.services.all() {
            out.push(self.service_view(&rec).await);
        }
        out
    }

    async fn service_view(&self, rec: &ServiceRecord) -> ServiceView {
        let mut replicas = Vec::new();
        let mut running = 0;
        let highest = self
            .book
            .filter_map(|r| {
                let of = r.spec.as_ref()?.replica_of.as_ref()?;
                (of.service == rec.id).then_some(of.index)
            })
            .into_iter()
            .max()
            .map_or(rec.replicas, |h| rec.replicas.max(h + 1));
        for index in 0..highest {
            let rid = deployment_id(&replica_request_id(&rec.id, index));
            if !self.book.contains(&rid) {
                continue;
            }
            match self.status(&rid).await {
                Ok((d, owner)) => {
                    running += u32::from(index < rec.replicas && d.state() == DeployState::Running);
                    replicas.push((index, d, owner));
                }
                Err(e) => warn!(service = %rec.id, index, error = %e, "cannot read a replica"),
            }
        }
        let (per_domain, skew) = self.per_domain(rec);
        ServiceView {
            record: rec.clone(),
            replicas,
            running,
            per_domain,
            skew,
        }
    }

    /// Replicas per spread value over the eligible values, and the skew.
    fn per_domain(&self, rec: &ServiceRecord) -> (BTreeMap<String, u32>, u32) {
        let spec = replica_spec(rec, 0);
        let opts = options(rec);
        let need = crate::placement::feasible::Need {
            resources: spec.resources,
            gpu_model: spec.gpu_model.as_deref(),
            required_labels: Some(&spec.required_labels),
            region: opts.region.as_deref(),
            provider_id: None,
            scope: Some(&spec.scope),
        };
        let index = self.registry.index();
        // "" is no replica's id: every sibling counts.
        let counts = self
            .placer()
            .spread_choice("", &spec, &need, &index)
            .map(|(_, c)| c.counts)
            .unwrap_or_default();
        let skew = spread::skew(&counts);
        (counts, skew)
    }

    /// (service, wanted replicas, skew) for each service kept here, from
    /// the records alone (no owner is asked).
    pub fn service_gauges(&self) -> Vec<(String, u64, u64)> {
        self.services
            .all()
            .iter()
            .map(|rec| {
                let (_, skew) = self.per_domain(rec);
                (rec.id.clone(), u64::from(rec.replicas), u64::from(skew))
            })
            .collect()
    }

    /// Whether `id` is a service kept here.
    pub fn is_service(&self, id: &str) -> bool {
        self.services.get(id).is_some()
    }
}

fn not_here(id: &str) -> ResourceError {
    ResourceError::NotFound(format!(
        "no service {id:?} is kept on this node: ask the node that accepted its deploy (the home_id of its replicas), or list them with ListServices there"
    ))
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
