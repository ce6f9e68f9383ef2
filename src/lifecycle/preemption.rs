//! Which preemptible deployments an owner evicts to admit a request: only
//! work the request outranks (see [`Priority::outranks`]), lowest priority
//! first, and never more than it needs: every victim chosen is one without
//! which the request would not fit (Kubernetes' PriorityClass preemption,
//! Nomad's preemption of lower-priority allocations).

use crate::resource::{Capacity, Priority, Resources};

/// A deployment running on the provider that may be evicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub id: String,
    pub resources: Resources,
    pub priority: Priority,
}

/// The indices into `running` to evict so that a request needing `need`
/// with `requester`'s priority is admitted on a provider at `capacity`;
/// None when evicting everything it outranks would still not make room.
/// Empty when it fits already.
pub fn choose(
    need: &Resources,
    capacity: &Capacity,
    requester: Priority,
    running: &[Running],
) -> Option<Vec<usize>> {
    let admits = |chosen: &[usize]| {
        let mut after = *capacity;
        for &i in chosen {
            after.reserved = after.reserved.saturating_sub(&running[i].resources);
            after.deployments = after.deployments.saturating_sub(1);
        }
        after.admits(need)
    };
    let mut eligible: Vec<usize> = (0..running.len())
        .filter(|&i| requester.outranks(running[i].priority))
        .collect();
    // Lowest priority first; among equals the largest first, so fewer go.
    eligible.sort_by(|&a, &b| {
        let (ra, rb) = (&running[a], &running[b]);
        ra.priority
            .cmp(&rb.priority)
            .then(rb.resources.cpu_millis.cmp(&ra.resources.cpu_millis))
            .then(rb.resources.memory_bytes.cmp(&ra.resources.memory_bytes))
            .then(ra.id.cmp(&rb.id))
    });
    let mut chosen = Vec::new();
    for i in eligible {
        if admits(&chosen) {
            break;
        }
        chosen.push(i);
    }
    if !admits(&chosen) {
        return None;
    }
    // Give back, highest priority first, any victim the request can do
    // without: what remains is needed, each one.
    let mut k = chosen.len();
    while k > 0 {
        k -= 1;
        let without: Vec<usize> = chosen
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != k)
            .map(|(_, &i)| i)
            .collect();
        if admits(&without) {
            chosen = without;
        }
    }
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::PriorityClass;

    fn cpu(millis: u64) -> Resources {
        Resources {
            cpu_millis: millis,
            memory_bytes: 0,
            gpus: 0,
            storage_bytes: 0,
        }
    }

    fn batch(value: i64) -> Priority {
        Priority {
            class: PriorityClass::Batch,
            value,
        }
    }

    fn running(list: &[(&str, u64, Priority)]) -> (Capacity, Vec<Running>) {
        let used: u64 = list.iter().map(|(_, c, _)| c).sum();
        let cap = Capacity {
            total: cpu(4000),
            reserved: cpu(used),
            max_deployments: None,
            deployments: list.len() as u32,
        };
        let r = list
            .iter()
            .map(|(id, c, p)| Running {
                id: id.to_string(),
                resources: cpu(*c),
                priority: *p,
            })
            .collect();
        (cap, r)
    }

    fn ids(r: &[Running], chosen: &[usize]) -> Vec<String> {
        let mut v: Vec<String> = chosen.iter().map(|&i| r[i].id.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn evicts_exactly_enough_lowest_priority_first() {
        let (cap, r) = running(&[
            ("a", 1000, batch(0)),
            ("b", 1000, batch(-5)),
            ("c", 1000, batch(0)),
            ("d", 1000, batch(-5)),
        ]);
        let high = Priority::default();
        let chosen = choose(&cpu(2000), &cap, high, &r).unwrap();
        assert_eq!(ids(&r, &chosen), ["b", "d"]);
        assert_eq!(choose(&cpu(500), &cap, high, &r).unwrap().len(), 1);
        // Room already: nobody goes.
        let (cap, r) = running(&[("a", 1000, batch(0))]);
        assert!(choose(&cpu(2000), &cap, high, &r).unwrap().is_empty());
    }

    #[test]
    fn a_large_victim_spares_the_small_ones_it_makes_unneeded() {
        // The two small ones come first by priority but the big one is
        // needed anyway; with it, one small one suffices, then none.
        let (cap, r) = running(&[
            ("small1", 500, batch(-9)),
            ("small2", 500, batch(-9)),
            ("big", 3000, batch(-1)),
        ]);
        let chosen = choose(&cpu(3000), &cap, Priority::default(), &r).unwrap();
        assert_eq!(ids(&r, &chosen), ["big"]);
    }

    #[test]
    fn never_evicts_work_it_does_not_outrank_or_when_it_would_not_help() {
        let (cap, r) = running(&[("a", 2000, batch(5)), ("b", 2000, batch(-20))]);
        // batch+10 outranks -20 but not +5 (less than 10 points apart).
        assert_eq!(choose(&cpu(2000), &cap, batch(10), &r), Some(vec![1]));
        assert_eq!(choose(&cpu(3000), &cap, batch(10), &r), None);
        assert_eq!(choose(&cpu(5000), &cap, Priority::default(), &r), None);
    }

    #[test]
    fn a_full_slot_count_frees_one_slot() {
        let (mut cap, r) = running(&[("a", 100, batch(0)), ("b", 100, batch(-1))]);
        cap.max_deployments = Some(2);
        let chosen = choose(&cpu(100), &cap, Priority::default(), &r).unwrap();
        assert_eq!(ids(&r, &chosen), ["b"]);
    }
}
