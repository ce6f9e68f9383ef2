//! The one trait every provider implements: Docker, Kubernetes, the
//! in-memory twin, and the proxy for a provider owned by another node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use tokio::sync::mpsc;

use super::error::ResourceError;
use super::types::{DeploySpec, Deployment, LogLine, Progress, ProviderDescriptor};

/// Where a deploy reports its progress; dropping the receiver is fine.
#[derive(Debug, Clone, Default)]
pub struct ProgressSink(Option<mpsc::UnboundedSender<Progress>>);

impl ProgressSink {
    pub fn none() -> ProgressSink {
        ProgressSink(None)
    }

    pub fn channel() -> (ProgressSink, mpsc::UnboundedReceiver<Progress>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ProgressSink(Some(tx)), rx)
    }

    /// Whether anyone listens: a caller may skip work only a listener needs.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    pub fn emit(&self, p: Progress) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(p);
        }
    }
}

/// Where a build writes its output, line by line as the engine reports it;
/// dropping the receiver is fine.
#[derive(Debug, Clone, Default)]
pub struct BuildLog(Option<mpsc::UnboundedSender<String>>);

impl BuildLog {
    pub fn none() -> BuildLog {
        BuildLog(None)
    }

    pub fn channel() -> (BuildLog, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (BuildLog(Some(tx)), rx)
    }

    pub fn line(&self, line: &str) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(line.to_string());
        }
    }
}

/// How much of a log to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last `tail` lines of what exists now (None = all).
    pub tail: Option<u32>,
    /// Keep streaming new lines until the deployment ends.
    pub follow: bool,
}

pub type LogStream = BoxStream<'static, Result<LogLine, ResourceError>>;

/// Builds container images from a build context, on the engine of the
/// provider that hands it out: a built image is usable by that provider only.
#[async_trait::async_trait]
pub trait ImageBuilder: Send + Sync + 'static {
    /// Builds `tag` from `context`, a tar of the build directory; the
    /// Dockerfile is `dockerfile`, relative to it. Each output line goes to
    /// `log` as it comes, and all of them are returned; on failure the
    /// error carries the last lines.
    async fn build_image(
        &self,
        context: bytes::Bytes,
        dockerfile: &str,
        tag: &str,
        args: &BTreeMap<String, String>,
        log: BuildLog,
    ) -> Result<Vec<String>, ResourceError>;
}

/// A place that runs containers.
///
/// Admission happens inside `deploy`: the provider reserves under its own
/// lock before it creates anything and releases on failure, so the sum of
/// reservations never exceeds capacity. `deploy` is idempotent on
/// `spec.request_id`: a retry returns the deployment the first call made.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Stable id, unique in the mesh.
    fn id(&self) -> &str;

    /// What builds images for this provider; None when it cannot build.
    fn image_builder(&self) -> Option<Arc<dyn ImageBuilder>> {
        None
    }

    /// Identity, health, capacity and labels, as of now.
    async fn describe(&self) -> Result<ProviderDescriptor, ResourceError>;

    async fn deploy(
        &self,
        spec: &DeploySpec,
        progress: ProgressSink,
    ) -> Result<Deployment, ResourceError>;

    async fn status(&self, deployment_id: &str) -> Result<Deployment, ResourceError>;

    /// Every deployment this provider runs for iarnet.
    async fn list(&self) -> Result<Vec<Deployment>, ResourceError>;

    async fn logs(&self, deployment_id: &str, opts: LogOptions)
        -> Result<LogStream, ResourceError>;

    /// Stops and removes the container; its reservation is released.
    async fn stop(&self, deployment_id: &str) -> Result<Deployment, ResourceError>;

    /// One more lease TTL for a deployment, from now on the owner's clock.
    /// `epoch` fences a holder that lost the lease (None: whatever is
    /// current). Only a provider with a lease keeper (the node wraps its
    /// own providers in one) or a proxy to such an owner keeps leases.
    async fn renew_lease(
        &self,
        deployment_id: &str,
        _epoch: Option<u64>,
    ) -> Result<Deployment, ResourceError> {
        Err(no_leases(self.id(), deployment_id))
    }

    /// Ends a deployment's lease now: it is stopped and its resources freed.
    async fn release_lease(
        &self,
        deployment_id: &str,
        _epoch: Option<u64>,
    ) -> Result<Deployment, ResourceError> {
        Err(no_leases(self.id(), deployment_id))
    }

    /// Holds room for `spec` for `ttl` without starting it (a gang's
    /// prepare): a deploy of the same request within `ttl` takes that
    /// room; after it the hold lapses by itself. Only a node's own
    /// providers (wrapped in a hold keeper) and proxies to them hold room.
    async fn prepare(&self, spec: &DeploySpec, _ttl: Duration) -> Result<(), ResourceError> {
        Err(ResourceError::Precondition(format!(
            "provider {} holds no room for gangs, so {:?} cannot be prepared",
            self.id(),
            spec.request_id
        )))
    }

    /// Gives back room `prepare` held; nothing when none is held.
    async fn abort(&self, _deployment_id: &str) -> Result<(), ResourceError> {
        Ok(())
    }
}

fn no_leases(provider: &str, deployment_id: &str) -> ResourceError {
    ResourceError::Precondition(format!(
        "provider {provider} keeps no leases, so deployment {deployment_id:?} holds none"
    ))
}
