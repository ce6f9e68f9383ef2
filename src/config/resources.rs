//! The resource plane's keys: allow_remote_access, `placement.*`,
//! `docker.*`, `kubernetes.*` and external_providers.

use super::hint;
use super::parser::Parser;
use super::Key;
use crate::placement::rank::STRATEGIES;
use crate::placement::Strategy;
use crate::resource::ProviderTarget;

pub(super) const ALLOW_REMOTE_ACCESS: Key = Key::new(
    "allow_remote_access",
    "true",
    "offer this node's providers to other nodes (CallProvider)",
)
.env("IARNET_ALLOW_REMOTE_ACCESS");
pub(super) const STRATEGY: Key = Key::new(
    "placement.strategy",
    "spread",
    "default ranking among feasible providers",
)
.env("IARNET_PLACEMENT_STRATEGY");
pub(super) const REGION: Key = Key::new(
    "placement.region",
    "",
    "region label of this node's providers",
)
.env("IARNET_REGION");
pub(super) const ZONE: Key =
    Key::new("placement.zone", "", "zone label of this node's providers").env("IARNET_ZONE");
pub(super) const DOCKER_HOST: Key = Key::new(
    "docker.host",
    "",
    "the engine of the internal Docker provider",
)
.env("IARNET_DOCKER_HOST")
.derived("DOCKER_HOST or the local socket");
pub(super) const EXTERNAL_PROVIDERS: Key = Key::new(
    "external_providers",
    "",
    "Docker hosts and clusters offered as external providers",
)
.env("IARNET_EXTERNAL_PROVIDERS")
.list();
pub(super) const K8S_NAMESPACE: Key = Key::new(
    "kubernetes.namespace",
    "default",
    "namespace of the pods the internal Kubernetes provider creates",
)
.env("IARNET_K8S_NAMESPACE");

pub(super) const KEYS: &[Key] = &[
    ALLOW_REMOTE_ACCESS,
    STRATEGY,
    REGION,
    ZONE,
    DOCKER_HOST,
    EXTERNAL_PROVIDERS,
    K8S_NAMESPACE,
];

/// The resource plane's settings. Each field names its key; the key's
/// default is in [`KEYS`] above.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceConfig {
    /// `allow_remote_access`: offer this node's providers to other nodes.
    /// Off: nothing is advertised and CallProvider is refused.
    pub allow_remote_access: bool,
    /// `placement.strategy`: the default ranking.
    pub strategy: Strategy,
    /// `placement.region` / `placement.zone`: labels of this node's providers.
    pub region: Option<String>,
    pub zone: Option<String>,
    /// `docker.host`: the engine to use (unset: `DOCKER_HOST`, else the local socket).
    pub docker_host: Option<String>,
    /// `kubernetes.namespace`: where pods are created.
    pub k8s_namespace: String,
    /// `external_providers`: hosts and clusters registered at start.
    pub external: Vec<ExternalProvider>,
}

/// One `external_providers` entry: `docker NAME tcp://HOST:PORT` or
/// `k8s NAME /path/to/kubeconfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalProvider {
    pub kind: String,
    pub name: String,
    /// The engine URL (docker) or kubeconfig path (k8s).
    pub target: String,
}

impl ExternalProvider {
    /// The provider target this entry stands for.
    pub fn target(&self) -> ProviderTarget {
        let mut t = ProviderTarget {
            kind: self.kind.clone(),
            name: self.name.clone(),
            ..ProviderTarget::default()
        };
        if self.kind == "k8s" {
            t.kubeconfig_path = self.target.clone();
        } else {
            t.endpoint = self.target.clone();
        }
        t
    }
}

impl Parser<'_> {
    pub(super) fn resources(&mut self) -> ResourceConfig {
        ResourceConfig {
            allow_remote_access: self.boolean(&ALLOW_REMOTE_ACCESS),
            strategy: self.strategy(),
            region: self.opt_scalar(&REGION),
            zone: self.opt_scalar(&ZONE),
            docker_host: self.opt_scalar(&DOCKER_HOST),
            k8s_namespace: self.scalar(&K8S_NAMESPACE),
            external: self.externals(),
        }
    }

    fn strategy(&mut self) -> Strategy {
        let text = self.scalar(&STRATEGY);
        Strategy::parse(&text).unwrap_or_else(|why| {
            // The hint is built from the names placement lists, so a new
            // strategy needs no change here.
            let names = STRATEGIES.split(',').map(str::trim);
            let hint = hint::did_you_mean(&text.trim().to_ascii_lowercase(), names);
            self.fail(STRATEGY.name, &text, format!("{why}{hint}"));
            Strategy::default()
        })
    }

    fn externals(&mut self) -> Vec<ExternalProvider> {
        let mut out: Vec<ExternalProvider> = Vec::new();
        for entry in self.list(&EXTERNAL_PROVIDERS) {
            let parts: Vec<&str> = entry.split_whitespace().collect();
            let ok_name = |n: &str| {
                !n.is_empty()
                    && n.len() <= 63
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            };
            match parts.as_slice() {
                [kind @ ("docker" | "k8s"), name, target] if ok_name(name) => {
                    if out.iter().any(|e| e.name == *name) {
                        self.fail(EXTERNAL_PROVIDERS.name, &entry, "two providers with the same name");
                        continue;
                    }
                    out.push(ExternalProvider {
                        kind: kind.to_string(),
                        name: name.to_string(),
                        target: target.to_string(),
                    });
                }
                _ => self.fail(
                    EXTERNAL_PROVIDERS.name,
                    &entry,
                    "each entry is \"docker NAME tcp://HOST:PORT\" or \"k8s NAME /path/to/kubeconfig\" (NAME: letters, digits, '-', '_', '.')",
                ),
            }
        }
        out
    }
}
