//! The pod iarnet makes for a deploy spec, and what a pod's status means
//! as a deployment.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvVar, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::capacity::{pod_requests, GPU_PRODUCT_LABEL, GPU_RESOURCE};
use crate::resource::labels;
use crate::resource::priority::Priority;
use crate::resource::types::{DeploySpec, DeployState, Deployment, RestartPolicy, StateChange};
use crate::resource::validate::stable_hex;

/// The one container of an iarnet pod.
pub(crate) const CONTAINER: &str = "main";

/// Waiting reasons after which the kubelet only retries what already failed.
const FAILED_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && (s.is_empty()
            || (s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

/// `s` as a label value: itself when valid, else a readable prefix and a
/// stable hash of the whole (so distinct ids stay distinct).
pub(crate) fn label_value(s: &str) -> String {
    if is_label_value(s) {
        return s.to_string();
    }
    let hash = stable_hex(s);
    let readable: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(46)
        .collect();
    let readable = readable.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if readable.is_empty() {
        hash.to_string()
    } else {
        format!("{readable}-{hash}")
    }
}

/// A valid pod name (DNS-1123 subdomain); anything else cannot be a
/// deployment of this provider and never reaches a request path.
pub(crate) fn is_pod_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// What identifies one provider's pods.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub provider: String,
    pub namespace: String,
    pub node: String,
}

impl Owner {
    /// `iarnet.managed=true,iarnet.provider=<id>`.
    pub fn selector(&self) -> String {
        format!(
            "{}=true,{}={}",
            labels::MANAGED,
            labels::PROVIDER,
            label_value(&self.provider)
        )
    }

    pub fn owns(&self, pod: &Pod) -> bool {
        let labels = pod.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        pod.metadata.namespace.as_deref() == Some(self.namespace.as_str())
            && label(labels::MANAGED) == Some("true")
            && label(labels::PROVIDER) == Some(label_value(&self.provider).as_str())
    }
}

fn quantities(pairs: &[(&str, String)]) -> BTreeMap<String, KubeQuantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), KubeQuantity(v.clone())))
        .collect()
}

/// The pod for `spec`, named `name`: one container, requests equal to
/// limits, never restarted, no service-account token.
pub(crate) fn build_pod(
    spec: &DeploySpec,
    name: &str,
    owner: &Owner,
    gpu_models: &[String],
) -> Pod {
    let r = &spec.resources;
    let mut res = vec![
        ("cpu", format!("{}m", r.cpu_millis)),
        ("memory", r.memory_bytes.to_string()),
    ];
    if r.gpus > 0 {
        res.push((GPU_RESOURCE, r.gpus.to_string()));
    }
    if r.storage_bytes > 0 {
        res.push(("ephemeral-storage", r.storage_bytes.to_string()));
    }
    let resources = quantities(&res);

    let mut labels = spec.labels.clone();
    labels.insert(labels::MANAGED.into(), "true".into());
    labels.insert(labels::PROVIDER.into(), label_value(&owner.provider));
    labels.insert(labels::NODE.into(), label_value(&owner.node));
    labels.insert(labels::REQUEST.into(), label_value(&spec.request_id));
    if let Some(r) = &spec.replica_of {
        labels.insert(labels::SERVICE.into(), label_value(&r.service));
        labels.insert(labels::REPLICA.into(), r.index.to_string());
    }
    let mut annotations = BTreeMap::from([
        (labels::REQUEST.to_string(), spec.request_id.clone()),
        (labels::ATTEMPT.to_string(), spec.attempt.max(1).to_string()),
    ]);
    if !spec.home.is_empty() {
        annotations.insert(labels::HOME.into(), spec.home.clone());
    }
    if spec.preemptible {
        annotations.insert(labels::PREEMPTIBLE.into(), spec.priority.label());
    }
    if let Some(g) = &spec.scope.group {
        annotations.insert(labels::GROUP.into(), g.clone());
    }
    if let Some(ms) = spec.stop_after_disconnect_ms {
        annotations.insert(labels::STOP_AFTER_DISCONNECT.into(), ms.to_string());
    }
    if !spec.name.is_empty() {
        annotations.insert(labels::NAME.into(), spec.name.clone());
    }

    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let env: Vec<EnvVar> = spec
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..EnvVar::default()
        })
        .collect();
    let ports: Vec<ContainerPort> = spec
        .ports
        .iter()
        .map(|p| ContainerPort {
            container_port: i32::from(p.container),
            host_port: (p.host != 0).then_some(i32::from(p.host)),
            protocol: Some(if p.udp { "UDP" } else { "TCP" }.into()),
            ..ContainerPort::default()
        })
        .collect();
    let container = Container {
        name: CONTAINER.into(),
        image: Some(spec.image.clone()),
        command: non_empty(&spec.command),
        args: non_empty(&spec.args),
        env: (!env.is_empty()).then_some(env),
        ports: (!ports.is_empty()).then_some(ports),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };

    let affinity = (r.gpus > 0 && spec.gpu_model.is_some()).then(|| Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: GPU_PRODUCT_LABEL.into(),
                        operator: "In".into(),
                        values: Some(gpu_models.to_vec()),
                    }]),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    });
    let tolerations = (r.gpus > 0).then(|| {
        vec![Toleration {
            key: Some(GPU_RESOURCE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        }]
    });

    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(owner.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            // The kubelet applies the policy (CrashLoopBackOff); it has
            // no count for OnFailure, so on-failure:N is not capped here.
            restart_policy: Some(
                match spec.restart {
                    RestartPolicy::Never => "Never",
                    RestartPolicy::OnFailure { .. } => "OnFailure",
                    RestartPolicy::Always => "Always",
                }
                .into(),
            ),
            automount_service_account_token: Some(false),
            affinity,
            tolerations,
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// The deployment state a pod's status stands for.
pub(crate) fn state_of(pod: &Pod) -> DeployState {
    if pod.metadata.deletion_timestamp.is_some() {
        return DeployState::Stopped;
    }
    let Some(status) = &pod.status else {
        return DeployState::Pending;
    };
    let containers = || {
        status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
    };
    match status.phase.as_deref() {
        Some("Running") => DeployState::Running,
        Some("Succeeded") => DeployState::Exited(0),
        Some("Failed") => {
            let code = status
                .container_statuses
                .iter()
                .flatten()
                .find_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code));
            match code {
                Some(code) => DeployState::Exited(i64::from(code)),
                None => DeployState::Failed(describe(
                    status.reason.as_deref().unwrap_or("Failed"),
                    status.message.as_deref(),
                )),
            }
        }
        Some("Unknown") => DeployState::Failed(describe(
            "Unknown",
            Some(
                status
                    .message
                    .as_deref()
                    .unwrap_or("the pod's node stopped reporting"),
            ),
        )),
        _ => {
            let mut state = DeployState::Pending;
            for waiting in containers().filter_map(|c| c.state.as_ref()?.waiting.as_ref()) {
                let reason = waiting.reason.as_deref().unwrap_or("");
                if FAILED_WAITING.contains(&reason) {
                    return DeployState::Failed(describe(reason, waiting.message.as_deref()));
                }
                if reason == "ContainerCreating" || reason == "PodInitializing" {
                    state = DeployState::Pulling;
                }
            }
            state
        }
    }
}

fn describe(reason: &str, message: Option<&str>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!("{reason}: {m}"),
        _ => reason.to_string(),
    }
}

fn at(t: Option<&Time>) -> SystemTime {
    t.map_or_else(SystemTime::now, |t| SystemTime::from(t.0))
}

/// A pod as a deployment of `provider_id`, with the history its timestamps
/// tell: created, started, ended.
pub(crate) fn to_deployment(pod: &Pod, provider_id: &str) -> Deployment {
    let meta = &pod.metadata;
    let annotation = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k));
    let request_id = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::REQUEST))
        .or_else(|| meta.labels.as_ref().and_then(|l| l.get(labels::REQUEST)))
        .cloned()
        .unwrap_or_default();
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let status = pod.status.as_ref();
    let main = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER).or(cs.first()));
    let gpus = main
        .and_then(|c| c.allocated_resources_status.as_ref())
        .into_iter()
        .flatten()
        .filter(|r| r.name == GPU_RESOURCE)
        .flat_map(|r| r.resources.iter().flatten().map(|h| h.resource_id.clone()))
        .collect();

    let state = state_of(pod);
    let mut history = vec![StateChange {
        state: DeployState::Pending,
        at: at(meta.creation_timestamp.as_ref()),
    }];
    let running = main.and_then(|c| c.state.as_ref());
    let started = running
        .and_then(|s| s.running.as_ref().and_then(|r| r.started_at.as_ref()))
        .or_else(|| running.and_then(|s| s.terminated.as_ref()?.started_at.as_ref()))
        .or_else(|| status.and_then(|s| s.start_time.as_ref()));
    if !matches!(
        state,
        DeployState::Pending | DeployState::Pulling | DeployState::Failed(_)
    ) && started.is_some()
    {
        history.push(StateChange {
            state: DeployState::Running,
            at: at(started),
        });
    }
    let when = match &state {
        DeployState::Stopped => meta.deletion_timestamp.as_ref(),
        DeployState::Exited(_) => running.and_then(|s| s.terminated.as_ref()?.finished_at.as_ref()),
        DeployState::Running => started,
        _ => None,
    };
    let mut d = Deployment {
        id: meta.name.clone().unwrap_or_default(),
        request_id,
        provider_id: provider_id.to_string(),
        image,
        resources: pod_requests(pod),
        gpus,
        history,
        lease: None,
        labels: Default::default(),
        restarts: main
            .map(|c| u32::try_from(c.restart_count).unwrap_or(0))
            .unwrap_or(0),
        attempt: annotation(labels::ATTEMPT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
        home: annotation(labels::HOME).cloned().unwrap_or_default(),
        attempts: Vec::new(),
        preemptible: annotation(labels::PREEMPTIBLE).and_then(|p| Priority::from_label(p)),
        stop_after_disconnect_ms: annotation(labels::STOP_AFTER_DISCONNECT)
            .and_then(|ms| ms.parse().ok()),
        group: annotation(labels::GROUP).cloned().unwrap_or_default(),
        health: None,
        ports: Vec::new(),
    };
    if d.state() != state {
        d.history.push(StateChange {
            state,
            at: at(when),
        });
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::validate::deployment_id;

    #[test]
    fn label_values_are_valid_and_stable() {
        assert_eq!(label_value("node-a"), "node-a");
        assert_eq!(label_value("3f2c-uuid_1.x"), "3f2c-uuid_1.x");
        for id in ["10.0.0.1:7946", "team/a b", "::", &"x".repeat(100), "-a-"] {
            let v = label_value(id);
            assert!(is_label_value(&v) && !v.is_empty(), "{id:?} -> {v:?}");
            assert_eq!(v, label_value(id));
        }
        assert_ne!(label_value("a:b"), label_value("a/b"));
        assert!(label_value("10.0.0.1:7946").starts_with("10.0.0.1-7946-"));
    }

    #[test]
    fn only_pod_names_pass() {
        assert!(is_pod_name(&deployment_id("r")));
        assert!(is_pod_name("web-0.x"));
        for bad in ["", "../secrets", "a/b", "Upper", "-a", "a-", "a..b", "a?b"] {
            assert!(!is_pod_name(bad), "{bad:?}");
        }
    }
}
