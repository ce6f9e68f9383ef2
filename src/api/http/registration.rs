//! The body of `POST /resource/providers`, in the original API's shape
//! (`host` and `port`, or `endpoint`; a `config` block), checked and
//! turned into the gRPC registration.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{bad_request, ApiError};
use crate::proto::resource as pb;

/// `POST /resource/providers`: `endpoint`, or `host` and `port` as in the
/// original API; a kubeconfig is named by its path on the node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    token: String,
    #[serde(default)]
    kubeconfig_path: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    tls_ca: String,
    #[serde(default)]
    tls_cert: String,
    #[serde(default)]
    tls_key: String,
    #[serde(default)]
    max_deployments: Option<u32>,
    #[serde(default)]
    config: Option<RegistrationConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrationConfig {
    #[serde(default)]
    kubeconfig: Option<String>,
    #[serde(default)]
    kubeconfig_path: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

impl Registration {
    pub fn into_request(self) -> Result<pb::RegisterProviderRequest, ApiError> {
        let mut endpoint = self.endpoint;
        if !self.host.is_empty() {
            if !endpoint.is_empty() {
                return Err(bad_request(
                    "give either endpoint or host and port, not both".into(),
                ));
            }
            let port = self
                .port
                .ok_or_else(|| bad_request("port is missing: host needs a port".into()))?;
            let scheme = if self.kind == "docker" {
                "tcp"
            } else {
                "https"
            };
            endpoint = format!("{scheme}://{}:{port}", self.host);
        }
        if self.max_deployments == Some(0) {
            return Err(bad_request(
                "max_deployments: must be at least 1 (leave it out for no limit)".into(),
            ));
        }
        let mut kubeconfig_path = self.kubeconfig_path;
        if let Some(cfg) = self.config {
            if cfg.kubeconfig.is_some() {
                return Err(bad_request(
                    "config.kubeconfig: inline kubeconfigs are not accepted (they would carry credentials through logs and proxies); put the file on the node and give config.kubeconfig_path".into(),
                ));
            }
            if cfg.namespace.is_some() {
                return Err(bad_request(
                    "config.namespace: an external cluster uses its kubeconfig's namespace; set kubernetes.namespace for the internal one".into(),
                ));
            }
            if let Some(p) = cfg.kubeconfig_path {
                kubeconfig_path = p;
            }
        }
        Ok(pb::RegisterProviderRequest {
            r#type: self.kind,
            name: self.name,
            endpoint,
            token: self.token,
            kubeconfig_path,
            labels: self.labels.into_iter().collect(),
            tls_ca: self.tls_ca,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            max_deployments: self.max_deployments.unwrap_or(0),
        })
    }
}
