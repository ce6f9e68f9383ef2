//! Each of this node's own providers, wrapped so that leases are kept where
//! the resources are: a deploy that asks for a lease is granted one,
//! durably, before the container is made; every answer carries the lease;
//! a stop ends it; a deployment whose container is gone is still answered,
//! with the lease that ended it. Local placement, `CallProvider` from other
//! nodes and retries all pass through here, so there is one rule for all.

use std::sync::Arc;

use super::leases::Leases;
use crate::resource::validate::deployment_id;
use crate::resource::{
    DeploySpec, Deployment, LeaseState, LogOptions, LogStream, ProgressSink, Provider,
    ProviderDescriptor, ResourceError,
};

pub struct Leased {
    inner: Arc<dyn Provider>,
    leases: Arc<Leases>,
}

impl Leased {
    pub fn new(inner: Arc<dyn Provider>, leases: Arc<Leases>) -> Leased {
        Leased { inner, leases }
    }

    /// Stops the container and records that it went; the caller holds the
    /// deployment's lease lock. A container already gone is answered from
    /// what its lease kept, if anything.
    async fn stop_held(&self, id: &str) -> Result<Deployment, ResourceError> {
        match self.inner.stop(id).await {
            Ok(d) => {
                self.leases.stopped(id, Some(&d)).await?;
                Ok(self.leases.attach(d))
            }
            Err(ResourceError::NotFound(why)) => {
                self.leases.stopped(id, None).await?;
                self.leases.last(id).ok_or(ResourceError::NotFound(why))
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl Provider for Leased {
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
        let Some(terms) = &spec.lease else {
            return Ok(self.leases.attach(self.inner.deploy(spec, progress).await?));
        };
        let id = deployment_id(&spec.request_id);
        let _held = self.leases.lock(&id).await;
        let before = self.leases.get(&id);
        let live = before
            .as_ref()
            .is_some_and(|b| b.lease.state == LeaseState::Active && b.stopped_ms.is_none());
        if live {
            // A retry of a deploy that holds its lease: the same lease.
            return Ok(self.leases.attach(self.inner.deploy(spec, progress).await?));
        }
        self.leases
            .grant(&id, self.inner.id(), terms, before.as_ref())
            .await?;
        match self.inner.deploy(spec, progress).await {
            Ok(d) => Ok(self.leases.attach(d)),
            Err(e) => {
                self.leases.undo_grant(&id, before).await;
                Err(e)
            }
        }
    }

    async fn status(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        match self.inner.status(deployment_id).await {
            Ok(d) => Ok(self.leases.attach(d)),
            Err(ResourceError::NotFound(why)) => self
                .leases
                .last(deployment_id)
                .ok_or(ResourceError::NotFound(why)),
            Err(e) => Err(e),
        }
    }

    async fn list(&self) -> Result<Vec<Deployment>, ResourceError> {
        let all = self.inner.list().await?;
        Ok(all.into_iter().map(|d| self.leases.attach(d)).collect())
    }

    async fn logs(
        &self,
        deployment_id: &str,
        opts: LogOptions,
    ) -> Result<LogStream, ResourceError> {
        self.inner.logs(deployment_id, opts).await
    }

    async fn stop(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        let _held = self.leases.lock(deployment_id).await;
        self.stop_held(deployment_id).await
    }

    async fn renew_lease(
        &self,
        deployment_id: &str,
        epoch: Option<u64>,
    ) -> Result<Deployment, ResourceError> {
        {
            let _held = self.leases.lock(deployment_id).await;
            self.leases.renew(deployment_id, epoch).await?;
        }
        self.status(deployment_id).await
    }

    async fn release_lease(
        &self,
        deployment_id: &str,
        epoch: Option<u64>,
    ) -> Result<Deployment, ResourceError> {
        let _held = self.leases.lock(deployment_id).await;
        self.leases.release(deployment_id, epoch).await?;
        self.stop_held(deployment_id).await
    }
}
