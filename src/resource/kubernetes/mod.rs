//! A Kubernetes cluster as a provider, through kube.
//!
//! # One Pod per deployment
//!
//! A deploy creates one bare **Pod** (`restartPolicy: Never`), not a
//! Deployment, Job or ReplicaSet. iarnet manages the lifecycle itself: it
//! decides where a workload runs, when it stops and whether it is retried
//! elsewhere. A Deployment's controller would recreate a pod iarnet stopped
//! (and restart one that exited), and it hides the exit status behind
//! replica counts; a Job retries on its own terms. A bare pod runs once,
//! keeps its exit code in its status, and is gone when iarnet deletes it.
//!
//! The pod is named `deployment_id(request_id)`, so a retried
//! deploy finds the pod the first attempt made (409 AlreadyExists, then a
//! GET) instead of making a second one. It carries the labels
//! `iarnet.managed=true`, `iarnet.provider`, `iarnet.node`, `iarnet.request`
//! (label values; an id that is not a valid label value becomes a readable
//! prefix plus a stable hash) and the exact request id in the annotation
//! `iarnet.request`. Its one container, `main`, asks for exactly what the
//! spec says (requests equal limits: cpu, memory, `nvidia.com/gpu`,
//! ephemeral-storage), gets no service-account token, and, when it asks for
//! GPUs, tolerates the `nvidia.com/gpu` taint; a `gpu_model` becomes a node
//! affinity on the `nvidia.com/gpu.product` label (the models of the
//! cluster that contain the asked-for name). A `host` port becomes a
//! `hostPort`; Kubernetes publishes nothing else. Logs interleave stdout and
//! stderr (the kubelet merges them), so every line reads as stdout.
//!
//! # Capacity
//!
//! The total is the allocatable cpu, memory, `nvidia.com/gpu` and
//! ephemeral-storage of the nodes that are Ready, not cordoned and carry no
//! NoSchedule/NoExecute taint (other than `nvidia.com/gpu`), capped by
//! [`KubeSettings::limits`]. From it go the requests of every pod that has
//! not ended (all namespaces, `status.phase!=Succeeded,status.phase!=Failed`):
//! this provider's own pods are booked one by one in the [`Ledger`] under
//! their names, so admission and release work by key; all other pods (on a
//! counted node or not yet scheduled) are one reservation, `others`. The
//! books are rebuilt from the cluster on every `describe` and before every
//! admission; reservations made for pods that a listing may not show yet
//! are carried over.
//!
//! # Watching its pods
//!
//! From when it is made (or its first call) on, the provider follows its
//! own pods (its namespace, the `iarnet.managed`/`iarnet.provider`
//! selector) with a kube-runtime watcher into a reflector store, run by a
//! task the provider owns and stops when it is dropped. `status`, `list`
//! and `logs` answer from that store instead of a GET or LIST per call
//! whenever it can be trusted: listed, no watch error since, and no write of this provider's
//! (a create or delete) that the watch has not shown yet. Otherwise, and
//! for a pod the store does not hold, they ask the API as before, with the
//! same errors. `stop` always reads the pod fresh: its delete is
//! conditional on the uid it reads. The capacity census still lists pods
//! of all namespaces: it counts other tenants' pods too.
//!
//! # Access
//!
//! The identity iarnet uses needs: `list` on nodes and `list` on pods
//! cluster-wide (capacity); `create`, `get`, `list`, `watch`, `delete` on
//! pods and `get` on `pods/log` in its namespace. Without `watch` it still
//! works, asking the API on every call (and logging why). An identity that
//! may not list nodes (a namespace-scoped service account) still serves when
//! [`KubeSettings::limits`] are set: they become the total, and only its own
//! pods in its namespace are booked against them. A refusal is
//! [`ResourceError::PermissionDenied`]; an unreachable API server is
//! [`ResourceError::Unavailable`] naming the endpoint. Credentials are never
//! logged and never part of `Debug` output.

mod capacity;
mod connect;
mod pod;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, Preconditions};
use kube::Client;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use self::capacity::{cap, census, namespace_census, pod_is_terminated};
use self::pod::{build_pod, is_pod_name, to_deployment, Owner, CONTAINER};
use self::watch::PodWatch;
use super::error::ResourceError;
use super::ledger::Ledger;
use super::provider::{LogOptions, LogStream, ProgressSink, Provider};
use super::types::{
    DeploySpec, DeployState, Deployment, LogLine, Progress, ProviderDescriptor, ProviderKind,
    Resources,
};
use super::validate::{deployment_id, validate};

/// The ledger key of every pod that is not this provider's.
const OTHERS: &str = "others";
/// Page size of the node and pod listings.
const PAGE: u32 = 500;
/// Recorded as the field manager of the pods iarnet creates.
const FIELD_MANAGER: &str = "iarnet";

/// Who a Kubernetes provider is and where its pods go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubeSettings {
    /// Stable provider id, unique in the mesh.
    pub id: String,
    /// Display name; the id when empty.
    pub name: String,
    /// Where the pods go; the client's default namespace when empty.
    pub namespace: String,
    /// The iarnet node that owns this provider (the `iarnet.node` label).
    pub node_id: String,
    /// Advertised labels (`region`, `zone`, ...).
    pub labels: BTreeMap<String, String>,
    /// Upper bound on what this provider offers of the cluster; a zero
    /// storage limit means "no storage cap".
    pub limits: Option<Resources>,
    /// The most deployments it runs at once; None is no limit.
    pub max_deployments: Option<u32>,
}

/// Reserved for a pod a listing may not show yet.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    need: Resources,
    /// The census count when the pod was known to exist; a census started
    /// after that shows the pod if it still runs.
    created_at: Option<u64>,
}

struct Books {
    ledger: Ledger,
    inflight: HashMap<String, InFlight>,
    gpu_products: Vec<String>,
    /// Censuses started / the latest one applied (older ones are dropped).
    started: u64,
    applied: u64,
}

/// A Kubernetes cluster (one namespace of it for the pods) as a provider.
pub struct KubernetesProvider {
    settings: KubeSettings,
    endpoint: String,
    owner: Owner,
    client: Client,
    books: Mutex<Books>,
    /// Set once the API refused to list nodes (logged once).
    namespace_only: std::sync::atomic::AtomicBool,
    /// The watch over its own pods; started when the provider is made in a
    /// runtime, else by its first call; stopped on drop.
    watch: OnceLock<PodWatch>,
}

impl fmt::Debug for KubernetesProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesProvider")
            .field("id", &self.settings.id)
            .field("endpoint", &self.endpoint)
            .field("namespace", &self.settings.namespace)
            .finish_non_exhaustive()
    }
}

impl KubernetesProvider {
    /// A provider over `client` as is, without checking the connection
    /// (tests hand in a mocked API service). Inside a tokio runtime its pod
    /// watch starts now; otherwise with its first call.
    pub fn new(client: Client, settings: KubeSettings) -> KubernetesProvider {
        KubernetesProvider::with_endpoint(client, settings, "kubernetes".into()).started()
    }

    /// Starts the pod watch when there is a runtime to run it on.
    fn started(self) -> KubernetesProvider {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.watch();
        }
        self
    }

    fn with_endpoint(
        client: Client,
        mut settings: KubeSettings,
        endpoint: String,
    ) -> KubernetesProvider {
        if settings.namespace.is_empty() {
            settings.namespace = client.default_namespace().to_string();
        }
        if settings.name.is_empty() {
            settings.name = settings.id.clone();
        }
        let owner = Owner {
            provider: settings.id.clone(),
            namespace: settings.namespace.clone(),
            node: settings.node_id.clone(),
        };
        KubernetesProvider {
            namespace_only: Default::default(),
            watch: OnceLock::new(),
            books: Mutex::new(Books {
                // Nothing is offered until the first census.
                ledger: Ledger::new(&settings.id, Resources::ZERO)
                    .with_max_deployments(settings.max_deployments),
                inflight: HashMap::new(),
                gpu_products: Vec::new(),
                started: 0,
                applied: 0,
            }),
            settings,
            endpoint,
            owner,
            client,
        }
    }

    /// Where the API server is (a URL; never credentials).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The namespace the pods go to.
    pub fn namespace(&self) -> &str {
        &self.settings.namespace
    }

    /// Whether `status`, `list` and `logs` answer from the watch of its
    /// pods now (listed, and no watch error since).
    pub fn watching(&self) -> bool {
        self.watch.get().is_some_and(PodWatch::synced)
    }

    /// The watch over this provider's pods, started on first use.
    fn watch(&self) -> &PodWatch {
        self.watch.get_or_init(|| {
            PodWatch::start(
                self.pods(),
                &self.settings.namespace,
                &self.owner.selector(),
                &self.settings.id,
            )
        })
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn not_found(&self, id: &str) -> ResourceError {
        ResourceError::NotFound(format!(
            "deployment {id:?} not found on provider {}",
            self.settings.id
        ))
    }

    /// Every object of a listing, page by page.
    async fn list_all<K>(&self, api: Api<K>, mut lp: ListParams) -> Result<Vec<K>, ResourceError>
    where
        K: Clone + DeserializeOwned + fmt::Debug,
    {
        lp.limit = Some(PAGE);
        let mut out = Vec::new();
        loop {
            let page = api.list(&lp).await.map_err(|e| self.error(e, None))?;
            out.extend(page.items);
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => lp.continue_token = Some(token),
                _ => return Ok(out),
            }
        }
    }

    /// Rebuilds the books from the cluster; returns this provider's live pods.
    async fn refresh(&self) -> Result<Vec<Pod>, ResourceError> {
        let seq = {
            let mut b = self.books();
            b.started += 1;
            b.started
        };
        let live = ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed");
        let owns = |p: &Pod| self.owner.owns(p);
        let (census, pods) = match self.list_nodes().await? {
            Some(nodes) => {
                let pods: Vec<Pod> = self.list_all(Api::all(self.client.clone()), live).await?;
                (census(&nodes, &pods, owns), pods)
            }
            None => {
                let pods: Vec<Pod> = self
                    .list_all(
                        Api::namespaced(self.client.clone(), &self.settings.namespace),
                        live,
                    )
                    .await?;
                let limits = self.settings.limits.unwrap_or_default();
                (namespace_census(&pods, owns, limits), pods)
            }
        };

        let mut b = self.books();
        if seq > b.applied {
            let mut ledger = Ledger::new(
                &self.settings.id,
                cap(census.total, self.settings.limits.as_ref()),
            )
            .with_max_deployments(self.settings.max_deployments);
            if census.others != Resources::ZERO {
                ledger.adopt_uncounted(OTHERS, census.others);
            }
            for (name, need) in &census.own {
                ledger.adopt(name, *need);
            }
            b.inflight.retain(|key, f| {
                // Listed, or made before this census began and so ended since.
                if census.own.contains_key(key) || f.created_at.is_some_and(|c| c < seq) {
                    return false;
                }
                ledger.adopt(key, f.need);
                true
            });
            b.ledger = ledger;
            b.gpu_products = census.gpu_products.into_iter().collect();
            b.applied = seq;
        }
        drop(b);
        Ok(pods.into_iter().filter(owns).collect())
    }

    /// The cluster's nodes; None when this identity may not list them and
    /// `resource_limits` say what the provider offers instead (a
    /// namespace-scoped service account, as many clusters hand out).
    async fn list_nodes(&self) -> Result<Option<Vec<Node>>, ResourceError> {
        match self
            .list_all(Api::all(self.client.clone()), ListParams::default())
            .await
        {
            Ok(nodes) => Ok(Some(nodes)),
            Err(ResourceError::PermissionDenied(why)) => {
                if self.settings.limits.is_none() {
                    return Err(ResourceError::PermissionDenied(format!(
                        "{why}; or, without list on nodes, set resource_limits (cpu, memory) for this provider: they become its capacity"
                    )));
                }
                if !self
                    .namespace_only
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    info!(provider = %self.settings.id, namespace = %self.settings.namespace,
                        "may not list nodes: offering resource_limits, counting the pods of its namespace");
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The cluster's GPU models that `spec.gpu_model` names.
    fn gpu_models(&self, spec: &DeploySpec) -> Result<Vec<String>, ResourceError> {
        let Some(model) = spec
            .gpu_model
            .as_deref()
            .filter(|_| spec.resources.gpus > 0)
        else {
            return Ok(Vec::new());
        };
        let b = self.books();
        let wanted = model.to_lowercase();
        let models: Vec<String> = b
            .gpu_products
            .iter()
            .filter(|p| p.to_lowercase().contains(&wanted))
            .cloned()
            .collect();
        if models.is_empty() {
            return Err(ResourceError::Exhausted {
                provider: format!(
                    "{} (no usable node has {model} GPUs; models here: [{}])",
                    self.settings.id,
                    b.gpu_products.join(", ")
                ),
                need: spec.resources,
                available: Resources {
                    gpus: 0,
                    ..b.ledger.capacity().available()
                },
            });
        }
        Ok(models)
    }

    fn release(&self, key: &str) {
        let mut b = self.books();
        b.ledger.release(key);
        b.inflight.remove(key);
    }

    /// The pod `id` when it is one of this provider's: from the watch's
    /// store when it holds it and can be trusted, else from the API.
    async fn get_owned(&self, id: &str) -> Result<Arc<Pod>, ResourceError> {
        if !is_pod_name(id) {
            return Err(self.not_found(id));
        }
        match self.watch().get(id) {
            Some(pod) if self.owner.owns(&pod) => Ok(pod),
            _ => self.fetch_owned(id).await.map(Arc::new),
        }
    }

    /// The pod `id`, read from the API, when it is one of this provider's.
    async fn fetch_owned(&self, id: &str) -> Result<Pod, ResourceError> {
        if !is_pod_name(id) {
            return Err(self.not_found(id));
        }
        let pod = self
            .pods()
            .get(id)
            .await
            .map_err(|e| self.error(e, Some(id)))?;
        if !self.owner.owns(&pod) {
            return Err(self.not_found(id));
        }
        Ok(pod)
    }

    /// Creates the pod; on AlreadyExists, the pod a previous attempt made.
    async fn create(&self, pod: &Pod, key: &str) -> Result<Pod, ResourceError> {
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match self.pods().create(&pp, pod).await {
            Ok(pod) => {
                self.watch().wrote(&pod);
                Ok(pod)
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.reason == "AlreadyExists" => {
                let existing = self
                    .pods()
                    .get(key)
                    .await
                    .map_err(|e| self.error(e, Some(key)))?;
                if !self.owner.owns(&existing) {
                    return Err(ResourceError::Backend(format!(
                        "provider {}: pod {key} exists in namespace {} but is not this provider's",
                        self.settings.id, self.settings.namespace
                    )));
                }
                Ok(existing)
            }
            Err(e) => Err(self.error(e, None)),
        }
    }
}

#[async_trait::async_trait]
impl Provider for KubernetesProvider {
    fn id(&self) -> &str {
        &self.settings.id
    }

    async fn describe(&self) -> Result<ProviderDescriptor, ResourceError> {
        // Started here too, so it has synced by the time status is asked.
        self.watch();
        let healthy = match self.refresh().await {
            Ok(_) => true,
            Err(e) => {
                warn!(provider = %self.settings.id, error = %e, "cannot read the cluster's capacity");
                false
            }
        };
        let b = self.books();
        let mut labels = self.settings.labels.clone();
        if let Some(model) = b.gpu_products.first() {
            labels.insert(crate::resource::labels::GPU_MODEL.into(), model.clone());
        }
        Ok(ProviderDescriptor {
            id: self.settings.id.clone(),
            name: self.settings.name.clone(),
            kind: ProviderKind::Kubernetes,
            endpoint: self.endpoint.clone(),
            healthy,
            capacity: b.ledger.capacity(),
            labels,
            // The cluster's GPUs are counted per node, not read one by one.
            gpus: Vec::new(),
        })
    }

    async fn deploy(
        &self,
        spec: &DeploySpec,
        progress: ProgressSink,
    ) -> Result<Deployment, ResourceError> {
        validate(spec)?;
        self.watch();
        let key = deployment_id(&spec.request_id);
        let own = self.refresh().await?;
        if let Some(pod) = own
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&key))
        {
            return Ok(to_deployment(pod, &self.settings.id));
        }
        let gpu_models = self.gpu_models(spec)?;
        let reserved_here = {
            let mut b = self.books();
            if b.ledger.holds(&key) {
                false // a concurrent deploy of the same request holds it
            } else {
                b.ledger.reserve(&key, spec.resources)?;
                b.inflight.insert(
                    key.clone(),
                    InFlight {
                        need: spec.resources,
                        created_at: None,
                    },
                );
                true
            }
        };
        let pod = build_pod(spec, &key, &self.owner, &gpu_models);
        match self.create(&pod, &key).await {
            Ok(pod) => {
                if pod_is_terminated(&pod) {
                    self.release(&key);
                } else {
                    let mut b = self.books();
                    let now = b.started;
                    if let Some(f) = b.inflight.get_mut(&key) {
                        f.created_at = Some(now);
                    }
                }
                let d = to_deployment(&pod, &self.settings.id);
                info!(provider = %self.settings.id, pod = %key, namespace = %self.settings.namespace, image = %spec.image, resources = %spec.resources, "deployed");
                progress.emit(Progress::State(d.state()));
                Ok(d)
            }
            Err(e) => {
                if reserved_here {
                    self.release(&key);
                }
                Err(e)
            }
        }
    }

    async fn status(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        let pod = self.get_owned(deployment_id).await?;
        if pod_is_terminated(&pod) {
            self.release(deployment_id);
        }
        Ok(to_deployment(&pod, &self.settings.id))
    }

    async fn list(&self) -> Result<Vec<Deployment>, ResourceError> {
        let watched = self.watch().all();
        let listed;
        let pods: Vec<&Pod> = match &watched {
            Some(pods) => pods.iter().map(Arc::as_ref).collect(),
            None => {
                listed = self
                    .list_all(
                        self.pods(),
                        ListParams::default().labels(&self.owner.selector()),
                    )
                    .await?;
                listed.iter().collect()
            }
        };
        let mut all: Vec<Deployment> = pods
            .into_iter()
            .filter(|p| self.owner.owns(p))
            .map(|p| {
                if pod_is_terminated(p) {
                    if let Some(name) = &p.metadata.name {
                        self.release(name);
                    }
                }
                to_deployment(p, &self.settings.id)
            })
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn logs(
        &self,
        deployment_id: &str,
        opts: LogOptions,
    ) -> Result<LogStream, ResourceError> {
        self.get_owned(deployment_id).await?;
        let lp = LogParams {
            container: Some(CONTAINER.into()),
            follow: opts.follow,
            tail_lines: opts.tail.map(i64::from),
            ..LogParams::default()
        };
        let reader = match self.pods().log_stream(deployment_id, &lp).await {
            Ok(r) => r,
            // The container has not started: no output yet.
            Err(kube::Error::Api(s)) if s.code == 400 => {
                return Err(ResourceError::Unavailable {
                    provider: self.settings.id.clone(),
                    reason: format!(
                        "deployment {deployment_id:?} has no output yet: {}",
                        s.message
                    ),
                })
            }
            Err(e) => return Err(self.error(e, Some(deployment_id))),
        };
        let provider = self.settings.id.clone();
        let id = deployment_id.to_string();
        Ok(reader
            .lines()
            .map(move |line| match line {
                Ok(text) => Ok(LogLine {
                    stderr: false,
                    text,
                }),
                Err(e) => Err(ResourceError::Unavailable {
                    provider: provider.clone(),
                    reason: format!("the log stream of deployment {id:?} broke: {e}"),
                }),
            })
            .boxed())
    }

    async fn stop(&self, deployment_id: &str) -> Result<Deployment, ResourceError> {
        self.watch();
        let pod = self.fetch_owned(deployment_id).await?;
        // Only the pod just looked at, not one made since under the same name.
        let dp = DeleteParams {
            preconditions: pod.metadata.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let deleted = self
            .pods()
            .delete(deployment_id, &dp)
            .await
            .map_err(|e| self.error(e, Some(deployment_id)))?;
        self.release(deployment_id);
        let last = deleted.left();
        let last = last.as_ref().unwrap_or(&pod);
        self.watch().wrote(last);
        let mut d = to_deployment(last, &self.settings.id);
        d.push_state(DeployState::Stopped);
        info!(provider = %self.settings.id, pod = %deployment_id, "stopped");
        Ok(d)
    }
}
