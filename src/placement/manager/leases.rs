//! Leases, the owner's side and the surfaces' side. The lease worker of an
//! owner: one loop that sleeps until the next expiry (or until a grant or
//! renewal moves it), renews what asked to be renewed by itself, and stops
//! what ran out, so the capacity comes back, gossip carries it, and queued
//! deploys anywhere in the mesh take it. And `RenewLease` / `ReleaseLease`
//! from any node that knows the deployment: forwarded to the owner.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Manager;
use crate::lifecycle::lease::LeaseEvent;
use crate::placement::leases::Leases;
use crate::resource::{Deployment, ResourceError};
use crate::store::now_ms;

/// The longest the worker sleeps: ended leases are pruned, and stops that
/// failed are tried again, at least this often.
const IDLE_WAKE: Duration = Duration::from_secs(5);

impl Manager {
    /// Runs the lease worker until `cancel`.
    pub async fn run_leases(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let wait = self
                .leases
                .next_expiry()
                .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
                .unwrap_or(IDLE_WAKE)
                .min(IDLE_WAKE);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = self.leases.woken() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            self.leases_due().await;
            self.leases.prune(now_ms()).await;
        }
    }

    /// Renews or ends every lease that is due, and stops what ended.
    pub(crate) async fn leases_due(&self) {
        for id in self.leases.due(now_ms()) {
            let event = {
                let _held = self.leases.lock(&id).await;
                match self.leases.tick(&id, now_ms()).await {
                    Ok(e) => e,
                    Err(e) => {
                        warn!(deployment = %id, error = %e, "cannot record a lease change; tried again soon");
                        continue;
                    }
                }
            };
            match event {
                Some(LeaseEvent::AutoRenewed) => {
                    info!(deployment = %id, "lease renewed by its owner (auto_renew)");
                }
                // Expired now, or ended before and its stop failed.
                Some(LeaseEvent::Expired) | None => self.stop_ended(&id).await,
            }
        }
    }

    /// Stops a deployment whose lease ended, and lets its capacity go.
    async fn stop_ended(&self, id: &str) {
        let Some(rec) = self.leases.get(id) else {
            return;
        };
        if rec.stopped_ms.is_some() || rec.lease.state == crate::resource::LeaseState::Active {
            return;
        }
        let Some((p, _)) = self.registry.local(&rec.provider_id) else {
            // Its provider was unregistered: nothing runs there any more.
            let _held = self.leases.lock(id).await;
            if let Err(e) = self.leases.stopped(id, None).await {
                warn!(deployment = %id, error = %e, "cannot record a lease's end");
            }
            return;
        };
        match p.stop(id).await {
            Ok(d) => {
                info!(deployment = %id, provider = %rec.provider_id, "lease ended: deployment stopped, resources freed");
                self.registry.changed(&*p).await;
                self.note(&d).await;
            }
            Err(ResourceError::NotFound(_)) => {}
            Err(e) => {
                warn!(deployment = %id, error = %e, "cannot stop a deployment whose lease ended; tried again soon")
            }
        }
    }

    /// One more lease TTL for deployment `id` (a deployment id or request
    /// id), from its owner wherever that is.
    pub async fn renew_lease(
        &self,
        id: &str,
        epoch: Option<u64>,
    ) -> Result<(Deployment, String), ResourceError> {
        let f = self.book.find(&self.registry, id).await?;
        let d = f.provider.renew_lease(&f.id, epoch).await?;
        Ok((d, f.owner))
    }

    /// Ends deployment `id`'s lease now; its owner stops it.
    pub async fn release_lease(
        &self,
        id: &str,
        epoch: Option<u64>,
    ) -> Result<(Deployment, String), ResourceError> {
        let f = self.book.find(&self.registry, id).await?;
        let d = f.provider.release_lease(&f.id, epoch).await?;
        if f.owner == self.node_id {
            self.registry.changed(&*f.provider).await;
        }
        self.note(&d).await;
        Ok((d, f.owner))
    }

    /// The leases this node keeps as an owner.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
