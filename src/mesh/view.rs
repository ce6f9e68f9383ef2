//! The member table one node holds, with its hash kept up to date on every
//! change so that comparing two views costs one number.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use super::record::{bucket_of, entry_hash, MemberInfo, Millis, Stamp, Status};
use crate::proto::peer::{Member, MemberDigest, ProviderSet};

/// `Entry::last_heard` of a member never heard from directly.
pub const NEVER: Millis = Millis::MAX;

/// Finest bucket resolution kept incrementally; coarser counts fold it.
pub const FINE_BUCKETS: u32 = 4096;

/// What one node holds about one member.
#[derive(Debug, Clone)]
pub struct Entry {
    pub info: Arc<MemberInfo>,
    pub incarnation: u64,
    pub status: Status,
    /// The owner's provider-set version as last announced in its record.
    pub provider_version: u64,
    /// The provider set held for this member, if any was received.
    pub providers: Option<Arc<ProviderSet>>,
    /// Nodes that independently failed to reach it (SUSPECT only).
    pub suspected_by: Suspecters,
    /// Its bucket among [`FINE_BUCKETS`] (cached: computed on every digest).
    pub bucket: u16,
    /// When this node saw the current status begin (suspicion or tombstone start).
    pub since: Millis,
    /// When this node last heard from the member itself ([`NEVER`] if not yet).
    pub last_heard: Millis,
}

// Entries are identified by member id: a view is a set of them, looked up by
// id, so the id is stored once (in the shared `info`) rather than again as a key.
impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.info.id == other.info.id
    }
}

impl Eq for Entry {}

impl std::hash::Hash for Entry {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must hash exactly like the `str` it borrows as.
        (*self.info.id).hash(state);
    }
}

impl std::borrow::Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        &self.info.id
    }
}

impl Entry {
    /// When this node last heard from the member itself, if ever.
    pub fn heard(&self) -> Option<Millis> {
        (self.last_heard != NEVER).then_some(self.last_heard)
    }

    pub fn stamp(&self) -> Stamp {
        Stamp {
            generation: self.info.generation,
            incarnation: self.incarnation,
            status: self.status,
            confirmations: self.suspected_by.len() as u32,
        }
    }

    pub fn held_version(&self) -> u64 {
        self.providers.as_ref().map_or(0, |p| p.version)
    }

    pub fn digest(&self) -> MemberDigest {
        MemberDigest {
            id: self.info.id.to_string(),
            generation: self.info.generation,
            incarnation: self.incarnation,
            status: self.status.to_proto(),
            provider_version: self.held_version(),
            confirmations: self.suspected_by.len() as u32,
        }
    }

    pub fn to_member(&self) -> Member {
        Member {
            id: self.info.id.to_string(),
            name: self.info.name.clone(),
            generation: self.info.generation,
            addr: self.info.addr.clone(),
            incarnation: self.incarnation,
            status: self.status.to_proto(),
            provider_version: self.provider_version,
            suspected_by: self.suspected_by.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn hash(&self) -> u64 {
        entry_hash(&self.info.id, &self.stamp(), self.held_version())
    }
}

/// The nodes that suspect a member; empty for almost every entry, so it
/// costs one pointer there (a simulated 10,000-node mesh holds 10^8 entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(clippy::box_collection)] // one thin pointer per entry instead of a 24-byte Vec
pub struct Suspecters(Option<Box<Vec<Arc<str>>>>);

impl From<Vec<Arc<str>>> for Suspecters {
    fn from(ids: Vec<Arc<str>>) -> Self {
        if ids.is_empty() {
            Suspecters(None)
        } else {
            Suspecters(Some(Box::new(ids)))
        }
    }
}

impl std::ops::Deref for Suspecters {
    type Target = [Arc<str>];
    fn deref(&self) -> &[Arc<str>] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

/// Every member one node knows, itself included.
#[derive(Debug)]
pub struct View {
    entries: HashSet<Entry>,
    hash: u64,
    fine: Vec<u64>,
    /// Entries DEAD or LEFT, and of those DEAD: kept on every change so
    /// that counting the live ones is not a scan (a tick asks every round).
    tombstones: usize,
    dead: usize,
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

impl Default for View {
    fn default() -> Self {
        View {
            entries: HashSet::new(),
            hash: 0,
            fine: vec![0; FINE_BUCKETS as usize],
            tombstones: 0,
            dead: 0,
            feed: None,
        }
    }
}

impl View {
    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries neither DEAD nor LEFT, this node's own included.
    pub fn live_len(&self) -> usize {
        self.entries.len() - self.tombstones
    }

    /// Entries held DEAD.
    pub fn dead_len(&self) -> usize {
        self.dead
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Adds `entry` to the hashes and counts, or takes it out of them.
    fn toggle(&mut self, entry: &Entry, adding: bool) {
        let h = entry.hash();
        self.hash ^= h;
        self.fine[entry.bucket as usize] ^= h;
        let count = |n: &mut usize| {
            if adding {
                *n += 1;
            } else {
                *n -= 1;
            }
        };
        if entry.status.is_tombstone() {
            count(&mut self.tombstones);
        }
        if entry.status == Status::Dead {
            count(&mut self.dead);
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

    /// Inserts or replaces the entry for `entry.info.id`.
    pub fn put(&mut self, mut entry: Entry) {
        entry.bucket = bucket_of(&entry.info.id, FINE_BUCKETS) as u16;
        self.toggle(&entry, true);
        let key = (self.feed.is_some()).then(|| (entry.info.id.clone(), placement_key(&entry)));
        let old = self.entries.replace(entry);
        if let Some(old) = &old {
            self.toggle(old, false);
        }
        if let Some((id, key)) = key {
            if old.as_ref().map(placement_key) != Some(key) {
                self.note(id);
            }
        }
    }

    /// Changes an entry in place, keeping the hashes right.
    pub fn update<R>(&mut self, id: &str, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        let mut entry = self.entries.take(id)?;
        self.toggle(&entry, false);
        let before = self.feed.is_some().then(|| placement_key(&entry));
        let out = f(&mut entry);
        self.toggle(&entry, true);
        if before.is_some_and(|k| k != placement_key(&entry)) {
            self.note(entry.info.id.clone());
        }
        self.entries.insert(entry);
        Some(out)
    }

    pub fn remove(&mut self, id: &str) -> Option<Entry> {
        let old = self.entries.take(id)?;
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
        for e in self.entries.iter() {
            out[e.bucket as usize & (k - 1)] += 1;
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
        self.entries.iter().filter(move |e| {
            mask.get(e.bucket as usize & (k - 1))
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
