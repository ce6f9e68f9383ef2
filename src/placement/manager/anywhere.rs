//! Any node answers for any deployment of the mesh. What a node holds
//! itself (its records, its providers) it answers at once; anything else
//! it locates through the directory (one hop to the `K` members the ring
//! maps the id to, a bounded broadcast for the rare miss) and asks its
//! home, which keeps the record, or its owner when the home is gone. The
//! answer names both. Forwarded calls carry who asked, for the audit log
//! of the node that acts.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;

use super::Manager;
use crate::placement::call::proxy::RemoteProvider;
use crate::placement::directory::{location_from_proto, Location, Member, NodeRef, K};
use crate::proto::directory as pb;
use crate::resource::validate::deployment_id;
use crate::resource::wire::deployment_from_proto;
use crate::resource::{
    Candidate, Deployment, LogOptions, LogStream, Provider, ProviderKind, ResourceError, Tier,
};
use crate::store::now_ms;

/// How long the members the ring names get to answer a lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// The fallback asks at most this many other members, this many at once,
/// within this long.
const FALLBACK_FANOUT: usize = 64;
const FALLBACK_CONCURRENCY: usize = 16;
const FALLBACK_DEADLINE: Duration = Duration::from_secs(2);
/// A forwarded call may stop a container (the engine's grace included).
pub(super) const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// A deployment as any node answers for it, with the node whose provider
/// runs it (`owner`) and the node that placed it and keeps its record
/// (`home`, empty when unknown: only its owner answered).
#[derive(Debug, Clone)]
pub struct Answer {
    pub deployment: Deployment,
    pub owner: String,
    pub home: String,
}

/// An operation on one deployment, as it may travel to another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Stop,
    RenewLease(Option<u64>),
    ReleaseLease(Option<u64>),
}

impl Op {
    fn to_proto(self) -> (pb::forward_request::Op, u64) {
        use pb::forward_request::Op as P;
        match self {
            Op::Get => (P::Get, 0),
            Op::Stop => (P::Stop, 0),
            Op::RenewLease(e) => (P::RenewLease, e.unwrap_or(0)),
            Op::ReleaseLease(e) => (P::ReleaseLease, e.unwrap_or(0)),
        }
    }

    pub fn from_proto(req: &pb::ForwardRequest) -> Op {
        use pb::forward_request::Op as P;
        let epoch = Some(req.epoch).filter(|e| *e > 0);
        match req.op() {
            P::Get => Op::Get,
            P::Stop => Op::Stop,
            P::RenewLease => Op::RenewLease(epoch),
            P::ReleaseLease => Op::ReleaseLease(epoch),
        }
    }

    /// Changes the deployment: better done by its home, which keeps the record.
    fn changes(self) -> bool {
        !matches!(self, Op::Get)
    }
}

/// The ids a user's id may stand for: a deployment id, or a request id
/// whose deployment id is derived from it.
fn lookup_keys(id: &str) -> Vec<String> {
    let mut keys = vec![id.to_string()];
    let derived = deployment_id(id);
    if derived != id {
        keys.push(derived);
    }
    keys
}

/// Enough of a candidate to reach a located deployment's provider.
fn candidate(l: &Location, owner: &NodeRef) -> Candidate {
    Candidate {
        id: l.provider_id.clone(),
        name: l.provider_name.clone(),
        kind: ProviderKind::parse(&l.provider_kind).unwrap_or(ProviderKind::Memory),
        tier: Tier::Discovered,
        owner_id: owner.id.clone(),
        owner_addr: owner.addr.clone(),
        healthy: true,
        capacity: Default::default(),
        labels: Default::default(),
        version: 0,
        gpus: Vec::new(),
    }
}

impl Manager {
    /// `op` from what this node holds, never forwarded: the answer to a
    /// forwarded call, and the first try of every call.
    pub async fn local_op(&self, op: Op, id: &str) -> Result<Answer, ResourceError> {
        let (deployment, owner) = match op {
            Op::Get => self.status(id).await?,
            Op::Stop => self.stop(id).await?,
            Op::RenewLease(e) => self.renew_lease(id, e).await?,
            Op::ReleaseLease(e) => self.release_lease(id, e).await?,
        };
        Ok(Answer {
            deployment,
            owner,
            home: self.home_of(id),
        })
    }

    /// This node's id when it placed `id` (a deployment or request id).
    fn home_of(&self, id: &str) -> String {
        match self.book.record(id) {
            Some(r) if !r.adopted => self.node_id.clone(),
            _ => String::new(),
        }
    }

    /// `op` on deployment `id` wherever it lives in the mesh. `who` is the
    /// caller as this node's guard named it, passed on to the node that acts.
    pub async fn anywhere(&self, op: Op, id: &str, who: &str) -> Result<Answer, ResourceError> {
        let placed_here = !self.home_of(id).is_empty();
        if placed_here || !op.changes() {
            let why = match self.local_op(op, id).await {
                Err(ResourceError::NotFound(why)) => why,
                Ok(mut a) if a.home.is_empty() => {
                    // Run here, placed elsewhere: the directory names its home.
                    if let Ok(loc) = self.locate(&a.deployment.id).await {
                        a.home = loc.home.map(|h| h.id).unwrap_or_default();
                    }
                    return Ok(a);
                }
                other => return other,
            };
            return match self.locate(id).await {
                Ok(loc) => self.via(op, &loc, who).await,
                Err(ResourceError::NotFound(m)) => {
                    Err(ResourceError::NotFound(format!("{why}; {m}")))
                }
                Err(e) => Err(e),
            };
        }
        // A change to what another node placed: its home acts, so that its
        // record stays right (this node may still be the one that runs it).
        match self.locate(id).await {
            Ok(loc) => self.via(op, &loc, who).await,
            Err(e) => match self.local_op(op, id).await {
                Err(ResourceError::NotFound(_)) => Err(e),
                other => other,
            },
        }
    }

    /// Acts on a located deployment: at its home when that is alive, else
    /// at its owner.
    async fn via(&self, op: Op, loc: &Location, who: &str) -> Result<Answer, ResourceError> {
        let ring = self.ring();
        let alive = |n: &&NodeRef| ring.member(&n.id).is_some();
        let home_id = loc.home.as_ref().map(|h| h.id.clone()).unwrap_or_default();
        let mut last = None;
        if let Some(home) = loc.home.as_ref().filter(alive) {
            if home.id != self.node_id {
                match self.forward(home, op, &loc.deployment_id, who).await {
                    Ok(a) => return Ok(a),
                    Err(e) if e.try_elsewhere() => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
        }
        if let Some(owner) = loc.owner.as_ref().filter(alive) {
            let id = &loc.deployment_id;
            if owner.id == self.node_id {
                let mut a = self.local_op(op, id).await?;
                a.home = home_id;
                return Ok(a);
            }
            let p = RemoteProvider::new(candidate(loc, owner), self.registry.discovery().caller())
                .on_behalf_of(who);
            let deployment = match op {
                Op::Get => p.status(id).await?,
                Op::Stop => p.stop(id).await?,
                Op::RenewLease(e) => p.renew_lease(id, e).await?,
                Op::ReleaseLease(e) => p.release_lease(id, e).await?,
            };
            return Ok(Answer {
                deployment,
                owner: owner.id.clone(),
                home: home_id,
            });
        }
        Err(last.unwrap_or_else(|| ResourceError::Unavailable {
            provider: loc.provider_id.clone(),
            reason: format!(
                "deployment {} was placed by node {} and runs on node {}, and neither is a live member as node {} sees the mesh; try again once one is back",
                loc.deployment_id,
                loc.home.as_ref().map_or("(none)", |h| h.id.as_str()),
                loc.owner.as_ref().map_or("(none)", |o| o.id.as_str()),
                self.node_id
            ),
        }))
    }

    /// Asks `home` to do `op` itself.
    async fn forward(
        &self,
        home: &NodeRef,
        op: Op,
        id: &str,
        who: &str,
    ) -> Result<Answer, ResourceError> {
        let Some(caller) = self.registry.discovery().directory() else {
            return Err(ResourceError::NotFound(format!(
                "no mesh to reach node {}",
                home.id
            )));
        };
        let (kind, epoch) = op.to_proto();
        let req = pb::ForwardRequest {
            from: self.node_id.clone(),
            op: kind as i32,
            id: id.to_string(),
            epoch,
            on_behalf_of: who.to_string(),
        };
        let d = caller
            .forward(&home.addr, req, FORWARD_TIMEOUT)
            .await
            .map_err(|s| ResourceError::from_status(&home.id, &s))?;
        let (owner, home_id) = (d.owner_id.clone(), d.home_id.clone());
        Ok(Answer {
            deployment: deployment_from_proto(d),
            owner,
            home: home_id,
        })
    }

    /// A deployment's output wherever it runs: streamed from its owner
    /// (one hop; a follow polls it there).
    pub async fn logs_anywhere(
        &self,
        id: &str,
        opts: LogOptions,
        who: &str,
    ) -> Result<LogStream, ResourceError> {
        let why = match self.logs(id, opts).await {
            Err(ResourceError::NotFound(why)) => why,
            other => return other,
        };
        let loc = self.locate(id).await.map_err(|e| match e {
            ResourceError::NotFound(m) => ResourceError::NotFound(format!("{why}; {m}")),
            e => e,
        })?;
        let Some(owner) = loc.owner.as_ref() else {
            return Err(ResourceError::Precondition(format!(
                "deployment {} has no provider yet: it waits in node {}'s queue",
                loc.deployment_id,
                loc.home.as_ref().map_or("?", |h| h.id.as_str())
            )));
        };
        RemoteProvider::new(candidate(&loc, owner), self.registry.discovery().caller())
            .on_behalf_of(who)
            .logs(&loc.deployment_id, opts)
            .await
    }

    /// Where deployment `id` (or the deployment of request `id`) lives:
    /// this node's own directory entries, then the members the ring maps
    /// it to, then (rarely) everyone else, bounded in fan-out and time.
    pub async fn locate(&self, id: &str) -> Result<Location, ResourceError> {
        let keys = lookup_keys(id);
        let now = now_ms();
        for k in &keys {
            if let Some(l) = self.directory.table().get(k, now) {
                return Ok(l);
            }
        }
        let not_found = |n: usize| {
            ResourceError::NotFound(format!(
                "deployment {id:?} is unknown to the mesh ({n} members asked); check the id, or ListDeployments with scope mesh"
            ))
        };
        let ring = self.ring();
        let mut asked: Vec<Member> = Vec::new();
        for k in &keys {
            for m in ring.replicas(k, K) {
                if m.id != self.node_id && !asked.iter().any(|a| a.id == m.id) {
                    asked.push(m.clone());
                }
            }
        }
        let (found, mut silent) = self.ask(&asked, &keys, asked.len(), LOOKUP_TIMEOUT).await;
        if let Some(l) = found {
            return Ok(l);
        }
        let done: HashSet<String> = asked.iter().map(|m| m.id.clone()).collect();
        // From a random place in the ring: in a mesh larger than the
        // fan-out, different misses ask different members.
        let all = ring.members();
        let start = crate::sync::lock(&self.rng).random_range(0..all.len().max(1));
        let rest: Vec<Member> = all[start..]
            .iter()
            .chain(&all[..start])
            .filter(|m| m.id != self.node_id && !done.contains(&m.id))
            .take(FALLBACK_FANOUT)
            .cloned()
            .collect();
        let (found, more) = self
            .ask(&rest, &keys, FALLBACK_CONCURRENCY, FALLBACK_DEADLINE)
            .await;
        if let Some(l) = found {
            return Ok(l);
        }
        silent.extend(more);
        if silent.is_empty() {
            return Err(not_found(asked.len() + rest.len()));
        }
        silent.sort();
        Err(ResourceError::Unavailable {
            provider: "the mesh".into(),
            reason: format!(
                "deployment {id:?} was not found among the members that answered, and {} did not answer in time ({}): it may live there",
                silent.len(),
                silent.join(", ")
            ),
        })
    }

    /// Asks `members` (`concurrency` at a time, within `deadline`) what they
    /// know of `keys`; the first location found, and who did not answer.
    async fn ask(
        &self,
        members: &[Member],
        keys: &[String],
        concurrency: usize,
        deadline: Duration,
    ) -> (Option<Location>, Vec<String>) {
        let Some(caller) = self.registry.discovery().directory() else {
            return (None, Vec::new());
        };
        if members.is_empty() {
            return (None, Vec::new());
        }
        let req = pb::LocateRequest {
            from: self.node_id.clone(),
            ids: keys.to_vec(),
        };
        let mut answers = futures::stream::iter(members.iter().cloned())
            .map(|m| {
                let (caller, req) = (caller.clone(), req.clone());
                async move { (m.id.clone(), caller.locate(&m.addr, req, deadline).await) }
            })
            .buffer_unordered(concurrency.max(1));
        let mut silent: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        let mut best: Option<Location> = None;
        let collect = async {
            while let Some((from, answer)) = answers.next().await {
                let Ok(reply) = answer else { continue };
                silent.retain(|s| *s != from);
                for l in reply.locations {
                    let (l, _) = location_from_proto(l);
                    if !keys.contains(&l.deployment_id) {
                        continue;
                    }
                    // The home's word (it keeps the record) ends the search.
                    if l.home.is_some() {
                        best = Some(l);
                        return;
                    }
                    best.get_or_insert(l);
                }
            }
        };
        let _ = tokio::time::timeout(deadline, collect).await;
        if best.is_some() {
            return (best, Vec::new());
        }
        (None, silent)
    }
}
