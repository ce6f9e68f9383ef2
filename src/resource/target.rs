//! What an operator asks a node to connect to as an external provider,
//! whether it comes from `external_providers` in the configuration, from
//! `RegisterProvider`, or from the store at start.

use std::collections::BTreeMap;
use std::fmt;

use super::types::ProviderKind;

/// Where a provider is and how to reach it. `kind` stays as given so the
/// connect step can name a wrong one in its error.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProviderTarget {
    /// `docker` or `k8s`.
    pub kind: String,
    /// Becomes the provider id's second half (`<node>/<name>`).
    pub name: String,
    /// A Docker engine URL, or a Kubernetes API server URL with `token`.
    pub endpoint: String,
    /// For a Docker engine over TLS: all three files, or none.
    pub tls_ca: String,
    pub tls_cert: String,
    pub tls_key: String,
    /// A Kubernetes bearer token; never logged, gossiped or stored.
    pub token: String,
    /// A kubeconfig file on this node.
    pub kubeconfig_path: String,
    pub labels: BTreeMap<String, String>,
    /// The most deployments it runs at once; None is no limit.
    pub max_deployments: Option<u32>,
}

impl ProviderTarget {
    pub fn kind(&self) -> Option<ProviderKind> {
        ProviderKind::parse(&self.kind)
    }
}

impl fmt::Debug for ProviderTarget {
    // The token never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderTarget")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("tls", &!self.tls_ca.is_empty())
            .field("token", &(!self.token.is_empty()).then_some("<redacted>"))
            .field("kubeconfig_path", &self.kubeconfig_path)
            .field("labels", &self.labels)
            .field("max_deployments", &self.max_deployments)
            .finish()
    }
}
