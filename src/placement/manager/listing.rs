//! Listing deployments: what this node knows without asking anyone (its
//! records, as their home; what its providers run, as their owner), and the
//! whole mesh's, asked of every member with bounded concurrency and a
//! deadline, merged so that each deployment is reported once (its home's
//! record, with its owner's live state when the owner answered too), and
//! paginated by id. Members that did not answer in time are named.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::Manager;
use crate::proto::directory as pb;
use crate::proto::resource as rpb;
use crate::resource::wire::deployment_to_proto;

/// Deployments per page of a mesh listing, by default and at most.
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1_000;
/// Members asked at once, and how long they get.
const LIST_CONCURRENCY: usize = 16;
pub const LIST_DEADLINE: Duration = Duration::from_secs(3);
/// The most one member sends of a streamed listing.
const STREAM_LIMIT: u32 = 100_000;

/// Which deployments a listing wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub state: String,
    pub owner_id: String,
    pub provider_id: String,
    /// A substring of the image.
    pub image: String,
    pub labels: BTreeMap<String, String>,
}

impl Filter {
    pub fn of(r: &rpb::ListDeploymentsRequest) -> Filter {
        Filter {
            state: r.state.clone(),
            owner_id: r.owner_id.clone(),
            provider_id: r.provider_id.clone(),
            image: r.image.clone(),
            labels: r.labels.clone().into_iter().collect(),
        }
    }

    fn to_proto(&self) -> pb::ListFilter {
        pb::ListFilter {
            state: self.state.clone(),
            owner_id: self.owner_id.clone(),
            provider_id: self.provider_id.clone(),
            image: self.image.clone(),
            labels: self.labels.clone().into_iter().collect(),
        }
    }

    pub fn from_proto(f: Option<pb::ListFilter>) -> Filter {
        let f = f.unwrap_or_default();
        Filter {
            state: f.state,
            owner_id: f.owner_id,
            provider_id: f.provider_id,
            image: f.image,
            labels: f.labels.into_iter().collect(),
        }
    }

    /// The fields that do not change over a deployment's life: checked
    /// where it is reported. The state is checked after the merge, where
    /// the owner's live word is known.
    fn settled(&self, d: &rpb::Deployment) -> bool {
        (self.owner_id.is_empty() || d.owner_id == self.owner_id)
            && (self.provider_id.is_empty() || d.provider_id == self.provider_id)
            && (self.image.is_empty() || d.image.contains(&self.image))
            && self.labels.iter().all(|(k, v)| d.labels.get(k) == Some(v))
    }

    pub fn matches(&self, d: &rpb::Deployment) -> bool {
        self.settled(d) && (self.state.is_empty() || d.state == self.state)
    }
}

/// One page of a mesh listing.
#[derive(Debug, Clone, Default)]
pub struct MeshPage {
    pub deployments: Vec<rpb::Deployment>,
    /// The cursor of the next page; empty on the last.
    pub next: String,
    /// Members that did not answer in time.
    pub missing: Vec<String>,
    pub answered: usize,
}

/// Two reports of one deployment made one: the home's record, with the
/// owner's live state and lease when the owner reported it too.
fn merge(into: &mut rpb::Deployment, other: rpb::Deployment, other_from: &str) {
    let other_is_home = other.home_id == other_from;
    let into_is_owner_live = !into.provider_id.is_empty() && into.home_id.is_empty();
    if other_is_home {
        let live = std::mem::replace(into, other);
        if into_is_owner_live {
            adopt_live(into, live);
        }
    } else if other.owner_id == other_from {
        adopt_live(into, other);
    }
}

fn adopt_live(record: &mut rpb::Deployment, live: rpb::Deployment) {
    record.state = live.state;
    record.history = live.history;
    record.reason = live.reason;
    record.lease = live.lease.or(record.lease.take());
    if record.gpus.is_empty() {
        record.gpus = live.gpus;
    }
}

impl Manager {
    /// Everything this node knows without asking anyone, with `home_id`
    /// set where it placed the deployment; keyed and sorted by id.
    pub async fn known_here(&self) -> BTreeMap<String, rpb::Deployment> {
        let mut out: BTreeMap<String, rpb::Deployment> = BTreeMap::new();
        for d in self.list_local().await {
            let home = self.book.get(&d.id).filter(|r| !r.adopted).is_some();
            let mut p = deployment_to_proto(&d, &self.node_id);
            if home {
                p.home_id = self.node_id.clone();
            }
            out.insert(p.id.clone(), p);
        }
        for rec in self.book.select(|r| !r.adopted && !out.contains_key(&r.id)) {
            let mut p = deployment_to_proto(&self.unplaced_view(&rec), &rec.placed_on.owner_id);
            p.home_id = self.node_id.clone();
            out.insert(p.id.clone(), p);
        }
        out
    }

    /// This node's part of a listing: matches with ids after `after`,
    /// at most `limit` (smallest first); with `limit` 0, every match's id
    /// and state, for counting.
    pub async fn list_here(&self, filter: &Filter, after: &str, limit: u32) -> pb::ListLocalReply {
        let known = self.known_here().await;
        let matching = known
            .into_values()
            .filter(|d| filter.settled(d) && d.id.as_str() > after);
        if limit == 0 {
            return pb::ListLocalReply {
                deployments: Vec::new(),
                states: matching
                    .map(|d| pb::IdState {
                        owner: d.owner_id == self.node_id && !d.provider_id.is_empty(),
                        id: d.id,
                        state: d.state,
                    })
                    .collect(),
            };
        }
        pb::ListLocalReply {
            deployments: matching.take(limit as usize).collect(),
            states: Vec::new(),
        }
    }

    /// Asks every live member for its part (this node answers itself),
    /// `LIST_CONCURRENCY` at a time, within `deadline`: the answers by
    /// member, and who did not answer.
    async fn fan_out(
        &self,
        req: pb::ListLocalRequest,
        deadline: Duration,
        each: Option<&mpsc::Sender<(String, pb::ListLocalReply)>>,
    ) -> (Vec<(String, pb::ListLocalReply)>, Vec<String>) {
        let filter = Filter::from_proto(req.filter.clone());
        let mine = self.list_here(&filter, &req.after, req.limit).await;
        if let Some(tx) = each {
            let _ = tx.send((self.node_id.clone(), mine.clone())).await;
        }
        let mut answers = vec![(self.node_id.clone(), mine)];
        let others: Vec<_> = self
            .ring()
            .members()
            .iter()
            .filter(|m| m.id != self.node_id)
            .cloned()
            .collect();
        let Some(caller) = self.registry.discovery().directory() else {
            return (answers, Vec::new());
        };
        let mut missing: Vec<String> = others.iter().map(|m| m.id.clone()).collect();
        let mut replies = futures::stream::iter(others)
            .map(|m| {
                let (caller, req) = (caller.clone(), req.clone());
                async move {
                    (
                        m.id.clone(),
                        caller.list_local(&m.addr, req, deadline).await,
                    )
                }
            })
            .buffer_unordered(LIST_CONCURRENCY);
        let collect = async {
            while let Some((from, reply)) = replies.next().await {
                let Ok(reply) = reply else { continue };
                missing.retain(|m| *m != from);
                if let Some(tx) = each {
                    let _ = tx.send((from.clone(), reply.clone())).await;
                }
                answers.push((from, reply));
            }
        };
        let _ = tokio::time::timeout(deadline, collect).await;
        missing.sort();
        (answers, missing)
    }

    /// One page of every deployment in the mesh, after the cursor `after`.
    pub async fn list_mesh(
        &self,
        filter: &Filter,
        after: &str,
        page_size: u32,
        deadline: Duration,
    ) -> MeshPage {
        let limit = page_size.clamp(1, MAX_PAGE);
        let req = pb::ListLocalRequest {
            from: self.node_id.clone(),
            filter: Some(filter.to_proto()),
            after: after.to_string(),
            limit,
        };
        let (answers, missing) = self.fan_out(req, deadline, None).await;
        // Ids up to the smallest last id of a member that sent a full page
        // are complete: no member holds a smaller one it did not send.
        let boundary = answers
            .iter()
            .filter(|(_, r)| r.deployments.len() as u32 >= limit)
            .filter_map(|(_, r)| r.deployments.last().map(|d| d.id.clone()))
            .min();
        let answered = answers.len();
        let mut merged: BTreeMap<String, rpb::Deployment> = BTreeMap::new();
        for (from, reply) in answers {
            for d in reply.deployments {
                if boundary.as_ref().is_some_and(|b| d.id > *b) {
                    continue;
                }
                match merged.get_mut(&d.id) {
                    Some(into) => merge(into, d, &from),
                    None => {
                        merged.insert(d.id.clone(), d);
                    }
                }
            }
        }
        let mut deployments: Vec<rpb::Deployment> =
            merged.into_values().filter(|d| filter.matches(d)).collect();
        let next = if deployments.len() > limit as usize {
            deployments.truncate(limit as usize);
            deployments.last().map(|d| d.id.clone()).unwrap_or_default()
        } else {
            boundary.unwrap_or_default()
        };
        MeshPage {
            deployments,
            next,
            missing,
            answered,
        }
    }

    /// The mesh's listing as members answer: each member's deployments not
    /// sent before, then (`None`) the end; returns who did not answer.
    pub async fn stream_mesh(
        &self,
        filter: &Filter,
        deadline: Duration,
        out: mpsc::Sender<(String, Vec<rpb::Deployment>)>,
    ) -> Vec<String> {
        let req = pb::ListLocalRequest {
            from: self.node_id.clone(),
            filter: Some(filter.to_proto()),
            after: String::new(),
            limit: STREAM_LIMIT,
        };
        let (tx, mut rx) = mpsc::channel::<(String, pb::ListLocalReply)>(16);
        let forward = async {
            let mut sent = std::collections::HashSet::new();
            while let Some((from, reply)) = rx.recv().await {
                let fresh: Vec<rpb::Deployment> = reply
                    .deployments
                    .into_iter()
                    .filter(|d| filter.matches(d) && sent.insert(d.id.clone()))
                    .collect();
                if out.send((from, fresh)).await.is_err() {
                    return;
                }
            }
        };
        let fan = async {
            let (_, missing) = self.fan_out(req, deadline, Some(&tx)).await;
            drop(tx);
            missing
        };
        let (missing, ()) = tokio::join!(fan, forward);
        missing
    }

    /// Every deployment in the mesh counted once by state (the owner's
    /// live state over the home's record); and who did not answer.
    pub async fn count_mesh(&self, deadline: Duration) -> (BTreeMap<String, u64>, Vec<String>) {
        let req = pb::ListLocalRequest {
            from: self.node_id.clone(),
            filter: None,
            after: String::new(),
            limit: 0,
        };
        let (answers, missing) = self.fan_out(req, deadline, None).await;
        let mut states: HashMap<String, (String, bool)> = HashMap::new();
        for (_, reply) in answers {
            for s in reply.states {
                match states.get(&s.id) {
                    Some((_, true)) => {}
                    _ => {
                        states.insert(s.id, (s.state, s.owner));
                    }
                }
            }
        }
        let mut counts = BTreeMap::new();
        for (state, _) in states.into_values() {
            *counts.entry(state).or_default() += 1;
        }
        (counts, missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: &str, owner: &str, home: &str, state: &str) -> rpb::Deployment {
        rpb::Deployment {
            id: id.into(),
            owner_id: owner.into(),
            home_id: home.into(),
            provider_id: format!("{owner}/p"),
            state: state.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_homes_record_wins_with_the_owners_live_state() {
        // The owner reports first: live, no home.
        let mut into = d("x", "o", "", "exited");
        merge(&mut into, d("x", "o", "h", "running"), "h");
        assert_eq!(
            (into.home_id.as_str(), into.state.as_str()),
            ("h", "exited")
        );
        // The home first, then the owner.
        let mut into = d("x", "o", "h", "running");
        merge(&mut into, d("x", "o", "", "exited"), "o");
        assert_eq!(
            (into.home_id.as_str(), into.state.as_str()),
            ("h", "exited")
        );
        // A third node's word (neither home nor owner) changes nothing.
        let mut into = d("x", "o", "h", "running");
        merge(&mut into, d("x", "o", "", "failed"), "z");
        assert_eq!(into.state, "running");
    }

    #[test]
    fn filters_check_settled_fields_where_reported_and_the_state_after_merging() {
        let f = Filter {
            state: "running".into(),
            image: "nginx".into(),
            ..Filter::default()
        };
        let mut x = d("x", "o", "h", "exited");
        x.image = "nginx:1.27".into();
        assert!(f.settled(&x));
        assert!(!f.matches(&x));
        x.state = "running".into();
        assert!(f.matches(&x));
        x.image = "busybox".into();
        assert!(!f.settled(&x));
    }
}
