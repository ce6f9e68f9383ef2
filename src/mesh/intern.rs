//! Sharing of immutable records between cores.
//!
//! A member's identity (id, name, address, generation) and a provider set at
//! one version never change, so cores can share one copy. A node runs one core
//! and gains little; the simulator runs thousands and would not fit in memory
//! without it (10,000 cores × 10,000 members).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::record::MemberInfo;
use crate::proto::peer::ProviderSet;

/// Hands out shared copies; the default shares nothing.
#[derive(Clone, Default)]
pub struct Interner(Option<Arc<Mutex<Tables>>>);

#[derive(Default)]
struct Tables {
    ids: HashMap<Arc<str>, ()>,
    infos: HashMap<(Arc<str>, u64), Arc<MemberInfo>>,
    sets: HashMap<(Arc<str>, u64, u64), Arc<ProviderSet>>,
}

impl Interner {
    /// One table shared by every core given a clone of it.
    pub fn shared() -> Interner {
        Interner(Some(Arc::default()))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Tables) -> R) -> Option<R> {
        let tables = self.0.as_ref()?;
        let mut guard = tables.lock().unwrap_or_else(PoisonError::into_inner);
        Some(f(&mut guard))
    }

    pub fn id(&self, id: &str) -> Arc<str> {
        self.with(|t| {
            if let Some((k, _)) = t.ids.get_key_value(id) {
                return k.clone();
            }
            let k: Arc<str> = Arc::from(id);
            t.ids.insert(k.clone(), ());
            k
        })
        .unwrap_or_else(|| Arc::from(id))
    }

    pub fn info(&self, id: &str, name: String, addr: String, generation: u64) -> Arc<MemberInfo> {
        let id = self.id(id);
        let make = |id: Arc<str>| {
            Arc::new(MemberInfo {
                id,
                name,
                addr,
                generation,
            })
        };
        match &self.0 {
            None => make(id),
            Some(_) => self
                .with(|t| {
                    t.infos
                        .entry((id.clone(), generation))
                        .or_insert_with(|| make(id))
                        .clone()
                })
                .expect("a shared interner has tables"),
        }
    }

    pub fn set(&self, set: ProviderSet) -> Arc<ProviderSet> {
        if self.0.is_none() {
            return Arc::new(set);
        }
        let owner = self.id(&set.owner_id);
        self.with(|t| {
            t.sets
                .entry((owner, set.owner_generation, set.version))
                .or_insert_with(|| Arc::new(set))
                .clone()
        })
        .expect("a shared interner has tables")
    }
}
