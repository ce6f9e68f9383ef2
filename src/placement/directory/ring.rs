//! The locator ring, sans-IO: which members hold the directory entry of a
//! deployment. Every node derives the same ring from the membership view
//! it already has (Dynamo's and Cassandra's consistent hashing), so a
//! lookup asks `k` members directly: one hop, whatever the mesh's size.
//!
//! Each member stands at [`POINTS`] places on a 64-bit circle; a key's
//! replicas are the first `k` distinct members clockwise from its hash.
//! When one member joins or leaves, only the keys next to its points move
//! (about k/N of them), so re-registration after a change is small.

use crate::mesh::record::StableHasher;

/// Places on the circle per member: enough to spread keys within a few
/// percent of even, few enough that a 10,000-member ring builds in
/// milliseconds.
pub const POINTS: u64 = 16;

/// A member as the ring knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    pub id: String,
    /// Where its gRPC port is dialled.
    pub addr: String,
    /// Changes on every start: a restarted member lost what it held.
    pub generation: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Ring {
    members: Vec<Member>,
    /// (point, index into `members`), sorted by point.
    points: Vec<(u64, u32)>,
}

fn point(id: &str, i: u64) -> u64 {
    StableHasher::new().bytes(id.as_bytes()).u64(i).finish()
}

/// Where a key falls on the circle.
pub fn key_point(key: &str) -> u64 {
    StableHasher::new()
        .bytes(b"locate")
        .bytes(key.as_bytes())
        .finish()
}

impl Ring {
    /// The ring of `members` (order does not matter; duplicates by id are
    /// kept once).
    pub fn new(mut members: Vec<Member>) -> Ring {
        members.sort();
        members.dedup_by(|a, b| a.id == b.id);
        let mut points = Vec::with_capacity(members.len() * POINTS as usize);
        for (i, m) in members.iter().enumerate() {
            for p in 0..POINTS {
                points.push((point(&m.id, p), i as u32));
            }
        }
        points.sort_unstable();
        Ring { members, points }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.members[i])
    }

    /// The `k` members that hold `key`'s entry, in ring order (fewer when
    /// the ring has fewer members).
    pub fn replicas(&self, key: &str, k: usize) -> Vec<&Member> {
        let want = k.min(self.members.len());
        let mut out: Vec<&Member> = Vec::with_capacity(want);
        if want == 0 {
            return out;
        }
        let h = key_point(key);
        let start = self.points.partition_point(|(p, _)| *p < h);
        for step in 0..self.points.len() {
            let (_, i) = self.points[(start + step) % self.points.len()];
            let m = &self.members[i as usize];
            if !out.iter().any(|o| o.id == m.id) {
                out.push(m);
                if out.len() == want {
                    break;
                }
            }
        }
        out
    }

    /// Whether `member` is among `key`'s `k` replicas.
    pub fn holds(&self, member: &str, key: &str, k: usize) -> bool {
        self.replicas(key, k).iter().any(|m| m.id == member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn members(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                id: format!("node-{i:05}"),
                addr: format!("10.0.{}.{}:50051", i / 250, i % 250),
                generation: 1,
            })
            .collect()
    }

    #[test]
    fn every_node_derives_the_same_replicas_whatever_the_order() {
        let mut m = members(50);
        let a = Ring::new(m.clone());
        m.reverse();
        let b = Ring::new(m);
        for i in 0..200 {
            let key = format!("iarnet-{i}");
            let ra: Vec<&str> = a.replicas(&key, 3).iter().map(|m| m.id.as_str()).collect();
            let rb: Vec<&str> = b.replicas(&key, 3).iter().map(|m| m.id.as_str()).collect();
            assert_eq!(ra, rb);
            assert_eq!(ra.len(), 3);
            let mut distinct = ra.clone();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "{ra:?}");
        }
        assert_eq!(Ring::new(members(2)).replicas("x", 3).len(), 2);
        assert!(Ring::new(Vec::new()).replicas("x", 3).is_empty());
    }

    #[test]
    fn keys_spread_evenly_and_a_join_moves_only_its_share() {
        let before = Ring::new(members(100));
        let mut grown = members(100);
        grown.push(Member {
            id: "node-new".into(),
            addr: "10.9.9.9:50051".into(),
            generation: 1,
        });
        let after = Ring::new(grown);
        let keys = 20_000;
        let mut load: HashMap<String, usize> = HashMap::new();
        let mut moved = 0;
        for i in 0..keys {
            let key = format!("iarnet-{i:08x}");
            let b: Vec<String> = before
                .replicas(&key, 3)
                .iter()
                .map(|m| m.id.clone())
                .collect();
            let a: Vec<String> = after
                .replicas(&key, 3)
                .iter()
                .map(|m| m.id.clone())
                .collect();
            if a != b {
                moved += 1;
            }
            for id in b {
                *load.entry(id).or_default() += 1;
            }
        }
        // Each of 100 members should hold about 3 × 20,000 / 100 = 600.
        let (min, max) = (*load.values().min().unwrap(), *load.values().max().unwrap());
        assert!(min > 250 && max < 1100, "uneven: {min}..{max}");
        // About k/N = 3 % of the keys gain the new member; far from all.
        assert!(moved < keys / 10, "{moved} of {keys} keys moved");
        assert!(moved > 0);
    }
}
