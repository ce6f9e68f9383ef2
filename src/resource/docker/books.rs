//! The reservation books of one provider, kept in line with the engine.

use std::collections::{HashMap, HashSet};
use std::sync::MutexGuard;
use std::time::SystemTime;

use tracing::{debug, warn};

use super::facts::Facts;
use super::DockerProvider;
use crate::resource::error::ResourceError;
use crate::resource::gpu::GpuPool;
use crate::resource::ledger::Ledger;
use crate::resource::types::{Deployment, StateChange};

/// The books of one provider; never held across an await.
pub(super) struct Books {
    pub(super) ledger: Ledger,
    pub(super) gpus: GpuPool,
    /// States seen per deployment (by deployment id).
    pub(super) history: HashMap<String, Vec<StateChange>>,
    /// Keys a deploy or stop is working on: reconciliation leaves them alone.
    pub(super) busy: HashSet<String>,
    /// Epoch of the last change made to each key's reservation. A snapshot
    /// of the engine taken at epoch `e` says nothing about keys touched after `e`.
    pub(super) touched: HashMap<String, u64>,
    pub(super) epoch: u64,
}

impl Books {
    pub(super) fn touch(&mut self, key: &str) {
        self.epoch += 1;
        self.touched.insert(key.to_string(), self.epoch);
    }

    pub(super) fn release(&mut self, key: &str) {
        let held = self.ledger.release(key).is_some();
        self.gpus.release(key);
        self.touch(key);
        if held {
            debug!(deployment = key, "reservation released");
        }
    }

    fn adopt(&mut self, f: &Facts) {
        self.ledger.adopt(&f.key, f.ledger_need());
        if !f.gpus.is_empty() {
            self.gpus.adopt(&f.key, &f.gpus, f.gpu_shared);
        }
        self.touch(&f.key);
    }
}

/// Marks a key busy for as long as it lives.
pub(super) struct Busy<'a> {
    provider: &'a DockerProvider,
    key: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.provider.books().busy.remove(&self.key);
    }
}

impl DockerProvider {
    pub(super) fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn busy(&self, key: &str) -> Busy<'_> {
        self.books().busy.insert(key.to_string());
        Busy {
            provider: self,
            key: key.to_string(),
        }
    }

    /// Records what was seen of a deployment: extends its history, and
    /// releases its reservation once it no longer runs.
    pub(super) fn observe(&self, f: &Facts) -> Deployment {
        let mut books = self.books();
        let history = match books.history.get_mut(&f.key) {
            Some(h) => {
                if h.last().map(|c| &c.state) != Some(&f.state) {
                    h.push(StateChange {
                        state: f.state.clone(),
                        at: SystemTime::now(),
                    });
                }
                h.clone()
            }
            None => {
                let h = f.seed_history();
                books.history.insert(f.key.clone(), h.clone());
                h
            }
        };
        if !f.live() && (books.ledger.holds(&f.key) || !books.gpus.held_by(&f.key).is_empty()) {
            books.release(&f.key);
        }
        let gpus = if f.gpus.is_empty() {
            books.gpus.held_by(&f.key)
        } else {
            f.gpus.clone()
        };
        Deployment {
            id: f.key.clone(),
            request_id: f.request_id.clone(),
            provider_id: self.id.clone(),
            image: f.image.clone(),
            resources: f.resources,
            gpus,
            history,
            lease: None,
            labels: f.labels.clone(),
            restarts: f.restarts,
            attempt: f.attempt,
            home: f.home.clone(),
            attempts: Vec::new(),
            preemptible: f.preemptible,
            stop_after_disconnect_ms: f.stop_after_disconnect_ms,
            group: f.group.clone(),
            health: f.health.clone(),
            ports: f.ports.clone(),
        }
    }

    /// Brings the books in line with the engine: live containers hold
    /// their reservations (adopted after a restart), exited or vanished
    /// ones hold nothing. Keys changed since the listing began, or being
    /// deployed or stopped now, are left alone. Returns what was listed.
    pub(super) async fn sync(&self) -> Result<Vec<Facts>, ResourceError> {
        let start = self.books().epoch;
        let facts = self.list_facts().await?;
        let mut books = self.books();
        let books = &mut *books;
        let settled = |b: &Books, key: &str| {
            !b.busy.contains(key) && b.touched.get(key).is_none_or(|t| *t <= start)
        };
        let mut seen = HashSet::new();
        for f in &facts {
            seen.insert(f.key.as_str());
            if !settled(books, &f.key) {
                continue;
            }
            let held = books.ledger.holds(&f.key);
            if f.live() && !held {
                debug!(deployment = %f.key, need = %f.ledger_need(), "adopting a running container");
                books.adopt(f);
            } else if !f.live() && (held || !books.gpus.held_by(&f.key).is_empty()) {
                books.release(&f.key);
            }
        }
        let vanished: Vec<String> = books
            .ledger
            .keys()
            .filter(|k| !seen.contains(k) && settled(books, k))
            .map(String::from)
            .collect();
        for key in vanished {
            warn!(deployment = %key, "container vanished from the engine; releasing its reservation");
            books.release(&key);
        }
        // Forget what no longer exists anywhere.
        books
            .touched
            .retain(|k, t| *t > start || seen.contains(k.as_str()) || books.busy.contains(k));
        books.history.retain(|k, _| {
            seen.contains(k.as_str()) || books.busy.contains(k) || books.ledger.holds(k)
        });
        Ok(facts)
    }
}
