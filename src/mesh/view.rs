//! The member table one node holds, with its hash kept up to date on every
//! change so that comparing two views costs one number.

use std::collections::VecDeque;
use std::sync::Arc;

use super::intern::Interner;
use super::record::{Millis, Record, SharedRecord, Status};
use super::FastMap;

/// `Entry::last_heard` of a member never heard from directly.
pub const NEVER: Millis = Millis::MAX;

pub use super::record::FINE_BUCKETS;

/// What one node holds about one member: the member's record (shared with
/// every node holding the same version) and this node's own timers. Reads
/// go through to the record (`entry.status`, `entry.info.id`).
///
/// When this node saw a suspicion or tombstone begin is kept beside the
/// entries ([`View::since`]): almost every entry is alive and needs none.
#[derive(Debug, Clone)]
pub struct Entry {
    rec: Arc<SharedRecord>,
    /// When this node last heard from the member itself ([`NEVER`] if not yet).
    pub last_heard: Millis,
}

impl std::ops::Deref for Entry {
    type Target = Record;
    fn deref(&self) -> &Record {
        self.rec.record()
    }
}

impl Entry {
    pub fn new(rec: Arc<SharedRecord>, last_heard: Millis) -> Entry {
        Entry { rec, last_heard }
    }

    pub fn set_record(&mut self, rec: Arc<SharedRecord>) {
        self.rec = rec;
    }

    /// When this node last heard from the member itself, if ever.
    pub fn heard(&self) -> Option<Millis> {
        (self.last_heard != NEVER).then_some(self.last_heard)
    }
}

/// Every member one node knows, itself included, kept in the slot of the
/// member's number: iteration follows the numbers, the same on every run.
#[derive(Debug)]
pub struct View {
    interner: Interner,
    start: u64,
    slots: Vec<Option<Entry>>,
    /// When each entry not alive became so, by member number.
    since: FastMap<u32, Millis>,
    len: usize,
    hash: u64,
    fine: Vec<u64>,
    /// Entries DEAD or LEFT, DEAD, SUSPECT, and live ones whose owner
    /// announced a provider set this node lacks: kept on every change so
    /// that a round in which none exist scans nothing for them.
    tombstones: usize,
    dead: usize,
    suspects: usize,
    lacking: usize,
    /// Members whose providers, as placement sees them, changed; kept only
    /// where something reads it (a node, not the simulator's cores).
    feed: Option<Feed>,
}

/// The members whose placement-relevant state changed, in order, so that
/// the placement index updates only their providers.
#[derive(Debug, Default)]
struct Feed {
    seq: u64,
    log: VecDeque<(u64, Arc<str>)>,
}

/// Changes kept; a reader further behind rebuilds from the whole view.
const FEED_KEPT: usize = 4096;

/// What placement reads of an entry: a change to any of it may change the
/// candidates the member's providers make.
fn placement_key(e: &Entry) -> (bool, bool, u64, u64, u64) {
    (
        e.status.is_tombstone(),
        e.providers.is_some(),
        e.held_version(),
        e.info.generation,
        Arc::as_ptr(&e.info) as *const u8 as u64,
    )
}

impl View {
    /// An empty view numbering members with `interner`, iterating from a
    /// slot chosen by `start`.
    pub fn new(interner: Interner, start: u64) -> View {
        View {
            interner,
            start,
            slots: Vec::new(),
            since: FastMap::default(),
            len: 0,
            hash: 0,
            fine: vec![0; FINE_BUCKETS as usize],
            tombstones: 0,
            dead: 0,
            suspects: 0,
            lacking: 0,
            feed: None,
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries neither DEAD nor LEFT, this node's own included.
    pub fn live_len(&self) -> usize {
        self.len - self.tombstones
    }

    /// Entries held DEAD.
    pub fn dead_len(&self) -> usize {
        self.dead
    }

    /// Entries held SUSPECT.
    pub fn suspect_len(&self) -> usize {
        self.suspects
    }

    /// Live entries whose owner announced a provider set this node lacks.
    pub fn lacking_len(&self) -> usize {
        self.lacking
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.get_at(self.interner.number(id)?)
    }

    /// The entry of member number `n` (`entry.info.number`).
    pub fn get_at(&self, n: u32) -> Option<&Entry> {
        self.slots.get(n as usize)?.as_ref()
    }

    /// When this node saw `e`'s suspicion or tombstone begin (0 for an
    /// alive entry, where it means nothing).
    pub fn since(&self, e: &Entry) -> Millis {
        self.since.get(&e.info.number).copied().unwrap_or(0)
    }

    fn set_since(&mut self, e: &Entry, since: Millis) {
        if e.status == Status::Alive {
            self.since.remove(&e.info.number);
        } else {
            self.since.insert(e.info.number, since);
        }
    }

    /// Every entry, from this view's own starting slot round to it again.
    /// Budgets cut messages after their first entries; if every view began
    /// at member 0, every node would send and ask for the same members
    /// first, and the rest would spread a round later.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        // Relative to the ids numbered, not to the slots allocated: how the
        // vector grows must not change what the protocol decides.
        let numbered = self.interner.len().max(1) as u64;
        let start = ((self.start % numbered) as usize).min(self.slots.len());
        let (before, after) = self.slots.split_at(start);
        after.iter().chain(before).flatten()
    }

    /// Adds `entry` to the hashes and counts, or takes it out of them.
    fn toggle(&mut self, entry: &Entry, adding: bool) {
        let h = entry.rec.hash();
        self.hash ^= h;
        self.fine[entry.info.bucket as usize] ^= h;
        let count = |n: &mut usize| {
            if adding {
                *n += 1;
            } else {
                *n -= 1;
            }
        };
        count(&mut self.len);
        if entry.status.is_tombstone() {
            count(&mut self.tombstones);
        }
        if entry.status == Status::Dead {
            count(&mut self.dead);
        }
        if entry.status == Status::Suspect {
            count(&mut self.suspects);
        }
        if entry.lacks_providers() {
            count(&mut self.lacking);
        }
    }

    /// Starts keeping the placement feed ([`View::placement_changes`]).
    pub fn track_placement(&mut self) {
        self.feed.get_or_insert_with(Feed::default);
    }

    /// The feed's position now; None when it is not kept.
    pub fn placement_position(&self) -> Option<u64> {
        self.feed.as_ref().map(|f| f.seq)
    }

    /// The feed's position now, and the members changed after `after` (an
    /// earlier position); None when it is not kept or has moved on past
    /// `after` (the reader then reads the whole view).
    pub fn placement_changes(&self, after: u64) -> Option<(u64, Vec<Arc<str>>)> {
        let feed = self.feed.as_ref()?;
        if after > feed.seq {
            return None;
        }
        let first = feed.log.front().map_or(feed.seq + 1, |(s, _)| *s);
        if after + 1 < first {
            return None;
        }
        let changed = feed
            .log
            .iter()
            .skip_while(|(s, _)| *s <= after)
            .map(|(_, id)| id.clone())
            .collect();
        Some((feed.seq, changed))
    }

    fn note(&mut self, id: Arc<str>) {
        let Some(feed) = self.feed.as_mut() else {
            return;
        };
        feed.seq += 1;
        if feed.log.len() == FEED_KEPT {
            feed.log.pop_front();
        }
        feed.log.push_back((feed.seq, id));
    }

    /// The slot of member number `n`, made if the view is shorter.
    fn slot(&mut self, n: u32) -> &mut Option<Entry> {
        let n = n as usize;
        if n >= self.slots.len() {
            // To every id numbered so far (members arrive by the thousand
            // while a node joins: one allocation, not one per arrival), and
            // by an eighth at least: amortized, and at most an eighth unused.
            let want = (n + 1)
                .max(self.slots.len() + self.slots.len() / 8)
                .max(self.interner.len());
            self.slots.reserve_exact(want - self.slots.len());
            self.slots.resize(want, None);
        }
        &mut self.slots[n]
    }

    /// Inserts or replaces the entry for `entry.info.id`, whose status
    /// began at `since`.
    pub fn put(&mut self, entry: Entry, since: Millis) {
        self.set_since(&entry, since);
        self.toggle(&entry, true);
        let key = (self.feed.is_some()).then(|| (entry.info.id.clone(), placement_key(&entry)));
        let old = self.slot(entry.info.number).replace(entry);
        if let Some(old) = &old {
            self.toggle(old, false);
        }
        if let Some((id, key)) = key {
            if old.as_ref().map(placement_key) != Some(key) {
                self.note(id);
            }
        }
    }

    /// Changes the entry of member number `n` in place, with when its
    /// status began, keeping the hashes right.
    pub fn update_at<R>(
        &mut self,
        n: u32,
        f: impl FnOnce(&mut Entry, &mut Millis) -> R,
    ) -> Option<R> {
        let mut entry = self.slots.get_mut(n as usize)?.take()?;
        self.toggle(&entry, false);
        let before = self.feed.is_some().then(|| placement_key(&entry));
        let mut since = self.since(&entry);
        let out = f(&mut entry, &mut since);
        self.set_since(&entry, since);
        self.toggle(&entry, true);
        if before.is_some_and(|k| k != placement_key(&entry)) {
            self.note(entry.info.id.clone());
        }
        let n = entry.info.number;
        *self.slot(n) = Some(entry);
        Some(out)
    }

    pub fn remove(&mut self, id: &str) -> Option<Entry> {
        let n = self.interner.number(id)?;
        let old = self.slots.get_mut(n as usize)?.take()?;
        self.since.remove(&n);
        self.toggle(&old, false);
        if self.feed.is_some() {
            self.note(old.info.id.clone());
        }
        Some(old)
    }

    /// One hash per bucket, for `bucket_count` a power of two up to [`FINE_BUCKETS`].
    pub fn bucket_hashes(&self, bucket_count: u32) -> Vec<u64> {
        let k = bucket_count.clamp(1, FINE_BUCKETS);
        let mut out = vec![0u64; k as usize];
        for (i, h) in self.fine.iter().enumerate() {
            out[i & (k as usize - 1)] ^= h;
        }
        out
    }

    /// How many entries fall in each of `bucket_count` buckets.
    pub fn bucket_sizes(&self, bucket_count: u32) -> Vec<usize> {
        let k = bucket_count.clamp(1, FINE_BUCKETS) as usize;
        let mut out = vec![0usize; k];
        for e in self.iter() {
            out[e.info.bucket as usize & (k - 1)] += 1;
        }
        out
    }

    /// Entries whose id falls in one of `buckets` (a membership mask of `bucket_count`).
    pub fn in_buckets<'a>(
        &'a self,
        bucket_count: u32,
        mask: &'a [bool],
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let k = bucket_count.clamp(1, FINE_BUCKETS) as usize;
        self.iter().filter(move |e| {
            mask.get(e.info.bucket as usize & (k - 1))
                .copied()
                .unwrap_or(false)
        })
    }
}

/// Turns a list of bucket indices into a membership mask, ignoring indices out of range.
pub fn bucket_mask(bucket_count: u32, buckets: &[u32]) -> Vec<bool> {
    let mut mask = vec![false; bucket_count.max(1) as usize];
    for b in buckets {
        if let Some(slot) = mask.get_mut(*b as usize) {
            *slot = true;
        }
    }
    mask
}
