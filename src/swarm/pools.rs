//! Resource pools: named sets of nodes (explicit ids, or every node whose
//! providers match a label selector), replicated to every node.
//!
//! A pool record has no single owner: each node carries every pool it
//! knows in its own gossip record and merges what others carry, the newer
//! record winning (last writer wins on `(updated_ms, writer)`, a delete
//! being a newer record marked deleted). So a pool outlives the node that
//! created it for as long as any node is up, and every node can change it.

use std::collections::BTreeMap;

use crate::proto::peer::{NodeMeta, PoolRecord};
use crate::resource::{labels, Candidate};

/// How long a deleted pool's record is kept (and gossiped) so that a node
/// that was away cannot bring the pool back.
pub const TOMBSTONE_MS: u64 = 24 * 3600 * 1000;

/// Whether `incoming` replaces `held`.
pub fn supersedes(incoming: &PoolRecord, held: &PoolRecord) -> bool {
    (incoming.updated_ms, &incoming.writer) > (held.updated_ms, &held.writer)
}

/// Merges `incoming` into `known`; true when it changed something.
pub fn merge(known: &mut BTreeMap<String, PoolRecord>, incoming: &PoolRecord) -> bool {
    match known.get(&incoming.name) {
        Some(held) if !supersedes(incoming, held) => false,
        _ => {
            known.insert(incoming.name.clone(), incoming.clone());
            true
        }
    }
}

/// Drops deleted records older than [`TOMBSTONE_MS`].
pub fn prune(known: &mut BTreeMap<String, PoolRecord>, now_ms: u64) {
    known.retain(|_, p| !p.deleted || now_ms.saturating_sub(p.updated_ms) < TOMBSTONE_MS);
}

/// Whether a provider of `node` whose labels `label` reads belongs to `pool`.
pub fn contains<'l>(
    pool: &PoolRecord,
    node: &str,
    label: impl Fn(&str) -> Option<&'l str>,
) -> bool {
    !pool.deleted
        && (pool.nodes.is_empty() || pool.nodes.iter().any(|n| n == node))
        && pool
            .selector
            .iter()
            .all(|(k, v)| label(k) == Some(v.as_str()))
}

/// Puts the swarm labels on a candidate: its owner's groups and models
/// (from the owner's record) and the pools it belongs to.
pub fn decorate(c: &mut Candidate, owner: Option<&NodeMeta>, pools: &[PoolRecord]) {
    let mut add: Vec<String> = Vec::new();
    if let Some(m) = owner {
        add.extend(m.groups.iter().map(|g| labels::group(&g.group)));
        add.extend(m.models.iter().map(|m| labels::model(m)));
    }
    add.extend(
        pools
            .iter()
            .filter(|p| contains(p, &c.owner_id, |k| c.labels.get(k).map(String::as_str)))
            .map(|p| labels::pool(&p.name)),
    );
    for key in add {
        c.labels.insert(key, "true".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, updated_ms: u64, writer: &str, deleted: bool) -> PoolRecord {
        PoolRecord {
            name: name.into(),
            updated_ms,
            writer: writer.into(),
            deleted,
            ..Default::default()
        }
    }

    #[test]
    fn the_newer_record_wins_in_any_order() {
        let (a, b, c) = (
            rec("p", 5, "x", false),
            rec("p", 5, "y", false),
            rec("p", 9, "x", true),
        );
        for order in [[&a, &b, &c], [&c, &b, &a], [&b, &c, &a]] {
            let mut known = BTreeMap::new();
            for r in order {
                merge(&mut known, r);
            }
            assert_eq!(known["p"], c);
        }
        let mut known = BTreeMap::new();
        merge(&mut known, &a);
        assert!(merge(&mut known, &b));
        assert!(!merge(&mut known, &a));
        prune(&mut known, 10);
        assert_eq!(known.len(), 1);
        merge(&mut known, &c);
        prune(&mut known, 9 + TOMBSTONE_MS);
        assert!(known.is_empty());
    }

    #[test]
    fn membership_by_ids_and_selector() {
        let mut p = rec("p", 1, "x", false);
        let rack3 = |k: &str| (k == "rack").then_some("3");
        assert!(contains(&p, "n1", rack3));
        p.nodes = vec!["n2".into()];
        assert!(!contains(&p, "n1", rack3));
        assert!(contains(&p, "n2", rack3));
        p.selector.insert("rack".into(), "4".into());
        assert!(!contains(&p, "n2", rack3));
        p.nodes.clear();
        p.selector.insert("rack".into(), "3".into());
        assert!(contains(&p, "n9", rack3));
        p.deleted = true;
        assert!(!contains(&p, "n9", rack3));
    }
}
