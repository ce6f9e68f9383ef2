//! Member numbers, and sharing of immutable records between cores.
//!
//! Every member id gets a small number, the slot where views keep it, so a
//! view is a vector rather than a hash table (24 bytes per member instead of
//! about 100). A member's identity (id, name, address, generation), a
//! provider set at one version and a member record at one version never
//! change, so cores can share one copy. A node runs one core and shares
//! nothing but numbers; the simulator runs thousands and shares everything
//! (10,000 cores × 10,000 members would not fit in memory otherwise).

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use super::record::{bucket_of, MemberInfo, Record, SharedRecord, FINE_BUCKETS};
use super::FastMap;
use crate::proto::peer::ProviderSet;

/// Numbers ids and, when shared, hands out shared copies of records.
#[derive(Clone, Default)]
pub struct Interner(Arc<Mutex<Tables>>);

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interner")
    }
}

#[derive(Default)]
struct Tables {
    /// Whether records are shared (between cores), not only numbered.
    shared: bool,
    numbers: FastMap<Arc<str>, u32>,
    infos: FastMap<(u32, u64), Arc<MemberInfo>>,
    sets: FastMap<(u32, u64, u64), Arc<ProviderSet>>,
    records: FastMap<RecordKey, Arc<SharedRecord>>,
}

impl Tables {
    fn number(&mut self, id: &str) -> (Arc<str>, u32) {
        if let Some((k, n)) = self.numbers.get_key_value(id) {
            return (k.clone(), *n);
        }
        let n = u32::try_from(self.numbers.len()).expect("fewer than 2^32 member ids");
        let k: Arc<str> = Arc::from(id);
        self.numbers.insert(k.clone(), n);
        (k, n)
    }
}

impl Interner {
    /// One table shared by every core given a clone of it.
    pub fn shared() -> Interner {
        Interner(Arc::new(Mutex::new(Tables {
            shared: true,
            ..Tables::default()
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Tables) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// The shared copy of `id`, numbered on first sight.
    pub fn id(&self, id: &str) -> Arc<str> {
        self.with(|t| t.number(id).0)
    }

    /// How many ids were numbered.
    pub fn len(&self) -> usize {
        self.with(|t| t.numbers.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of `id`, if it was ever numbered.
    pub fn number(&self, id: &str) -> Option<u32> {
        self.with(|t| t.numbers.get(id).copied())
    }

    pub fn info(&self, id: &str, name: String, addr: String, generation: u64) -> Arc<MemberInfo> {
        let bucket = bucket_of(id, FINE_BUCKETS) as u16;
        self.with(|t| {
            let (id, number) = t.number(id);
            let make = || {
                Arc::new(MemberInfo {
                    id,
                    name,
                    addr,
                    generation,
                    number,
                    bucket,
                })
            };
            if !t.shared {
                return make();
            }
            t.infos
                .entry((number, generation))
                .or_insert_with(make)
                .clone()
        })
    }

    /// The shared copy of `set`, whose owner has number `owner`.
    pub fn set(&self, owner: u32, set: ProviderSet) -> Arc<ProviderSet> {
        self.with(|t| {
            if !t.shared {
                return Arc::new(set);
            }
            t.sets
                .entry((owner, set.owner_generation, set.version))
                .or_insert_with(|| Arc::new(set))
                .clone()
        })
    }

    pub fn record(&self, record: Record) -> Arc<SharedRecord> {
        self.with(|t| {
            if !t.shared {
                return Arc::new(SharedRecord::new(record));
            }
            t.records
                .entry(RecordKey(record))
                .or_insert_with_key(|k| Arc::new(SharedRecord::new(k.0.clone())))
                .clone()
        })
    }
}

/// A record compared by the identity of its shared parts: interned infos
/// and sets are equal exactly when they are the same allocation.
struct RecordKey(Record);

impl PartialEq for RecordKey {
    fn eq(&self, other: &RecordKey) -> bool {
        let (a, b) = (&self.0, &other.0);
        Arc::ptr_eq(&a.info, &b.info)
            && a.incarnation == b.incarnation
            && a.status == b.status
            && a.provider_version == b.provider_version
            && match (&a.providers, &b.providers) {
                (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                (None, None) => true,
                _ => false,
            }
            && a.suspected_by == b.suspected_by
    }
}

impl Eq for RecordKey {}

impl Hash for RecordKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let r = &self.0;
        Arc::as_ptr(&r.info).hash(state);
        r.incarnation.hash(state);
        r.status.hash(state);
        r.provider_version.hash(state);
        r.providers.as_ref().map(Arc::as_ptr).hash(state);
        r.suspected_by.hash(state);
    }
}
