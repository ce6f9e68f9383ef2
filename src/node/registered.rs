//! External providers an operator registered through the API, connected
//! again at start from their stored references.
//!
//! Only references are stored, never credentials, so only what needs none
//! comes back by itself: a Docker engine on a plain `tcp://` or `unix://`
//! endpoint. A Kubernetes cluster (token) or a Docker engine over TLS is
//! logged and must be registered again.

use tracing::{info, warn};

use super::providers::connect_external;
use crate::placement::Manager;
use crate::resource::{ProviderTarget, Tier};
use crate::store::Store;

pub async fn reconnect(manager: &Manager, store: &dyn Store) {
    let stored = match store.providers() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot read registered providers");
            return;
        }
    };
    let present: Vec<String> = manager.candidates().into_iter().map(|c| c.id).collect();
    for rec in stored {
        if present.contains(&rec.id) {
            continue;
        }
        let plain_docker = rec.kind == "docker"
            && (rec.endpoint.starts_with("tcp://") || rec.endpoint.starts_with("unix://"));
        if !plain_docker {
            warn!(provider = %rec.id, kind = %rec.kind, "registered provider needs credentials the store does not keep; register it again");
            continue;
        }
        let mut labels = rec.labels.clone();
        labels.remove(crate::resource::labels::EXTERNAL);
        let req = ProviderTarget {
            kind: rec.kind.clone(),
            name: rec.name.clone(),
            endpoint: rec.endpoint.clone(),
            labels,
            max_deployments: rec.max_deployments,
            ..ProviderTarget::default()
        };
        let added = match connect_external(manager.node_id(), &req).await {
            Ok(p) => manager.add_provider(p, Tier::External).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match added {
            Ok(()) => info!(provider = %rec.id, "registered provider connected again"),
            Err(e) => warn!(provider = %rec.id, error = %e, "registered provider left out"),
        }
    }
}
