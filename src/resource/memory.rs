//! The in-memory twin of a provider: same admission, idempotency and GPU
//! rules as the real ones, no containers. Used by tests and benchmarks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::stream;

use super::error::ResourceError;
use super::gpu::{GpuInfo, GpuPool, GpuProbe, GpuRefresh};
use super::ledger::{admit, offer_gpus, Ledger};
use super::memory_build::{BuiltImage, MemoryBuilder};
use super::provider::{ImageBuilder, LogOptions, LogStream, ProgressSink, Provider};
use super::types::{
    DeploySpec, DeployState, Deployment, LogLine, Progress, ProviderDescriptor, ProviderKind,
    Resources, RestartPolicy,
};
use super::validate::{deployment_id, validate};

struct Books {
    ledger: Ledger,
    gpus: GpuPool,
    deployments: HashMap<String, Deployment>,
    /// Each deployment's restart policy, as the engine would hold it.
    restart: HashMap<String, RestartPolicy>,
}

pub struct MemoryProvider {
    id: String,
    labels: BTreeMap<String, String>,
    books: Mutex<Books>,
    /// Set when the twin builds images too.
    builder: Option<Arc<MemoryBuilder>>,
    /// Re-reads the GPUs on each describe, as the Docker provider does.
    gpu_refresh: Option<GpuRefresh>,
}

impl MemoryProvider {
    pub fn new(id: &str, total: Resources, labels: BTreeMap<String, String>) -> MemoryProvider {
        MemoryProvider::with_gpus(id, total, labels, Vec::new())
    }

    /// A provider whose GPU dimension comes from `gpus` (the NVML twin).
    pub fn with_gpus(
        id: &str,
        mut total: Resources,
        labels: BTreeMap<String, String>,
        gpus: Vec<GpuInfo>,
    ) -> MemoryProvider {
        if !gpus.is_empty() {
            total.gpus = gpus.len() as u32;
        }
        MemoryProvider {
            id: id.to_string(),
            labels,
            books: Mutex::new(Books {
                ledger: Ledger::new(id, total),
                gpus: GpuPool::new(gpus),
                deployments: HashMap::new(),
                restart: HashMap::new(),
            }),
            builder: None,
            gpu_refresh: None,
        }
    }

    /// Re-reads its GPUs from `probe` on each describe (the NVML twin
    /// whose readings a test changes).
    pub fn with_gpu_probe(mut self, probe: Arc<dyn GpuProbe>) -> MemoryProvider {
        let refresh = GpuRefresh::new(probe, &self.books().gpus);
        if refresh.follows_any() {
            self.gpu_refresh = Some(refresh);
        }
        self
    }

    /// The twin builds images (as a Docker provider does).
    pub fn with_builder(mut self) -> MemoryProvider {
        self.builder = Some(Arc::new(MemoryBuilder {
            provider: self.id.clone(),
            ..Default::default()
        }));
        self
    }

    /// What it built so far, oldest first.
    pub fn built(&self) -> Vec<BuiltImage> {
        self.builder.as_ref().map(|b| b.built()).unwrap_or_default()
    }

    /// Runs at most `max` deployments at once.
    pub fn with_max_deployments(self, max: Option<u32>) -> MemoryProvider {
        {
            let mut books = self.books();
            books.ledger = std::mem::take(&mut books.ledger).with_max_deployments(max);
        }
        self
    }

    /// Its container exits with `code`, as a real engine would report: the
    /// restart policy restarts it (counted), or the exit is final and its
    /// reservation is released.
    pub fn exit(&self, id: &str, code: i64) -> Result<Deployment, ResourceError> {
        let mut books = self.books();
        let policy = books.restart.get(id).copied().unwrap_or_default();
        let books = &mut *books;
        let d = books.deployments.get_mut(id).ok_or_else(|| {
            ResourceError::NotFound(format!(
                "deployment {id:?} not found on provider {}",
                self.id
            ))
        })?;
        if d.state().is_final() {
            return Ok(d.clone());
        }
        let restart = match policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure { max } => code != 0 && d.restarts < max,
            RestartPolicy::Always => true,
        };
        if restart {
            d.restarts += 1;
            d.push_state(DeployState::Starting);
            d.push_state(DeployState::Running);
        } else {
            d.push_state(policy.settle(code, d.restarts));
            books.ledger.release(id);
            books.gpus.release(id);
        }
        Ok(d.clone())
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find(&self, id: &str) -> Result<Deployment, ResourceError> {
        self.books().deployments.get(id).cloned().ok_or_else(|| {
            ResourceError::NotFound(format!(
                "deployment {id:?} not found on provider {}",
                self.id
            ))
        })
    }
}

#[async_trait::async_trait]
impl Provider for MemoryProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn image_builder(&self) -> Option<Arc<dyn ImageBuilder>> {
        self.builder.clone().map(|b| b as Arc<dyn ImageBuilder>)
    }

    async fn describe(&self) -> Result<ProviderDescriptor, ResourceError> {
        let reading = self.gpu_refresh.as_ref().and_then(|r| r.read(&self.id));
        let mut books = self.books();
        if let Some(gpus) = reading {
            let books = &mut *books;
            offer_gpus(&mut books.ledger, &mut books.gpus, gpus);
        }
        let mut labels = self.labels.clone();
        if let Some(model) = books.gpus.models().first() {
            labels.insert(crate::resource::labels::GPU_MODEL.into(), model.clone());
        }
        Ok(ProviderDescriptor {
            id: self.id.clone(),
            name: self.id.clone(),
            kind: ProviderKind::Memory,
            endpoint: "memory".into(),
            healthy: true,
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
        let mut books = self.books();
        if let Some(d) = books.deployments.get(&key) {
            return Ok(d.clone());
        }
        let books = &mut *books;
        let gpus = admit(&mut books.ledger, &mut books.gpus, &key, spec)?;
        let mut d = Deployment {
            id: key.clone(),
            request_id: spec.request_id.clone(),
            provider_id: self.id.clone(),
            image: spec.image.clone(),
            resources: spec.resources,
            gpus,
            history: Vec::new(),
            lease: None,
            labels: spec.labels.clone(),
            restarts: 0,
            attempt: spec.attempt.max(1),
            home: spec.home.clone(),
            health: spec.healthcheck.as_ref().map(|_| "healthy".to_string()),
            ports: spec.ports.clone(),
            attempts: Vec::new(),
            preemptible: spec.preemptible.then_some(spec.priority),
            stop_after_disconnect_ms: spec.stop_after_disconnect_ms,
            group: spec.scope.group.clone().unwrap_or_default(),
        };
        for s in [
            DeployState::Pending,
            DeployState::Starting,
            DeployState::Running,
        ] {
            progress.emit(Progress::State(s.clone()));
            d.push_state(s);
        }
        books.restart.insert(key.clone(), spec.restart);
        books.deployments.insert(key, d.clone());
        Ok(d)
    }

    async fn status(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        self.find(deployment_id)
    }

    async fn list(&self) -> Result<Vec<Deployment>, ResourceError> {
        let mut all: Vec<Deployment> = self.books().deployments.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn logs(
        &self,
        deployment_id: &str,
        opts: LogOptions,
    ) -> Result<LogStream, ResourceError> {
        let d = self.find(deployment_id)?;
        let lines = vec![
            format!("{} started from {}", d.id, d.image),
            format!("{} is {}", d.id, d.state()),
        ];
        let skip = opts
            .tail
            .map_or(0, |t| lines.len().saturating_sub(t as usize));
        Ok(Box::pin(stream::iter(lines.into_iter().skip(skip).map(
            |text| {
                Ok(LogLine {
                    stderr: false,
                    text,
                })
            },
        ))))
    }

    async fn stop(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        let mut books = self.books();
        // Stopped is removed, as Docker removes the container and
        // Kubernetes deletes the pod.
        let Some(mut d) = books.deployments.remove(deployment_id) else {
            return Err(ResourceError::NotFound(format!(
                "deployment {deployment_id:?} not found on provider {}",
                self.id
            )));
        };
        d.push_state(DeployState::Stopped);
        books.ledger.release(deployment_id);
        books.gpus.release(deployment_id);
        books.restart.remove(deployment_id);
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(req: &str, restart: RestartPolicy) -> DeploySpec {
        DeploySpec {
            request_id: req.into(),
            image: "busybox".into(),
            resources: Resources {
                cpu_millis: 500,
                memory_bytes: 16 << 20,
                ..Resources::ZERO
            },
            restart,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn exits_follow_the_restart_policy() {
        let total = Resources {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            ..Resources::ZERO
        };
        let p = MemoryProvider::new("m", total, BTreeMap::new());
        let reserved = || {
            futures::executor::block_on(p.describe())
                .unwrap()
                .capacity
                .reserved
                .cpu_millis
        };
        let d = p
            .deploy(
                &spec("flaky", RestartPolicy::OnFailure { max: 2 }),
                ProgressSink::none(),
            )
            .await
            .unwrap();
        assert_eq!(p.exit(&d.id, 1).unwrap().restarts, 1);
        assert_eq!(p.exit(&d.id, 1).unwrap().state(), DeployState::Running);
        assert_eq!(reserved(), 500, "restarting holds its reservation");
        let failed = p.exit(&d.id, 3).unwrap();
        assert_eq!(failed.restarts, 2);
        assert_eq!(
            failed.state(),
            DeployState::Failed(
                "exited with code 3 after 2 restarts (restart on-failure:2)".into()
            )
        );
        assert_eq!(reserved(), 0, "a final exit releases it");
        // A clean exit is final under on-failure; always restarts anyway.
        let ok = p
            .deploy(
                &spec("job", RestartPolicy::OnFailure { max: 2 }),
                ProgressSink::none(),
            )
            .await
            .unwrap();
        assert_eq!(p.exit(&ok.id, 0).unwrap().state(), DeployState::Exited(0));
        let svc = p
            .deploy(&spec("svc", RestartPolicy::Always), ProgressSink::none())
            .await
            .unwrap();
        assert_eq!(p.exit(&svc.id, 0).unwrap().state(), DeployState::Running);
        let once = p
            .deploy(&spec("once", RestartPolicy::Never), ProgressSink::none())
            .await
            .unwrap();
        assert_eq!(p.exit(&once.id, 9).unwrap().state(), DeployState::Exited(9));
    }
}
