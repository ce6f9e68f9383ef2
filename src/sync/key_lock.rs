//! One async lock per key (a request id, a container name), held across
//! awaits; an entry lives only while someone holds or waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

type Slot = Arc<tokio::sync::Mutex<()>>;

/// Serializes work on the same key; different keys never wait on each other.
#[derive(Debug, Default)]
pub struct KeyLocks {
    slots: Mutex<HashMap<String, Slot>>,
}

impl KeyLocks {
    pub fn new() -> KeyLocks {
        KeyLocks::default()
    }

    /// Waits for `key`'s lock; it is released when the guard drops.
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_string())
            .or_default()
            .clone();
        let guard = slot.lock_owned().await;
        KeyGuard {
            locks: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    /// `key`'s lock if nobody holds it now.
    pub fn try_lock(&self, key: &str) -> Option<KeyGuard<'_>> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_string())
            .or_default()
            .clone();
        let guard = slot.try_lock_owned().ok()?;
        Some(KeyGuard {
            locks: self,
            key: key.to_string(),
            guard: Some(guard),
        })
    }

    /// Keys held or waited for now.
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Holds one key's lock; the last guard of a key removes its entry.
#[derive(Debug)]
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut slots = self
            .locks
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // One reference is the map's own: nobody else holds or waits.
        if slots
            .get(&self.key)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            slots.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_no_entry_left_behind() {
        let locks = Arc::new(KeyLocks::new());
        let a = locks.lock("a").await;
        // Another key is free.
        let b = locks.lock("b").await;
        drop(b);
        // The same key waits until the first guard drops.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.lock("a").await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        waiter.await.unwrap();
        assert!(
            locks.is_empty(),
            "entries are dropped with their last guard"
        );
    }
}
