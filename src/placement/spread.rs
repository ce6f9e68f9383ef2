//! Spreading the replicas of a service: which providers a replica may go
//! to so that no domain (node, provider, or value of a label) holds more
//! than `max_skew` replicas above the emptiest eligible one — Kubernetes'
//! `topologySpreadConstraints`. Pure: the caller says where the siblings
//! run and which providers are eligible at all.

use std::collections::{BTreeMap, HashSet};

use crate::resource::{Candidate, Spread, SpreadKey};

/// Where one sibling replica runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    pub provider_id: String,
    pub owner_id: String,
}

/// A replica's choices under its service's spread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choice {
    /// Providers whose domain would break the skew (or that have no
    /// value for the key): skipped first, and always when strict.
    pub skip: HashSet<String>,
    /// Replicas per domain, for reasons and status.
    pub counts: BTreeMap<String, u32>,
    /// Whether some eligible provider keeps the skew.
    pub satisfiable: bool,
}

/// The domain `c` belongs to under `key`; None when it has no value.
pub fn domain(key: &SpreadKey, c: &Candidate) -> Option<String> {
    match key {
        SpreadKey::Node => Some(c.owner_id.clone()),
        SpreadKey::Provider => Some(c.id.clone()),
        SpreadKey::Label(k) => c.labels.get(k).cloned(),
    }
}

/// The domain of a sibling, looked up among `candidates` for a label key
/// (a sibling on a provider nobody advertises any more counts nowhere).
fn sibling_domain(key: &SpreadKey, s: &Sibling, candidates: &[Candidate]) -> Option<String> {
    match key {
        SpreadKey::Node => Some(s.owner_id.clone()),
        SpreadKey::Provider => Some(s.provider_id.clone()),
        SpreadKey::Label(_) => candidates
            .iter()
            .find(|c| c.id == s.provider_id)
            .and_then(|c| domain(key, c)),
    }
}

/// Which of `candidates` the next replica may go to, given its siblings.
/// `eligible` says whether a provider could hold it at all (health,
/// labels, GPU model): only eligible domains count towards the minimum.
pub fn choose(
    spread: &Spread,
    candidates: &[Candidate],
    eligible: impl Fn(&Candidate) -> bool,
    siblings: &[Sibling],
) -> Choice {
    let eligible_domains: HashSet<String> = candidates
        .iter()
        .filter(|c| eligible(c))
        .filter_map(|c| domain(&spread.key, c))
        .collect();
    let mut counts: BTreeMap<String, u32> =
        eligible_domains.iter().map(|d| (d.clone(), 0)).collect();
    for s in siblings {
        if let Some(d) = sibling_domain(&spread.key, s, candidates) {
            *counts.entry(d).or_default() += 1;
        }
    }
    // The emptiest domain that could take a replica at all.
    let min = eligible_domains
        .iter()
        .map(|d| counts[d])
        .min()
        .unwrap_or(0);
    let mut skip = HashSet::new();
    let mut satisfiable = false;
    for c in candidates {
        let keeps = domain(&spread.key, c).is_some_and(|d| {
            (counts.get(&d).copied().unwrap_or(0) + 1).saturating_sub(min) <= spread.max_skew
        });
        if keeps {
            satisfiable |= eligible(c);
        } else {
            skip.insert(c.id.clone());
        }
    }
    Choice {
        skip,
        counts,
        satisfiable,
    }
}

/// `node a=2, b=1, c=0`: the replicas per domain.
pub fn describe(key: &SpreadKey, counts: &BTreeMap<String, u32>) -> String {
    let per: Vec<String> = counts.iter().map(|(d, n)| format!("{d}={n}")).collect();
    format!("replicas per {key}: {}", per.join(", "))
}

/// The largest difference in replicas between two eligible domains.
pub fn skew(counts: &BTreeMap<String, u32>) -> u32 {
    let max = counts.values().copied().max().unwrap_or(0);
    let min = counts.values().copied().min().unwrap_or(0);
    max - min
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Capacity, ProviderKind, Resources, Tier};

    fn cand(id: &str, owner: &str, region: Option<&str>) -> Candidate {
        Candidate {
            id: id.into(),
            name: id.into(),
            kind: ProviderKind::Memory,
            tier: Tier::Discovered,
            owner_id: owner.into(),
            owner_addr: String::new(),
            healthy: true,
            capacity: Capacity {
                total: Resources {
                    cpu_millis: 4000,
                    memory_bytes: 1 << 30,
                    gpus: 0,
                    storage_bytes: 0,
                },
                ..Default::default()
            },
            labels: region
                .map(|r| BTreeMap::from([("region".to_string(), r.to_string())]))
                .unwrap_or_default(),
            version: 0,
            gpus: Vec::new(),
        }
    }

    fn on(provider: &str, owner: &str) -> Sibling {
        Sibling {
            provider_id: provider.into(),
            owner_id: owner.into(),
        }
    }

    fn spread(key: SpreadKey, max_skew: u32) -> Spread {
        Spread {
            key,
            max_skew,
            strict: true,
        }
    }

    #[test]
    fn by_node_the_next_replica_avoids_taken_nodes() {
        let cands = [
            cand("pa", "a", None),
            cand("pa2", "a", None),
            cand("pb", "b", None),
            cand("pc", "c", None),
        ];
        let c = choose(
            &spread(SpreadKey::Node, 1),
            &cands,
            |_| true,
            &[on("pa", "a")],
        );
        assert_eq!(c.skip, HashSet::from(["pa".to_string(), "pa2".to_string()]));
        assert!(c.satisfiable);
        let all = [on("pa", "a"), on("pb", "b"), on("pc", "c")];
        let c = choose(&spread(SpreadKey::Node, 1), &cands, |_| true, &all);
        // Every node holds one: any may take the fourth.
        assert!(c.skip.is_empty());
        assert_eq!(skew(&c.counts), 0);
    }

    #[test]
    fn strict_spread_is_unsatisfiable_when_only_full_domains_are_eligible() {
        let cands = [cand("pa", "a", None), cand("pb", "b", None)];
        // b cannot hold it (say, wrong GPU): a is the only eligible domain
        // and already has one, but the minimum counts eligible domains
        // only, so a may take another.
        let c = choose(
            &spread(SpreadKey::Node, 1),
            &cands,
            |c| c.id == "pa",
            &[on("pa", "a")],
        );
        assert!(c.satisfiable);
        // Both eligible, a holds one and b is skipped by the caller's
        // filter later: a must wait for b.
        let c = choose(
            &spread(SpreadKey::Node, 1),
            &cands,
            |_| true,
            &[on("pa", "a")],
        );
        assert_eq!(c.skip, HashSet::from(["pa".to_string()]));
    }

    #[test]
    fn by_label_a_provider_without_the_label_is_skipped() {
        let cands = [
            cand("p1", "a", Some("eu")),
            cand("p2", "b", Some("eu")),
            cand("p3", "c", Some("us")),
            cand("p4", "d", None),
        ];
        let c = choose(
            &spread(SpreadKey::Label("region".into()), 1),
            &cands,
            |_| true,
            &[on("p1", "a")],
        );
        assert_eq!(
            c.skip,
            HashSet::from(["p1".to_string(), "p2".to_string(), "p4".to_string()])
        );
        assert_eq!(
            describe(&SpreadKey::Label("region".into()), &c.counts),
            "replicas per region: eu=1, us=0"
        );
        // A larger skew lets eu take a second.
        let c = choose(
            &spread(SpreadKey::Label("region".into()), 2),
            &cands,
            |_| true,
            &[on("p1", "a")],
        );
        assert_eq!(c.skip, HashSet::from(["p4".to_string()]));
    }
}
