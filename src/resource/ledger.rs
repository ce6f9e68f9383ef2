//! The capacity ledger of one provider: admission without over-commit.

use std::collections::HashMap;

use super::error::ResourceError;
use super::gpu::{GpuInfo, GpuPool};
use super::types::{Capacity, DeploySpec, Resources};

/// Admission of one deployment: reserves its amounts under `key` and
/// assigns its GPUs, or changes nothing. Shared GPUs are not counted in the
/// ledger's GPU dimension: the pool decides who may share.
pub fn admit(
    ledger: &mut Ledger,
    gpus: &mut GpuPool,
    key: &str,
    spec: &DeploySpec,
) -> Result<Vec<String>, ResourceError> {
    let mut need = spec.resources;
    if spec.gpu_shared {
        need.gpus = 0;
    }
    ledger.reserve(key, need)?;
    let assigned = gpus.assign(
        key,
        spec.resources.gpus,
        spec.gpu_model.as_deref(),
        spec.gpu_shared,
    );
    if assigned.is_err() {
        ledger.release(key);
    }
    assigned
}

/// A fresh GPU reading: the pool offers what is present now, and the
/// ledger's GPU dimension follows it.
pub fn offer_gpus(ledger: &mut Ledger, pool: &mut GpuPool, gpus: Vec<GpuInfo>) {
    pool.refresh(gpus);
    ledger.set_total_gpus(pool.gpus().len() as u32);
}

/// Reservations by key (a deployment id). Every change goes through
/// `reserve`/`release`, which keep `reserved` equal to the sum of the
/// reservations and never above `total`.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    provider: String,
    total: Resources,
    reserved: Resources,
    held: HashMap<String, Resources>,
    /// The most deployments held at once; None is no limit.
    max_deployments: Option<u32>,
    /// Held keys that are not deployments of ours (another tenant's pods
    /// on a shared cluster): they take resources but no deployment slot.
    uncounted: usize,
}

impl Ledger {
    pub fn new(provider: &str, total: Resources) -> Ledger {
        Ledger {
            provider: provider.to_string(),
            total,
            ..Ledger::default()
        }
    }

    /// Caps how many deployments it holds at once.
    pub fn with_max_deployments(mut self, max: Option<u32>) -> Ledger {
        self.max_deployments = max;
        self
    }

    /// The GPUs offered changed (one fell off the bus, or came back).
    pub fn set_total_gpus(&mut self, gpus: u32) {
        self.total.gpus = gpus;
    }

    pub fn max_deployments(&self) -> Option<u32> {
        self.max_deployments
    }

    pub fn capacity(&self) -> Capacity {
        Capacity {
            total: self.total,
            reserved: self.reserved,
            max_deployments: self.max_deployments,
            deployments: (self.held.len() - self.uncounted) as u32,
        }
    }

    /// Reserves `need` under `key`; a key already held is not counted twice.
    pub fn reserve(&mut self, key: &str, need: Resources) -> Result<(), ResourceError> {
        if self.held.contains_key(key) {
            return Ok(());
        }
        let capacity = self.capacity();
        if !capacity.has_slot() {
            return Err(ResourceError::NoSlot {
                provider: self.provider.clone(),
                max: capacity.max_deployments.unwrap_or_default(),
            });
        }
        let available = capacity.available();
        if !available.fits(&need) {
            return Err(ResourceError::Exhausted {
                provider: self.provider.clone(),
                need,
                available,
            });
        }
        self.reserved = self.reserved.saturating_add(&need);
        self.held.insert(key.to_string(), need);
        Ok(())
    }

    /// Records a reservation found in the backend (a restart rebuilding its
    /// books). It is kept even when it exceeds the total: it exists.
    pub fn adopt(&mut self, key: &str, need: Resources) {
        if self.held.insert(key.to_string(), need).is_none() {
            self.reserved = self.reserved.saturating_add(&need);
        }
    }

    /// Like `adopt`, for what is not a deployment of ours: it takes
    /// resources but no deployment slot, and is never released.
    pub fn adopt_uncounted(&mut self, key: &str, need: Resources) {
        if self.held.insert(key.to_string(), need).is_none() {
            self.reserved = self.reserved.saturating_add(&need);
            self.uncounted += 1;
        }
    }

    pub fn release(&mut self, key: &str) -> Option<Resources> {
        let need = self.held.remove(key)?;
        self.reserved = self.reserved.saturating_sub(&need);
        Some(need)
    }

    pub fn holds(&self, key: &str) -> bool {
        self.held.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.held.keys().map(|k| k.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn res(cpu: u64, mem: u64, gpus: u32) -> Resources {
        Resources {
            cpu_millis: cpu,
            memory_bytes: mem,
            gpus,
            storage_bytes: 0,
        }
    }

    proptest! {
        /// Any sequence of reserves and releases keeps reserved = sum of
        /// holdings <= total, and releasing everything restores the total.
        #[test]
        fn reservations_never_exceed_capacity(
            ops in proptest::collection::vec((0u8..8, 0u64..3000, 0u64..5000, 0u32..3, any::<bool>()), 1..200)
        ) {
            let total = res(8000, 16000, 4);
            let mut l = Ledger::new("p", total);
            for (key, cpu, mem, gpus, is_reserve) in ops {
                let key = format!("d{key}");
                if is_reserve {
                    let before = l.capacity();
                    let r = l.reserve(&key, res(cpu, mem, gpus));
                    if r.is_err() {
                        prop_assert_eq!(before, l.capacity());
                    }
                } else {
                    l.release(&key);
                }
                let c = l.capacity();
                prop_assert!(c.total.fits(&c.reserved));
                let sum = l.held.values().fold(Resources::ZERO, |a, r| a.saturating_add(r));
                prop_assert_eq!(sum, c.reserved);
            }
            let keys: Vec<String> = l.keys().map(String::from).collect();
            for k in keys {
                l.release(&k);
            }
            prop_assert_eq!(l.capacity().reserved, Resources::ZERO);
            prop_assert_eq!(l.capacity().available(), total);
        }
    }

    #[test]
    fn same_key_is_reserved_once() {
        let mut l = Ledger::new("p", res(1000, 1000, 0));
        l.reserve("a", res(600, 10, 0)).unwrap();
        l.reserve("a", res(600, 10, 0)).unwrap();
        assert_eq!(l.capacity().reserved.cpu_millis, 600);
        let err = l.reserve("b", res(600, 10, 0)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.to_string().contains("400m"), "{err}");
    }

    #[test]
    fn max_deployments_is_a_dimension_of_its_own() {
        let mut l = Ledger::new("p", res(8000, 8000, 0)).with_max_deployments(Some(2));
        l.adopt_uncounted("others", res(1000, 10, 0));
        l.reserve("a", res(100, 10, 0)).unwrap();
        l.reserve("b", res(100, 10, 0)).unwrap();
        assert_eq!(l.capacity().deployments, 2);
        assert!(!l.capacity().has_slot());
        let err = l.reserve("c", res(100, 10, 0)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.to_string().contains("max_deployments"), "{err}");
        // A retry of one it holds is not a new deployment.
        l.reserve("a", res(100, 10, 0)).unwrap();
        l.release("a");
        l.reserve("c", res(100, 10, 0)).unwrap();
        assert_eq!(l.capacity().reserved.cpu_millis, 1200);
    }
}
