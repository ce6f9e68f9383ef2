//! The deployment files under `deploy/`: the Kubernetes manifests parse
//! strictly into their API types and refer to each other correctly, the
//! Compose file describes a mesh whose nodes find each other, and the node
//! configuration both of them produce is one iarnet accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use iarnet::config::{Config, Layers, Mode, Source, DEFAULT_CONFIG_YAML};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, Namespace, PodSpec, Probe, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

// ---------------------------------------------------------------------------
// Facts about the image (Dockerfile) the manifests rely on; the last test
// holds them to the Dockerfile.

/// The node binary in the image (its entrypoint).
const IMAGE_BINARY: &str = "/usr/local/bin/iarnet";
/// The image's user and group.
const IMAGE_UID: i64 = 10001;
/// Where the image keeps its config; `COPY config.yaml` puts the shipped one there.
const IMAGE_CONFIG_PATH: &str = "/etc/iarnet/config.yaml";
/// Directories the image creates for its user; a fresh named volume mounted
/// on one takes that owner (elsewhere it is root's, and read-only to the node).
const IMAGE_USER_DIRS: &[&str] = &["/var/lib/iarnet/data", "/var/lib/iarnet/workspaces"];
/// The image's `ENV` of configuration variables.
const IMAGE_ENV: &[(&str, &str)] = &[
    ("IARNET_CONFIG", IMAGE_CONFIG_PATH),
    ("IARNET_DATA_DIR", "/var/lib/iarnet/data"),
    ("IARNET_WORKSPACE_DIR", "/var/lib/iarnet/workspaces"),
];

/// The HTTP API's health endpoints, the only paths an httpGet probe may use.
const HEALTH_PATHS: &[&str] = &["/healthz", "/readyz"];

// ---------------------------------------------------------------------------
// What the internal Kubernetes provider calls, so RBAC can be held to it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Across the cluster (cluster-scoped objects, or pods in every namespace).
    Cluster,
    /// In `kubernetes.namespace`, where the provider creates its pods.
    Workloads,
}

#[derive(Debug, Clone, Copy)]
struct Need {
    verb: &'static str,
    resource: &'static str,
    scope: Scope,
}

const fn need(verb: &'static str, resource: &'static str, scope: Scope) -> Need {
    Need {
        verb,
        resource,
        scope,
    }
}

/// Every API call of `src/resource/kubernetes/mod.rs` (all in the core group):
/// `refresh` lists nodes and the pods of all namespaces for capacity;
/// `create` posts a pod and gets it back on AlreadyExists; `get_owned`
/// (status, logs, stop) gets one; `list` lists by label; `stop` deletes;
/// `logs` reads `pods/log`; the pod watch (`watch.rs`) lists and watches
/// its own pods. Update this list with the code.
const PROVIDER_CALLS: &[Need] = &[
    need("list", "nodes", Scope::Cluster),
    need("list", "pods", Scope::Cluster),
    need("create", "pods", Scope::Workloads),
    need("get", "pods", Scope::Workloads),
    need("list", "pods", Scope::Workloads),
    need("watch", "pods", Scope::Workloads),
    need("delete", "pods", Scope::Workloads),
    need("get", "pods/log", Scope::Workloads),
];

// ---------------------------------------------------------------------------
// Loading the Kubernetes manifests.

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn k8s_dir() -> PathBuf {
    repo().join("deploy/k8s")
}

fn compose_file() -> PathBuf {
    repo().join("deploy/compose/docker-compose.yml")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every object of `deploy/k8s`, by type.
#[derive(Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    config_maps: Vec<ConfigMap>,
    services: Vec<Service>,
    stateful_sets: Vec<StatefulSet>,
    disruption_budgets: Vec<PodDisruptionBudget>,
    /// Every document as written, for comparing with kustomize's output.
    documents: Vec<Json>,
}

/// The YAML documents of `text` as JSON values (empty documents skipped).
fn documents(text: &str) -> Result<Vec<Json>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Json::deserialize(doc).map_err(|e| e.to_string())?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// `doc` as a `T`, refusing any key `T` does not know: k8s-openapi drops
/// unknown fields, so what it reads is written back and compared.
fn strict<T: DeserializeOwned + Serialize>(doc: &Json) -> Result<T, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match first_difference("", doc, &back) {
        None => Ok(typed),
        Some(diff) => Err(diff),
    }
}

/// Where `file` and its typed reading `typed` first differ.
fn first_difference(path: &str, file: &Json, typed: &Json) -> Option<String> {
    let at = |key: &dyn std::fmt::Display| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (file, typed) {
        (Json::Object(f), Json::Object(t)) => {
            for (key, fv) in f {
                match t.get(key) {
                    None => {
                        return Some(format!(
                            "`{}` is not a field here (misspelled, misplaced or null)",
                            at(key)
                        ))
                    }
                    Some(tv) => {
                        if let Some(d) = first_difference(&at(key), fv, tv) {
                            return Some(d);
                        }
                    }
                }
            }
            // Embedded objects (volume claim templates) write their own
            // apiVersion and kind; anything else added is a real difference.
            let embedded = !path.is_empty();
            t.keys()
                .filter(|k| !(embedded && is_type_key(k)))
                .find(|k| !f.contains_key(*k))
                .map(|k| format!("`{}` appears when read back", at(k)))
        }
        (Json::Array(f), Json::Array(t)) if f.len() == t.len() => f
            .iter()
            .zip(t)
            .enumerate()
            .find_map(|(i, (fv, tv))| first_difference(&format!("{path}[{i}]"), fv, tv)),
        _ if file == typed => None,
        _ => Some(format!("`{path}`: {file} reads back as {typed}")),
    }
}

fn is_type_key(key: &str) -> bool {
    key == "apiVersion" || key == "kind"
}

impl Manifests {
    /// Adds one document, typed by its `kind`.
    fn add(&mut self, doc: Json) -> Result<(), String> {
        let kind = doc["kind"].as_str().ok_or("no `kind`")?.to_string();
        match kind.as_str() {
            "Namespace" => self.namespaces.push(strict(&doc)?),
            "ServiceAccount" => self.service_accounts.push(strict(&doc)?),
            "Role" => self.roles.push(strict(&doc)?),
            "RoleBinding" => self.role_bindings.push(strict(&doc)?),
            "ClusterRole" => self.cluster_roles.push(strict(&doc)?),
            "ClusterRoleBinding" => self.cluster_role_bindings.push(strict(&doc)?),
            "ConfigMap" => self.config_maps.push(strict(&doc)?),
            "Service" => self.services.push(strict(&doc)?),
            "StatefulSet" => self.stateful_sets.push(strict(&doc)?),
            "PodDisruptionBudget" => self.disruption_budgets.push(strict(&doc)?),
            other => {
                return Err(format!(
                    "kind {other:?} is not checked by tests/manifests.rs; add it there"
                ))
            }
        }
        self.documents.push(doc);
        Ok(())
    }
}

/// The files `kustomization.yaml` lists, in order.
fn kustomization_resources() -> Vec<String> {
    let k: Yaml = serde_yaml_ng::from_str(&read(&k8s_dir().join("kustomization.yaml")))
        .expect("kustomization.yaml is YAML");
    assert_eq!(k["kind"].as_str(), Some("Kustomization"));
    k["resources"]
        .as_sequence()
        .expect("kustomization.yaml has a `resources` list")
        .iter()
        .map(|r| r.as_str().expect("resources are file names").to_string())
        .collect()
}

/// Every manifest listed in `kustomization.yaml`, strictly typed.
fn manifests() -> Manifests {
    let mut m = Manifests::default();
    for file in kustomization_resources() {
        let path = k8s_dir().join(&file);
        let docs = documents(&read(&path)).unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
        for (i, doc) in docs.into_iter().enumerate() {
            let what = format!("{file} document {} ({})", i + 1, doc["kind"]);
            m.add(doc).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
    m
}

// ---------------------------------------------------------------------------
// Views of the node pod.

#[track_caller]
fn only<'a, T>(items: &'a [T], what: &str) -> &'a T {
    assert_eq!(items.len(), 1, "expected exactly one {what}");
    &items[0]
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().expect("every object has a name")
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace
        .as_deref()
        .unwrap_or_else(|| panic!("{} has no namespace", name_of(meta)))
}

fn node_set(m: &Manifests) -> &StatefulSet {
    only(&m.stateful_sets, "StatefulSet")
}

fn pod_spec(sts: &StatefulSet) -> &PodSpec {
    sts.spec
        .template
        .spec
        .as_ref()
        .expect("the StatefulSet has a pod template spec")
}

fn pod_labels(sts: &StatefulSet) -> &BTreeMap<String, String> {
    sts.spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .expect("the pod template has labels")
}

/// The names of the StatefulSet's volume claim templates.
fn claim_names(sts: &StatefulSet) -> Vec<&str> {
    let templates = sts.spec.volume_claim_templates.iter().flatten();
    templates.map(|t| name_of(&t.metadata)).collect()
}

fn node_container(sts: &StatefulSet) -> &Container {
    only(&pod_spec(sts).containers, "container in the node pod")
}

/// The container port `port` names (by name or number).
fn container_port<'a>(c: &'a Container, port: &IntOrString) -> Option<&'a ContainerPort> {
    let ports = c.ports.as_deref().unwrap_or_default();
    match port {
        IntOrString::Int(n) => ports.iter().find(|p| p.container_port == *n),
        IntOrString::String(name) => ports.iter().find(|p| p.name.as_deref() == Some(name)),
    }
}

fn named_port(c: &Container, name: &str) -> u16 {
    let p = container_port(c, &IntOrString::String(name.into()))
        .unwrap_or_else(|| panic!("the node container has no port named {name:?}"));
    u16::try_from(p.container_port).expect("a port number")
}

/// True when every label `selector` asks for is on `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// What the kubelet hands the container for a `fieldRef`, as sample values.
fn field_ref_sample(path: &str, sts: &StatefulSet) -> String {
    match path {
        "metadata.name" => format!("{}-0", name_of(&sts.metadata)),
        "metadata.namespace" => namespace_of(&sts.metadata).to_string(),
        "status.podIP" => "10.1.2.3".to_string(),
        other => panic!("no sample value for fieldRef {other:?}; add one"),
    }
}

/// The container's environment as the process sees it: `fieldRef`s filled
/// with samples and `$(VAR)` expanded from earlier entries, as the kubelet does.
fn container_env(sts: &StatefulSet) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in node_container(sts).env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), None) => expand(v, &env).unwrap_or_else(|missing| {
                panic!("{}: $({missing}) is not set before it", var.name)
            }),
            (None, Some(from)) => {
                let field = from.field_ref.as_ref().unwrap_or_else(|| {
                    panic!("{}: only fieldRef sources are understood here", var.name)
                });
                field_ref_sample(&field.field_path, sts)
            }
            _ => panic!("{}: set either value or valueFrom", var.name),
        };
        env.push((var.name.clone(), value));
    }
    env
}

/// `$(NAME)` replaced by NAME's value in `env`; Err(NAME) when unset.
fn expand(text: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find(')').ok_or(text.to_string())? + start;
        let name = &rest[start + 2..end];
        let value = env.iter().rev().find(|(k, _)| k == name).ok_or(name)?;
        out.push_str(&value.1);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The node's configuration as `iarnet` builds it: the shipped default,
/// then `file`, then the image's environment, then `env`.
fn node_config(file: Option<&str>, env: &[(String, String)]) -> Result<Config, String> {
    let mut layers = Layers::default();
    layers
        .file(DEFAULT_CONFIG_YAML, Source::Default)
        .map_err(|e| e.to_string())?;
    if let Some(text) = file {
        layers.file(text, Source::File).map_err(|e| e.to_string())?;
    }
    let image = IMAGE_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()));
    layers.env(image.chain(env.iter().cloned()));
    Config::from_layers(&layers).map_err(|e| e.to_string())
}

/// The mount that holds `path` in the node container (the deepest one).
fn mount_of<'a>(
    c: &'a Container,
    path: &Path,
) -> Option<&'a k8s_openapi::api::core::v1::VolumeMount> {
    c.volume_mounts
        .iter()
        .flatten()
        .filter(|m| path.starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())
}

/// The text of the config file the pod reads, from the ConfigMap it mounts.
fn mounted_config(m: &Manifests) -> String {
    let sts = node_set(m);
    let env = container_env(sts);
    let path = env_value(&env, "IARNET_CONFIG").unwrap_or(IMAGE_CONFIG_PATH);
    let path = Path::new(path);
    let mount = mount_of(node_container(sts), path)
        .unwrap_or_else(|| panic!("nothing is mounted at {}", path.display()));
    let volume = pod_spec(sts)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("the pod has no volume {:?}", mount.name));
    let source = volume
        .config_map
        .as_ref()
        .unwrap_or_else(|| panic!("volume {:?} is not a ConfigMap", volume.name));
    // The file name inside the volume: the subPath, else the rest of the path.
    let file = match &mount.sub_path {
        Some(sub) => sub.clone(),
        None => path
            .strip_prefix(&mount.mount_path)
            .expect("the mount holds the path")
            .display()
            .to_string(),
    };
    let key = match &source.items {
        Some(items) => items
            .iter()
            .find(|i| i.path == file)
            .map(|i| i.key.clone())
            .unwrap_or_else(|| panic!("ConfigMap volume items put nothing at {file:?}")),
        None => file,
    };
    let cm = m
        .config_maps
        .iter()
        .find(|c| {
            name_of(&c.metadata) == source.name && c.metadata.namespace == sts.metadata.namespace
        })
        .unwrap_or_else(|| panic!("no ConfigMap {:?} beside the StatefulSet", source.name));
    cm.data
        .as_ref()
        .and_then(|d| d.get(&key))
        .unwrap_or_else(|| panic!("ConfigMap {:?} has no key {key:?}", source.name))
        .clone()
}

/// The configuration a node pod runs with.
fn pod_config(m: &Manifests) -> Config {
    let text = mounted_config(m);
    node_config(Some(&text), &container_env(node_set(m)))
        .unwrap_or_else(|e| panic!("the node pod's configuration is refused:\n{e}"))
}

fn headless_service(m: &Manifests) -> &Service {
    let sts = node_set(m);
    let name = sts.spec.service_name.as_deref().unwrap_or_default();
    m.services
        .iter()
        .find(|s| name_of(&s.metadata) == name && s.metadata.namespace == sts.metadata.namespace)
        .unwrap_or_else(|| panic!("StatefulSet serviceName {name:?} is not a Service beside it"))
}

fn port_of(addr: &str) -> u16 {
    let (_, port) = addr.rsplit_once(':').expect("HOST:PORT");
    port.parse().expect("a port number")
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').expect("HOST:PORT").0
}

fn probes(c: &Container) -> Vec<(&'static str, &Probe)> {
    [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ]
    .into_iter()
    .filter_map(|(n, p)| p.as_ref().map(|p| (n, p)))
    .collect()
}

// ---------------------------------------------------------------------------
// Kubernetes: parsing and layout.

#[test]
fn strict_parsing_refuses_a_misspelled_key() {
    let good = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": true}}"#;
    let bad = good.replace("publishNotReadyAddresses", "publishNotReadyAddress");
    let good: Json = serde_json::from_str(good).unwrap();
    let bad: Json = serde_json::from_str(&bad).unwrap();
    assert!(Manifests::default().add(good).is_ok());
    let err = Manifests::default().add(bad).unwrap_err();
    assert!(err.contains("spec.publishNotReadyAddress"), "{err}");
    let unknown =
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    assert!(Manifests::default().add(unknown).is_err());
}

#[test]
fn every_manifest_parses_strictly_and_is_listed() {
    let m = manifests();
    assert!(!m.documents.is_empty());
    let listed: BTreeSet<String> = kustomization_resources().into_iter().collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(k8s_dir())
        .expect("deploy/k8s exists")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|f| (f.ends_with(".yaml") || f.ends_with(".yml")) && f != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml must list every manifest in deploy/k8s"
    );
}

#[test]
fn every_object_sits_in_a_declared_namespace() {
    let m = manifests();
    let declared: BTreeSet<&str> = m.namespaces.iter().map(|n| name_of(&n.metadata)).collect();
    for doc in &m.documents {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let ns = doc["metadata"]["namespace"].as_str();
        let what = format!("{kind} {}", doc["metadata"]["name"]);
        if matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding") {
            assert_eq!(ns, None, "{what} is cluster-scoped");
        } else {
            // Set on every object, so nothing depends on kubectl's context.
            let ns = ns.unwrap_or_else(|| panic!("{what} has no namespace"));
            assert!(
                declared.contains(ns),
                "{what}: namespace {ns} is not declared"
            );
        }
    }
}

/// kustomize builds exactly the files, untouched (no namespace or label
/// rewriting, which would move the Role or change selectors).
#[test]
fn kustomize_builds_the_manifests_unchanged() {
    let out = match Command::new("kubectl")
        .arg("kustomize")
        .arg(k8s_dir())
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            println!("note: kubectl not runnable ({e}); kustomize build not checked");
            return;
        }
    };
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = |d: &Json| {
        let meta = &d["metadata"];
        format!("{}/{}/{}", d["kind"], meta["namespace"], meta["name"])
    };
    let mut built =
        documents(&String::from_utf8_lossy(&out.stdout)).expect("kustomize output is YAML");
    let mut files = manifests().documents;
    built.sort_by_key(key);
    files.sort_by_key(key);
    assert_eq!(built.len(), files.len());
    for (b, f) in built.iter().zip(&files) {
        assert_eq!(b, f, "kustomize changed {}", key(f));
    }
}

// ---------------------------------------------------------------------------
// Kubernetes: the node pods and what points at them.

#[test]
fn statefulset_runs_three_parallel_nodes_that_select_their_pods() {
    let m = manifests();
    let sts = node_set(&m);
    let spec = &sts.spec;
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        spec.selector.match_expressions, None,
        "select by labels only"
    );
    let selector = spec.selector.match_labels.as_ref().expect("matchLabels");
    assert!(
        selects(selector, pod_labels(sts)),
        "the selector does not match the pod labels"
    );
    for pdb in &m.disruption_budgets {
        let sel = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
        let labels = sel
            .and_then(|s| s.match_labels.as_ref())
            .expect("PDB matchLabels");
        assert!(
            selects(labels, pod_labels(sts)),
            "PDB {} selects no node pod",
            name_of(&pdb.metadata)
        );
    }
}

#[test]
fn headless_service_is_the_statefulsets_and_lists_unready_pods() {
    let m = manifests();
    let svc = headless_service(&m);
    let spec = svc.spec.as_ref().expect("a spec");
    assert_eq!(
        spec.cluster_ip.as_deref(),
        Some("None"),
        "the governing Service is headless"
    );
    // Nodes starting together must resolve each other before any is ready.
    assert_eq!(
        spec.publish_not_ready_addresses,
        Some(true),
        "the headless Service must publish not-ready pods"
    );
}

#[test]
fn services_select_node_pods_and_target_their_ports() {
    let m = manifests();
    let sts = node_set(&m);
    let c = node_container(sts);
    assert!(!m.services.is_empty());
    for svc in &m.services {
        let name = name_of(&svc.metadata);
        assert_eq!(
            svc.metadata.namespace, sts.metadata.namespace,
            "Service {name}"
        );
        let spec = svc.spec.as_ref().expect("a spec");
        let selector = spec.selector.as_ref().expect("a selector");
        assert!(
            selects(selector, pod_labels(sts)),
            "Service {name} selects no node pod"
        );
        let ports = spec.ports.as_deref().unwrap_or_default();
        assert!(!ports.is_empty(), "Service {name} has no ports");
        for p in ports {
            let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
            let cp = container_port(c, &target).unwrap_or_else(|| {
                panic!("Service {name}: targetPort {target:?} is no container port")
            });
            assert_eq!(
                p.protocol.as_deref().unwrap_or("TCP"),
                cp.protocol.as_deref().unwrap_or("TCP")
            );
        }
    }
}

#[test]
fn probes_ask_declared_ports() {
    let m = manifests();
    let c = node_container(node_set(&m));
    let found = probes(c);
    let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
    assert!(
        names.contains(&"livenessProbe") && names.contains(&"readinessProbe"),
        "{names:?}"
    );
    for (name, probe) in found {
        let port = match (&probe.grpc, &probe.http_get, &probe.tcp_socket) {
            (Some(g), None, None) => IntOrString::Int(g.port),
            (None, Some(h), None) => {
                let path = h.path.as_deref().unwrap_or("/");
                assert!(
                    HEALTH_PATHS.contains(&path),
                    "{name}: {path} is not a health endpoint"
                );
                h.port.clone()
            }
            (None, None, Some(t)) => t.port.clone(),
            _ => panic!("{name}: expected one grpc, httpGet or tcpSocket action"),
        };
        assert!(
            container_port(c, &port).is_some(),
            "{name}: port {port:?} is not declared"
        );
    }
}

#[test]
fn node_pod_runs_unprivileged_with_a_read_only_root() {
    let m = manifests();
    let sts = node_set(&m);
    let pod = pod_spec(sts);
    let c = node_container(sts);
    let psc = pod
        .security_context
        .as_ref()
        .expect("a pod securityContext");
    let csc = c
        .security_context
        .as_ref()
        .expect("a container securityContext");
    assert_eq!(csc.run_as_non_root.or(psc.run_as_non_root), Some(true));
    assert_eq!(csc.run_as_user.or(psc.run_as_user), Some(IMAGE_UID));
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    let seccomp = csc
        .seccomp_profile
        .as_ref()
        .or(psc.seccomp_profile.as_ref());
    assert_eq!(seccomp.map(|s| s.type_.as_str()), Some("RuntimeDefault"));
    let dropped = csc.capabilities.as_ref().and_then(|c| c.drop.as_ref());
    assert_eq!(dropped, Some(&vec!["ALL".to_string()]));
    let res = c.resources.as_ref().expect("resources");
    for (what, list) in [("requests", &res.requests), ("limits", &res.limits)] {
        let list = list.as_ref().unwrap_or_else(|| panic!("no {what}"));
        assert!(
            list.contains_key("cpu") && list.contains_key("memory"),
            "{what}: cpu and memory"
        );
    }
    // Every mount names a volume or a claim template.
    let claims = claim_names(sts);
    for mount in c.volume_mounts.iter().flatten() {
        let known = pod.volumes.iter().flatten().any(|v| v.name == mount.name)
            || claims.contains(&mount.name.as_str());
        assert!(known, "mount {} names no volume", mount.mount_path);
    }
}

#[test]
fn node_pod_configuration_is_valid_and_matches_the_objects() {
    let m = manifests();
    let sts = node_set(&m);
    let c = node_container(sts);
    let cfg = pod_config(&m);
    let grpc = named_port(c, "grpc");
    assert_eq!(cfg.mode, Mode::K8s);
    assert_eq!(
        cfg.peer_listen_addr.port(),
        grpc,
        "peer_listen_addr vs the grpc port"
    );
    assert_eq!(
        cfg.listen_addr.port(),
        named_port(c, "http"),
        "listen_addr vs the http port"
    );
    assert_eq!(
        cfg.advertise_addr.as_deref(),
        Some(format!("10.1.2.3:{grpc}").as_str())
    );
    assert_eq!(cfg.node_name, field_ref_sample("metadata.name", sts));

    // Every seed names the headless Service (or one of its pods) and the
    // port the pods listen on: headless DNS answers with pod IPs.
    let svc = headless_service(&m);
    let svc_name = name_of(&svc.metadata);
    let ns = namespace_of(&svc.metadata);
    assert!(!cfg.initial_peers.is_empty(), "the pods need seeds");
    for seed in &cfg.initial_peers {
        assert_eq!(port_of(seed), grpc, "seed {seed}");
        let mut labels: Vec<&str> = host_of(seed).split('.').collect();
        // A pod's own name: <statefulset>-<n>.<service>.<namespace>...
        if labels.len() > 1
            && labels[1] == svc_name
            && labels[0].starts_with(&format!("{}-", name_of(&sts.metadata)))
        {
            labels.remove(0);
        }
        let ok = labels.first() == Some(&svc_name)
            && (labels.len() == 1 || labels[1] == ns)
            && (labels.len() <= 2 || labels[2] == "svc");
        assert!(
            ok,
            "seed {seed} is not the headless Service {svc_name}.{ns}"
        );
    }

    // The node writes data_dir (its identity) and workspace_dir, and the
    // root is read-only: both sit on volumes, data_dir on a claim.
    let claims = claim_names(sts);
    for (key, dir) in [
        ("data_dir", &cfg.data_dir),
        ("workspace_dir", &cfg.workspace_dir),
    ] {
        assert!(
            dir.is_absolute(),
            "{key} {} must be absolute",
            dir.display()
        );
        let mount = mount_of(c, dir)
            .unwrap_or_else(|| panic!("{key} {} is on the read-only root", dir.display()));
        assert_ne!(mount.read_only, Some(true), "{key} is mounted read-only");
        if key == "data_dir" {
            assert!(
                claims.contains(&mount.name.as_str()),
                "data_dir is not on a volume claim"
            );
        }
    }

    // The pods go to a declared namespace other than the nodes' own.
    let workloads = &cfg.resources.k8s_namespace;
    assert!(
        m.namespaces
            .iter()
            .any(|n| name_of(&n.metadata) == workloads),
        "{workloads} is not declared"
    );
    assert_ne!(workloads, ns, "workload pods share the nodes' namespace");

    // Kubernetes waits for the node's own graceful shutdown.
    let grace = pod_spec(sts)
        .termination_grace_period_seconds
        .expect("a termination grace");
    assert!(
        Duration::from_secs(grace as u64) > cfg.shutdown_grace,
        "terminationGracePeriodSeconds {grace} must exceed shutdown_grace {:?}",
        cfg.shutdown_grace
    );
}

// ---------------------------------------------------------------------------
// Kubernetes: RBAC.

/// One permission the node's service account holds.
#[derive(Debug)]
struct Grant {
    group: String,
    resource: String,
    verb: String,
    /// None: cluster-wide; Some(ns): in that namespace.
    namespace: Option<String>,
    from: String,
}

fn rule_grants(rules: &[PolicyRule], namespace: Option<&str>, from: &str) -> Vec<Grant> {
    let mut out = Vec::new();
    for rule in rules {
        assert!(
            rule.api_groups.is_some(),
            "{from}: a rule without apiGroups"
        );
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{from}: the provider needs no resourceNames or nonResourceURLs"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    out.push(Grant {
                        group: group.clone(),
                        resource: resource.clone(),
                        verb: verb.clone(),
                        namespace: namespace.map(String::from),
                        from: from.to_string(),
                    });
                }
            }
        }
    }
    out
}

/// Everything the pod's service account may do, through every binding.
fn service_account_grants(m: &Manifests) -> Vec<Grant> {
    let sts = node_set(m);
    let sa = pod_spec(sts)
        .service_account_name
        .as_deref()
        .expect("serviceAccountName");
    let sa_ns = namespace_of(&sts.metadata);
    assert!(
        m.service_accounts
            .iter()
            .any(|s| name_of(&s.metadata) == sa && namespace_of(&s.metadata) == sa_ns),
        "ServiceAccount {sa_ns}/{sa} is not declared"
    );
    let is_ours = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(sa_ns)
        })
    };
    let cluster_role = |name: &str, from: &str| {
        m.cluster_roles
            .iter()
            .find(|r| name_of(&r.metadata) == name)
            .unwrap_or_else(|| panic!("{from}: no ClusterRole {name}"))
            .rules
            .clone()
            .unwrap_or_default()
    };
    let mut grants = Vec::new();
    for b in &m.role_bindings {
        let ns = namespace_of(&b.metadata);
        let from = format!("RoleBinding {ns}/{}", name_of(&b.metadata));
        let rules = match b.role_ref.kind.as_str() {
            "Role" => m
                .roles
                .iter()
                .find(|r| {
                    name_of(&r.metadata) == b.role_ref.name && namespace_of(&r.metadata) == ns
                })
                .unwrap_or_else(|| panic!("{from}: no Role {ns}/{}", b.role_ref.name))
                .rules
                .clone()
                .unwrap_or_default(),
            "ClusterRole" => cluster_role(&b.role_ref.name, &from),
            other => panic!("{from}: roleRef kind {other}"),
        };
        if is_ours(&b.subjects) {
            grants.extend(rule_grants(&rules, Some(ns), &from));
        }
    }
    for b in &m.cluster_role_bindings {
        let from = format!("ClusterRoleBinding {}", name_of(&b.metadata));
        assert_eq!(b.role_ref.kind, "ClusterRole", "{from}");
        let rules = cluster_role(&b.role_ref.name, &from);
        if is_ours(&b.subjects) {
            grants.extend(rule_grants(&rules, None, &from));
        }
    }
    grants
}

fn covers(g: &Grant, need: &Need, workloads: &str) -> bool {
    let any = |pattern: &str, value: &str| pattern == "*" || pattern == value;
    let scope_ok = match (need.scope, &g.namespace) {
        (_, None) => true,
        (Scope::Workloads, Some(ns)) => ns == workloads,
        (Scope::Cluster, Some(_)) => false,
    };
    any(&g.group, "") && any(&g.resource, need.resource) && any(&g.verb, need.verb) && scope_ok
}

#[test]
fn service_account_may_make_every_provider_call() {
    let m = manifests();
    let workloads = pod_config(&m).resources.k8s_namespace;
    let grants = service_account_grants(&m);
    for n in PROVIDER_CALLS {
        assert!(
            grants.iter().any(|g| covers(g, n, &workloads)),
            "nothing grants {} {} ({:?}, workloads in {workloads})",
            n.verb,
            n.resource,
            n.scope
        );
    }
}

#[test]
fn service_account_may_do_nothing_else() {
    let m = manifests();
    let workloads = pod_config(&m).resources.k8s_namespace;
    for g in service_account_grants(&m) {
        let what = format!("{}: {} {} in {:?}", g.from, g.verb, g.resource, g.namespace);
        assert!(
            g.group.is_empty(),
            "{what}: only the core API group is needed"
        );
        assert!(g.resource != "*" && g.verb != "*", "{what}: no wildcards");
        let scope = match &g.namespace {
            None => Scope::Cluster,
            Some(ns) if *ns == workloads => Scope::Workloads,
            Some(ns) => panic!("{what}: nothing is needed in namespace {ns}"),
        };
        let needed = PROVIDER_CALLS
            .iter()
            .any(|n| n.verb == g.verb && n.resource == g.resource && n.scope == scope);
        assert!(needed, "{what}: the provider does not need this");
    }
}

// ---------------------------------------------------------------------------
// Compose.

/// The Compose file, with `<<:` merges applied.
fn compose() -> Yaml {
    let mut doc: Yaml =
        serde_yaml_ng::from_str(&read(&compose_file())).expect("the compose file is YAML");
    doc.apply_merge().expect("merge keys apply");
    doc
}

fn compose_services(doc: &Yaml) -> BTreeMap<String, Yaml> {
    doc["services"]
        .as_mapping()
        .expect("a `services` mapping")
        .iter()
        .map(|(k, v)| (k.as_str().expect("service names").to_string(), v.clone()))
        .collect()
}

fn text(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("expected a plain value, got {other:?}"),
    }
}

fn texts(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(text).collect())
        .unwrap_or_default()
}

/// A service's `environment`, in either mapping or `KEY=VALUE` list form.
fn compose_env(svc: &Yaml) -> Vec<(String, String)> {
    match &svc["environment"] {
        Yaml::Mapping(map) => map.iter().map(|(k, v)| (text(k), text(v))).collect(),
        Yaml::Sequence(items) => items
            .iter()
            .map(|i| {
                let i = text(i);
                let (k, v) = i.split_once('=').unwrap_or((&i, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A service's volumes as (source, target), short or long syntax.
fn compose_mounts(svc: &Yaml) -> Vec<(String, String)> {
    let items = svc["volumes"].as_sequence().cloned().unwrap_or_default();
    items
        .iter()
        .map(|v| match v {
            Yaml::Mapping(_) => (text(&v["source"]), text(&v["target"])),
            short => {
                let parts: Vec<String> = text(short).split(':').map(String::from).collect();
                assert!(parts.len() >= 2, "volume {parts:?}: SOURCE:TARGET");
                (parts[0].clone(), parts[1].clone())
            }
        })
        .collect()
}

fn compose_config(name: &str, svc: &Yaml) -> Config {
    node_config(None, &compose_env(svc))
        .unwrap_or_else(|e| panic!("{name}: its configuration is refused:\n{e}"))
}

#[test]
fn compose_nodes_seed_each_other_by_service_name() {
    let services = compose_services(&compose());
    assert!(services.len() >= 3, "a mesh of at least three nodes");
    let mut edges: Vec<(String, String)> = Vec::new();
    for (name, svc) in &services {
        assert_eq!(
            text(&svc["image"]),
            "${IARNET_IMAGE:-iarnet:latest}",
            "{name}"
        );
        let cfg = compose_config(name, svc);
        let port = cfg.peer_listen_addr.port();
        assert_eq!(
            cfg.advertise_addr,
            Some(format!("{name}:{port}")),
            "{name} advertises its service name"
        );
        assert_eq!(cfg.node_name, *name);
        assert!(!cfg.initial_peers.is_empty(), "{name} has no seeds");
        for seed in &cfg.initial_peers {
            let host = host_of(seed);
            assert_ne!(host, name, "{name} seeds itself");
            let peer = services
                .get(host)
                .unwrap_or_else(|| panic!("{name}: seed {seed} is no service"));
            let peer_port = compose_config(host, peer).peer_listen_addr.port();
            assert_eq!(
                port_of(seed),
                peer_port,
                "{name}: seed {seed} misses {host}'s port"
            );
            edges.push((name.clone(), host.to_string()));
        }
    }
    // Gossip spreads over any seed link, so the seed graph must be connected.
    let first = services.keys().next().expect("a service").clone();
    let mut reached = BTreeSet::from([first]);
    loop {
        let before = reached.len();
        for (a, b) in &edges {
            if reached.contains(a) || reached.contains(b) {
                reached.insert(a.clone());
                reached.insert(b.clone());
            }
        }
        if reached.len() == before {
            break;
        }
    }
    assert_eq!(
        reached.len(),
        services.len(),
        "seeds split the mesh: {edges:?}"
    );
}

#[test]
fn compose_nodes_reach_docker_and_keep_their_identity() {
    let doc = compose();
    let declared: BTreeSet<String> = doc["volumes"]
        .as_mapping()
        .map(|m| m.keys().map(text).collect())
        .unwrap_or_default();
    let mut used = BTreeSet::new();
    for (name, svc) in compose_services(&doc) {
        let mounts = compose_mounts(&svc);
        let socket = "/var/run/docker.sock".to_string();
        assert!(
            mounts.contains(&(socket.clone(), socket)),
            "{name}: the Docker socket is not mounted"
        );
        // The node is not root: it reaches the socket through its group.
        let groups = texts(&svc["group_add"]);
        assert!(
            groups.iter().any(|g| g.starts_with("${DOCKER_GID")),
            "{name}: group_add {groups:?}"
        );

        // data_dir (the node id) on a named volume of its own.
        let cfg = compose_config(&name, &svc);
        let (volume, target) = mounts
            .iter()
            .filter(|(_, t)| cfg.data_dir.starts_with(t))
            .max_by_key(|(_, t)| t.len())
            .unwrap_or_else(|| {
                panic!(
                    "{name}: data_dir {} is on no volume",
                    cfg.data_dir.display()
                )
            });
        assert!(
            declared.contains(volume),
            "{name}: {volume} is not a named volume"
        );
        assert!(
            IMAGE_USER_DIRS.contains(&target.as_str()),
            "{name}: a fresh volume on {target} is root's, not the node's"
        );
        assert!(used.insert(volume.clone()), "{name} shares volume {volume}");

        let health = texts(&svc["healthcheck"]["test"]);
        assert_eq!(health, ["CMD", IMAGE_BINARY, "health"], "{name}");
        let grace = humantime::parse_duration(&text(&svc["stop_grace_period"]))
            .unwrap_or_else(|e| panic!("{name}: stop_grace_period: {e}"));
        assert!(
            grace > cfg.shutdown_grace,
            "{name}: stop_grace_period must exceed shutdown_grace"
        );
    }
}

#[test]
fn compose_publishes_the_first_nodes_apis() {
    let services = compose_services(&compose());
    let (name, node) = services.iter().next().expect("a service");
    let cfg = compose_config(name, node);
    let published: Vec<u16> = texts(&node["ports"])
        .iter()
        .map(|p| {
            let container = p.rsplit(':').next().expect("a port");
            container
                .split('/')
                .next()
                .unwrap()
                .parse()
                .expect("a container port")
        })
        .collect();
    for port in [cfg.peer_listen_addr.port(), cfg.listen_addr.port()] {
        assert!(
            published.contains(&port),
            "{name} does not publish {port}: {published:?}"
        );
    }
}

/// The health check runs a subcommand this build of `iarnet` has.
#[test]
fn compose_health_check_is_an_iarnet_command() {
    for (name, svc) in compose_services(&compose()) {
        let test = texts(&svc["healthcheck"]["test"]);
        assert!(
            test.len() > 2 && test[0] == "CMD" && test[1] == IMAGE_BINARY,
            "{name}: health check {test:?} does not run {IMAGE_BINARY}"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_iarnet"))
            .args(&test[2..])
            .arg("--help")
            .output()
            .expect("run iarnet");
        assert!(
            out.status.success(),
            "{name}: `iarnet {}` is not a command: {}",
            test[2..].join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn docker_compose_accepts_the_file() {
    let run = Command::new("docker-compose")
        .arg("-f")
        .arg(compose_file())
        .args(["config", "-q"])
        .current_dir(repo())
        .output();
    match run {
        Err(e) => println!("note: docker-compose not runnable ({e}); compose syntax not checked"),
        Ok(out) => assert!(
            out.status.success(),
            "docker-compose config refused the file: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

// ---------------------------------------------------------------------------
// The image.

#[test]
fn image_facts_match_the_dockerfile() {
    let dockerfile = read(&repo().join("Dockerfile"));
    let mut facts = vec![
        format!("ENTRYPOINT [\"{IMAGE_BINARY}\"]"),
        format!("USER {IMAGE_UID}:{IMAGE_UID}"),
        format!("chown -R {IMAGE_UID}:{IMAGE_UID} /var/lib/iarnet"),
        // Compose runs on the config baked into the image: the shipped one.
        format!("COPY config.yaml {IMAGE_CONFIG_PATH}"),
    ];
    facts.extend(IMAGE_ENV.iter().map(|(k, v)| format!("{k}={v}")));
    for fact in facts {
        assert!(
            dockerfile.contains(&fact),
            "the Dockerfile no longer says {fact:?}"
        );
    }
    let mkdirs: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.contains("mkdir -p"))
        .flat_map(str::split_whitespace)
        .map(|w| w.trim_end_matches(';'))
        .collect();
    for dir in IMAGE_USER_DIRS {
        assert!(
            mkdirs.contains(dir),
            "the Dockerfile no longer creates {dir}"
        );
        assert!(
            dir.starts_with("/var/lib/iarnet/"),
            "{dir} is not under the chown"
        );
    }
}
