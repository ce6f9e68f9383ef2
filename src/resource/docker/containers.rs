//! Making, finding and removing this provider's containers.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointSettings, HealthConfig, HostConfig,
    NetworkCreateRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    InspectNetworkOptions, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::stream::StreamExt;
use tokio::time::Instant;
use tracing::{info, warn};

use super::connect::{chain, engine_status, is_connection_error};
use super::facts::{is_container_name, Facts};
use super::{DockerProvider, NAME_RACE_WAIT};
use crate::resource::error::ResourceError;
use crate::resource::labels;
use crate::resource::provider::ProgressSink;
use crate::resource::types::{DeploySpec, DeployState, Progress, RestartPolicy, StateChange};
use crate::resource::validate::stable_hex;

/// The name containers on an application network give the engine's host.
pub const HOST_ALIAS: &str = "host.docker.internal";

impl DockerProvider {
    /// The engine's name for deployment `id`'s container here. It carries a
    /// hash of the provider id: providers that share one engine (nodes on
    /// one host, a deployment rescheduled from one to another) never take
    /// each other's names.
    pub fn container_name(&self, id: &str) -> String {
        format!("{id}.{}", &stable_hex(&self.id)[..8])
    }

    /// Deployment `id`'s container if this provider has one (None when
    /// there is no such container).
    pub(super) async fn inspect(&self, id: &str) -> Result<Option<Facts>, ResourceError> {
        if !is_container_name(id) {
            // Never put arbitrary text into an engine URL.
            return Ok(None);
        }
        if let Some(f) = self.inspect_name(&self.container_name(id)).await? {
            return Ok(Some(f));
        }
        // Made by a release that named containers by deployment id alone.
        self.inspect_name(id).await
    }

    /// The container called `name` if it is one of this provider's.
    async fn inspect_name(&self, name: &str) -> Result<Option<Facts>, ResourceError> {
        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(Facts::from_inspect(&self.id, &c)),
            Err(e) if engine_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.engine_error(&format!("inspect {name}"), e)),
        }
    }

    /// Like `inspect`, but a container under this provider's name for `id`
    /// that another provider labelled is an error.
    pub(super) async fn inspect_owned_or_free(
        &self,
        id: &str,
    ) -> Result<Option<Facts>, ResourceError> {
        let name = self.container_name(id);
        match self
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => match Facts::from_inspect(&self.id, &c) {
                Some(f) => Ok(Some(f)),
                None => Err(ResourceError::Backend(format!(
                    "a container named {name} exists on {} but is not provider {}'s \
                     (was it made by hand?); remove it to deploy {id} here",
                    self.endpoint, self.id
                ))),
            },
            Err(e) if engine_status(&e) == Some(404) => self.inspect_name(id).await,
            Err(e) => Err(self.engine_error(&format!("inspect {name}"), e)),
        }
    }

    /// This provider's containers, as the engine lists them.
    pub(super) async fn list_facts(&self) -> Result<Vec<Facts>, ResourceError> {
        let filters: HashMap<&str, Vec<String>> = HashMap::from([(
            "label",
            vec![
                format!("{}=true", labels::MANAGED),
                format!("{}={}", labels::PROVIDER, self.id),
            ],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| self.engine_error("list containers", e))?;
        Ok(found
            .iter()
            .filter_map(|c| Facts::from_summary(&self.id, c))
            .collect())
    }

    /// Pulls `image` unless the engine has it, reporting progress.
    async fn ensure_image(
        &self,
        image: &str,
        progress: &ProgressSink,
        history: &mut Vec<StateChange>,
    ) -> Result<(), ResourceError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if engine_status(&e) == Some(404) => {}
            Err(e) => return Err(self.engine_error(&format!("inspect image {image}"), e)),
        }
        push(history, progress, DeployState::Pulling);
        info!(provider = %self.id, image, "pulling image");
        let last = image.rsplit('/').next().unwrap_or(image);
        let mut opts = CreateImageOptionsBuilder::default().from_image(image);
        if !image.contains('@') && !last.contains(':') {
            // Without a tag the engine would pull every tag.
            opts = opts.tag("latest");
        }
        let mut pull = self.docker.create_image(Some(opts.build()), None, None);
        let pull_failed = |reason: String| ResourceError::PullFailed {
            image: image.to_string(),
            reason,
        };
        while let Some(step) = pull.next().await {
            match step {
                Ok(info) => {
                    let detail = info.progress_detail.unwrap_or_default();
                    progress.emit(Progress::Pull {
                        layer: info.id.unwrap_or_default(),
                        status: info.status.unwrap_or_default(),
                        current: detail
                            .current
                            .and_then(|n| u64::try_from(n).ok())
                            .unwrap_or(0),
                        total: detail
                            .total
                            .and_then(|n| u64::try_from(n).ok())
                            .unwrap_or(0),
                    });
                }
                Err(EngineError::DockerResponseServerError { message, .. }) => {
                    return Err(pull_failed(message))
                }
                Err(EngineError::DockerStreamError { error }) => return Err(pull_failed(error)),
                Err(e) if is_connection_error(&e) => {
                    return Err(self.engine_error(&format!("pull {image}"), e))
                }
                Err(e) => return Err(pull_failed(chain(&e))),
            }
        }
        Ok(())
    }

    /// Makes the bridge network `name` unless the engine has it.
    async fn ensure_network(&self, name: &str) -> Result<(), ResourceError> {
        // The engine takes a second network of the same name without a
        // word: components deployed side by side must not both create it.
        static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = CREATING.lock().await;
        match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if engine_status(&e) == Some(404) => {}
            Err(e) => return Err(self.engine_error(&format!("inspect network {name}"), e)),
        }
        let body = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(
                labels::MANAGED.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(body).await {
            Ok(_) => Ok(()),
            // Made meanwhile by a twin deploy.
            Err(e) if engine_status(&e) == Some(409) => Ok(()),
            Err(e) => Err(self.engine_error(&format!("create network {name}"), e)),
        }
    }

    fn container_body(&self, spec: &DeploySpec, gpus: &[String]) -> ContainerCreateBody {
        let r = &spec.resources;
        let mut labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(labels::MANAGED.into(), "true".into());
        labels.insert(labels::PROVIDER.into(), self.id.clone());
        labels.insert(labels::NODE.into(), self.node_id.clone());
        labels.insert(labels::REQUEST.into(), spec.request_id.clone());
        labels.insert(labels::CPU_MILLIS.into(), r.cpu_millis.to_string());
        labels.insert(labels::MEMORY_BYTES.into(), r.memory_bytes.to_string());
        if r.storage_bytes != 0 {
            labels.insert(labels::STORAGE_BYTES.into(), r.storage_bytes.to_string());
        }
        labels.insert(labels::GPUS.into(), gpus.join(","));
        labels.insert(labels::GPU_SHARED.into(), spec.gpu_shared.to_string());
        labels.insert(labels::RESTART.into(), spec.restart.text());
        labels.insert(labels::ATTEMPT.into(), spec.attempt.max(1).to_string());
        if !spec.home.is_empty() {
            labels.insert(labels::HOME.into(), spec.home.clone());
        }
        if spec.preemptible {
            labels.insert(labels::PREEMPTIBLE.into(), spec.priority.label());
        }
        if let Some(ms) = spec.stop_after_disconnect_ms {
            labels.insert(labels::STOP_AFTER_DISCONNECT.into(), ms.to_string());
        }
        if let Some(g) = &spec.scope.group {
            labels.insert(labels::GROUP.into(), g.clone());
        }
        if let Some(r) = &spec.replica_of {
            labels.insert(labels::SERVICE.into(), r.service.clone());
            labels.insert(labels::REPLICA.into(), r.index.to_string());
        }

        let mut bindings: BTreeMap<String, Vec<PortBinding>> = BTreeMap::new();
        for p in &spec.ports {
            let port = format!("{}/{}", p.container, if p.udp { "udp" } else { "tcp" });
            bindings.entry(port).or_default().push(PortBinding {
                host_ip: None,
                // Empty = any free port.
                host_port: Some(if p.host == 0 {
                    String::new()
                } else {
                    p.host.to_string()
                }),
            });
        }
        let exposed: Vec<String> = bindings.keys().cloned().collect();

        let host_config = HostConfig {
            nano_cpus: Some(
                i64::try_from(r.cpu_millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
            ),
            memory: Some(i64::try_from(r.memory_bytes).unwrap_or(i64::MAX)),
            device_requests: (!gpus.is_empty()).then(|| {
                vec![DeviceRequest {
                    driver: Some("nvidia".into()),
                    count: None,
                    device_ids: Some(gpus.to_vec()),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    options: None,
                }]
            }),
            restart_policy: Some(restart_policy(spec.restart)),
            port_bindings: (!bindings.is_empty()).then(|| {
                bindings
                    .into_iter()
                    .map(|(k, v)| (k, Some(v)))
                    .collect::<HashMap<_, _>>()
            }),
            network_mode: spec.network.clone(),
            // Components reach ports published by this engine's host (other
            // components, on a node advertised as loopback) by this name.
            extra_hosts: spec
                .network
                .as_ref()
                .map(|_| vec![format!("{HOST_ALIAS}:host-gateway")]),
            ..Default::default()
        };
        let networking_config = spec.network.as_ref().map(|net| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                net.clone(),
                EndpointSettings {
                    aliases: (!spec.aliases.is_empty()).then(|| spec.aliases.clone()),
                    ..Default::default()
                },
            )])),
        });
        let ns = |ms: u64| i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        let healthcheck = spec.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: (h.interval_ms > 0).then(|| ns(h.interval_ms)),
            timeout: (h.timeout_ms > 0).then(|| ns(h.timeout_ms)),
            retries: (h.retries > 0).then_some(i64::from(h.retries)),
            start_period: (h.start_period_ms > 0).then(|| ns(h.start_period_ms)),
            start_interval: None,
        });
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: (!spec.command.is_empty()).then(|| spec.command.clone()),
            cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
            env: (!spec.env.is_empty())
                .then(|| spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            labels: Some(labels),
            host_config: Some(host_config),
            networking_config,
            healthcheck,
            ..Default::default()
        }
    }

    /// Pulls, creates and starts the container of a reserved deployment.
    /// `Ok(None)` means the name was taken meanwhile (a twin deploy elsewhere).
    pub(super) async fn create_and_start(
        &self,
        key: &str,
        spec: &DeploySpec,
        gpus: &[String],
        progress: &ProgressSink,
        history: &mut Vec<StateChange>,
        created: &mut bool,
    ) -> Result<Option<Facts>, ResourceError> {
        self.ensure_image(&spec.image, progress, history).await?;
        if let Some(net) = &spec.network {
            self.ensure_network(net).await?;
        }
        push(history, progress, DeployState::Starting);
        let name = self.container_name(key);
        if !self
            .create_named(&name, self.container_body(spec, gpus))
            .await?
        {
            return Ok(None);
        }
        *created = true;
        self.docker
            .start_container(&name, None)
            .await
            .map_err(|e| self.engine_error(&format!("start {name}"), e))?;
        match self.inspect_name(&name).await? {
            Some(f) => Ok(Some(f)),
            None => Err(ResourceError::Backend(format!(
                "container {name} vanished right after it started"
            ))),
        }
    }

    /// Creates the container called `name`; `Ok(false)` when a container of
    /// that name exists already (a twin deploy made it). The engine holds a
    /// name a moment before the container can be inspected, so a conflict
    /// waits for the winner to show up, or for its create to fail and free
    /// the name, and then tries again.
    async fn create_named(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<bool, ResourceError> {
        let deadline = Instant::now() + NAME_RACE_WAIT;
        loop {
            let opts = CreateContainerOptionsBuilder::default().name(name).build();
            match self.docker.create_container(Some(opts), body.clone()).await {
                Ok(resp) => {
                    for w in resp.warnings.iter().filter(|w| !w.is_empty()) {
                        warn!(container = name, warning = %w, "engine warning on create");
                    }
                    return Ok(true);
                }
                Err(e) if engine_status(&e) == Some(409) => {
                    let retry_at = Instant::now() + Duration::from_secs(1);
                    while Instant::now() < retry_at {
                        match self
                            .docker
                            .inspect_container(name, None::<InspectContainerOptions>)
                            .await
                        {
                            Ok(_) => return Ok(false),
                            Err(e) if engine_status(&e) == Some(404) => {}
                            Err(e) => return Err(self.engine_error(&format!("inspect {name}"), e)),
                        }
                        if Instant::now() >= deadline {
                            return Err(ResourceError::Backend(format!(
                                "the engine reports the name {name} in use, yet no such container appears"
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                }
                Err(EngineError::DockerResponseServerError {
                    status_code: 400,
                    message,
                }) => {
                    // The engine's own checks (memory below its minimum, more
                    // CPUs than the host has, …): the spec is at fault.
                    let lower = message.to_lowercase();
                    let field = if lower.contains("memory") {
                        "memory"
                    } else if lower.contains("cpu") {
                        "cpu"
                    } else if lower.contains("port") {
                        "ports"
                    } else {
                        "spec"
                    };
                    return Err(ResourceError::invalid(
                        field,
                        format!("the Docker engine refused it: {message}"),
                    ));
                }
                Err(e) => return Err(self.engine_error(&format!("create {name}"), e)),
            }
        }
    }

    /// Removes the container called `name`, ignoring "already gone".
    pub(super) async fn remove(&self, name: &str) -> Result<(), ResourceError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if engine_status(&e) == Some(404) => Ok(()),
            // 409: removal already in progress.
            Err(e) if engine_status(&e) == Some(409) => Ok(()),
            Err(e) => Err(self.engine_error(&format!("remove {name}"), e)),
        }
    }
}

pub(super) fn push(history: &mut Vec<StateChange>, progress: &ProgressSink, state: DeployState) {
    progress.emit(Progress::State(state.clone()));
    if history.last().map(|c| &c.state) != Some(&state) {
        history.push(StateChange {
            state,
            at: SystemTime::now(),
        });
    }
}

/// The engine's own restart policy for ours; it applies the backoff.
fn restart_policy(p: RestartPolicy) -> bollard::models::RestartPolicy {
    use bollard::models::RestartPolicyNameEnum as Name;
    let (name, max) = match p {
        RestartPolicy::Never => (Name::NO, None),
        RestartPolicy::OnFailure { max } => (Name::ON_FAILURE, Some(i64::from(max))),
        RestartPolicy::Always => (Name::ALWAYS, None),
    };
    bollard::models::RestartPolicy {
        name: Some(name),
        maximum_retry_count: max,
    }
}
