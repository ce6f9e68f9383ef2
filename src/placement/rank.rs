//! Ranking the feasible providers for a deployment: tiers first, then a
//! strategy.
//!
//! Decisions run against an index built from the cached capacity view, so a
//! decision costs O(log n + k) for most strategies instead of a scan of every
//! provider: spread walks the providers by free CPU from the top, bin-pack
//! from the smallest that fits, round-robin from a cursor, random and
//! weighted probe a few random entries before falling back to a scan.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

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

#[derive(Debug, Default)]
struct TierIndex {
    /// (free CPU, candidate index), ascending.
    by_cpu: BTreeSet<(u64, u32)>,
    all: Vec<u32>,
    by_region: HashMap<String, BTreeSet<(u64, u32)>>,
    /// Running sums of free CPU over `all`, for weighted draws.
    weights: Vec<u64>,
}

/// The candidates of one decision round, indexed per tier.
#[derive(Debug, Default)]
pub struct Index {
    cands: Vec<Candidate>,
    tiers: [TierIndex; 3],
    cursor: AtomicUsize,
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
    pub fn build(cands: Vec<Candidate>) -> Index {
        let mut tiers: [TierIndex; 3] = Default::default();
        for (i, c) in cands.iter().enumerate() {
            let t = &mut tiers[tier_slot(c.tier)];
            let key = (c.capacity.available().cpu_millis, i as u32);
            t.by_cpu.insert(key);
            t.all.push(i as u32);
            let sum = t.weights.last().copied().unwrap_or(0) + key.0;
            t.weights.push(sum);
            if let Some(r) = c.labels.get(labels::REGION) {
                t.by_region.entry(r.clone()).or_default().insert(key);
            }
        }
        Index {
            cands,
            tiers,
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.cands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cands.is_empty()
    }

    pub fn candidates(&self) -> &[Candidate] {
        &self.cands
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
        let mut out: Vec<u32> = Vec::with_capacity(k);
        let ok = |i: u32, out: &Vec<u32>| {
            let c = &self.cands[i as usize];
            !out.contains(&i) && !skip.contains(&c.id) && need.feasible(c)
        };
        for t in &self.tiers {
            if out.len() >= k {
                break;
            }
            let want = k;
            match strategy {
                Strategy::Spread => take(t.by_cpu.iter().rev().map(|e| e.1), want, &mut out, ok),
                Strategy::BinPack => take(
                    t.by_cpu
                        .range((need.resources.cpu_millis, 0)..)
                        .map(|e| e.1),
                    want,
                    &mut out,
                    ok,
                ),
                Strategy::RoundRobin if !t.all.is_empty() => {
                    let start = self.cursor.fetch_add(1, Ordering::Relaxed) % t.all.len();
                    let ring = t.all[start..].iter().chain(&t.all[..start]).copied();
                    take(ring, want, &mut out, ok)
                }
                Strategy::RoundRobin => {}
                Strategy::Random | Strategy::Weighted if !t.all.is_empty() => {
                    for _ in 0..PROBES {
                        if out.len() >= want {
                            break;
                        }
                        let i = if strategy == Strategy::Weighted && *t.weights.last().unwrap() > 0
                        {
                            let x = rng.random_range(0..*t.weights.last().unwrap());
                            t.all[t.weights.partition_point(|&w| w <= x)]
                        } else {
                            t.all[rng.random_range(0..t.all.len())]
                        };
                        if ok(i, &out) {
                            out.push(i);
                        }
                    }
                    // Few feasible ones: find them by a scan from a random point.
                    let start = rng.random_range(0..t.all.len());
                    let ring = t.all[start..].iter().chain(&t.all[..start]).copied();
                    take(ring, want, &mut out, ok);
                }
                Strategy::Random | Strategy::Weighted => {}
                Strategy::Geographic => {
                    if let Some(set) = need.region.and_then(|r| t.by_region.get(r)) {
                        take(set.iter().rev().map(|e| e.1), want, &mut out, ok);
                    }
                    take(t.by_cpu.iter().rev().map(|e| e.1), want, &mut out, ok);
                }
            }
        }
        out.into_iter().map(|i| &self.cands[i as usize]).collect()
    }
}

fn take(
    iter: impl Iterator<Item = u32>,
    want: usize,
    out: &mut Vec<u32>,
    ok: impl Fn(u32, &Vec<u32>) -> bool,
) {
    if out.len() >= want {
        return;
    }
    for i in iter {
        if ok(i, out) {
            out.push(i);
            if out.len() >= want {
                return;
            }
        }
    }
}
