//! What this node registers where, sans-IO. It answers for its holdings
//! (deployments it placed, as their home; deployments on its providers, as
//! their owner) and registers each with the `K` members the ring maps it
//! to: at once when new, again when those members change (one left, one
//! joined, one restarted as a new generation and lost what it held), and
//! every [`REFRESH_MS`] so that entries outlive lost messages but not
//! their registrant. The caller sends what [`Registrar::plan`] says and
//! reports which members acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::ring::{Member, Ring};
use super::table::{Location, Registrant};

/// Members each entry is registered with.
pub const K: usize = 3;
/// How often an unchanged registration is sent again.
pub const REFRESH_MS: u64 = 5 * 60_000;
/// Locations per message.
pub const BATCH: usize = 1_000;
/// Locations one plan sends at most: after a big membership change the
/// rest follow on the next ticks, so no burst swamps the mesh.
pub const PER_PLAN: usize = 20_000;

/// One deployment this node answers for, and as what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub location: Location,
    pub by: Registrant,
}

type Key = (String, Registrant);

/// Per holding: the members that acknowledged it, with their generation
/// and when.
#[derive(Debug, Default)]
struct Sent {
    acked: HashMap<String, (u64, u64)>,
}

#[derive(Debug, Default)]
pub struct Registrar {
    sent: HashMap<Key, Sent>,
}

/// One message to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub to: Member,
    pub register: Vec<Holding>,
    /// Deployment ids this node no longer answers for.
    pub forget: Vec<String>,
}

impl Registrar {
    /// Registrations held now (holdings x members acknowledged).
    pub fn acknowledged(&self) -> usize {
        self.sent.values().map(|s| s.acked.len()).sum()
    }

    /// What to send given what this node holds now and the ring.
    pub fn plan(&mut self, holdings: &[Holding], ring: &Ring, now: u64) -> Vec<Send> {
        let mut by_member: BTreeMap<String, (Member, Vec<Holding>, Vec<String>)> = BTreeMap::new();
        let mut budget = PER_PLAN;
        let mut current: HashSet<Key> = HashSet::with_capacity(holdings.len());
        for h in holdings {
            let key = (h.location.deployment_id.clone(), h.by);
            current.insert(key.clone());
            let sent = self.sent.entry(key).or_default();
            for m in ring.replicas(&h.location.deployment_id, K) {
                let fresh = sent.acked.get(&m.id).is_some_and(|(generation, at)| {
                    *generation == m.generation && now.saturating_sub(*at) < REFRESH_MS
                });
                if fresh || budget == 0 {
                    continue;
                }
                budget -= 1;
                by_member
                    .entry(m.id.clone())
                    .or_insert_with(|| (m.clone(), Vec::new(), Vec::new()))
                    .1
                    .push(h.clone());
            }
        }
        // What this node no longer holds: forgotten where it was registered.
        let gone: Vec<Key> = self
            .sent
            .keys()
            .filter(|k| !current.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            let Some(sent) = self.sent.remove(&key) else {
                continue;
            };
            for member in sent.acked.keys() {
                if let Some(m) = ring.member(member) {
                    by_member
                        .entry(m.id.clone())
                        .or_insert_with(|| (m.clone(), Vec::new(), Vec::new()))
                        .2
                        .push(key.0.clone());
                }
            }
        }
        let mut out = Vec::new();
        for (_, (to, register, forget)) in by_member {
            let mut forget = forget;
            forget.sort();
            forget.dedup();
            let mut chunks = register.chunks(BATCH).peekable();
            if chunks.peek().is_none() {
                out.push(Send {
                    to,
                    register: Vec::new(),
                    forget,
                });
                continue;
            }
            let mut first = true;
            for chunk in chunks {
                out.push(Send {
                    to: to.clone(),
                    register: chunk.to_vec(),
                    forget: if first {
                        std::mem::take(&mut forget)
                    } else {
                        Vec::new()
                    },
                });
                first = false;
            }
        }
        out
    }

    /// `to` acknowledged `sent` at `now`.
    pub fn acked(&mut self, to: &Member, sent: &[Holding], now: u64) {
        for h in sent {
            if let Some(s) = self.sent.get_mut(&(h.location.deployment_id.clone(), h.by)) {
                s.acked.insert(to.id.clone(), (to.generation, now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize, generation: u64) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                id: format!("m{i:02}"),
                addr: format!("127.0.0.1:{}", 5000 + i),
                generation,
            })
            .collect()
    }

    fn holding(id: &str) -> Holding {
        Holding {
            location: Location {
                deployment_id: id.into(),
                ..Location::default()
            },
            by: Registrant::Home,
        }
    }

    fn ack_all(r: &mut Registrar, sends: &[Send], now: u64) {
        for s in sends {
            r.acked(&s.to, &s.register, now);
        }
    }

    fn count(sends: &[Send]) -> usize {
        sends.iter().map(|s| s.register.len()).sum()
    }

    #[test]
    fn registers_once_then_only_on_change_or_refresh() {
        let ring = Ring::new(members(10, 1));
        let holdings: Vec<Holding> = (0..100).map(|i| holding(&format!("d{i}"))).collect();
        let mut r = Registrar::default();
        let sends = r.plan(&holdings, &ring, 0);
        assert_eq!(count(&sends), 100 * K, "each with its K members");
        // Unacknowledged (lost) sends are planned again.
        assert_eq!(count(&r.plan(&holdings, &ring, 1)), 100 * K);
        ack_all(&mut r, &sends, 1);
        assert_eq!(r.acknowledged(), 100 * K);
        assert!(r.plan(&holdings, &ring, 2).is_empty(), "nothing changed");

        // One member restarts (a new generation): only what it held goes again.
        let mut restarted = members(10, 1);
        restarted[3].generation = 2;
        let ring2 = Ring::new(restarted);
        let again = r.plan(&holdings, &ring2, 3);
        assert!(again.iter().all(|s| s.to.id == "m03"), "{again:?}");
        let held_by_m03 = holdings
            .iter()
            .filter(|h| ring.holds("m03", &h.location.deployment_id, K))
            .count();
        assert_eq!(count(&again), held_by_m03);
        ack_all(&mut r, &again, 3);

        // A member joins: only the keys it now holds are sent, to it.
        let mut grown = members(10, 1);
        grown[3].generation = 2;
        grown.push(Member {
            id: "m99".into(),
            addr: "x:1".into(),
            generation: 1,
        });
        let ring3 = Ring::new(grown);
        let joined = r.plan(&holdings, &ring3, 4);
        assert!(joined.iter().all(|s| s.to.id == "m99"));
        assert!(count(&joined) < 100, "{} of 100", count(&joined));
        ack_all(&mut r, &joined, 4);

        // The refresh interval sends everything once more.
        assert_eq!(count(&r.plan(&holdings, &ring3, 4 + REFRESH_MS)), 100 * K);
    }

    #[test]
    fn what_is_no_longer_held_is_forgotten_where_it_was_registered() {
        let ring = Ring::new(members(5, 1));
        let mut r = Registrar::default();
        let sends = r.plan(&[holding("a"), holding("b")], &ring, 0);
        ack_all(&mut r, &sends, 0);
        let sends = r.plan(&[holding("b")], &ring, 1);
        let forgot: Vec<&Send> = sends.iter().filter(|s| !s.forget.is_empty()).collect();
        assert_eq!(forgot.len(), K);
        assert!(forgot
            .iter()
            .all(|s| s.forget == ["a"] && s.register.is_empty()));
        assert!(r.plan(&[holding("b")], &ring, 2).is_empty());
    }
}
