//! The sans-IO membership and provider gossip state machine.
//!
//! Messages and ticks go in, messages come out; the core owns no socket and
//! reads no clock (`now` is passed in, randomness comes from a seeded RNG).
//! The same code runs over tonic in a node and inside the simulator.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use tracing::{debug, info};

mod exchange;
mod merge;

use super::intern::Interner;
use super::record::{
    bucket_count_for, MemberInfo, Millis, Record, StableHasher, Stamp, Status, Suspecters,
};
use super::view::{bucket_mask, Entry, View, NEVER};
use super::FastMap;
use crate::proto::peer::{
    Digest, ExchangeRequest, ExchangeResponse, Member, MemberDigest, NodeMeta,
    ProviderExchangeRequest, ProviderExchangeResponse, ProviderInfo, ProviderSet,
};

/// Tunables of the protocol (durations in milliseconds of the driver's clock).
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Random live peers contacted per round.
    pub fanout: usize,
    /// Length of one gossip round.
    pub gossip_interval: Millis,
    /// Shortest suspicion: `suspicion_mult * max(1, log10 n)` rounds.
    pub suspicion_mult: f64,
    /// Longest suspicion, as a multiple of the shortest (no confirmations yet).
    pub suspicion_max_mult: f64,
    /// Independent confirmations that bring a suspicion down to the shortest timeout.
    pub suspicion_confirmations: u32,
    /// How long dead and departed members are kept (and gossiped) before deletion.
    pub tombstone_grace: Millis,
    /// How long a deleted member's last record blocks older copies from returning.
    pub forget_after: Millis,
    /// Soft cap on the encoded size of one gossip message.
    pub max_message_bytes: usize,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            fanout: 3,
            gossip_interval: 1_000,
            suspicion_mult: 1.5,
            suspicion_max_mult: 4.0,
            suspicion_confirmations: 3,
            tombstone_grace: 60_000,
            forget_after: 600_000,
            max_message_bytes: 512 * 1024,
        }
    }
}

/// Who this node is for one run.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub addr: String,
    /// Changes on every start (a restart is a new member).
    pub generation: u64,
}

/// A peer to contact in this round: a known member or a bare seed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: String,
    pub id: Option<Arc<str>>,
}

/// One call the driver must make to the exchange's target.
#[derive(Debug, Clone)]
pub enum Call {
    Peers(ExchangeRequest),
    Providers(ProviderExchangeRequest),
}

/// The answer to a [`Call`].
// One reply exists at a time per exchange and is consumed at once: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Reply {
    Peers(ExchangeResponse),
    Providers(ProviderExchangeResponse),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Opening,
    Negotiating { bucket_count: u32 },
    Closing,
}

/// Client-side state of one exchange with one target.
#[derive(Debug)]
pub struct Exchange {
    pub target: Target,
    phase: Phase,
    attempts: u8,
}

/// Why a member record from the network was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Malformed,
    Stale,
    Forgotten,
}

/// How many opening attempts an exchange makes before the target is suspected.
const OPEN_ATTEMPTS: u8 = 2;
/// Deleted members remembered, at most.
const FORGOTTEN_CAP: usize = 16_384;

/// The membership and provider state of one node, and the protocol over it.
pub struct Mesh {
    cfg: MeshConfig,
    me: Arc<MemberInfo>,
    incarnation: u64,
    status: Status,
    provider_version: u64,
    view: View,
    seeds: Vec<String>,
    self_addrs: HashSet<String>,
    forgotten: FastMap<Arc<str>, (u64, u64, Millis)>,
    forgotten_order: VecDeque<Arc<str>>,
    rng: SmallRng,
    interner: Interner,
}

impl Mesh {
    /// A node's core: its view keeps the placement feed.
    pub fn new(identity: Identity, cfg: MeshConfig, seed: u64, now: Millis) -> Mesh {
        let mut mesh = Self::with_interner(identity, cfg, seed, now, Interner::default());
        mesh.view.track_placement();
        mesh
    }

    /// Like [`Mesh::new`], sharing immutable records with other cores (the
    /// simulator runs thousands of cores in one process).
    pub fn with_interner(
        identity: Identity,
        cfg: MeshConfig,
        seed: u64,
        now: Millis,
        interner: Interner,
    ) -> Mesh {
        let me = interner.info(
            &identity.id,
            identity.name,
            identity.addr,
            identity.generation,
        );
        let own = interner.record(Record {
            info: me.clone(),
            incarnation: 0,
            status: Status::Alive,
            provider_version: 0,
            providers: None,
            suspected_by: Suspecters::default(),
        });
        let mut mesh = Mesh {
            cfg,
            me: me.clone(),
            incarnation: 0,
            status: Status::Alive,
            provider_version: 0,
            view: View::new(interner.clone(), StableHasher::new().u64(seed).finish()),
            seeds: Vec::new(),
            self_addrs: HashSet::from([me.addr.clone()]),
            forgotten: FastMap::default(),
            forgotten_order: VecDeque::new(),
            rng: SmallRng::seed_from_u64(seed),
            interner,
        };
        mesh.view.put(Entry::new(own, now), now);
        mesh
    }

    // ----- queries -------------------------------------------------------

    pub fn id(&self) -> &str {
        &self.me.id
    }

    pub fn info(&self) -> &Arc<MemberInfo> {
        &self.me
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn config(&self) -> &MeshConfig {
        &self.cfg
    }

    pub fn view(&self) -> &View {
        &self.view
    }

    pub fn view_hash(&self) -> u64 {
        self.view.hash()
    }

    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// Every seed turned out to be this node (a lone replica seeding itself).
    pub fn seeds_are_self(&self) -> bool {
        !self.seeds.is_empty() && self.seeds.iter().all(|s| self.self_addrs.contains(s))
    }

    /// Members that are alive or suspected (not tombstones), self included.
    pub fn live_count(&self) -> usize {
        self.view.live_len()
    }

    /// Every provider advertised by a live or suspected member, own included.
    pub fn providers(&self) -> Vec<ProviderInfo> {
        self.view
            .iter()
            .filter(|e| !e.status.is_tombstone())
            .filter_map(|e| e.providers.as_ref())
            .flat_map(|set| set.providers.iter().cloned())
            .collect()
    }

    /// This node's own record as it gossips it.
    pub fn self_member(&self) -> Member {
        Member {
            id: String::from(&*self.me.id),
            name: self.me.name.clone(),
            generation: self.me.generation,
            addr: self.me.addr.clone(),
            incarnation: self.incarnation,
            status: self.status.to_proto(),
            provider_version: self.provider_version,
            suspected_by: Vec::new(),
        }
    }

    // ----- local changes -------------------------------------------------

    /// Replaces the seed addresses (re-resolved DNS names included).
    pub fn set_seeds(&mut self, seeds: Vec<String>) {
        self.seeds = seeds;
    }

    /// Replaces the providers this node advertises; bumps their set version.
    pub fn set_providers(&mut self, providers: Vec<ProviderInfo>) {
        let old: HashMap<String, ProviderInfo> = self
            .view
            .get(&self.me.id)
            .and_then(|e| e.providers.clone())
            .map(|set| {
                set.providers
                    .iter()
                    .map(|p| (p.id.clone(), p.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let version = self.provider_version + 1;
        let providers = providers
            .into_iter()
            .map(|mut p| {
                p.owner_id = String::from(&*self.me.id);
                p.owner_generation = self.me.generation;
                // A provider keeps the version it last changed in.
                p.version = match old.get(&p.id) {
                    Some(prev) if same_provider(prev, &p) => prev.version,
                    _ => version,
                };
                p
            })
            .collect();
        self.publish_set(version, providers, self.own_meta().cloned());
    }

    /// What this node says of itself beside its providers.
    pub fn own_meta(&self) -> Option<&NodeMeta> {
        self.view
            .get(&self.me.id)
            .and_then(|e| e.providers.as_deref())
            .and_then(|set| set.meta.as_ref())
    }

    /// Replaces what this node says of itself; bumps the set version when
    /// it changed (the set then travels again, whole).
    pub fn set_meta(&mut self, meta: NodeMeta) {
        if self.own_meta() == Some(&meta) {
            return;
        }
        let providers = self
            .view
            .get(&self.me.id)
            .and_then(|e| e.providers.as_ref())
            .map(|set| set.providers.clone())
            .unwrap_or_default();
        self.publish_set(self.provider_version + 1, providers, Some(meta));
    }

    fn publish_set(&mut self, version: u64, providers: Vec<ProviderInfo>, meta: Option<NodeMeta>) {
        self.provider_version = version;
        let set = self.interner.set(
            self.me.number,
            ProviderSet {
                owner_id: String::from(&*self.me.id),
                owner_generation: self.me.generation,
                version,
                providers,
                meta,
            },
        );
        self.restamp_at(self.me.number, |r, _| {
            r.providers = Some(set);
            r.provider_version = version;
        });
    }

    /// Replaces the record of member `id` with a changed copy; `f` may also
    /// restart the entry's `since`.
    pub(super) fn restamp(&mut self, id: &str, f: impl FnOnce(&mut Record, &mut Millis)) {
        if let Some(n) = self.interner.number(id) {
            self.restamp_at(n, f);
        }
    }

    /// [`Mesh::restamp`] by member number.
    pub(super) fn restamp_at(&mut self, n: u32, f: impl FnOnce(&mut Record, &mut Millis)) {
        let interner = &self.interner;
        self.view.update_at(n, |e, since| {
            let mut r = Record::clone(e);
            f(&mut r, since);
            e.set_record(interner.record(r));
        });
    }

    /// Marks this node as leaving and returns the peers to say goodbye to.
    pub fn leave(&mut self) -> Vec<(Target, ExchangeRequest)> {
        self.status = Status::Left;
        self.sync_self();
        let mut live = self.live_targets();
        live.shuffle(&mut self.rng);
        live.truncate(self.cfg.fanout * 2);
        let goodbye = ExchangeRequest {
            sender: Some(self.self_member()),
            ..Default::default()
        };
        live.into_iter().map(|t| (t, goodbye.clone())).collect()
    }

    pub(super) fn sync_self(&mut self) {
        let (inc, status) = (self.incarnation, self.status);
        self.restamp_at(self.me.number, |r, _| {
            r.incarnation = inc;
            r.status = status;
        });
    }

    // ----- rounds --------------------------------------------------------

    /// Advances timers (suspicion, tombstones) and picks this round's targets.
    pub fn tick(&mut self, now: Millis) -> Vec<Target> {
        self.expire(now);
        if self.status == Status::Left {
            return Vec::new();
        }
        // One pass over the view; only the chosen entries are cloned into targets.
        let me = &self.me.id;
        let mut live: Vec<&Entry> = Vec::new();
        let mut dead: Vec<&Entry> = Vec::new();
        let mut targets: Vec<Target> = Vec::new();
        for e in self.view.iter() {
            match e.status {
                _ if e.info.id == *me => {}
                Status::Alive => live.push(e),
                Status::Suspect => {
                    live.push(e);
                    // Re-probe what we suspect: a success brings the refutation back quickly.
                    if e.suspected_by.contains(me) && targets.len() < self.cfg.fanout {
                        targets.push(target_of(e));
                    }
                }
                Status::Dead => dead.push(e),
                Status::Left => {}
            }
        }
        for e in live.choose_multiple(&mut self.rng, self.cfg.fanout) {
            let t = target_of(e);
            if !targets.contains(&t) {
                targets.push(t);
            }
        }

        // Now and then a dead member, so a healed partition finds its way back.
        if !dead.is_empty() {
            let p = dead.len() as f64 / (live.len() + 1) as f64;
            if self.rng.random_bool(p.min(1.0)) {
                if let Some(e) = dead.choose(&mut self.rng) {
                    targets.push(target_of(e));
                }
            }
        }

        // And a seed: always while alone, otherwise in proportion to how few we know.
        let seeds: Vec<&String> = self
            .seeds
            .iter()
            .filter(|s| !self.self_addrs.contains(*s))
            .collect();
        if !seeds.is_empty() {
            let p = seeds.len() as f64 / (live.len() + seeds.len()) as f64;
            if live.len() < seeds.len() || self.rng.random_bool(p.min(1.0)) {
                if let Some(addr) = seeds.choose(&mut self.rng) {
                    if !targets.iter().any(|t| &t.addr == *addr) {
                        targets.push(Target {
                            addr: (*addr).clone(),
                            id: None,
                        });
                    }
                }
            }
        }
        targets
    }

    pub(super) fn live_targets(&self) -> Vec<Target> {
        self.view
            .iter()
            .filter(|e| !e.status.is_tombstone() && e.info.id != self.me.id)
            .map(target_of)
            .collect()
    }

    /// The suspicion timeout for a view of `n` live members with `confirmations` suspecters.
    pub fn suspicion_timeout(&self, n: usize, suspecters: u32) -> Millis {
        let rounds = self.cfg.suspicion_mult * (n.max(1) as f64).log10().max(1.0);
        let min = rounds * self.cfg.gossip_interval as f64;
        let max = min * self.cfg.suspicion_max_mult.max(1.0);
        let k = f64::from(self.cfg.suspicion_confirmations.max(1));
        let c = f64::from(suspecters.saturating_sub(1)).min(k);
        let t = max - (max - min) * (c + 1.0).ln() / (k + 1.0).ln();
        t.max(min) as Millis
    }

    fn expire(&mut self, now: Millis) {
        let n = self.live_count();
        let mut to_dead = Vec::new();
        let mut to_delete = Vec::new();
        // Most rounds hold no suspect and no tombstone: nothing to scan for.
        let timers = self.view.suspect_len() > 0 || self.view.live_len() < self.view.len();
        let scanned = if timers { self.view.len() } else { 0 };
        for e in self.view.iter().take(scanned) {
            match e.status {
                Status::Suspect => {
                    let timeout = self.suspicion_timeout(n, e.suspected_by.len() as u32);
                    if now.saturating_sub(self.view.since(e)) >= timeout {
                        to_dead.push(e.info.id.clone());
                    }
                }
                Status::Dead | Status::Left
                    if e.info.id != self.me.id
                        && now.saturating_sub(self.view.since(e)) >= self.cfg.tombstone_grace =>
                {
                    to_delete.push(e.info.id.clone());
                }
                _ => {}
            }
        }
        for id in to_dead {
            info!(member = %id, "member declared dead");
            self.restamp(&id, |r, since| {
                r.status = Status::Dead;
                r.suspected_by = Suspecters::default();
                *since = now;
            });
        }
        for id in to_delete {
            if let Some(e) = self.view.remove(&id) {
                debug!(member = %id, "tombstone deleted");
                self.remember_forgotten(e.info.id.clone(), e.info.generation, e.incarnation, now);
            }
        }
        while let Some(id) = self.forgotten_order.front() {
            let expired = self
                .forgotten
                .get(id)
                .is_none_or(|(_, _, at)| now.saturating_sub(*at) >= self.cfg.forget_after);
            if !expired && self.forgotten.len() <= FORGOTTEN_CAP {
                break;
            }
            if let Some(id) = self.forgotten_order.pop_front() {
                self.forgotten.remove(&id);
            }
        }
    }

    pub(super) fn remember_forgotten(
        &mut self,
        id: Arc<str>,
        generation: u64,
        inc: u64,
        now: Millis,
    ) {
        if self
            .forgotten
            .insert(id.clone(), (generation, inc, now))
            .is_none()
        {
            self.forgotten_order.push_back(id);
        }
    }
}

fn target_of(e: &Entry) -> Target {
    Target {
        addr: e.info.addr.clone(),
        id: Some(e.info.id.clone()),
    }
}

fn same_provider(a: &ProviderInfo, b: &ProviderInfo) -> bool {
    ProviderInfo {
        version: 0,
        ..a.clone()
    } == ProviderInfo {
        version: 0,
        ..b.clone()
    }
}

fn interned_ids(interner: &Interner, ids: &[String], cap: usize) -> Suspecters {
    let mut out: Vec<Arc<str>> = Vec::new();
    for id in ids.iter().take(cap) {
        if !out.iter().any(|o| **o == **id) {
            out.push(interner.id(id));
        }
    }
    Suspecters::from(out)
}

fn union_ids(old: &[Arc<str>], interner: &Interner, new: &[String], cap: usize) -> Suspecters {
    let mut out = old.to_vec();
    for id in new {
        if out.len() >= cap {
            break;
        }
        if !out.iter().any(|o| **o == **id) {
            out.push(interner.id(id));
        }
    }
    Suspecters::from(out)
}
