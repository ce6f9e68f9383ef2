//! Placements a restart left unconfirmed: records written `Placing` on
//! another node's provider (the intent is durable before the owner hears
//! of it) whose answer this home never recorded because it went down
//! first. Reconcile settles the ones on this node's own providers at
//! start; these wait until their owner is heard from, and its word
//! settles them:
//! - the owner runs the deployment: the record takes its state;
//! - the owner does not know it: with a reschedule policy the next
//!   attempt is placed (fenced: a first copy that still appears late is
//!   stale), without one it fails, as reconcile fails a local one, so
//!   that a retry with the same request id makes it once;
//! - the owner is declared dead: failover takes it like any other.
//!
//! Only records found `Placing` when the node opened its store are
//! considered: later ones belong to a placement in flight.

use std::collections::HashSet;
use std::sync::PoisonError;
use std::time::Duration;

use tracing::{info, warn};

use super::reschedule::Cause;
use super::Manager;
use crate::placement::book::{candidate_of, Book};
use crate::resource::ResourceError;
use crate::store::{DeploymentRecord, Stored};

/// How long an owner may take to say whether it runs a deployment.
const ASK_WAIT: Duration = Duration::from_secs(5);

/// Records `Placing` on another node's provider when the store opened.
pub(crate) fn at_start(book: &Book, me: &str) -> HashSet<String> {
    let ids: HashSet<String> = book
        .select(|r| unconfirmed(r, me))
        .into_iter()
        .map(|r| r.id)
        .collect();
    if !ids.is_empty() {
        info!(
            count = ids.len(),
            "placements on other nodes were left unconfirmed by a restart; their owners are asked once heard from"
        );
    }
    ids
}

fn unconfirmed(r: &DeploymentRecord, me: &str) -> bool {
    r.state() == Stored::Placing && r.placed_on.is_placed() && r.placed_on.owner_id != me
}

/// What the owner said.
enum Word {
    Runs(Box<crate::resource::Deployment>),
    NeverMade,
}

impl Manager {
    /// Asks the owners of the unconfirmed placements that are live now;
    /// returns how many were settled.
    pub(crate) async fn confirm_round(&self) -> usize {
        let ids: Vec<String> = {
            let set = self
                .unconfirmed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            set.iter().cloned().collect()
        };
        if ids.is_empty() {
            return 0;
        }
        let ring = self.ring();
        let mut settled = 0;
        for id in ids {
            let Some(rec) = self.book.get(&id).filter(|r| unconfirmed(r, &self.node_id)) else {
                self.confirmed(&id);
                continue;
            };
            // Not heard from yet, or dead: failover's case then.
            if ring.member(&rec.placed_on.owner_id).is_none() {
                continue;
            }
            let Some(word) = self.ask_owner(&rec).await else {
                continue;
            };
            if self.settle_unconfirmed(&id, word).await {
                settled += 1;
            }
        }
        settled
    }

    /// Whether the owner runs `rec`; None when it did not answer.
    async fn ask_owner(&self, rec: &DeploymentRecord) -> Option<Word> {
        let provider = self
            .registry
            .provider_for(&candidate_of(&rec.placed_on))
            .ok()?;
        match tokio::time::timeout(ASK_WAIT, provider.status(&rec.id)).await {
            Ok(Ok(d)) => Some(Word::Runs(Box::new(d))),
            Ok(Err(ResourceError::NotFound(_))) => Some(Word::NeverMade),
            Ok(Err(e)) => {
                warn!(deployment = %rec.id, owner = %rec.placed_on.owner_id, error = %e, "cannot ask the owner about an unconfirmed placement; asked again next round");
                None
            }
            Err(_) => None,
        }
    }

    /// Settles one placement by its owner's word; true once settled.
    async fn settle_unconfirmed(&self, id: &str, word: Word) -> bool {
        let Some(rec) = self.book.get(id) else {
            return false;
        };
        let held = self.inflight.lock(&rec.request_id).await;
        // Under the lock: a stop may have come first.
        let Some(mut rec) = self.book.get(id).filter(|r| unconfirmed(r, &self.node_id)) else {
            self.confirmed(id);
            return true;
        };
        let owner = rec.placed_on.owner_id.clone();
        let has_policy = rec.spec.as_ref().is_some_and(|s| s.reschedule.is_some());
        match word {
            Word::NeverMade if has_policy => {
                // The next attempt, fenced; `replace` takes the lock itself.
                drop(held);
                self.confirmed(id);
                self.replace(rec, Cause::NeverMade).await;
                return true;
            }
            Word::Runs(d) => {
                rec.observe(&d);
                info!(deployment = %id, owner = %owner, state = %d.state(), "unconfirmed placement confirmed by its owner");
            }
            Word::NeverMade => {
                rec.push(Stored::Failed {
                    reason: format!(
                        "node {owner} never made it: this node restarted before the owner answered (deploy again with the same request id)"
                    ),
                });
                info!(deployment = %id, owner = %owner, "unconfirmed placement never made: failed");
            }
        }
        if let Err(e) = self.book.persist(&rec).await {
            warn!(deployment = %id, error = %e, "cannot record an unconfirmed placement's outcome; asked again next round");
            return false;
        }
        self.confirmed(id);
        true
    }

    fn confirmed(&self, id: &str) {
        self.unconfirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}
