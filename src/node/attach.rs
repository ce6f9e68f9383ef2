//! Start-up, phase two: the resource manager and its providers — the
//! internal one `mode` finds (or the ones given), the configured external
//! ones, those registered before a restart — then reconcile what the store
//! says with what runs, before anything is served.

use std::sync::Arc;

use tracing::{info, warn, Instrument};

use super::discovery::NodeDiscovery;
use super::prepare::Prepared;
use super::providers::{connect_external, detect_internal, ProviderSetup};
use super::{registered, NodeError};
use crate::placement::Manager;
use crate::resource::Tier;
use crate::store::Store;

/// Keeps placement's random choices apart from the mesh's, from one seed.
const PLACEMENT_SEED_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

pub async fn attach(
    p: &Prepared,
    setup: ProviderSetup,
    store: Arc<dyn Store>,
) -> Result<Arc<Manager>, NodeError> {
    let shared = &p.shared;
    let id = shared.mesh().id().to_string();
    let config = &shared.config;
    let manager = Arc::new(
        Manager::open(
            &id,
            Arc::new(NodeDiscovery {
                shared: shared.clone(),
            }),
            config.resources.strategy,
            config.resources.allow_remote_access,
            p.rng_seed ^ PLACEMENT_SEED_SALT,
            store.clone(),
        )
        .map_err(|e| NodeError::store(config, e))?,
    );
    let internal = match setup {
        ProviderSetup::Detect => detect_internal(config, &id).await.into_iter().collect(),
        ProviderSetup::Given(list) => list,
    };
    for provider in internal {
        if let Err(e) = manager.add_provider(provider, Tier::Internal).await {
            warn!(parent: &p.span, error = %e, "internal provider left out");
        }
    }
    for ext in &config.resources.external {
        let added = match connect_external(&id, &ext.target()).await {
            Ok(provider) => manager
                .add_provider(provider, Tier::External)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = added {
            warn!(parent: &p.span, name = %ext.name, error = %e, "external provider left out");
        }
    }
    registered::reconnect(&manager, &*store)
        .instrument(p.span.clone())
        .await;
    let reconciled = manager.reconcile().await;
    info!(parent: &p.span, adopted = reconciled.adopted.len(), missing = reconciled.resolved_missing.len(), updated = reconciled.updated.len(), "deployments reconciled with the providers");
    Ok(manager)
}
