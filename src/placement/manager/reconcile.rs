//! Start-up reconcile: the records the store kept against what this node's
//! own providers actually run.
//!
//! - a container with no record is adopted: a record is made, flagged
//!   `adopted`, and logged;
//! - a record left `Placing` by a crash takes the container's state when
//!   one exists, else fails as "node restarted before the container was
//!   created" so that a retry with the same request id makes it once;
//! - a record left `Stopping` becomes `Stopped` when the container is gone,
//!   and takes the container's state when it still runs (the stop was
//!   never acknowledged);
//! - a record whose container vanished fails as lost; its history stays.
//!
//! Providers rebuild their own reservations from what they list (Docker
//! from container labels), so after reconcile the records, the containers
//! and the reservations agree.

use std::collections::HashMap;

use tracing::{info, warn};

use super::Manager;
use crate::placement::book::placed_on;
use crate::resource::Deployment;
use crate::store::{DeploymentRecord, Stored};

/// What reconcile changed, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Containers taken in without a record.
    pub adopted: Vec<String>,
    /// Records whose container was gone, now failed or stopped.
    pub resolved_missing: Vec<String>,
    /// Records brought up to date with their container's state.
    pub updated: Vec<String>,
}

pub const NOT_CREATED: &str = "node restarted before the container was created";
pub const LOST: &str = "lost: the container vanished while the node was down";

impl Manager {
    /// Brings the records in line with this node's own providers. Run once
    /// at start, after the providers are added and before serving.
    pub async fn reconcile(&self) -> Reconciled {
        let locals = self.registry.local_candidates();
        let mut out = Reconciled::default();
        for (p, c) in locals {
            let listed = match p.list().await {
                Ok(l) => l,
                Err(e) => {
                    warn!(provider = %c.id, error = %e, "cannot list deployments; its records are left as they are");
                    continue;
                }
            };
            let running: HashMap<String, Deployment> =
                listed.into_iter().map(|d| (d.id.clone(), d)).collect();
            let mine: Vec<DeploymentRecord> = self.book.select(|r| {
                r.placed_on.provider_id == c.id && r.placed_on.owner_id == self.node_id
            });
            for rec in mine {
                let seen = running.get(&rec.id);
                self.settle(rec, seen, &mut out).await;
            }
            for (id, d) in &running {
                if self.book.contains(id) {
                    continue;
                }
                let _held = self.inflight.lock(&d.request_id).await;
                let mut rec = DeploymentRecord::new(id, &d.request_id, &d.image, placed_on(&c));
                rec.adopted = true;
                rec.set_resources(d.resources);
                rec.observe(d);
                match self.book.persist(&rec).await {
                    Ok(()) => {
                        info!(deployment = %id, request = %d.request_id, provider = %c.id, state = %d.state(), "adopted a container the store did not know");
                        out.adopted.push(id.clone());
                    }
                    Err(e) => {
                        warn!(deployment = %id, error = %e, "cannot record an adopted container")
                    }
                }
            }
        }
        out.adopted.sort();
        out.resolved_missing.sort();
        out.updated.sort();
        out
    }

    async fn settle(
        &self,
        mut rec: DeploymentRecord,
        seen: Option<&Deployment>,
        out: &mut Reconciled,
    ) {
        let _held = self.inflight.lock(&rec.request_id).await;
        let before = rec.clone();
        let missing = seen.is_none();
        match (seen, rec.state()) {
            (Some(d), _) => rec.observe(d),
            (None, Stored::Placing) => rec.push(Stored::Failed {
                reason: NOT_CREATED.to_string(),
            }),
            (None, Stored::Stopping) => rec.push(Stored::Stopped),
            (None, s) if s.is_final() => {}
            (None, _) => rec.push(Stored::Failed {
                reason: LOST.to_string(),
            }),
        }
        if rec == before {
            return;
        }
        match self.book.persist(&rec).await {
            Ok(()) => {
                info!(deployment = %rec.id, from = ?before.state(), to = ?rec.state(), "record reconciled with its provider");
                if missing {
                    out.resolved_missing.push(rec.id.clone());
                } else {
                    out.updated.push(rec.id.clone());
                }
            }
            Err(e) => warn!(deployment = %rec.id, error = %e, "cannot record the reconciled state"),
        }
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
