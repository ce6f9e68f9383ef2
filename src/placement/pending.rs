//! The home's pending queue as the manager holds it: the sans-IO order of
//! [`lifecycle::queue`](crate::lifecycle::queue) plus each entry's durable
//! record (its whole spec), and the signal that wakes the queue worker.
//! The store holds the same entries; this is what the worker and the
//! surfaces read without touching the disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use super::feasible::{Need, Verdict};
use crate::lifecycle::priority::Priority;
use crate::lifecycle::queue::{Fit, Judge, Queue, Try, Waiting};
use crate::resource::{Candidate, Resources};
use crate::store::QueuedRecord;
use crate::sync::lock;

#[derive(Default)]
struct Inner {
    queue: Queue,
    entries: HashMap<String, QueuedRecord>,
    /// The next arrival's sequence number, handed out before it is persisted.
    next_seq: u64,
    /// Providers an entry may not use although it fits them: those a
    /// strict spread rules out, kept current by the queue worker.
    excluded: HashMap<String, HashSet<String>>,
}

impl Inner {
    fn judge(&self) -> Entries<'_> {
        Entries {
            entries: &self.entries,
            excluded: &self.excluded,
        }
    }
}

/// Whether `q` is a replica under a strict spread (its usable providers
/// depend on where its siblings run).
fn spread_bound(q: &QueuedRecord) -> bool {
    q.spec.replica_of.is_some() && q.spec.spread.as_ref().is_some_and(|s| s.strict)
}

#[derive(Default)]
pub struct Pending {
    inner: Mutex<Inner>,
    wake: Notify,
    /// Set by an arrival: the next pass plans over every provider, not
    /// only those that grew (capacity may have freed while it was ranked).
    full_pass: AtomicBool,
}

/// One queued entry as the surfaces show it.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub record: QueuedRecord,
    /// 1-based.
    pub position: usize,
}

impl QueuedRecord {
    /// What the entry needs of a provider (its pinned provider included).
    pub fn need(&self) -> Need<'_> {
        Need {
            resources: self.spec.resources,
            gpu_model: self.spec.gpu_model.as_deref(),
            required_labels: Some(&self.spec.required_labels),
            region: self.region.as_deref(),
            provider_id: self.provider_id.as_deref(),
            scope: Some(&self.spec.scope),
        }
    }

    fn waiting(&self) -> Waiting {
        Waiting {
            id: self.id.clone(),
            priority: self.priority,
            seq: self.seq,
            enqueued_ms: self.enqueued_ms,
            deadline_ms: self.deadline_ms,
        }
    }
}

/// `0/4 providers can run it now: 3 insufficient cpu (…); position 3 of 7
/// in the queue` — or, when it could run but others are ahead of it, says so.
pub fn reason(verdict: &Verdict, position: usize, of: usize) -> String {
    let mut text = verdict.text.clone();
    if verdict.now > 0 && position > 1 {
        text.push_str(&format!("; {} queued ahead of it go first", position - 1));
    }
    format!("{text}; position {position} of {of} in the queue")
}

struct Entries<'a> {
    entries: &'a HashMap<String, QueuedRecord>,
    excluded: &'a HashMap<String, HashSet<String>>,
}

impl Judge for Entries<'_> {
    fn fit(&self, id: &str, c: &Candidate) -> Fit {
        if self.excluded.get(id).is_some_and(|x| x.contains(&c.id)) {
            return Fit::Never;
        }
        self.entries.get(id).map_or(Fit::Never, |q| q.need().fit(c))
    }

    fn need(&self, id: &str) -> Resources {
        self.entries
            .get(id)
            .map_or(Resources::ZERO, |q| q.spec.resources)
    }
}

impl Pending {
    /// The queue as the store kept it, in its order.
    pub fn restore(records: Vec<QueuedRecord>) -> Pending {
        let pending = Pending::default();
        {
            let mut inner = lock(&pending.inner);
            for q in records {
                inner.next_seq = inner.next_seq.max(q.seq + 1);
                inner.queue.insert(q.waiting(), true);
                inner.entries.insert(q.id.clone(), q);
            }
        }
        pending.full_pass.store(true, Ordering::Relaxed);
        pending
    }

    /// A sequence number for an arrival about to be persisted.
    pub fn reserve_seq(&self) -> u64 {
        let mut inner = lock(&self.inner);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        seq
    }

    /// Takes in an entry already persisted (new, or put back after a try
    /// that lost its race: same sequence, same place in line).
    pub fn insert(&self, q: QueuedRecord) {
        {
            let mut inner = lock(&self.inner);
            inner.queue.insert(q.waiting(), true);
            inner.entries.insert(q.id.clone(), q);
        }
        self.full_pass.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Puts back an entry whose try lost its race, without asking for a
    /// pass: it waits for the next change, not for the same stale view.
    pub fn insert_quiet(&self, q: QueuedRecord) {
        let mut inner = lock(&self.inner);
        inner.queue.insert(q.waiting(), true);
        inner.entries.insert(q.id.clone(), q);
    }

    pub fn remove(&self, id: &str) -> Option<QueuedRecord> {
        let mut inner = lock(&self.inner);
        inner.queue.remove(id);
        inner.excluded.remove(id);
        inner.entries.remove(id)
    }

    /// The entries whose usable providers depend on their siblings.
    pub fn spread_bound(&self) -> Vec<QueuedRecord> {
        lock(&self.inner)
            .entries
            .values()
            .filter(|q| spread_bound(q))
            .cloned()
            .collect()
    }

    /// Sets the providers entry `id` may not use (none: clears them).
    pub fn exclude(&self, id: &str, providers: HashSet<String>) {
        let mut inner = lock(&self.inner);
        if providers.is_empty() || !inner.entries.contains_key(id) {
            inner.excluded.remove(id);
        } else {
            inner.excluded.insert(id.to_string(), providers);
        }
    }

    pub fn get(&self, id: &str) -> Option<QueuedRecord> {
        lock(&self.inner).entries.get(id).cloned()
    }

    /// Of `candidates`, the ids some entry of `priority` or higher (ahead
    /// of a newcomer in line) could use now or once enough frees: the
    /// newcomer leaves them to the line. Entries that could never run on
    /// a provider do not claim it.
    pub fn spoken_for(&self, priority: Priority, candidates: &[Candidate]) -> HashSet<String> {
        let inner = lock(&self.inner);
        let judge = inner.judge();
        let mut spoken = HashSet::new();
        for w in inner.queue.ordered() {
            if w.priority < priority || spoken.len() == candidates.len() {
                break;
            }
            for c in candidates {
                if !spoken.contains(&c.id) && judge.fit(&w.id, c) != Fit::Never {
                    spoken.insert(c.id.clone());
                }
            }
        }
        spoken
    }

    /// Why `id` waits as the providers stand now, and where it is in line.
    pub fn reason(&self, id: &str, candidates: &[Candidate]) -> Option<String> {
        let q = self.get(id)?;
        let (position, of) = self.position(id)?;
        Some(reason(&q.need().explain(candidates), position, of))
    }

    /// (position, queue length).
    pub fn position(&self, id: &str) -> Option<(usize, usize)> {
        let inner = lock(&self.inner);
        inner.queue.position(id).map(|p| (p, inner.entries.len()))
    }

    /// Every entry in queue order.
    pub fn ordered(&self) -> Vec<QueueEntry> {
        self.head(usize::MAX)
    }

    /// The first `n` entries in queue order.
    pub fn head(&self, n: usize) -> Vec<QueueEntry> {
        let inner = lock(&self.inner);
        inner
            .queue
            .ordered()
            .take(n)
            .enumerate()
            .filter_map(|(i, w)| {
                inner.entries.get(&w.id).map(|q| QueueEntry {
                    record: q.clone(),
                    position: i + 1,
                })
            })
            .collect()
    }

    /// Entries waiting, by priority class.
    pub fn by_class(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for q in lock(&self.inner).entries.values() {
            *out.entry(q.priority.class.as_str()).or_default() += 1;
        }
        out
    }

    /// Ids whose queue_timeout has passed.
    pub fn due(&self, now_ms: u64) -> Vec<String> {
        lock(&self.inner).queue.due(now_ms)
    }

    pub fn next_deadline(&self) -> Option<u64> {
        lock(&self.inner).queue.next_deadline()
    }

    /// Which entries to try where: on `changed`, or on all of `every`
    /// after an arrival. At most `budget` tries; a pass cut short by it
    /// asks for another over everything, so nothing is left for the next
    /// change to find.
    pub fn plan(&self, changed: &[Candidate], every: &[Candidate], budget: usize) -> Vec<Try> {
        let full = self.full_pass.swap(false, Ordering::Relaxed);
        let tries = {
            let inner = lock(&self.inner);
            if inner.entries.is_empty() {
                return Vec::new();
            }
            let on = if full { every } else { changed };
            inner.queue.plan(on, &inner.judge(), budget)
        };
        if tries.len() >= budget {
            self.full_pass.store(true, Ordering::Relaxed);
            self.wake.notify_one();
        }
        tries
    }

    /// Resolves when an arrival (or a put-back) wants a pass.
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}
