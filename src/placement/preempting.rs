//! Each of this node's own providers, wrapped so that a deploy allowed to
//! preempt (its home sets `preemption` only on that pass) is admitted by
//! evicting preemptible work it outranks when nothing else has room. The
//! owner chooses the victims from what actually runs on the provider, one
//! preemption at a time, and reports each eviction so that the victim's
//! home queues it again ("preempted by <id>").

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::lifecycle::preemption::{self, Running};
use crate::resource::validate::deployment_id;
use crate::resource::{
    DeploySpec, Deployment, LogOptions, LogStream, PreemptionPolicy, ProgressSink, Provider,
    ProviderDescriptor, ResourceError,
};

/// One deployment evicted to admit another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    pub id: String,
    pub provider_id: String,
    /// Its home, which queues it again; empty when it has none.
    pub home: String,
    pub attempt: u32,
    /// The deployment it made room for.
    pub by: String,
}

pub struct Preempting {
    inner: Arc<dyn Provider>,
    evicted: mpsc::UnboundedSender<Evicted>,
    /// One preemption at a time, so two requests never pick the same room.
    one: tokio::sync::Mutex<()>,
}

impl Preempting {
    pub fn new(inner: Arc<dyn Provider>, evicted: mpsc::UnboundedSender<Evicted>) -> Preempting {
        Preempting {
            inner,
            evicted,
            one: tokio::sync::Mutex::new(()),
        }
    }

    /// Evicts what `spec` needs gone, then deploys it; `refused` is the
    /// answer when eviction cannot make room.
    async fn preempt(
        &self,
        spec: &DeploySpec,
        progress: ProgressSink,
        refused: ResourceError,
    ) -> Result<Deployment, ResourceError> {
        let _one = self.one.lock().await;
        let capacity = self.inner.describe().await?.capacity;
        let live: Vec<Deployment> = self
            .inner
            .list()
            .await?
            .into_iter()
            .filter(|d| !d.state().is_final())
            .collect();
        let running: Vec<Running> = live
            .iter()
            .filter_map(|d| {
                Some(Running {
                    id: d.id.clone(),
                    resources: d.resources,
                    priority: d.preemptible?,
                })
            })
            .collect();
        let Some(chosen) = preemption::choose(&spec.resources, &capacity, spec.priority, &running)
        else {
            return Err(refused);
        };
        let by = deployment_id(&spec.request_id);
        for i in chosen {
            let victim = &running[i];
            let d = live.iter().find(|d| d.id == victim.id);
            if let Err(e) = self.inner.stop(&victim.id).await {
                warn!(deployment = %victim.id, error = %e, "cannot evict a preemptible deployment");
                return Err(refused);
            }
            info!(deployment = %victim.id, by = %by, provider = %self.inner.id(), "preempted");
            let _ = self.evicted.send(Evicted {
                id: victim.id.clone(),
                provider_id: self.inner.id().to_string(),
                home: d.map(|d| d.home.clone()).unwrap_or_default(),
                attempt: d.map_or(1, |d| d.attempt.max(1)),
                by: by.clone(),
            });
        }
        self.inner.deploy(spec, progress).await
    }
}

#[async_trait::async_trait]
impl Provider for Preempting {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn image_builder(&self) -> Option<std::sync::Arc<dyn crate::resource::ImageBuilder>> {
        self.inner.image_builder()
    }

    async fn describe(&self) -> Result<ProviderDescriptor, ResourceError> {
        self.inner.describe().await
    }

    async fn deploy(
        &self,
        spec: &DeploySpec,
        progress: ProgressSink,
    ) -> Result<Deployment, ResourceError> {
        match self.inner.deploy(spec, progress.clone()).await {
            Err(e @ (ResourceError::Exhausted { .. } | ResourceError::NoSlot { .. }))
                if spec.preemption == PreemptionPolicy::LowerPriority =>
            {
                self.preempt(spec, progress, e).await
            }
            other => other,
        }
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
