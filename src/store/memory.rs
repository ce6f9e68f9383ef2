//! The in-memory twin of the store: same records, same encoding, no disk.
//! Records are kept encoded so that the twin costs what the real store
//! costs minus the commit, which is what the benchmark compares.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{
    decode, encode, DeploymentRecord, IdentityRecord, LeaseRecord, ProviderRecord, QueuedRecord,
    ServiceRecord, Store, StoreError,
};

#[derive(Default)]
struct Tables {
    identity: Option<Vec<u8>>,
    deployments: BTreeMap<String, Vec<u8>>,
    providers: BTreeMap<String, Vec<u8>>,
    queue: BTreeMap<String, Vec<u8>>,
    leases: BTreeMap<String, Vec<u8>>,
    services: BTreeMap<String, Vec<u8>>,
    applications: BTreeMap<String, Vec<u8>>,
    lease_epoch: u64,
    peers: Vec<String>,
    swarm: Option<Vec<u8>>,
}

#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn identity(&self) -> Result<Option<IdentityRecord>, StoreError> {
        self.tables()
            .identity
            .as_deref()
            .map(|b| decode("identity", b))
            .transpose()
    }

    fn set_identity(&self, rec: &IdentityRecord) -> Result<(), StoreError> {
        self.tables().identity = Some(encode(rec));
        Ok(())
    }

    fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        self.tables()
            .deployments
            .get(id)
            .map(|b| decode(id, b))
            .transpose()
    }

    fn deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        self.tables()
            .deployments
            .iter()
            .map(|(k, b)| decode(k, b))
            .collect()
    }

    fn put_deployment(&self, rec: &DeploymentRecord) -> Result<(), StoreError> {
        self.tables()
            .deployments
            .insert(rec.id.clone(), encode(rec));
        Ok(())
    }

    fn remove_deployment(&self, id: &str) -> Result<(), StoreError> {
        self.tables().deployments.remove(id);
        Ok(())
    }

    fn queued(&self) -> Result<Vec<QueuedRecord>, StoreError> {
        self.tables()
            .queue
            .iter()
            .map(|(k, b)| decode(k, b))
            .collect()
    }

    fn put_queued(&self, q: &QueuedRecord, rec: &DeploymentRecord) -> Result<(), StoreError> {
        let mut t = self.tables();
        t.queue.insert(q.id.clone(), encode(q));
        t.deployments.insert(rec.id.clone(), encode(rec));
        Ok(())
    }

    fn remove_queued(&self, id: &str, rec: &DeploymentRecord) -> Result<(), StoreError> {
        let mut t = self.tables();
        t.queue.remove(id);
        t.deployments.insert(rec.id.clone(), encode(rec));
        Ok(())
    }

    fn leases(&self) -> Result<Vec<LeaseRecord>, StoreError> {
        self.tables()
            .leases
            .iter()
            .map(|(k, b)| decode(k, b))
            .collect()
    }

    fn put_lease(&self, rec: &LeaseRecord, epoch: u64) -> Result<(), StoreError> {
        let mut t = self.tables();
        t.leases.insert(rec.id.clone(), encode(rec));
        t.lease_epoch = t.lease_epoch.max(epoch);
        Ok(())
    }

    fn remove_lease(&self, id: &str) -> Result<(), StoreError> {
        self.tables().leases.remove(id);
        Ok(())
    }

    fn lease_epoch(&self) -> Result<u64, StoreError> {
        Ok(self.tables().lease_epoch)
    }

    fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        self.tables()
            .services
            .iter()
            .map(|(k, b)| decode(k, b))
            .collect()
    }

    fn put_service(&self, rec: &ServiceRecord) -> Result<(), StoreError> {
        self.tables().services.insert(rec.id.clone(), encode(rec));
        Ok(())
    }

    fn remove_service(&self, id: &str) -> Result<(), StoreError> {
        self.tables().services.remove(id);
        Ok(())
    }

    fn applications(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .tables()
            .applications
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn put_application(&self, id: &str, doc: &[u8]) -> Result<(), StoreError> {
        self.tables().applications.insert(id.into(), doc.to_vec());
        Ok(())
    }

    fn remove_application(&self, id: &str) -> Result<(), StoreError> {
        self.tables().applications.remove(id);
        Ok(())
    }

    fn providers(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        self.tables()
            .providers
            .iter()
            .map(|(k, b)| decode(k, b))
            .collect()
    }

    fn put_provider(&self, rec: &ProviderRecord) -> Result<(), StoreError> {
        self.tables().providers.insert(rec.id.clone(), encode(rec));
        Ok(())
    }

    fn remove_provider(&self, id: &str) -> Result<(), StoreError> {
        self.tables().providers.remove(id);
        Ok(())
    }

    fn peers(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.tables().peers.clone())
    }

    fn set_peers(&self, addrs: &[String]) -> Result<(), StoreError> {
        self.tables().peers = addrs.to_vec();
        Ok(())
    }

    fn swarm(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tables().swarm.clone())
    }

    fn set_swarm(&self, doc: &[u8]) -> Result<(), StoreError> {
        self.tables().swarm = Some(doc.to_vec());
        Ok(())
    }
}
