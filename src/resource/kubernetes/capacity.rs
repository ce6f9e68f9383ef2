//! What a cluster has and what is already asked of it, from its nodes and
//! pods. Pure functions over API objects; the provider does the I/O.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use tracing::warn;

use crate::resource::types::Resources;
use crate::resource::Quantity;

/// The extended resource the NVIDIA device plugin advertises.
pub(crate) const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The node label GPU feature discovery sets to the GPU model.
pub(crate) const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";

/// Parses one entry of a resource list; a malformed one counts as nothing.
fn quantity(map: &BTreeMap<String, KubeQuantity>, key: &str) -> Option<Quantity> {
    let q = map.get(key)?;
    match Quantity::parse(&q.0) {
        Ok(q) => Some(q),
        Err(e) => {
            warn!(resource = key, error = %e, "ignoring a malformed quantity");
            None
        }
    }
}

fn clamp(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// CPU, memory, GPUs and ephemeral storage named in a resource list
/// (allocatable, requests, overhead).
pub(crate) fn resources_of(map: &BTreeMap<String, KubeQuantity>) -> Resources {
    Resources {
        cpu_millis: quantity(map, "cpu").map_or(0, |q| clamp(q.milli())),
        memory_bytes: quantity(map, "memory").map_or(0, |q| clamp(q.units_ceil())),
        gpus: quantity(map, GPU_RESOURCE)
            .map_or(0, |q| u32::try_from(q.units_ceil()).unwrap_or(u32::MAX)),
        storage_bytes: quantity(map, "ephemeral-storage").map_or(0, |q| clamp(q.units_ceil())),
    }
}

fn max_each(a: Resources, b: Resources) -> Resources {
    Resources {
        cpu_millis: a.cpu_millis.max(b.cpu_millis),
        memory_bytes: a.memory_bytes.max(b.memory_bytes),
        gpus: a.gpus.max(b.gpus),
        storage_bytes: a.storage_bytes.max(b.storage_bytes),
    }
}

/// `total` capped by `limits`; a zero storage limit means "no storage cap".
pub(crate) fn cap(total: Resources, limits: Option<&Resources>) -> Resources {
    let Some(l) = limits else { return total };
    Resources {
        cpu_millis: total.cpu_millis.min(l.cpu_millis),
        memory_bytes: total.memory_bytes.min(l.memory_bytes),
        gpus: total.gpus.min(l.gpus),
        storage_bytes: if l.storage_bytes == 0 {
            total.storage_bytes
        } else {
            total.storage_bytes.min(l.storage_bytes)
        },
    }
}

/// Ready, not cordoned, and not tainted against pods that tolerate nothing
/// (a `nvidia.com/gpu` taint is fine: GPU pods get its toleration).
pub(crate) fn node_is_usable(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let spec = node.spec.as_ref();
    let cordoned = spec.and_then(|s| s.unschedulable).unwrap_or(false);
    let tainted = spec.and_then(|s| s.taints.as_ref()).is_some_and(|ts| {
        ts.iter()
            .any(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && t.key != GPU_RESOURCE)
    });
    ready && !cordoned && !tainted
}

/// What a pod asks of its node, the way the scheduler counts it: the larger
/// of its containers (plus sidecars) and its heaviest init step, with a
/// pod-level request in place of the containers' where one is set, plus
/// the runtime overhead.
pub(crate) fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources::ZERO;
    };
    let requests = |c: &Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .map(resources_of)
            .unwrap_or_default()
    };
    let mut sidecars = Resources::ZERO;
    let mut init_peak = Resources::ZERO;
    for c in spec.init_containers.iter().flatten() {
        let r = requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = sidecars.saturating_add(&r);
        } else {
            init_peak = max_each(init_peak, sidecars.saturating_add(&r));
        }
    }
    let app = spec
        .containers
        .iter()
        .fold(sidecars, |sum, c| sum.saturating_add(&requests(c)));
    let mut total = max_each(app, init_peak);
    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        let p = resources_of(pod_level);
        if pod_level.contains_key("cpu") {
            total.cpu_millis = p.cpu_millis;
        }
        if pod_level.contains_key("memory") {
            total.memory_bytes = p.memory_bytes;
        }
    }
    if let Some(overhead) = &spec.overhead {
        total = total.saturating_add(&resources_of(overhead));
    }
    total
}

/// True once a pod has ended and holds nothing.
pub(crate) fn pod_is_terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The cluster as one provider sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Census {
    /// Allocatable of the usable nodes (storage `u64::MAX` when no node
    /// reports ephemeral storage: not accounted).
    pub total: Resources,
    /// Requests of every running or pending pod that is not this provider's
    /// and sits on a usable node or waits for one.
    pub others: Resources,
    /// This provider's live pods: name and requests.
    pub own: BTreeMap<String, Resources>,
    /// GPU models on usable nodes that have GPUs.
    pub gpu_products: BTreeSet<String>,
}

/// Counts `nodes` and the non-terminated `pods`; `is_own` picks this
/// provider's pods, which are booked one by one.
pub(crate) fn census(nodes: &[Node], pods: &[Pod], is_own: impl Fn(&Pod) -> bool) -> Census {
    let mut c = Census::default();
    let mut usable = HashSet::new();
    for node in nodes.iter().filter(|n| node_is_usable(n)) {
        let alloc = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .map(resources_of)
            .unwrap_or_default();
        c.total = c.total.saturating_add(&alloc);
        if alloc.gpus > 0 {
            if let Some(model) = node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(GPU_PRODUCT_LABEL))
            {
                c.gpu_products.insert(model.clone());
            }
        }
        if let Some(name) = &node.metadata.name {
            usable.insert(name.as_str());
        }
    }
    if c.total.storage_bytes == 0 {
        c.total.storage_bytes = u64::MAX;
    }
    for pod in pods.iter().filter(|p| !pod_is_terminated(p)) {
        let need = pod_requests(pod);
        if is_own(pod) {
            if let Some(name) = &pod.metadata.name {
                c.own.insert(name.clone(), need);
            }
            continue;
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        if node.is_none_or(|n| usable.contains(n)) {
            c.others = c.others.saturating_add(&need);
        }
    }
    c
}

/// The census of an identity that may not list nodes: `limits` is what
/// the provider offers (no storage limit: not accounted), and only its own
/// pods in its namespace count against it. Other pods there draw on the
/// cluster, not on this provider's share; the cluster's scheduler still
/// refuses what does not fit.
pub(crate) fn namespace_census(
    pods: &[Pod],
    is_own: impl Fn(&Pod) -> bool,
    limits: Resources,
) -> Census {
    let mut c = census(&[], pods, is_own);
    c.others = Resources::ZERO;
    c.total = limits;
    if c.total.storage_bytes == 0 {
        c.total.storage_bytes = u64::MAX;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("pod")
    }

    fn node(ready: &str, spec: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": ready}]}
        }))
        .expect("node")
    }

    fn c(cpu: &str, memory: &str) -> serde_json::Value {
        json!({"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}})
    }

    #[test]
    fn resource_lists_parse_kubernetes_quantities() {
        let map: BTreeMap<String, KubeQuantity> = [
            ("cpu", "3800m"),
            ("memory", "7990Mi"),
            ("nvidia.com/gpu", "4"),
            ("ephemeral-storage", "100Gi"),
            ("pods", "110"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), KubeQuantity(v.to_string())))
        .collect();
        assert_eq!(
            resources_of(&map),
            Resources {
                cpu_millis: 3800,
                memory_bytes: 7990 << 20,
                gpus: 4,
                storage_bytes: 100 << 30,
            }
        );
        let bad = BTreeMap::from([("cpu".to_string(), KubeQuantity("lots".into()))]);
        assert_eq!(resources_of(&bad), Resources::ZERO);
    }

    #[test]
    fn pod_requests_follow_the_scheduler() {
        // Containers add up; an init step that needs more wins.
        let p = pod(json!({
            "containers": [c("250m", "128Mi"), c("0.5", "128Mi")],
            "initContainers": [c("1", "64Mi")]
        }));
        let r = pod_requests(&p);
        assert_eq!((r.cpu_millis, r.memory_bytes), (1000, 256 << 20));
        // A sidecar (restartPolicy Always) runs beside everything after it.
        let mut side = c("100m", "10Mi");
        side["restartPolicy"] = json!("Always");
        let p = pod(json!({
            "containers": [c("200m", "100Mi")],
            "initContainers": [side, c("50m", "500Mi")],
            "overhead": {"cpu": "10m", "memory": "1Mi"}
        }));
        let r = pod_requests(&p);
        assert_eq!(
            (r.cpu_millis, r.memory_bytes),
            (310, (510 << 20) + (1 << 20))
        );
        // A pod-level request replaces the containers' sum for its resources.
        let p = pod(json!({
            "containers": [c("200m", "100Mi")],
            "resources": {"requests": {"cpu": "2"}}
        }));
        let r = pod_requests(&p);
        assert_eq!((r.cpu_millis, r.memory_bytes), (2000, 100 << 20));
    }

    #[test]
    fn usable_nodes_are_ready_uncordoned_and_untainted() {
        assert!(node_is_usable(&node("True", json!({}))));
        assert!(!node_is_usable(&node("False", json!({}))));
        assert!(!node_is_usable(&node("Unknown", json!({}))));
        assert!(!node_is_usable(&node(
            "True",
            json!({"unschedulable": true})
        )));
        let taint = |key: &str, effect: &str| json!({"taints": [{"key": key, "effect": effect}]});
        assert!(!node_is_usable(&node(
            "True",
            taint("node-role.kubernetes.io/control-plane", "NoSchedule")
        )));
        assert!(node_is_usable(&node(
            "True",
            taint("dedicated", "PreferNoSchedule")
        )));
        assert!(node_is_usable(&node(
            "True",
            taint(GPU_RESOURCE, "NoSchedule")
        )));
    }

    #[test]
    fn limits_cap_every_dimension_but_unset_storage() {
        let total = Resources {
            cpu_millis: 8000,
            memory_bytes: 16 << 30,
            gpus: 2,
            storage_bytes: 100 << 30,
        };
        let limits = Resources {
            cpu_millis: 2000,
            memory_bytes: 32 << 30,
            gpus: 0,
            storage_bytes: 0,
        };
        let capped = cap(total, Some(&limits));
        assert_eq!(
            capped,
            Resources {
                cpu_millis: 2000,
                memory_bytes: 16 << 30,
                gpus: 0,
                storage_bytes: 100 << 30,
            }
        );
        assert_eq!(cap(total, None), total);
    }
}
