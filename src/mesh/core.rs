//! The sans-IO membership and provider gossip state machine.
//!
//! Messages and ticks go in, messages come out; the core owns no socket and
//! reads no clock (`now` is passed in, randomness comes from a seeded RNG).
//! The same code runs over tonic in a node and inside the simulator.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use prost::Message;
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use tracing::{debug, info};

use super::intern::Interner;
use super::record::{bucket_count_for, MemberInfo, Millis, Stamp, Status};
use super::view::{bucket_mask, Entry, Suspecters, View};
use crate::proto::peer::{
    Digest, ExchangeRequest, ExchangeResponse, Member, MemberDigest, ProviderExchangeRequest,
    ProviderExchangeResponse, ProviderInfo, ProviderSet,
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
            max_message_bytes: 64 * 1024,
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
    forgotten: HashMap<Arc<str>, (u64, u64, Millis)>,
    forgotten_order: VecDeque<Arc<str>>,
    rng: SmallRng,
    interner: Interner,
}

impl Mesh {
    pub fn new(identity: Identity, cfg: MeshConfig, seed: u64, now: Millis) -> Mesh {
        Self::with_interner(identity, cfg, seed, now, Interner::default())
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
        let mut mesh = Mesh {
            cfg,
            me: me.clone(),
            incarnation: 0,
            status: Status::Alive,
            provider_version: 0,
            view: View::default(),
            seeds: Vec::new(),
            self_addrs: HashSet::from([me.addr.clone()]),
            forgotten: HashMap::new(),
            forgotten_order: VecDeque::new(),
            rng: SmallRng::seed_from_u64(seed),
            interner,
        };
        mesh.view.put(Entry {
            info: me,
            incarnation: 0,
            status: Status::Alive,
            provider_version: 0,
            providers: None,
            suspected_by: Suspecters::default(),
            bucket: 0,
            since: now,
            last_heard: Some(now),
        });
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

    /// Members that are alive or suspected (not tombstones), self included.
    pub fn live_count(&self) -> usize {
        self.view
            .iter()
            .filter(|e| !e.status.is_tombstone())
            .count()
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
            id: self.me.id.to_string(),
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
                p.owner_id = self.me.id.to_string();
                p.owner_generation = self.me.generation;
                // A provider keeps the version it last changed in.
                p.version = match old.get(&p.id) {
                    Some(prev) if same_provider(prev, &p) => prev.version,
                    _ => version,
                };
                p
            })
            .collect();
        self.provider_version = version;
        let set = Arc::new(ProviderSet {
            owner_id: self.me.id.to_string(),
            owner_generation: self.me.generation,
            version,
            providers,
        });
        self.view.update(&self.me.id.clone(), |e| {
            e.providers = Some(set);
            e.provider_version = version;
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

    fn sync_self(&mut self) {
        let (inc, status) = (self.incarnation, self.status);
        self.view.update(&self.me.id.clone(), |e| {
            e.incarnation = inc;
            e.status = status;
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

    fn live_targets(&self) -> Vec<Target> {
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
        for e in self.view.iter() {
            match e.status {
                Status::Suspect => {
                    let timeout = self.suspicion_timeout(n, e.suspected_by.len() as u32);
                    if now.saturating_sub(e.since) >= timeout {
                        to_dead.push(e.info.id.clone());
                    }
                }
                Status::Dead | Status::Left if e.info.id != self.me.id => {
                    if now.saturating_sub(e.since) >= self.cfg.tombstone_grace {
                        to_delete.push(e.info.id.clone());
                    }
                }
                _ => {}
            }
        }
        for id in to_dead {
            info!(member = %id, "member declared dead");
            self.view.update(&id, |e| {
                e.status = Status::Dead;
                e.suspected_by = Suspecters::default();
                e.since = now;
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

    fn remember_forgotten(&mut self, id: Arc<str>, generation: u64, inc: u64, now: Millis) {
        if self
            .forgotten
            .insert(id.clone(), (generation, inc, now))
            .is_none()
        {
            self.forgotten_order.push_back(id);
        }
    }

    // ----- client side of an exchange ------------------------------------

    /// Starts an exchange with `target`: the first call to make.
    pub fn open(&mut self, target: Target) -> (Exchange, Call) {
        let ex = Exchange {
            target,
            phase: Phase::Opening,
            attempts: 1,
        };
        (ex, Call::Peers(self.opening_request()))
    }

    fn opening_request(&self) -> ExchangeRequest {
        ExchangeRequest {
            sender: Some(self.self_member()),
            view_hash: self.view.hash() | 1,
            ..Default::default()
        }
    }

    /// A call of the exchange failed. Returns a retry of the opening call, or
    /// `None` when the exchange is over; a target that never answered is suspected.
    pub fn on_failure(&mut self, now: Millis, ex: &mut Exchange) -> Option<Call> {
        if ex.phase != Phase::Opening {
            return None;
        }
        if ex.attempts < OPEN_ATTEMPTS {
            ex.attempts += 1;
            return Some(Call::Peers(self.opening_request()));
        }
        if let Some(id) = ex.target.id.clone() {
            self.suspect(now, &id);
        }
        None
    }

    fn suspect(&mut self, now: Millis, id: &str) {
        let me = self.me.id.clone();
        let k = self.cfg.suspicion_confirmations as usize + 1;
        self.view.update(id, |e| match e.status {
            Status::Alive => {
                debug!(member = %e.info.id, "member suspected");
                e.status = Status::Suspect;
                e.suspected_by = Suspecters::from(vec![me]);
                e.since = now;
            }
            Status::Suspect if !e.suspected_by.contains(&me) && e.suspected_by.len() < k => {
                let mut by = e.suspected_by.to_vec();
                by.push(me);
                e.suspected_by = Suspecters::from(by);
            }
            _ => {}
        });
    }

    /// Feeds the answer to the exchange's last call; returns the next calls.
    pub fn on_reply(&mut self, now: Millis, ex: &mut Exchange, reply: Reply) -> Vec<Call> {
        match reply {
            Reply::Providers(resp) => {
                for set in resp.sets {
                    self.apply_provider_set(set);
                }
                Vec::new()
            }
            Reply::Peers(resp) => self.on_peers_reply(now, ex, resp),
        }
    }

    fn on_peers_reply(
        &mut self,
        now: Millis,
        ex: &mut Exchange,
        resp: ExchangeResponse,
    ) -> Vec<Call> {
        let Some(sender) = resp.sender else {
            return Vec::new(); // an old peer: nothing versioned to learn
        };
        if sender.id == *self.me.id {
            // A seed address that turned out to be ourselves.
            self.self_addrs.insert(ex.target.addr.clone());
            return Vec::new();
        }
        self.observe_sender(now, sender);
        if let Some(hint) = resp.refute {
            self.refute(&hint);
        }
        for m in resp.members {
            let _ = self.apply_member(now, m, false);
        }
        match ex.phase {
            Phase::Opening => {
                if let Some(digest) = resp.digest {
                    // Small mesh: the whole digest came at once.
                    ex.phase = Phase::Closing;
                    let mask = bucket_mask(1, &[0]);
                    let mut calls = vec![Call::Peers(ExchangeRequest {
                        sender: Some(self.self_member()),
                        digest: Some(self.digest_for(1, &[0])),
                        members: self.missing_for(&digest.entries, 1, &mask),
                        ..Default::default()
                    })];
                    calls.extend(self.provider_call(&digest.entries, 1, &mask));
                    calls
                } else if resp.bucket_count > 0 && resp.view_hash != (self.view.hash() | 1) {
                    let k = resp
                        .bucket_count
                        .next_power_of_two()
                        .min(super::view::FINE_BUCKETS);
                    let mine = self.view.bucket_hashes(k);
                    let mut differing: Vec<u32> = (0..k)
                        .filter(|b| resp.bucket_hashes.get(*b as usize) != mine.get(*b as usize))
                        .collect();
                    if differing.is_empty() {
                        return Vec::new();
                    }
                    differing.shuffle(&mut self.rng);
                    let buckets = self.fit_buckets(k, differing);
                    ex.phase = Phase::Negotiating { bucket_count: k };
                    vec![Call::Peers(ExchangeRequest {
                        sender: Some(self.self_member()),
                        digest: Some(self.digest_for(k, &buckets)),
                        ..Default::default()
                    })]
                } else {
                    Vec::new()
                }
            }
            Phase::Negotiating { bucket_count } => {
                ex.phase = Phase::Closing;
                let Some(digest) = resp.digest else {
                    return Vec::new();
                };
                if digest.bucket_count != bucket_count {
                    return Vec::new();
                }
                let mask = bucket_mask(bucket_count, &digest.buckets);
                let mut calls = Vec::new();
                let members = self.missing_for(&digest.entries, bucket_count, &mask);
                if !members.is_empty() {
                    calls.push(Call::Peers(ExchangeRequest {
                        sender: Some(self.self_member()),
                        members,
                        ..Default::default()
                    }));
                }
                calls.extend(self.provider_call(&digest.entries, bucket_count, &mask));
                calls
            }
            Phase::Closing => Vec::new(),
        }
    }

    /// Picks as many of `buckets` as fit one message, in the given order.
    fn fit_buckets(&self, k: u32, buckets: Vec<u32>) -> Vec<u32> {
        const ENTRY_BYTES: usize = 40;
        let sizes = self.view.bucket_sizes(k);
        let mut budget = self.cfg.max_message_bytes / 2;
        let mut chosen = Vec::new();
        for b in buckets {
            let cost = sizes.get(b as usize).copied().unwrap_or(0) * ENTRY_BYTES + 8;
            if cost > budget && !chosen.is_empty() {
                continue;
            }
            budget = budget.saturating_sub(cost);
            chosen.push(b);
        }
        chosen
    }

    fn digest_for(&self, k: u32, buckets: &[u32]) -> Digest {
        let mask = bucket_mask(k, buckets);
        Digest {
            bucket_count: k,
            buckets: buckets.to_vec(),
            entries: self.view.in_buckets(k, &mask).map(Entry::digest).collect(),
        }
    }

    /// Provider sets the peer lacks and the ones it has newer, given its digest.
    fn provider_call(&mut self, theirs: &[MemberDigest], k: u32, mask: &[bool]) -> Option<Call> {
        let theirs: HashMap<&str, &MemberDigest> =
            theirs.iter().map(|d| (d.id.as_str(), d)).collect();
        let mut sets = Vec::new();
        let mut wants = Vec::new();
        let mut budget = self.cfg.max_message_bytes;
        for e in self.view.in_buckets(k, mask) {
            if e.status.is_tombstone() {
                continue;
            }
            let Some(d) = theirs.get(&*e.info.id) else {
                continue;
            };
            if d.generation != e.info.generation {
                continue;
            }
            let held = e.held_version();
            if held > d.provider_version {
                if let Some(set) = &e.providers {
                    let len = set.encoded_len();
                    if len <= budget {
                        budget -= len;
                        sets.push(ProviderSet::clone(set));
                    }
                }
            } else if d.provider_version > held && e.info.id != self.me.id {
                wants.push(MemberDigest {
                    id: e.info.id.to_string(),
                    generation: e.info.generation,
                    provider_version: held,
                    ..Default::default()
                });
            }
        }
        if sets.is_empty() && wants.is_empty() {
            return None;
        }
        Some(Call::Providers(ProviderExchangeRequest {
            providers: Vec::new(),
            sets,
            wants,
            sender_id: self.me.id.to_string(),
        }))
    }

    // ----- server side ---------------------------------------------------

    /// Answers an `ExchangePeers` call.
    pub fn handle_exchange(&mut self, now: Millis, req: ExchangeRequest) -> ExchangeResponse {
        let Some(sender) = req.sender else {
            // An old client: answer in the original's terms.
            return ExchangeResponse {
                known_peers: self.live_addrs(),
                sender: Some(self.self_member()),
                ..Default::default()
            };
        };
        let mut resp = ExchangeResponse::default();
        if sender.id != *self.me.id {
            resp.refute = self.observe_sender(now, sender);
        }
        if let Some(hint) = req.refute {
            self.refute(&hint);
        }
        for m in req.members {
            let _ = self.apply_member(now, m, false);
        }
        if let Some(digest) = req.digest {
            let k = digest
                .bucket_count
                .clamp(1, super::view::FINE_BUCKETS)
                .next_power_of_two();
            let mask = bucket_mask(k, &digest.buckets);
            self.refute_from_digest(&digest.entries);
            resp.members = self.missing_for(&digest.entries, k, &mask);
            if k > 1 {
                // Whole buckets only, as many as fit: the caller learns which were covered.
                let covered = self.fit_buckets(k, digest.buckets);
                resp.digest = Some(self.digest_for(k, &covered));
            }
        } else if req.view_hash != 0 && req.view_hash != (self.view.hash() | 1) {
            let k = bucket_count_for(self.view.len());
            if k == 1 {
                resp.digest = Some(self.digest_for(1, &[0]));
            } else {
                resp.bucket_count = k;
                resp.bucket_hashes = self.view.bucket_hashes(k);
            }
        }
        resp.sender = Some(self.self_member());
        resp.view_hash = self.view.hash() | 1;
        resp
    }

    /// Answers an `ExchangeProviders` call.
    pub fn handle_providers(&mut self, req: ProviderExchangeRequest) -> ProviderExchangeResponse {
        if req.sets.is_empty() && req.wants.is_empty() && req.sender_id.is_empty() {
            // An old client: a flat list of everything live.
            return ProviderExchangeResponse {
                providers: self.providers(),
                sets: Vec::new(),
            };
        }
        for set in req.sets {
            self.apply_provider_set(set);
        }
        let mut sets = Vec::new();
        let mut budget = self.cfg.max_message_bytes;
        for want in req.wants {
            let Some(e) = self.view.get(&want.id) else {
                continue;
            };
            let Some(set) = &e.providers else { continue };
            if e.info.generation == want.generation && set.version > want.provider_version {
                let len = set.encoded_len();
                if len > budget {
                    break;
                }
                budget -= len;
                sets.push(ProviderSet::clone(set));
            }
        }
        ProviderExchangeResponse {
            providers: Vec::new(),
            sets,
        }
    }

    fn live_addrs(&self) -> Vec<String> {
        self.view
            .iter()
            .filter(|e| !e.status.is_tombstone() && e.info.id != self.me.id)
            .map(|e| e.info.addr.clone())
            .collect()
    }

    // ----- merging -------------------------------------------------------

    /// The sender's own record: direct evidence it is alive. Returns a hint
    /// when we hold it suspected, dead or forgotten at its incarnation or above.
    fn observe_sender(&mut self, now: Millis, sender: Member) -> Option<MemberDigest> {
        let id = sender.id.clone();
        let generation = sender.generation;
        let inc = sender.incarnation;
        let _ = self.apply_member(now, sender, true);
        if let Some((g, i, _)) = self.forgotten.get(id.as_str()) {
            if *g == generation && *i >= inc {
                return Some(MemberDigest {
                    id,
                    generation,
                    incarnation: *i,
                    status: Status::Dead.to_proto(),
                    ..Default::default()
                });
            }
        }
        let e = self.view.get(&id)?;
        (e.info.generation == generation
            && matches!(e.status, Status::Suspect | Status::Dead)
            && e.incarnation >= inc)
            .then(|| e.digest())
    }

    /// Another node holds us suspected or dead: outdate that with a higher incarnation.
    fn refute(&mut self, hint: &MemberDigest) {
        let Some(status) = Status::from_proto(hint.status) else {
            return;
        };
        if hint.id != *self.me.id
            || hint.generation != self.me.generation
            || !matches!(status, Status::Suspect | Status::Dead)
            || hint.incarnation < self.incarnation
            || self.status == Status::Left
        {
            return;
        }
        self.incarnation = hint.incarnation + 1;
        debug!(incarnation = self.incarnation, "refuting suspicion");
        self.sync_self();
    }

    fn refute_from_digest(&mut self, entries: &[MemberDigest]) {
        if let Some(d) = entries.iter().find(|d| d.id == *self.me.id) {
            let d = d.clone();
            self.refute(&d);
        }
    }

    /// Merges one member record; `direct` when it came from the member itself.
    pub fn apply_member(&mut self, now: Millis, m: Member, direct: bool) -> Result<bool, Rejected> {
        let Some(stamp) = Stamp::of_member(&m) else {
            return Err(Rejected::Malformed);
        };
        if m.id.is_empty() || m.addr.is_empty() {
            return Err(Rejected::Malformed);
        }
        if m.id == *self.me.id {
            if m.generation == self.me.generation {
                self.refute(&MemberDigest {
                    id: m.id,
                    generation: m.generation,
                    incarnation: m.incarnation,
                    status: m.status,
                    ..Default::default()
                });
            }
            return Ok(false);
        }
        if let Some((g, i, _)) = self.forgotten.get(m.id.as_str()) {
            let refuted = m.generation == *g && stamp.status == Status::Alive && m.incarnation > *i;
            if m.generation < *g || (m.generation == *g && !refuted) {
                return Err(Rejected::Forgotten);
            }
            self.forgotten.remove(m.id.as_str());
        }
        let k = self.cfg.suspicion_confirmations as usize + 1;
        let Some(old) = self.view.get(&m.id) else {
            let info = self.interner.info(&m.id, m.name, m.addr, m.generation);
            let entry = Entry {
                info,
                incarnation: m.incarnation,
                status: stamp.status,
                provider_version: m.provider_version,
                providers: None,
                suspected_by: interned_ids(&self.interner, &m.suspected_by, k),
                bucket: 0,
                since: now,
                last_heard: direct.then_some(now),
            };
            info!(member = %m.id, status = stamp.status.as_str(), "member discovered");
            self.view.put(entry);
            return Ok(true);
        };
        let old_stamp = old.stamp();
        if stamp.supersedes(&old_stamp) {
            let info = if old.info.generation == m.generation {
                old.info.clone()
            } else {
                self.interner.info(&m.id, m.name, m.addr, m.generation)
            };
            let same_gen = old.info.generation == m.generation;
            let status_changed = old.status != stamp.status || !same_gen;
            if status_changed {
                info!(member = %m.id, from = old.status.as_str(), to = stamp.status.as_str(), "member state changed");
            }
            let suspected_by = if stamp.status == Status::Suspect
                && old.status == Status::Suspect
                && old.incarnation == m.incarnation
                && same_gen
            {
                union_ids(&old.suspected_by, &self.interner, &m.suspected_by, k)
            } else {
                interned_ids(&self.interner, &m.suspected_by, k)
            };
            let entry = Entry {
                info,
                incarnation: m.incarnation,
                status: stamp.status,
                provider_version: if same_gen {
                    old.provider_version.max(m.provider_version)
                } else {
                    m.provider_version
                },
                providers: if same_gen {
                    old.providers.clone()
                } else {
                    None
                },
                suspected_by,
                bucket: 0,
                since: if status_changed || old.incarnation != m.incarnation {
                    now
                } else {
                    old.since
                },
                last_heard: if direct { Some(now) } else { old.last_heard },
            };
            self.view.put(entry);
            return Ok(true);
        }
        // Not newer. Still: confirmations to merge, and direct contact to note.
        let merge = stamp.status == Status::Suspect
            && old_stamp
                == Stamp {
                    confirmations: old_stamp.confirmations,
                    ..stamp
                }
            && m.suspected_by
                .iter()
                .any(|s| !old.suspected_by.iter().any(|o| **o == **s));
        let old_generation = old.info.generation;
        if merge {
            let merged = union_ids(&old.suspected_by, &self.interner, &m.suspected_by, k);
            self.view.update(&m.id, |e| e.suspected_by = merged);
        }
        if direct && old_generation == m.generation {
            self.view.update(&m.id, |e| e.last_heard = Some(now));
        }
        if merge {
            Ok(true)
        } else {
            Err(Rejected::Stale)
        }
    }

    fn apply_provider_set(&mut self, set: ProviderSet) {
        if set.owner_id == *self.me.id {
            return;
        }
        let Some(e) = self.view.get(&set.owner_id) else {
            return;
        };
        if e.status.is_tombstone()
            || e.info.generation != set.owner_generation
            || set.version <= e.held_version()
            || set.providers.iter().any(|p| p.owner_id != set.owner_id)
        {
            return;
        }
        let set = self.interner.set(set);
        let version = set.version;
        self.view.update(&e.info.id.clone(), |e| {
            e.providers = Some(set);
            e.provider_version = e.provider_version.max(version);
        });
    }

    /// Member records the peer lacks in the given buckets, most out of date
    /// first (unknown members, then by how far behind), capped to one message.
    fn missing_for(&self, theirs: &[MemberDigest], k: u32, mask: &[bool]) -> Vec<Member> {
        let theirs: HashMap<&str, Stamp> = theirs
            .iter()
            .filter_map(|d| Some((d.id.as_str(), Stamp::of_digest(d)?)))
            .collect();
        let mut candidates: Vec<(u64, &Entry)> = self
            .view
            .in_buckets(k, mask)
            .filter_map(|e| match theirs.get(&*e.info.id) {
                None => Some((u64::MAX, e)),
                Some(s) if e.stamp().supersedes(s) => {
                    let gap = if s.generation != e.info.generation {
                        u64::MAX - 1
                    } else {
                        e.incarnation.saturating_sub(s.incarnation) + 1
                    };
                    Some((gap, e))
                }
                Some(_) => None,
            })
            .collect();
        candidates.sort_by(|a, b| b.0.cmp(&a.0));
        let mut budget = self.cfg.max_message_bytes;
        let mut out = Vec::new();
        for (_, e) in candidates {
            let m = e.to_member();
            let len = m.encoded_len() + 2;
            if len > budget {
                break;
            }
            budget -= len;
            out.push(m);
        }
        out
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
