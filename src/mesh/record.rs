//! Member records and the rule that decides which of two records is newer.

use std::sync::Arc;

use crate::proto::peer::{Member, MemberDigest, MemberStatus, ProviderSet};

/// Milliseconds on the driver's monotonic clock (the core never reads a clock).
pub type Millis = u64;

/// What never changes for one run of a node: interned and shared.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MemberInfo {
    pub id: Arc<str>,
    pub name: String,
    pub addr: String,
    pub generation: u64,
    /// The id's number in its interner: where views keep the member.
    pub number: u32,
    /// The id's bucket among the view's finest buckets (asked on every digest).
    pub bucket: u16,
}

/// What a node holds about a member, apart from its own timers. Every node
/// holding the same version of a member holds the same record, so cores
/// that share an interner share one copy (the simulator's 10,000 cores hold
/// 10^8 entries and would not fit in memory otherwise).
#[derive(Debug, Clone)]
pub struct Record {
    pub info: Arc<MemberInfo>,
    pub incarnation: u64,
    pub status: Status,
    /// The owner's provider-set version as last announced in its record.
    pub provider_version: u64,
    /// The provider set held for this member, if any was received.
    pub providers: Option<Arc<ProviderSet>>,
    /// Nodes that independently failed to reach it (SUSPECT only).
    pub suspected_by: Suspecters,
}

impl Record {
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

    /// The owner announced a provider set newer than the one held.
    pub fn lacks_providers(&self) -> bool {
        !self.status.is_tombstone() && self.provider_version > self.held_version()
    }

    pub fn digest(&self) -> MemberDigest {
        MemberDigest {
            id: String::from(&*self.info.id),
            generation: self.info.generation,
            incarnation: self.incarnation,
            status: self.status.to_proto(),
            provider_version: self.held_version(),
            confirmations: self.suspected_by.len() as u32,
        }
    }

    pub fn to_member(&self) -> Member {
        Member {
            id: String::from(&*self.info.id),
            name: self.info.name.clone(),
            generation: self.info.generation,
            addr: self.info.addr.clone(),
            incarnation: self.incarnation,
            status: self.status.to_proto(),
            provider_version: self.provider_version,
            suspected_by: self
                .suspected_by
                .iter()
                .map(|s| String::from(&**s))
                .collect(),
        }
    }
}

/// A record with its digest-entry hash, computed once for every view
/// holding it.
#[derive(Debug)]
pub struct SharedRecord {
    record: Record,
    hash: u64,
}

impl SharedRecord {
    pub fn new(record: Record) -> SharedRecord {
        let hash = entry_hash(&record.info.id, &record.stamp(), record.held_version());
        SharedRecord { record, hash }
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    /// This record's term in a view's hash.
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

/// The nodes that suspect a member; empty for almost every record, so it
/// costs one pointer there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[allow(clippy::box_collection)] // one thin pointer per record instead of a 24-byte Vec
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

/// Liveness of a member as one node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl Status {
    pub fn from_proto(raw: i32) -> Option<Status> {
        match MemberStatus::try_from(raw).ok()? {
            MemberStatus::Alive => Some(Status::Alive),
            MemberStatus::Suspect => Some(Status::Suspect),
            MemberStatus::Dead => Some(Status::Dead),
            MemberStatus::Left => Some(Status::Left),
            MemberStatus::Unspecified => None,
        }
    }

    pub fn to_proto(self) -> i32 {
        match self {
            Status::Alive => MemberStatus::Alive as i32,
            Status::Suspect => MemberStatus::Suspect as i32,
            Status::Dead => MemberStatus::Dead as i32,
            Status::Left => MemberStatus::Left as i32,
        }
    }

    /// Dead and departed members are tombstones: kept a while, never gossiped to.
    pub fn is_tombstone(self) -> bool {
        matches!(self, Status::Dead | Status::Left)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Dead => "dead",
            Status::Left => "left",
        }
    }
}

/// The part of a record that orders it against another record of the same member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub generation: u64,
    pub incarnation: u64,
    pub status: Status,
    /// Independent suspicion confirmations (only meaningful for `Suspect`).
    pub confirmations: u32,
}

impl Stamp {
    /// Whether a record stamped `self` replaces one stamped `old`.
    ///
    /// A new generation (a restart) wins outright. Within a generation `Left`
    /// is final; `Dead` at incarnation i beats anything at i or below, and
    /// only the owner can climb above it (refutation); `Suspect` at i beats
    /// `Alive` at i; more confirmations beat fewer for the same suspicion.
    pub fn supersedes(&self, old: &Stamp) -> bool {
        self.order_key() > old.order_key()
    }

    /// SWIM's precedence as one lexicographic key, so the order is total and
    /// transitive: replicas applying records in any order agree on the winner.
    fn order_key(&self) -> (u64, bool, u64, u8, u32) {
        let rank = match self.status {
            Status::Alive => 0,
            Status::Suspect => 1,
            Status::Dead => 2,
            Status::Left => 3,
        };
        let left = self.status == Status::Left;
        let confirmations = if self.status == Status::Suspect {
            self.confirmations
        } else {
            0
        };
        (self.generation, left, self.incarnation, rank, confirmations)
    }

    pub fn of_digest(d: &MemberDigest) -> Option<Stamp> {
        Some(Stamp {
            generation: d.generation,
            incarnation: d.incarnation,
            status: Status::from_proto(d.status)?,
            confirmations: d.confirmations,
        })
    }

    pub fn of_member(m: &Member) -> Option<Stamp> {
        Some(Stamp {
            generation: m.generation,
            incarnation: m.incarnation,
            status: Status::from_proto(m.status)?,
            confirmations: m.suspected_by.len() as u32,
        })
    }
}

/// Stable 64-bit hash (FNV-1a, then a mixer so XOR-combined sums stay uniform).
/// Stable across builds and platforms, unlike `std`'s hasher: every node must
/// compute the same view hash for the same view.
#[derive(Clone, Copy)]
pub struct StableHasher(u64);

impl StableHasher {
    pub fn new() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }

    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator so ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        self
    }

    pub fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    pub fn finish(self) -> u64 {
        // splitmix64 finalizer
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Finest bucket resolution views keep incrementally; coarser counts fold it.
pub const FINE_BUCKETS: u32 = 4096;

/// The bucket a member id falls in, for `bucket_count` a power of two.
pub fn bucket_of(id: &str, bucket_count: u32) -> u32 {
    (StableHasher::new().bytes(id.as_bytes()).finish() as u32) & (bucket_count.max(1) - 1)
}

/// How many buckets a view of `n` members is split into when hashes differ.
/// Small views send their whole digest at once (one bucket).
pub fn bucket_count_for(n: usize) -> u32 {
    if n <= 32 {
        1
    } else {
        ((n / 16).next_power_of_two() as u32).min(4096)
    }
}

/// The hash of one digest entry; a view's hash is the XOR of its entries'.
pub fn entry_hash(id: &str, stamp: &Stamp, held_version: u64) -> u64 {
    StableHasher::new()
        .bytes(id.as_bytes())
        .u64(stamp.generation)
        .u64(stamp.incarnation)
        .u64(stamp.status.to_proto() as u64)
        .u64(u64::from(stamp.confirmations))
        .u64(held_version)
        .finish()
}
