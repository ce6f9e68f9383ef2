//! The persistent index against a rebuild: after any run of changes it
//! holds the same candidates in the same order and ranks the same way, and
//! the registry updates it from the mesh's feed without reading the whole
//! mesh again.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use proptest::prelude::{prop, prop_assert_eq, proptest, ProptestConfig};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::{Index, Strategy};
use crate::placement::feasible::Need;
use crate::placement::registry::Registry;
use crate::placement::{Discovery, ProviderCaller};
use crate::proto::peer::ProviderInfo;
use crate::resource::{Candidate, Capacity, ProviderKind, Resources, Tier};

const OWNERS: u8 = 6;

fn cand(owner: u8, slot: u8, tier: u8, free_cpu: u64, region: u8) -> Candidate {
    let cpu = |m: u64| Resources {
        cpu_millis: m,
        memory_bytes: 1 << 30,
        ..Resources::ZERO
    };
    Candidate {
        id: format!("n{owner}/p{slot}"),
        name: format!("p{slot}"),
        kind: ProviderKind::Memory,
        tier: [Tier::Internal, Tier::External, Tier::Discovered][tier as usize % 3],
        owner_id: format!("n{owner}"),
        owner_addr: String::new(),
        healthy: slot % 7 != 3,
        capacity: Capacity {
            total: cpu(free_cpu + 500),
            reserved: cpu(500),
            ..Capacity::default()
        },
        labels: match region % 3 {
            0 => BTreeMap::new(),
            r => [("region".to_string(), format!("r{r}"))].into(),
        },
        version: 0,
        gpus: Vec::new(),
    }
}

/// One owner's providers: (slot, tier, free CPU in steps, region).
fn owner_set() -> impl proptest::strategy::Strategy<Value = Vec<(u8, u8, u64, u8)>> {
    prop::collection::vec((0u8..5, 0u8..3, 0u64..6, 0u8..3), 0..5)
}

fn owner_cands(owner: u8, set: &[(u8, u8, u64, u8)]) -> Vec<Candidate> {
    let mut by_slot = BTreeMap::new();
    for &(slot, tier, cpu, region) in set {
        by_slot.insert(slot, cand(owner, slot, tier, cpu * 1000, region));
    }
    by_slot.into_values().collect()
}

fn sorted(mut all: Vec<Candidate>) -> Vec<Candidate> {
    all.sort_by(|a, b| (a.tier, &a.id).cmp(&(b.tier, &b.id)));
    all
}

fn ranked(index: &Index, need: &Need, s: Strategy, seed: u64) -> Vec<String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    index
        .rank(need, s, 3, &HashSet::new(), &mut rng)
        .into_iter()
        .map(|c| c.id.clone())
        .collect()
}

fn assert_same(incremental: &Index, rebuilt: &Index) {
    assert_eq!(incremental.candidates(), rebuilt.candidates());
    assert_eq!(incremental.len(), rebuilt.len());
    for cpu in [0, 1000, 2500, 5000] {
        for region in [None, Some("r1"), Some("r2")] {
            let need = Need {
                resources: Resources {
                    cpu_millis: cpu,
                    ..Resources::ZERO
                },
                region,
                ..Need::default()
            };
            // Round-robin's cursor moves on with every decision; its ring
            // is the candidate order, compared above.
            for s in [
                Strategy::Spread,
                Strategy::BinPack,
                Strategy::Geographic,
                Strategy::Random,
                Strategy::Weighted,
            ] {
                for seed in 0..3 {
                    assert_eq!(
                        ranked(incremental, &need, s, seed),
                        ranked(rebuilt, &need, s, seed),
                        "{s} for {cpu}m in {region:?}"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn updates_rank_as_a_rebuild_does(
        first in prop::collection::vec(owner_set(), OWNERS as usize),
        changes in prop::collection::vec((0..OWNERS, owner_set()), 1..12),
    ) {
        let mut sets: BTreeMap<u8, Vec<Candidate>> = first
            .iter()
            .enumerate()
            .map(|(o, set)| (o as u8, owner_cands(o as u8, set)))
            .collect();
        let all = |sets: &BTreeMap<u8, Vec<Candidate>>| {
            sorted(sets.values().flatten().cloned().collect())
        };
        let mut index = Index::build(all(&sets));
        let held = index.clone();
        let before = held.candidates().to_vec();
        for (owner, set) in changes {
            let now = owner_cands(owner, &set);
            let gone: Vec<String> = index
                .owned_by(&format!("n{owner}"))
                .map(str::to_string)
                .collect();
            index = index.updated(gone.iter().map(String::as_str), now.clone());
            sets.insert(owner, now);
            assert_same(&index, &Index::build(all(&sets)));
        }
        // A decision still holding the first index sees it unchanged.
        prop_assert_eq!(held.candidates(), &before[..]);
    }
}

/// A mesh whose owners change one at a time and which says whose did.
#[derive(Default)]
struct FeedMesh {
    owners: Mutex<BTreeMap<String, Vec<Candidate>>>,
    log: Mutex<Vec<String>>,
    whole_reads: Mutex<usize>,
    /// Labels the mesh puts on every candidate (as swarm groups do).
    decorations: Mutex<BTreeMap<String, String>>,
}

impl FeedMesh {
    fn set(&self, owner: u8, cands: Vec<Candidate>) {
        self.owners
            .lock()
            .unwrap()
            .insert(format!("n{owner}"), cands);
        self.log.lock().unwrap().push(format!("n{owner}"));
    }
}

impl Discovery for FeedMesh {
    fn discovered(&self) -> Vec<Candidate> {
        *self.whole_reads.lock().unwrap() += 1;
        self.owners
            .lock()
            .unwrap()
            .values()
            .flatten()
            .cloned()
            .collect()
    }
    fn publish(&self, _: Vec<ProviderInfo>) {}
    fn caller(&self) -> Arc<dyn ProviderCaller> {
        unreachable!("no calls in this test")
    }
    fn version(&self) -> u64 {
        self.log.lock().unwrap().len() as u64
    }
    fn feed_position(&self) -> Option<u64> {
        Some(self.version())
    }
    fn changed_owners(&self, after: u64) -> Option<(u64, Vec<String>)> {
        let log = self.log.lock().unwrap();
        Some((log.len() as u64, log[after as usize..].to_vec()))
    }
    fn discovered_from(&self, owner: &str) -> Vec<Candidate> {
        self.owners
            .lock()
            .unwrap()
            .get(owner)
            .cloned()
            .unwrap_or_default()
    }
    fn decorate(&self, candidates: &mut [Candidate]) {
        let labels = self.decorations.lock().unwrap();
        for c in candidates {
            c.labels.extend(labels.clone());
        }
    }
}

#[test]
fn the_registry_applies_the_feed_without_reading_the_whole_mesh() {
    let mesh = Arc::new(FeedMesh::default());
    for o in 1..5 {
        mesh.set(o, (0..3).map(|s| cand(o, s, 2, 2000, s)).collect());
    }
    let registry = Registry::new("n0", mesh.clone(), true);
    let first = registry.index();
    assert_eq!(first.len(), 12);
    assert_eq!(*mesh.whole_reads.lock().unwrap(), 1);

    // One owner's provider grows, another owner leaves.
    mesh.set(
        2,
        (0..3).map(|s| cand(2, s, 2, 9000 * s as u64, s)).collect(),
    );
    mesh.set(4, Vec::new());
    let next = registry.index();
    assert_eq!(*mesh.whole_reads.lock().unwrap(), 1, "updated, not rebuilt");
    assert_same(&next, &Index::build(registry.candidates()));
    assert_eq!(next.len(), 9);
    assert_eq!(first.len(), 12, "the earlier index is unchanged");
    let need = Need::default();
    assert_eq!(ranked(&next, &need, Strategy::Spread, 0)[0], "n2/p2");
    // Nothing changed: the same index.
    assert!(Arc::ptr_eq(&next, &registry.index()));
}

#[tokio::test]
async fn this_nodes_own_changes_update_it_and_a_new_provider_rebuilds_it() {
    use crate::resource::memory::MemoryProvider;
    use crate::resource::{DeploySpec, ProgressSink, Provider};
    let mesh = Arc::new(FeedMesh::default());
    mesh.set(1, (0..3).map(|s| cand(1, s, 2, 2000, s)).collect());
    let registry = Registry::new("n0", mesh.clone(), true);
    let cpus = |n: u64| Resources {
        cpu_millis: n * 1000,
        memory_bytes: 8 << 30,
        ..Resources::ZERO
    };
    let own = Arc::new(MemoryProvider::new("own", cpus(4), BTreeMap::new()));
    registry.add(own.clone(), Tier::Internal).await.unwrap();
    let first = registry.index();
    let reads = *mesh.whole_reads.lock().unwrap();

    // A deploy on this node's provider: its free CPU drops, in place.
    let spec = DeploySpec {
        request_id: "r".into(),
        image: "busybox".into(),
        resources: cpus(3),
        ..Default::default()
    };
    own.deploy(&spec, ProgressSink::none()).await.unwrap();
    registry.changed(&*own).await;
    let next = registry.index();
    assert_eq!(
        *mesh.whole_reads.lock().unwrap(),
        reads,
        "updated, not rebuilt"
    );
    assert_eq!(
        next.get("own").unwrap().capacity.available().cpu_millis,
        1000
    );
    assert_eq!(
        first.get("own").unwrap().capacity.available().cpu_millis,
        4000
    );
    assert_same(&next, &Index::build(registry.candidates()));

    // This node joins a swarm group: its own entry in the view changes, and
    // so does what decorates its providers.
    let reads = *mesh.whole_reads.lock().unwrap();
    mesh.decorations
        .lock()
        .unwrap()
        .insert("swarm.group".into(), "ab".into());
    mesh.log.lock().unwrap().push("n0".into());
    let grouped = registry.index();
    assert_eq!(
        *mesh.whole_reads.lock().unwrap(),
        reads,
        "updated, not rebuilt"
    );
    assert_eq!(grouped.get("own").unwrap().labels["swarm.group"], "ab");

    // Another provider of this node: rebuilt.
    let more = Arc::new(MemoryProvider::new("more", cpus(2), BTreeMap::new()));
    registry.add(more, Tier::External).await.unwrap();
    let reads = *mesh.whole_reads.lock().unwrap();
    let last = registry.index();
    assert_eq!(*mesh.whole_reads.lock().unwrap(), reads + 1);
    assert_eq!(last.len(), 5);
}
