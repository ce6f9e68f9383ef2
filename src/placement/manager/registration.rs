//! The directory from this node's side: what it answers for (the
//! deployments it placed, as their home, and what its providers run, as
//! their owner), registered with the members the ring maps each to; and
//! the registrations and lookups other nodes send it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Manager;
use crate::placement::directory::{
    location_from_proto, location_to_proto, Holding, Location, Member, NodeRef, Registrant, Ring,
};
use crate::proto::directory as pb;
use crate::resource::{Candidate, Deployment};
use crate::store::{now_ms, DeploymentRecord};
use crate::sync::Ticker;

/// How long a deployment that ended stays registered: its home still
/// answers for it from its record, and a lookup a while later finds it.
pub const FINAL_KEEP_MS: u64 = 3_600_000;
/// How often this node's providers are listed for what they run.
const OWNER_SCAN_MS: u64 = 10_000;
const REGISTER_TIMEOUT: Duration = Duration::from_secs(2);
/// Registration messages in flight at once.
const SEND_CONCURRENCY: usize = 8;
/// Ids one Locate may ask about.
pub const MAX_LOCATE_IDS: usize = 16;

/// What this node's providers ran at the last scan.
#[derive(Default)]
pub(crate) struct Owned {
    at_ms: Option<u64>,
    holdings: Vec<Holding>,
}

fn node(m: &Member) -> NodeRef {
    NodeRef {
        id: m.id.clone(),
        addr: m.addr.clone(),
    }
}

/// A deployment one of this node's providers runs, as its owner registers it.
fn owner_location(d: Deployment, c: &Candidate, me: &NodeRef) -> Location {
    Location {
        deployment_id: d.id,
        request_id: d.request_id,
        home: None,
        owner: Some(me.clone()),
        provider_id: c.id.clone(),
        provider_name: c.name.clone(),
        provider_kind: c.kind.as_str().to_string(),
    }
}

/// A record this node placed, as its home registers it.
fn home_location(rec: &DeploymentRecord, me: &NodeRef) -> Location {
    let on = &rec.placed_on;
    let owner = on.is_placed().then(|| NodeRef {
        id: on.owner_id.clone(),
        addr: if on.owner_addr.is_empty() {
            me.addr.clone()
        } else {
            on.owner_addr.clone()
        },
    });
    Location {
        deployment_id: rec.id.clone(),
        request_id: rec.request_id.clone(),
        home: Some(me.clone()),
        owner,
        provider_id: on.provider_id.clone(),
        provider_name: on.provider_name.clone(),
        provider_kind: on.kind.clone(),
    }
}

impl Manager {
    /// This node as the ring knows it, if its view holds it yet.
    pub(crate) fn me(&self) -> Option<NodeRef> {
        self.ring().member(&self.node_id).map(node)
    }

    /// The locator ring of the live members as this node sees them now.
    pub(crate) fn ring(&self) -> Arc<Ring> {
        let discovery = self.registry.discovery();
        self.directory
            .ring(discovery.version(), || discovery.members())
    }

    /// What this node answers for now.
    pub(crate) async fn holdings(&self, me: &NodeRef) -> Vec<Holding> {
        let now = now_ms();
        let mut out: Vec<Holding> = self.book.filter_map(|r| {
            let ended_at = r.history.last().map_or(0, |c| c.at_ms);
            let keep = !r.adopted
                && (!r.state().is_final() || now.saturating_sub(ended_at) < FINAL_KEEP_MS);
            keep.then(|| Holding {
                location: home_location(r, me),
                by: Registrant::Home,
            })
        });
        out.extend(self.owned_holdings(me, now).await);
        out
    }

    /// What this node's providers run, listed at most every OWNER_SCAN_MS.
    async fn owned_holdings(&self, me: &NodeRef, now: u64) -> Vec<Holding> {
        {
            let owned = crate::sync::lock(&self.owned);
            if owned
                .at_ms
                .is_some_and(|at| now.saturating_sub(at) < OWNER_SCAN_MS)
            {
                return owned.holdings.clone();
            }
        }
        let mut holdings = Vec::new();
        for (p, c) in self.registry.local_candidates() {
            let Ok(list) = p.list().await else { continue };
            holdings.extend(
                list.into_iter()
                    .filter(|d| !d.state().is_final())
                    .map(|d| Holding {
                        location: owner_location(d, &c, me),
                        by: Registrant::Owner,
                    }),
            );
        }
        let mut owned = crate::sync::lock(&self.owned);
        owned.at_ms = Some(now);
        owned.holdings = holdings.clone();
        holdings
    }

    /// Registers what changed every `tick`, until `cancel`.
    pub async fn run_directory(self: Arc<Self>, tick: Duration, cancel: CancellationToken) {
        let mut ticker = Ticker::new(tick);
        while ticker.tick(&cancel).await {
            self.register_round().await;
        }
    }

    /// One round: plans against the ring of the current view, sends, and
    /// notes who acknowledged. Returns the locations sent.
    pub async fn register_round(&self) -> usize {
        let Some(caller) = self.registry.discovery().directory() else {
            return 0;
        };
        let ring = self.ring();
        let Some(me) = ring.member(&self.node_id).map(node) else {
            return 0;
        };
        let holdings = self.holdings(&me).await;
        let now = now_ms();
        self.directory.table().expire(now);
        let sends = self.directory.registrar().plan(&holdings, &ring, now);
        let sent: usize = sends.iter().map(|s| s.register.len()).sum();
        let results: Vec<_> = futures::stream::iter(sends)
            .map(|s| {
                let caller = caller.clone();
                let me = me.clone();
                async move {
                    let req = pb::RegisterRequest {
                        from: me.id.clone(),
                        locations: s
                            .register
                            .iter()
                            .map(|h| location_to_proto(&h.location, h.by))
                            .collect(),
                        forget: s.forget.clone(),
                    };
                    if s.to.id == me.id {
                        self.directory_register(&me.id, req);
                        return Ok(s);
                    }
                    match caller.register(&s.to.addr, req, REGISTER_TIMEOUT).await {
                        Ok(_) => Ok(s),
                        Err(e) => Err((s.to.id.clone(), e)),
                    }
                }
            })
            .buffer_unordered(SEND_CONCURRENCY)
            .collect()
            .await;
        let mut registrar = self.directory.registrar();
        for r in results {
            match r {
                Ok(s) => registrar.acked(&s.to, &s.register, now),
                Err((to, e)) => {
                    debug!(member = %to, error = %e, "directory registration not acknowledged; sent again next round")
                }
            }
        }
        sent
    }

    /// Registrations from node `from`; returns how many it took in.
    pub fn directory_register(&self, from: &str, req: pb::RegisterRequest) -> u32 {
        let now = now_ms();
        let mut table = self.directory.table();
        let n = req.locations.len() as u32;
        for l in req.locations {
            let (loc, by) = location_from_proto(l);
            table.register(loc, by, from, now);
        }
        for id in req.forget {
            table.forget(&id, from);
        }
        n
    }

    /// What this node knows of `ids`: its directory's entries, and what
    /// it holds itself (as home or owner).
    pub async fn directory_locate(&self, ids: &[String]) -> Vec<pb::Location> {
        let now = now_ms();
        let me = self.me();
        let mut out = Vec::new();
        for id in ids.iter().take(MAX_LOCATE_IDS) {
            let known = self.directory.table().get(id, now);
            let found = match known {
                Some(l) => Some(l),
                None => match &me {
                    Some(me) => self.held_here(id, me).await,
                    None => None,
                },
            };
            if let Some(l) = found {
                let by = if l.home.is_some() {
                    Registrant::Home
                } else {
                    Registrant::Owner
                };
                out.push(location_to_proto(&l, by));
            }
        }
        out
    }

    /// Deployment `id` as this node holds it: placed here (its record) or
    /// run on one of its providers.
    pub(crate) async fn held_here(&self, id: &str, me: &NodeRef) -> Option<Location> {
        if let Some(rec) = self.book.get(id).filter(|r| !r.adopted) {
            return Some(home_location(&rec, me));
        }
        for (p, c) in self.registry.local_candidates() {
            if let Ok(d) = p.status(id).await {
                return Some(owner_location(d, &c, me));
            }
        }
        None
    }
}
