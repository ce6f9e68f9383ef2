//! The durable store: one redb file (`data_dir/iarnet.redb`).
//!
//! redb is an embedded, pure-Rust key-value store with ACID transactions.
//! Every commit is copy-on-write and checksummed, and is fsynced before
//! `commit` returns, so a process killed at any instant (`kill -9`
//! mid-write included) reopens with the last committed state: a record is
//! either wholly there or wholly absent, never torn. The file is locked
//! while open, which is how a second node on the same `data_dir` is refused.

use std::path::{Path, PathBuf};

use ::redb::{Database, DatabaseError, ReadableTable, TableDefinition};

use super::{
    decode, encode, DeploymentRecord, IdentityRecord, LeaseRecord, ProviderRecord, QueuedRecord,
    ServiceRecord, Store, StoreError,
};

/// Singletons (identity, peers) by name.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");
const PROVIDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("providers");
const QUEUE: TableDefinition<&str, &[u8]> = TableDefinition::new("queue");
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");
const SERVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("services");
const APPLICATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("applications");

const IDENTITY_KEY: &str = "identity";
const PEERS_KEY: &str = "peers";
const SWARM_KEY: &str = "swarm";
const LEASE_EPOCH_KEY: &str = "lease_epoch";

/// The store's file name under `data_dir`.
pub const FILE_NAME: &str = "iarnet.redb";

pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

/// redb's errors are large; they only travel to `backend`, boxed.
type DbError = Box<dyn std::error::Error + Send + Sync>;

fn backend(op: &'static str) -> impl FnOnce(DbError) -> StoreError {
    move |e| StoreError::Backend {
        op,
        error: e.to_string(),
    }
}

impl RedbStore {
    /// Opens (or creates) `data_dir/iarnet.redb`, creating `data_dir`.
    pub fn open_dir(data_dir: &Path) -> Result<RedbStore, StoreError> {
        let path = data_dir.join(FILE_NAME);
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
        RedbStore::open(&path)
    }

    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let shown = path.display().to_string();
        let db = Database::create(path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                path: shown.clone(),
            },
            other => StoreError::Open {
                path: shown.clone(),
                error: other.to_string(),
            },
        })?;
        let store = RedbStore {
            db,
            path: path.to_path_buf(),
        };
        // Every table exists from the first open on, so reads never meet
        // a missing one.
        store.write("create tables", |txn| {
            txn.open_table(META)?;
            txn.open_table(DEPLOYMENTS)?;
            txn.open_table(PROVIDERS)?;
            txn.open_table(QUEUE)?;
            txn.open_table(LEASES)?;
            txn.open_table(SERVICES)?;
            txn.open_table(APPLICATIONS)?;
            Ok(())
        })?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(
        &self,
        op: &'static str,
        f: impl FnOnce(&::redb::WriteTransaction) -> Result<(), DbError>,
    ) -> Result<(), StoreError> {
        let run = || -> Result<(), DbError> {
            let txn = self.db.begin_write()?;
            f(&txn)?;
            txn.commit()?;
            Ok(())
        };
        run().map_err(backend(op))
    }

    fn get(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let run = || -> Result<Option<Vec<u8>>, DbError> {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(table)?;
            Ok(t.get(key)?.map(|v| v.value().to_vec()))
        };
        run().map_err(backend("read"))
    }

    fn all(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let run = || -> Result<Vec<(String, Vec<u8>)>, DbError> {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(table)?;
            let mut out = Vec::new();
            for entry in t.iter()? {
                let (k, v) = entry?;
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        };
        run().map_err(backend("scan"))
    }

    fn put(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.write("write", |txn| {
            txn.open_table(table)?.insert(key, value)?;
            Ok(())
        })
    }

    fn delete(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<(), StoreError> {
        self.write("delete", |txn| {
            txn.open_table(table)?.remove(key)?;
            Ok(())
        })
    }
}

impl Store for RedbStore {
    fn identity(&self) -> Result<Option<IdentityRecord>, StoreError> {
        self.get(META, IDENTITY_KEY)?
            .map(|b| decode(IDENTITY_KEY, &b))
            .transpose()
    }

    fn set_identity(&self, rec: &IdentityRecord) -> Result<(), StoreError> {
        self.put(META, IDENTITY_KEY, &encode(rec))
    }

    fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        self.get(DEPLOYMENTS, id)?
            .map(|b| decode(id, &b))
            .transpose()
    }

    fn deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        self.all(DEPLOYMENTS)?
            .iter()
            .map(|(k, b)| decode(k, b))
            .collect()
    }

    fn put_deployment(&self, rec: &DeploymentRecord) -> Result<(), StoreError> {
        self.put(DEPLOYMENTS, &rec.id, &encode(rec))
    }

    fn remove_deployment(&self, id: &str) -> Result<(), StoreError> {
        self.delete(DEPLOYMENTS, id)
    }

    fn queued(&self) -> Result<Vec<QueuedRecord>, StoreError> {
        self.all(QUEUE)?.iter().map(|(k, b)| decode(k, b)).collect()
    }

    fn put_queued(&self, q: &QueuedRecord, rec: &DeploymentRecord) -> Result<(), StoreError> {
        let (qb, rb) = (encode(q), encode(rec));
        self.write("enqueue", |txn| {
            txn.open_table(QUEUE)?
                .insert(q.id.as_str(), qb.as_slice())?;
            txn.open_table(DEPLOYMENTS)?
                .insert(rec.id.as_str(), rb.as_slice())?;
            Ok(())
        })
    }

    fn remove_queued(&self, id: &str, rec: &DeploymentRecord) -> Result<(), StoreError> {
        let rb = encode(rec);
        self.write("dequeue", |txn| {
            txn.open_table(QUEUE)?.remove(id)?;
            txn.open_table(DEPLOYMENTS)?
                .insert(rec.id.as_str(), rb.as_slice())?;
            Ok(())
        })
    }

    fn leases(&self) -> Result<Vec<LeaseRecord>, StoreError> {
        self.all(LEASES)?
            .iter()
            .map(|(k, b)| decode(k, b))
            .collect()
    }

    fn put_lease(&self, rec: &LeaseRecord, epoch: u64) -> Result<(), StoreError> {
        let rb = encode(rec);
        let before = self.lease_epoch()?;
        let eb = encode(&before.max(epoch));
        self.write("lease", |txn| {
            txn.open_table(LEASES)?
                .insert(rec.id.as_str(), rb.as_slice())?;
            txn.open_table(META)?
                .insert(LEASE_EPOCH_KEY, eb.as_slice())?;
            Ok(())
        })
    }

    fn remove_lease(&self, id: &str) -> Result<(), StoreError> {
        self.delete(LEASES, id)
    }

    fn lease_epoch(&self) -> Result<u64, StoreError> {
        self.get(META, LEASE_EPOCH_KEY)?
            .map(|b| decode(LEASE_EPOCH_KEY, &b))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        self.all(SERVICES)?
            .iter()
            .map(|(k, b)| decode(k, b))
            .collect()
    }

    fn put_service(&self, rec: &ServiceRecord) -> Result<(), StoreError> {
        self.put(SERVICES, &rec.id, &encode(rec))
    }

    fn remove_service(&self, id: &str) -> Result<(), StoreError> {
        self.delete(SERVICES, id)
    }

    fn applications(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.all(APPLICATIONS)
    }

    fn put_application(&self, id: &str, doc: &[u8]) -> Result<(), StoreError> {
        self.put(APPLICATIONS, id, doc)
    }

    fn remove_application(&self, id: &str) -> Result<(), StoreError> {
        self.delete(APPLICATIONS, id)
    }

    fn providers(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        self.all(PROVIDERS)?
            .iter()
            .map(|(k, b)| decode(k, b))
            .collect()
    }

    fn put_provider(&self, rec: &ProviderRecord) -> Result<(), StoreError> {
        self.put(PROVIDERS, &rec.id, &encode(rec))
    }

    fn remove_provider(&self, id: &str) -> Result<(), StoreError> {
        self.delete(PROVIDERS, id)
    }

    fn peers(&self) -> Result<Vec<String>, StoreError> {
        self.get(META, PEERS_KEY)?
            .map(|b| decode(PEERS_KEY, &b))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    fn set_peers(&self, addrs: &[String]) -> Result<(), StoreError> {
        self.put(META, PEERS_KEY, &encode(&addrs))
    }

    fn swarm(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(META, SWARM_KEY)
    }

    fn set_swarm(&self, doc: &[u8]) -> Result<(), StoreError> {
        self.put(META, SWARM_KEY, doc)
    }
}
