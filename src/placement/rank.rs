//! Ranking the feasible providers for a deployment: tiers first, then a
//! strategy.
//!
//! Decisions run against an index of the cached capacity view, so a
//! decision costs O(log n + k) for most strategies instead of a scan of every
//! provider: spread walks the providers by free CPU from the top, bin-pack
//! from the smallest that fits, round-robin from a cursor, random and
//! weighted probe a few random entries before falling back to a scan. The
//! index is persistent: a changed provider costs O(log n), not a rebuild.

use std::cmp::Ordering as CmpOrdering;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use imbl::{HashMap as ImHashMap, OrdSet, Vector};
use rand::rngs::SmallRng;
use rand::Rng;

use super::feasible::Need;
use crate::resource::{labels, Candidate, Tier};

/// How to order the feasible providers of one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Most free CPU first (least loaded): spreads load.
    #[default]
    Spread,
    /// Least free CPU that still fits: packs, keeps big holes free.
    BinPack,
    /// The next feasible provider after the last one chosen.
    RoundRobin,
    /// Random, with probability proportional to free CPU.
    Weighted,
    /// Uniformly random.
    Random,
    /// Providers labelled with the requested `region` first, then spread.
    Geographic,
}

pub const STRATEGIES: &str = "spread, binpack, round-robin, weighted, random, geographic";

impl Strategy {
    pub fn parse(s: &str) -> Result<Strategy, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "spread" | "least-loaded" | "least_loaded" => Strategy::Spread,
            "binpack" | "bin-pack" | "bin_pack" => Strategy::BinPack,
            "round-robin" | "roundrobin" | "round_robin" => Strategy::RoundRobin,
            "weighted" => Strategy::Weighted,
            "random" => Strategy::Random,
            "geographic" | "geo" => Strategy::Geographic,
            other => {
                return Err(format!(
                    "unknown strategy {other:?}: use one of {STRATEGIES}"
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Spread => "spread",
            Strategy::BinPack => "binpack",
            Strategy::RoundRobin => "round-robin",
            Strategy::Weighted => "weighted",
            Strategy::Random => "random",
            Strategy::Geographic => "geographic",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A candidate in its tier's free-CPU order. Ties go by id, the order of
/// the sorted candidate list, so an index built incrementally ranks exactly
/// as one built from scratch.
#[derive(Debug, Clone)]
struct ByCpu(u64, Arc<Candidate>);

impl ByCpu {
    fn of(c: &Arc<Candidate>) -> ByCpu {
        ByCpu(c.capacity.available().cpu_millis, c.clone())
    }

    fn candidate(&self) -> &Candidate {
        &self.1
    }
}

impl PartialEq for ByCpu {
    fn eq(&self, other: &ByCpu) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for ByCpu {}

impl PartialOrd for ByCpu {
    fn partial_cmp(&self, other: &ByCpu) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByCpu {
    fn cmp(&self, other: &ByCpu) -> CmpOrdering {
        (self.0, &self.1.id).cmp(&(other.0, &other.1.id))
    }
}

/// The lower bound of the entries with at least `cpu` free: sorts before
/// every real id at that figure (ids are never empty).
fn at_least(cpu: u64) -> ByCpu {
    static NOBODY: LazyLock<Arc<Candidate>> = LazyLock::new(|| {
        Arc::new(Candidate {
            id: String::new(),
            name: String::new(),
            kind: crate::resource::ProviderKind::Memory,
            tier: Tier::Discovered,
            owner_id: String::new(),
            owner_addr: String::new(),
            healthy: false,
            capacity: Default::default(),
            labels: Default::default(),
            version: 0,
            gpus: Vec::new(),
        })
    });
    ByCpu(cpu, NOBODY.clone())
}

/// One tier's candidates, in persistent collections: a copy shares all
/// but the paths a change touches, so an update is O(log n) whatever
/// decisions still hold the index it came from.
#[derive(Debug, Clone, Default)]
struct TierIndex {
    by_cpu: OrdSet<ByCpu>,
    /// By id: round-robin's ring and uniform draws.
    all: Vector<Arc<Candidate>>,
    by_region: ImHashMap<Arc<str>, OrdSet<ByCpu>>,
}

impl TierIndex {
    fn position(&self, id: &str) -> Result<usize, usize> {
        self.all.binary_search_by(|c| c.id.as_str().cmp(id))
    }

    fn insert(&mut self, c: Arc<Candidate>) {
        self.sort_in(&c);
        let at = self.position(&c.id).unwrap_or_else(|at| at);
        self.all.insert(at, c);
    }

    fn remove(&mut self, c: &Arc<Candidate>) {
        self.sort_out(c);
        if let Ok(at) = self.position(&c.id) {
            self.all.remove(at);
        }
    }

    /// `new` in place of `old`, same id: its place in the id order stays,
    /// so only its free-CPU entries move.
    fn replace(&mut self, old: &Arc<Candidate>, new: Arc<Candidate>) {
        self.sort_out(old);
        self.sort_in(&new);
        if let Ok(at) = self.position(&new.id) {
            self.all.set(at, new);
        }
    }

    fn sort_in(&mut self, c: &Arc<Candidate>) {
        let key = ByCpu::of(c);
        if let Some(r) = c.labels.get(labels::REGION) {
            self.by_region
                .entry(Arc::from(r.as_str()))
                .or_default()
                .insert(key.clone());
        }
        self.by_cpu.insert(key);
    }

    fn sort_out(&mut self, c: &Arc<Candidate>) {
        let key = ByCpu::of(c);
        self.by_cpu.remove(&key);
        if let Some(r) = c.labels.get(labels::REGION) {
            if let Some(set) = self.by_region.get_mut(r.as_str()) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_region.remove(r.as_str());
                }
            }
        }
    }

    /// A draw proportional to free CPU: a binary search of `weights`, the
    /// running sums of free CPU over `all`.
    fn weighted<'a>(&'a self, weights: &[u64], rng: &mut SmallRng) -> Option<&'a Candidate> {
        let total = *weights.last()?;
        if total == 0 {
            return self.uniform(rng);
        }
        let x = rng.random_range(0..total);
        self.all
            .get(weights.partition_point(|&w| w <= x))
            .map(|c| &**c)
    }

    fn running_sums(&self) -> Vec<u64> {
        let mut sum = 0;
        self.all
            .iter()
            .map(|c| {
                sum += c.capacity.available().cpu_millis;
                sum
            })
            .collect()
    }

    fn uniform(&self, rng: &mut SmallRng) -> Option<&Candidate> {
        if self.all.is_empty() {
            return None;
        }
        Some(&self.all[rng.random_range(0..self.all.len())])
    }

    fn ring(&self, start: usize) -> impl Iterator<Item = &Candidate> {
        let n = self.all.len();
        (start..n).chain(0..start).map(move |i| &*self.all[i])
    }
}

/// The candidates of one decision round, indexed per tier. Built once, then
/// kept up to date one changed provider at a time ([`Index::updated`]).
#[derive(Debug, Default)]
pub struct Index {
    // Keys are shared strings: an update copies the few nodes on its path,
    // and copying a node must not allocate a string per entry.
    by_id: ImHashMap<Arc<str>, Arc<Candidate>>,
    by_owner: ImHashMap<Arc<str>, OrdSet<Arc<str>>>,
    tiers: [TierIndex; 3],
    cursor: AtomicUsize,
    /// The candidate list, made on first use (the slow paths: explaining a
    /// refusal, spreading replicas, preemption), not on every update.
    listed: OnceLock<Vec<Candidate>>,
    /// Each tier's running sums of free CPU, made on the first weighted
    /// decision: O(n) once per change, paid only where `weighted` is used.
    weights: [OnceLock<Vec<u64>>; 3],
}

impl Clone for Index {
    fn clone(&self) -> Index {
        Index {
            by_id: self.by_id.clone(),
            by_owner: self.by_owner.clone(),
            tiers: self.tiers.clone(),
            cursor: AtomicUsize::new(self.cursor.load(Ordering::Relaxed)),
            listed: OnceLock::new(),
            weights: Default::default(),
        }
    }
}

const PROBES: usize = 32;

fn tier_slot(t: Tier) -> usize {
    match t {
        Tier::Internal => 0,
        Tier::External => 1,
        Tier::Discovered => 2,
    }
}

impl Index {
    pub fn build(mut cands: Vec<Candidate>) -> Index {
        cands.sort_by(|a, b| (a.tier, &a.id).cmp(&(b.tier, &b.id)));
        let mut index = Index::default();
        for c in cands {
            if index.by_id.contains_key(c.id.as_str()) {
                // The same id twice: the later one replaces the first.
                index.put(c);
                continue;
            }
            // In (tier, id) order: each tier's list only grows at its end.
            let c = Arc::new(c);
            index.tiers[tier_slot(c.tier)].insert(c.clone());
            index.own(c);
        }
        index
    }

    /// This index with the candidates of `gone` removed and `now` added or
    /// replaced (by id); O((gone + now) log n), and `self` is left as it was.
    pub fn updated<'a>(
        &self,
        gone: impl IntoIterator<Item = &'a str>,
        now: impl IntoIterator<Item = Candidate>,
    ) -> Index {
        let mut next = self.clone();
        for id in gone {
            next.remove(id);
        }
        for c in now {
            next.put(c);
        }
        next
    }

    fn put(&mut self, c: Candidate) {
        let c = Arc::new(c);
        if let Some(slot) = self.by_id.get_mut(c.id.as_str()) {
            if (slot.tier, &slot.owner_id) == (c.tier, &c.owner_id) {
                // The usual change (capacity, health, labels): in place.
                let old = std::mem::replace(slot, c.clone());
                self.tiers[tier_slot(c.tier)].replace(&old, c);
                return;
            }
        }
        self.remove(&c.id);
        self.tiers[tier_slot(c.tier)].insert(c.clone());
        self.own(c);
    }

    /// Files `c` under its id and its owner.
    fn own(&mut self, c: Arc<Candidate>) {
        let id: Arc<str> = Arc::from(c.id.as_str());
        self.by_owner
            .entry(Arc::from(c.owner_id.as_str()))
            .or_default()
            .insert(id.clone());
        self.by_id.insert(id, c);
    }

    fn remove(&mut self, id: &str) {
        let Some(old) = self.by_id.remove(id) else {
            return;
        };
        self.tiers[tier_slot(old.tier)].remove(&old);
        let owner = old.owner_id.as_str();
        if let Some(ids) = self.by_owner.get_mut(owner) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }

    /// The ids of `owner`'s providers here.
    pub fn owned_by(&self, owner: &str) -> impl Iterator<Item = &str> {
        self.by_owner
            .get(owner)
            .into_iter()
            .flat_map(|ids| ids.iter().map(|id| &**id))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// One candidate, by provider id.
    pub fn get(&self, id: &str) -> Option<&Candidate> {
        self.by_id.get(id).map(|c| &**c)
    }

    /// Every candidate, best tier first, by id within a tier.
    pub fn candidates(&self) -> &[Candidate] {
        self.listed.get_or_init(|| {
            self.tiers
                .iter()
                .flat_map(|t| t.all.iter().map(|c| (**c).clone()))
                .collect()
        })
    }

    /// Up to `k` feasible candidates not in `skip`, best first: every
    /// feasible internal one before any external, external before discovered.
    pub fn rank(
        &self,
        need: &Need,
        strategy: Strategy,
        k: usize,
        skip: &HashSet<String>,
        rng: &mut SmallRng,
    ) -> Vec<&Candidate> {
        let mut out: Vec<&Candidate> = Vec::with_capacity(k);
        let ok = |c: &Candidate, out: &Vec<&Candidate>| {
            !out.iter().any(|o| std::ptr::eq(*o, c)) && !skip.contains(&c.id) && need.feasible(c)
        };
        for (slot, t) in self.tiers.iter().enumerate() {
            if out.len() >= k {
                break;
            }
            let want = k;
            match strategy {
                Strategy::Spread => take(
                    t.by_cpu.iter().rev().map(ByCpu::candidate),
                    want,
                    &mut out,
                    ok,
                ),
                Strategy::BinPack => take(
                    t.by_cpu
                        .range(at_least(need.resources.cpu_millis)..)
                        .map(ByCpu::candidate),
                    want,
                    &mut out,
                    ok,
                ),
                Strategy::RoundRobin if !t.all.is_empty() => {
                    let start = self.cursor.fetch_add(1, Ordering::Relaxed) % t.all.len();
                    take(t.ring(start), want, &mut out, ok)
                }
                Strategy::RoundRobin => {}
                Strategy::Random | Strategy::Weighted if !t.all.is_empty() => {
                    for _ in 0..PROBES {
                        if out.len() >= want {
                            break;
                        }
                        let drawn = if strategy == Strategy::Weighted {
                            let weights = self.weights[slot].get_or_init(|| t.running_sums());
                            t.weighted(weights, rng)
                        } else {
                            t.uniform(rng)
                        };
                        if let Some(c) = drawn.filter(|c| ok(c, &out)) {
                            out.push(c);
                        }
                    }
                    // Few feasible ones: find them by a scan from a random point.
                    let start = rng.random_range(0..t.all.len());
                    take(t.ring(start), want, &mut out, ok);
                }
                Strategy::Random | Strategy::Weighted => {}
                Strategy::Geographic => {
                    if let Some(set) = need.region.and_then(|r| t.by_region.get(r)) {
                        take(set.iter().rev().map(ByCpu::candidate), want, &mut out, ok);
                    }
                    take(
                        t.by_cpu.iter().rev().map(ByCpu::candidate),
                        want,
                        &mut out,
                        ok,
                    );
                }
            }
        }
        out
    }
}

fn take<'a>(
    iter: impl Iterator<Item = &'a Candidate>,
    want: usize,
    out: &mut Vec<&'a Candidate>,
    ok: impl Fn(&Candidate, &Vec<&'a Candidate>) -> bool,
) {
    if out.len() >= want {
        return;
    }
    for c in iter {
        if ok(c, out) {
            out.push(c);
            if out.len() >= want {
                return;
            }
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod index_tests;
