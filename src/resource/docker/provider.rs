//! The Docker engine behind the `Provider` trait.

use std::collections::VecDeque;
use std::time::SystemTime;

use bollard::query_parameters::{LogsOptionsBuilder, StopContainerOptionsBuilder};
use futures::stream::StreamExt;
use tracing::{debug, info, warn};

use super::connect::{chain, engine_status};
use super::containers::push;
use super::logs::LogLines;
use super::{DockerProvider, STOP_GRACE_S};
use crate::resource::error::ResourceError;
use crate::resource::labels;
use crate::resource::ledger::{admit, offer_gpus};
use crate::resource::provider::{LogOptions, LogStream, ProgressSink, Provider};
use crate::resource::types::{
    DeploySpec, DeployState, Deployment, Progress, ProviderDescriptor, ProviderKind, StateChange,
};
use crate::resource::validate::{deployment_id, validate};

#[async_trait::async_trait]
impl Provider for DockerProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn image_builder(&self) -> Option<std::sync::Arc<dyn crate::resource::ImageBuilder>> {
        Some(std::sync::Arc::new(super::build::DockerBuilder {
            docker: self.docker.clone(),
            provider: self.id.clone(),
        }))
    }

    async fn describe(&self) -> Result<ProviderDescriptor, ResourceError> {
        let healthy = match self.docker.ping().await {
            Ok(_) => match self.sync().await {
                Ok(_) => true,
                Err(e) => {
                    warn!(provider = %self.id, error = %e, "cannot list containers");
                    false
                }
            },
            Err(e) => {
                debug!(provider = %self.id, error = %chain(&e), "engine does not answer");
                false
            }
        };
        let reading = self.gpu_refresh.as_ref().and_then(|r| r.read(&self.id));
        let mut books = self.books();
        if let Some(gpus) = reading {
            let books = &mut *books;
            offer_gpus(&mut books.ledger, &mut books.gpus, gpus);
        }
        let mut labels = self.labels.clone();
        if let Some(model) = books.gpus.models().first() {
            labels.insert(labels::GPU_MODEL.into(), model.clone());
        }
        Ok(ProviderDescriptor {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: ProviderKind::Docker,
            endpoint: self.endpoint.clone(),
            healthy,
            capacity: books.ledger.capacity(),
            labels,
            gpus: books.gpus.statuses(),
        })
    }

    async fn deploy(
        &self,
        spec: &DeploySpec,
        progress: ProgressSink,
    ) -> Result<Deployment, ResourceError> {
        validate(spec)?;
        let key = deployment_id(&spec.request_id);
        let _key_lock = self.key_locks.lock(&key).await;
        if let Some(f) = self.inspect_owned_or_free(&key).await? {
            debug!(deployment = %key, "deploy retried: returning the existing container");
            if f.state != DeployState::Starting {
                return Ok(self.observe(&f));
            }
            // Created but never started: the node died between the two
            // calls. Finish what the first attempt began.
            self.docker
                .start_container(&f.name, None)
                .await
                .map_err(|e| self.engine_error(&format!("start {}", f.name), e))?;
            let started = self.inspect(&key).await?.unwrap_or(f);
            return Ok(self.observe(&started));
        }

        let mut history = Vec::new();
        push(&mut history, &progress, DeployState::Pending);
        let busy = self.busy(&key);
        let gpus = {
            let mut books = self.books();
            let books = &mut *books;
            let gpus = admit(&mut books.ledger, &mut books.gpus, &key, spec)?;
            books.touch(&key);
            gpus
        };

        let mut created = false;
        let outcome = self
            .create_and_start(&key, spec, &gpus, &progress, &mut history, &mut created)
            .await;
        let facts = match outcome {
            Ok(Some(f)) => f,
            Ok(None) => {
                // Someone else created it between our check and our create:
                // it exists and holds what it asked for.
                let existing = match self.inspect_owned_or_free(&key).await {
                    Ok(Some(f)) => Ok(f),
                    Ok(None) => Err(ResourceError::Backend(format!(
                        "container {key} was reported to exist but cannot be found"
                    ))),
                    Err(e) => Err(e),
                };
                drop(busy);
                return match existing {
                    Ok(f) => Ok(self.observe(&f)),
                    Err(e) => {
                        self.books().release(&key);
                        Err(e)
                    }
                };
            }
            Err(e) => {
                if created {
                    if let Err(re) = self.remove(&self.container_name(&key)).await {
                        warn!(deployment = %key, error = %re, "cannot remove a half-made container");
                    }
                }
                self.books().release(&key);
                warn!(provider = %self.id, deployment = %key, error = %e, "deploy failed");
                return Err(e);
            }
        };
        progress.emit(Progress::State(facts.state.clone()));
        {
            let mut books = self.books();
            history.push(StateChange {
                state: facts.state.clone(),
                at: SystemTime::now(),
            });
            history.dedup_by(|a, b| a.state == b.state);
            books.history.insert(key.clone(), history);
            books.touch(&key);
        }
        drop(busy);
        info!(provider = %self.id, deployment = %key, image = %spec.image, state = %facts.state, "deployed");
        Ok(self.observe(&facts))
    }

    async fn status(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        match self.inspect(deployment_id).await? {
            Some(f) => Ok(self.observe(&f)),
            None => Err(self.not_found(deployment_id)),
        }
    }

    async fn list(&self) -> Result<Vec<Deployment>, ResourceError> {
        let facts = self.sync().await?;
        let mut all: Vec<Deployment> = facts.iter().map(|f| self.observe(f)).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn logs(
        &self,
        deployment_id: &str,
        opts: LogOptions,
    ) -> Result<LogStream, ResourceError> {
        let Some(facts) = self.inspect(deployment_id).await? else {
            return Err(self.not_found(deployment_id));
        };
        let tail = opts
            .tail
            .map_or_else(|| "all".to_string(), |n| n.to_string());
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(opts.follow)
            .tail(&tail)
            .build();
        let raw = self.docker.logs(&facts.name, Some(options)).boxed();
        Ok(LogLines {
            raw,
            partial: [Vec::new(), Vec::new()],
            ready: VecDeque::new(),
            done: false,
            provider: self.id.clone(),
        }
        .into_stream())
    }

    async fn stop(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        let _key_lock = self.key_locks.lock(deployment_id).await;
        let Some(facts) = self.inspect(deployment_id).await? else {
            return Err(self.not_found(deployment_id));
        };
        let busy = self.busy(deployment_id);
        let opts = StopContainerOptionsBuilder::default()
            .t(STOP_GRACE_S)
            .build();
        match self.docker.stop_container(&facts.name, Some(opts)).await {
            Ok(()) => {}
            // Removed meanwhile: a concurrent stop won.
            Err(e) if engine_status(&e) == Some(404) => {
                return Err(self.not_found(deployment_id));
            }
            Err(e) => {
                // Still try to remove it: force kills.
                warn!(deployment = deployment_id, error = %chain(&e), "stop failed; removing by force");
            }
        }
        self.remove(&facts.name).await?;
        let mut d = self.observe(&facts);
        d.push_state(DeployState::Stopped);
        {
            let mut books = self.books();
            books.release(deployment_id);
            books.history.remove(deployment_id);
        }
        drop(busy);
        info!(provider = %self.id, deployment = deployment_id, "stopped and removed");
        Ok(d)
    }
}
