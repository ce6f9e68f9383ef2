//! Each of this node's own providers, wrapped so that a gang's replicas
//! can have room held before any starts (prepare), and the hold lapses by
//! itself when no deploy takes it in time (a lost commit or abort never
//! strands resources; Ray's placement groups lacked such a timeout).
//!
//! Holds live here, beside the provider's own ledger: every other deploy
//! is admitted only into what the holds leave, and the capacity this
//! provider advertises counts them as reserved. A deploy of a held
//! request takes its hold. Deploys under way are counted too, and a
//! prepare that raced with one reads the capacity again, so a hold never
//! promises room a concurrent deploy took.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::resource::validate::{deployment_id, validate};
use crate::resource::{
    Capacity, DeploySpec, Deployment, LogOptions, LogStream, ProgressSink, Provider,
    ProviderDescriptor, ResourceError, Resources,
};
use crate::sync::lock;

/// Times a prepare or a deploy reads the capacity again after a race.
const RETRIES: usize = 8;

struct Hold {
    need: Resources,
    until: Instant,
}

#[derive(Default)]
struct Held {
    holds: HashMap<String, Hold>,
    /// Deploys under way, which the provider's ledger may not show yet.
    inflight: Resources,
    inflight_n: u32,
    /// Bumped by every change, so a reader can tell its capacity is stale.
    changes: u64,
}

impl Held {
    fn purge(&mut self, now: Instant) {
        let before = self.holds.len();
        self.holds.retain(|id, h| {
            let live = h.until > now;
            if !live {
                debug!(deployment = %id, "gang hold lapsed");
            }
            live
        });
        if self.holds.len() != before {
            self.changes += 1;
        }
    }

    /// `cap` with the holds and deploys under way counted as taken.
    fn after(&self, cap: Capacity) -> Capacity {
        let mut c = cap;
        for h in self.holds.values() {
            c.take(&h.need);
        }
        c.reserved = c.reserved.saturating_add(&self.inflight);
        c.deployments = c.deployments.saturating_add(self.inflight_n);
        c
    }

    fn start(&mut self, need: Resources) {
        self.inflight = self.inflight.saturating_add(&need);
        self.inflight_n += 1;
        self.changes += 1;
    }

    fn done(&mut self, need: Resources) {
        self.inflight = self.inflight.saturating_sub(&need);
        self.inflight_n = self.inflight_n.saturating_sub(1);
        self.changes += 1;
    }
}

/// What a deploy of `spec` takes from the ledger (a shared GPU takes none).
fn need_of(spec: &DeploySpec) -> Resources {
    let mut need = spec.resources;
    if spec.gpu_shared {
        need.gpus = 0;
    }
    need
}

fn refused(provider: &str, need: Resources, left: &Capacity) -> ResourceError {
    if left.has_slot() {
        ResourceError::Exhausted {
            provider: provider.to_string(),
            need,
            available: left.available(),
        }
    } else {
        ResourceError::NoSlot {
            provider: provider.to_string(),
            max: left.max_deployments.unwrap_or(0),
        }
    }
}

pub struct Reserving {
    inner: Arc<dyn Provider>,
    held: Mutex<Held>,
}

impl Reserving {
    pub fn new(inner: Arc<dyn Provider>) -> Reserving {
        Reserving {
            inner,
            held: Mutex::new(Held::default()),
        }
    }

    /// Runs `admit` on the capacity as it is now, holds and deploys under
    /// way counted, under the lock; reads again when something changed
    /// between the read and the lock.
    async fn admit_with<T>(
        &self,
        mut admit: impl FnMut(&mut Held, Capacity) -> Result<T, ResourceError>,
    ) -> Result<T, ResourceError> {
        for _ in 0..RETRIES {
            let seen = lock(&self.held).changes;
            let cap = self.inner.describe().await?.capacity;
            let mut h = lock(&self.held);
            h.purge(Instant::now());
            if h.changes == seen {
                return admit(&mut h, cap);
            }
        }
        Err(ResourceError::Unavailable {
            provider: self.inner.id().to_string(),
            reason: "its capacity kept changing while this request was admitted; try again".into(),
        })
    }
}

#[async_trait::async_trait]
impl Provider for Reserving {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn image_builder(&self) -> Option<std::sync::Arc<dyn crate::resource::ImageBuilder>> {
        self.inner.image_builder()
    }

    async fn describe(&self) -> Result<ProviderDescriptor, ResourceError> {
        let mut d = self.inner.describe().await?;
        let mut h = lock(&self.held);
        h.purge(Instant::now());
        for hold in h.holds.values() {
            d.capacity.take(&hold.need);
        }
        Ok(d)
    }

    async fn prepare(&self, spec: &DeploySpec, ttl: Duration) -> Result<(), ResourceError> {
        validate(spec)?;
        let id = deployment_id(&spec.request_id);
        let need = need_of(spec);
        let provider = self.inner.id().to_string();
        self.admit_with(|h, cap| {
            let until = Instant::now() + ttl;
            if let Some(hold) = h.holds.get_mut(&id) {
                // A retried prepare keeps its room a while longer.
                hold.until = until;
                return Ok(());
            }
            let left = h.after(cap);
            if !left.admits(&need) {
                return Err(refused(&provider, need, &left));
            }
            h.holds.insert(id.clone(), Hold { need, until });
            h.changes += 1;
            Ok(())
        })
        .await
    }

    async fn abort(&self, deployment_id: &str) -> Result<(), ResourceError> {
        let mut h = lock(&self.held);
        if h.holds.remove(deployment_id).is_some() {
            h.changes += 1;
        }
        Ok(())
    }

    async fn deploy(
        &self,
        spec: &DeploySpec,
        progress: ProgressSink,
    ) -> Result<Deployment, ResourceError> {
        let id = deployment_id(&spec.request_id);
        let need = need_of(spec);
        let checked = {
            let mut h = lock(&self.held);
            h.purge(Instant::now());
            if h.holds.remove(&id).is_some() || h.holds.is_empty() {
                // Its own room, or nobody's room to respect.
                h.start(need);
                true
            } else {
                false
            }
        };
        if !checked {
            let provider = self.inner.id().to_string();
            self.admit_with(|h, cap| {
                let left = h.after(cap);
                if !left.admits(&need) {
                    return Err(refused(&provider, need, &left));
                }
                h.start(need);
                Ok(())
            })
            .await?;
        }
        let result = self.inner.deploy(spec, progress).await;
        lock(&self.held).done(need);
        result
    }

    async fn status(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        self.inner.status(deployment_id).await
    }

    async fn list(&self) -> Result<Vec<Deployment>, ResourceError> {
        self.inner.list().await
    }

    async fn logs(
        &self,
        deployment_id: &str,
        opts: LogOptions,
    ) -> Result<LogStream, ResourceError> {
        self.inner.logs(deployment_id, opts).await
    }

    async fn stop(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        self.inner.stop(deployment_id).await
    }

    async fn renew_lease(
        &self,
        deployment_id: &str,
        epoch: Option<u64>,
    ) -> Result<Deployment, ResourceError> {
        self.inner.renew_lease(deployment_id, epoch).await
    }

    async fn release_lease(
        &self,
        deployment_id: &str,
        epoch: Option<u64>,
    ) -> Result<Deployment, ResourceError> {
        self.inner.release_lease(deployment_id, epoch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::memory::MemoryProvider;

    fn cpus(n: u64) -> Resources {
        Resources {
            cpu_millis: n * 1000,
            memory_bytes: 1 << 30,
            gpus: 0,
            storage_bytes: 0,
        }
    }

    fn spec(req: &str, cpu: u64) -> DeploySpec {
        DeploySpec {
            request_id: req.into(),
            image: "busybox".into(),
            resources: Resources {
                cpu_millis: cpu * 1000,
                memory_bytes: 16 << 20,
                gpus: 0,
                storage_bytes: 0,
            },
            ..Default::default()
        }
    }

    fn provider(n: u64) -> Reserving {
        Reserving::new(Arc::new(MemoryProvider::new(
            "p",
            cpus(n),
            Default::default(),
        )))
    }

    async fn reserved_cpu(p: &Reserving) -> u64 {
        p.describe().await.unwrap().capacity.reserved.cpu_millis
    }

    #[tokio::test]
    async fn a_hold_keeps_room_from_others_and_its_deploy_takes_it() {
        let p = provider(2);
        p.prepare(&spec("g-0", 2), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(reserved_cpu(&p).await, 2000, "advertised as reserved");
        let e = p
            .deploy(&spec("other", 1), ProgressSink::none())
            .await
            .unwrap_err();
        assert!(matches!(e, ResourceError::Exhausted { .. }), "{e}");
        let e = p
            .prepare(&spec("g-1", 1), Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(matches!(e, ResourceError::Exhausted { .. }), "{e}");
        p.deploy(&spec("g-0", 2), ProgressSink::none())
            .await
            .unwrap();
        assert_eq!(reserved_cpu(&p).await, 2000, "taken once, not twice");
    }

    #[tokio::test]
    async fn a_hold_nobody_takes_lapses_by_itself_and_an_abort_frees_it_at_once() {
        let p = provider(2);
        p.prepare(&spec("g-0", 1), Duration::from_millis(50))
            .await
            .unwrap();
        p.prepare(&spec("g-1", 1), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(reserved_cpu(&p).await, 2000);
        p.abort(&deployment_id("g-1")).await.unwrap();
        assert_eq!(reserved_cpu(&p).await, 1000);
        let deadline = Instant::now() + Duration::from_secs(10);
        while reserved_cpu(&p).await != 0 {
            assert!(Instant::now() < deadline, "the hold never lapsed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        p.deploy(&spec("other", 2), ProgressSink::none())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn concurrent_prepares_and_deploys_never_promise_the_same_room() {
        let p = Arc::new(provider(8));
        let mut tasks = Vec::new();
        for i in 0..32 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    p.prepare(&spec(&format!("g-{i}"), 1), Duration::from_secs(60))
                        .await
                        .is_ok()
                } else {
                    p.deploy(&spec(&format!("d-{i}"), 1), ProgressSink::none())
                        .await
                        .is_ok()
                }
            }));
        }
        let mut granted = 0;
        for t in tasks {
            granted += usize::from(t.await.unwrap());
        }
        assert!(granted <= 8, "{granted} grants on 8 CPUs");
        assert!(reserved_cpu(&p).await <= 8000);
    }
}
