//! Reaching a cluster (in-cluster, kubeconfig, token) and what kube's
//! errors mean for the resource plane.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tracing::info;

use super::{KubeSettings, KubernetesProvider};
use crate::resource::error::ResourceError;

/// How long connecting waits for the API server to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl KubernetesProvider {
    /// The cluster this process runs in, through its service account.
    pub async fn connect_in_cluster(
        settings: KubeSettings,
    ) -> Result<KubernetesProvider, ResourceError> {
        let config = Config::incluster().map_err(|e| ResourceError::Unavailable {
            provider: settings.id.clone(),
            reason: format!("not running in a Kubernetes cluster (service account and KUBERNETES_SERVICE_HOST expected): {e}"),
        })?;
        KubernetesProvider::connect(config, settings).await
    }

    /// The cluster of the current context of the kubeconfig at `path`.
    pub async fn connect_kubeconfig(
        path: impl AsRef<Path>,
        settings: KubeSettings,
    ) -> Result<KubernetesProvider, ResourceError> {
        let path = path.as_ref();
        let unavailable = |e: &dyn fmt::Display| ResourceError::Unavailable {
            provider: settings.id.clone(),
            reason: format!("cannot use kubeconfig {}: {e}", path.display()),
        };
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| unavailable(&e))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| unavailable(&e))?;
        KubernetesProvider::connect(config, settings).await
    }

    /// The cluster whose API server is at `api_url`, with a bearer `token`
    /// (a service-account token an operator registered). The server's
    /// certificate is checked against the system's roots; use a kubeconfig
    /// for a cluster with its own CA. The token is never logged.
    pub async fn connect_token(
        api_url: &str,
        token: &str,
        settings: KubeSettings,
    ) -> Result<KubernetesProvider, ResourceError> {
        let bad = || {
            ResourceError::invalid(
                "api_url",
                format!("{api_url:?} is not a URL such as \"https://10.0.0.1:6443\""),
            )
        };
        let mut config = Config::new(api_url.parse().map_err(|_| bad())?);
        if config.cluster_url.scheme().is_none() || config.cluster_url.host().is_none() {
            return Err(bad());
        }
        config.auth_info.token = Some(token.into());
        KubernetesProvider::connect(config, settings).await
    }

    /// Builds a client from `config` and checks that the API server answers.
    async fn connect(
        config: Config,
        settings: KubeSettings,
    ) -> Result<KubernetesProvider, ResourceError> {
        let endpoint = config.cluster_url.to_string();
        let id = settings.id.clone();
        let unavailable = move |reason: String| ResourceError::Unavailable {
            provider: id.clone(),
            reason,
        };
        // Building the TLS stack panics when rustls has no crypto provider
        // compiled in; that is a build problem, reported instead of crashing.
        let client = match std::panic::catch_unwind(AssertUnwindSafe(|| Client::try_from(config)))
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(unavailable(format!(
                    "cannot set up a client for {endpoint}: {e}"
                )))
            }
            Err(_) => {
                return Err(unavailable(format!(
                    "cannot set up TLS for {endpoint}: no TLS crypto provider is built in (kube needs its `ring` or `aws-lc-rs` feature)"
                )))
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
            Ok(Ok(version)) => {
                info!(provider = %settings.id, %endpoint, version = %version.git_version, "connected to Kubernetes");
            }
            Ok(Err(e)) => {
                // A refused identity says more than "unavailable"; anything
                // else means there is no usable API server at `endpoint`.
                let provider = KubernetesProvider::with_endpoint(client, settings, endpoint);
                return Err(match provider.error(e, None) {
                    denied @ ResourceError::PermissionDenied(_) => denied,
                    e @ ResourceError::Unavailable { .. } => e,
                    other => unavailable(format!(
                        "no usable Kubernetes API at {}: {other}",
                        provider.endpoint
                    )),
                });
            }
            Err(_) => {
                return Err(unavailable(format!(
                    "the Kubernetes API at {endpoint} did not answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
        }
        Ok(KubernetesProvider::with_endpoint(client, settings, endpoint).started())
    }

    /// Maps a kube error; `deployment` names the pod a 404 is about.
    pub(super) fn error(&self, e: kube::Error, deployment: Option<&str>) -> ResourceError {
        let provider = self.settings.id.clone();
        let endpoint = &self.endpoint;
        match e {
            kube::Error::Api(s) => {
                let code = match (s.code, s.reason.as_str()) {
                    (0, "NotFound") => 404,
                    (0, "Forbidden") => 403,
                    (0, "Unauthorized") => 401,
                    (0, "AlreadyExists" | "Conflict") => 409,
                    (0, "Invalid") => 422,
                    (0, "BadRequest") => 400,
                    (code, _) => code,
                };
                match code {
                    404 => match deployment {
                        Some(id) => self.not_found(id),
                        None => ResourceError::NotFound(format!(
                            "provider {provider}: not found at {endpoint}: {}",
                            s.message
                        )),
                    },
                    401 | 403 => ResourceError::PermissionDenied(format!(
                        "provider {provider}: the Kubernetes API at {endpoint} refused: {} (iarnet needs list on nodes, list on pods in all namespaces, and create/get/list/watch/delete on pods and get on pods/log in namespace {})",
                        s.message, self.settings.namespace
                    )),
                    400 | 422 => ResourceError::InvalidSpec {
                        field: s
                            .details
                            .as_ref()
                            .and_then(|d| d.causes.iter().find(|c| !c.field.is_empty()))
                            .map_or_else(|| "pod".to_string(), |c| c.field.clone()),
                        reason: s.message.clone(),
                    },
                    429 | 502 | 503 | 504 => ResourceError::Unavailable {
                        provider,
                        reason: format!("the Kubernetes API at {endpoint} answered {code}: {}", s.message),
                    },
                    _ => ResourceError::Backend(format!(
                        "provider {provider}: the Kubernetes API at {endpoint} answered {code} {}: {}",
                        s.reason, s.message
                    )),
                }
            }
            kube::Error::HyperError(_) | kube::Error::Service(_) => ResourceError::Unavailable {
                provider,
                reason: format!("cannot reach the Kubernetes API at {endpoint}: {e}"),
            },
            kube::Error::Auth(_) => ResourceError::PermissionDenied(format!(
                "provider {provider}: cannot authenticate to the Kubernetes API at {endpoint}: {e}"
            )),
            other => ResourceError::Backend(format!(
                "provider {provider}: Kubernetes API at {endpoint}: {other}"
            )),
        }
    }
}
