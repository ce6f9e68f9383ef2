//! The pending queue of one home node, sans-IO: which deploys wait, in
//! what order, until when, and — when capacity grows somewhere — which of
//! them to try where. The caller persists entries, judges fit, and places.
//!
//! Order is priority, then arrival. When capacity grows, entries are
//! planned strictly in that order per provider: an entry that could run on
//! a provider once enough is free, but cannot now, holds that provider for
//! the rest of the pass, so later (lower or younger) entries cannot take
//! the capacity it waits for. That is what keeps a higher priority from
//! being starved by a stream of small lower ones, and keeps equal
//! priorities FIFO; entries that could never run on a provider do not hold it.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};

use super::priority::Priority;
use crate::resource::{Candidate, Resources};

/// Wall-clock milliseconds since the epoch (durable across restarts).
pub type WallMs = u64;

/// One waiting deploy as the queue orders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub id: String,
    pub priority: Priority,
    /// Arrival order on this home, kept across restarts.
    pub seq: u64,
    pub enqueued_ms: WallMs,
    /// When it gives up; None waits for ever.
    pub deadline_ms: Option<WallMs>,
}

type Key = (Reverse<Priority>, u64);

#[derive(Debug, Default)]
pub struct Queue {
    order: BTreeSet<(Key, String)>,
    /// Entries with a deadline, earliest first: the timer and expiry read
    /// only the front, whatever the queue's length.
    deadlines: BTreeSet<(WallMs, String)>,
    entries: HashMap<String, Waiting>,
    next_seq: u64,
}

/// Whether a waiting deploy can run on a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Its free capacity holds the request now.
    Now,
    /// It passes every filter and its total would hold it, but not its free part.
    Later,
    /// It could never hold it (filters, or the request is bigger than its total).
    Never,
}

/// What planning needs to know of a waiting deploy.
pub trait Judge {
    /// Could `id` run on `c` as `c` stands?
    fn fit(&self, id: &str, c: &Candidate) -> Fit;
    /// What `id` takes from a provider when it runs.
    fn need(&self, id: &str) -> Resources;
}

/// One try the caller should make: place `id`, preferring `provider`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Try {
    pub id: String,
    pub provider: String,
}

impl Queue {
    pub fn new() -> Queue {
        Queue::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The sequence number the next arrival gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Adds an arrival (its `seq` is assigned) or, with `seq` set, an entry
    /// read back from the store. A second insert of an id replaces it.
    pub fn insert(&mut self, mut w: Waiting, restored: bool) -> Waiting {
        if !restored {
            w.seq = self.next_seq;
        }
        self.next_seq = self.next_seq.max(w.seq + 1);
        self.remove(&w.id);
        self.order
            .insert(((Reverse(w.priority), w.seq), w.id.clone()));
        if let Some(d) = w.deadline_ms {
            self.deadlines.insert((d, w.id.clone()));
        }
        self.entries.insert(w.id.clone(), w.clone());
        w
    }

    pub fn remove(&mut self, id: &str) -> Option<Waiting> {
        let w = self.entries.remove(id)?;
        self.order
            .remove(&((Reverse(w.priority), w.seq), w.id.clone()));
        if let Some(d) = w.deadline_ms {
            self.deadlines.remove(&(d, w.id.clone()));
        }
        Some(w)
    }

    pub fn get(&self, id: &str) -> Option<&Waiting> {
        self.entries.get(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Entries in queue order.
    pub fn ordered(&self) -> impl Iterator<Item = &Waiting> {
        self.order.iter().map(|(_, id)| &self.entries[id])
    }

    /// 1-based position in the queue.
    pub fn position(&self, id: &str) -> Option<usize> {
        let w = self.entries.get(id)?;
        let key = ((Reverse(w.priority), w.seq), w.id.clone());
        Some(self.order.range(..key).count() + 1)
    }

    /// Entries whose deadline has passed, earliest first.
    pub fn due(&self, now_ms: WallMs) -> Vec<String> {
        self.deadlines
            .iter()
            .take_while(|(d, _)| *d <= now_ms)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// The earliest deadline, for the driver's timer.
    pub fn next_deadline(&self) -> Option<WallMs> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Which entries to try on which of `changed` (providers whose
    /// advertised entry changed, as they stand now), at most `budget` tries, in queue
    /// order. Capacity a try would take is taken from the plan, so one
    /// change is never promised to more entries than it holds.
    pub fn plan(&self, changed: &[Candidate], judge: &dyn Judge, budget: usize) -> Vec<Try> {
        let mut free: Vec<Candidate> = changed.to_vec();
        let mut held: HashSet<usize> = HashSet::new();
        let mut out = Vec::new();
        for w in self.ordered() {
            if out.len() >= budget || held.len() == free.len() {
                break;
            }
            let mut chosen = None;
            for (i, c) in free.iter().enumerate() {
                if held.contains(&i) {
                    continue;
                }
                match judge.fit(&w.id, c) {
                    Fit::Now if chosen.is_none() => chosen = Some(i),
                    Fit::Now | Fit::Never => {}
                    // It waits for this provider: nobody behind it may take it.
                    Fit::Later => {
                        held.insert(i);
                    }
                }
            }
            if let Some(i) = chosen {
                let need = judge.need(&w.id);
                let c = &mut free[i];
                c.capacity.take(&need);
                out.push(Try {
                    id: w.id.clone(),
                    provider: c.id.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::lifecycle::priority::PriorityClass;
    use crate::resource::{Capacity, ProviderKind, Tier};

    fn cpu(m: u64) -> Resources {
        Resources {
            cpu_millis: m,
            ..Resources::ZERO
        }
    }

    fn provider(id: &str, total: u64, used: u64) -> Candidate {
        Candidate {
            id: id.into(),
            name: id.into(),
            kind: ProviderKind::Memory,
            tier: Tier::Discovered,
            owner_id: "o".into(),
            owner_addr: String::new(),
            healthy: true,
            capacity: Capacity {
                total: cpu(total),
                reserved: cpu(used),
                ..Capacity::default()
            },
            labels: BTreeMap::new(),
            version: 0,
            gpus: Vec::new(),
        }
    }

    /// Needs by id; "big" never fits anything under 10 CPUs.
    struct Needs(HashMap<String, u64>);

    impl Judge for Needs {
        fn fit(&self, id: &str, c: &Candidate) -> Fit {
            let need = cpu(self.0[id]);
            if !c.capacity.total.fits(&need) {
                Fit::Never
            } else if c.capacity.available().fits(&need) {
                Fit::Now
            } else {
                Fit::Later
            }
        }
        fn need(&self, id: &str) -> Resources {
            cpu(self.0[id])
        }
    }

    fn waiting(id: &str, class: PriorityClass, value: i64) -> Waiting {
        Waiting {
            id: id.into(),
            priority: Priority { class, value },
            seq: 0,
            enqueued_ms: 0,
            deadline_ms: None,
        }
    }

    #[test]
    fn priority_then_arrival_and_positions() {
        let mut q = Queue::new();
        q.insert(waiting("b1", PriorityClass::Batch, 0), false);
        q.insert(waiting("i1", PriorityClass::Interactive, 0), false);
        q.insert(waiting("b2", PriorityClass::Batch, 5), false);
        q.insert(waiting("i2", PriorityClass::Interactive, 0), false);
        let order: Vec<&str> = q.ordered().map(|w| w.id.as_str()).collect();
        assert_eq!(order, ["i1", "i2", "b2", "b1"]);
        assert_eq!(q.position("b1"), Some(4));
        q.remove("i1");
        assert_eq!(q.position("i2"), Some(1));
        // Restored entries keep their sequence; new ones come after them.
        let mut r = Queue::new();
        let mut old = waiting("x", PriorityClass::Batch, 0);
        old.seq = 41;
        r.insert(old, true);
        assert_eq!(
            r.insert(waiting("y", PriorityClass::Batch, 0), false).seq,
            42
        );
    }

    #[test]
    fn a_change_is_promised_only_what_it_holds_and_the_head_keeps_its_provider() {
        let mut q = Queue::new();
        let needs = Needs(
            [
                ("a", 1000),
                ("b", 1000),
                ("c", 1000),
                ("big", 4000),
                ("small", 500),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        );
        for id in ["a", "b", "c"] {
            q.insert(waiting(id, PriorityClass::Interactive, 0), false);
        }
        // Two CPUs free: a and b, not c.
        let tries = q.plan(&[provider("p", 4000, 2000)], &needs, 10);
        let ids: Vec<&str> = tries.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);

        // A big head that waits for p holds it: the small one behind it waits too.
        let mut q = Queue::new();
        q.insert(waiting("big", PriorityClass::Interactive, 0), false);
        q.insert(waiting("small", PriorityClass::Batch, 0), false);
        assert!(q.plan(&[provider("p", 4000, 1000)], &needs, 10).is_empty());
        // On a provider the big one could never use, the small one runs.
        let tries = q.plan(&[provider("tiny", 1000, 0)], &needs, 10);
        assert_eq!(
            tries,
            [Try {
                id: "small".into(),
                provider: "tiny".into()
            }]
        );
        // The budget bounds one pass.
        let mut q = Queue::new();
        for id in ["a", "b", "c"] {
            q.insert(waiting(id, PriorityClass::Interactive, 0), false);
        }
        assert_eq!(q.plan(&[provider("p", 8000, 0)], &needs, 2).len(), 2);
    }

    #[test]
    fn deadlines_come_due() {
        let mut q = Queue::new();
        let mut w = waiting("t", PriorityClass::Batch, 0);
        w.deadline_ms = Some(1_000);
        q.insert(w, false);
        q.insert(waiting("forever", PriorityClass::Batch, 0), false);
        assert!(q.due(999).is_empty());
        assert_eq!(q.due(1_000), ["t"]);
        assert_eq!(q.next_deadline(), Some(1_000));
    }
}
