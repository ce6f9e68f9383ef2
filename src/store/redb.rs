//! The durable store: one redb file (`data_dir/iarnet.redb`).
//!
//! redb is an embedded, pure-Rust key-value store with ACID transactions.
//! Every commit is copy-on-write and checksummed, and is fsynced before
//! `commit` returns, so a process killed at any instant (`kill -9`
//! mid-write included) reopens with the last committed state: a record is
//! either wholly there or wholly absent, never torn. The file is locked
//! while open, which is how a second node on the same `data_dir` is refused.
//!
//! Writes go through one committer thread (`group_commit`): those made
//! while a commit runs share the next one, so a storm of concurrent deploys
//! pays one fsync per batch. A batch is one transaction, so after a crash
//! it too is wholly there or wholly absent, and nobody was answered before
//! it was durable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::redb::{Database, DatabaseError, ReadableTable, TableDefinition};

use super::group_commit::{Change, CommitStats, Committer, Table};
use super::{
    decode, encode, DeploymentRecord, IdentityRecord, LeaseRecord, ProviderRecord, QueuedRecord,
    ServiceRecord, Store, StoreError,
};

/// Singletons (identity, peers) by name.
const META: Table = TableDefinition::new("meta");
const DEPLOYMENTS: Table = TableDefinition::new("deployments");
const PROVIDERS: Table = TableDefinition::new("providers");
const QUEUE: Table = TableDefinition::new("queue");
const LEASES: Table = TableDefinition::new("leases");
const SERVICES: Table = TableDefinition::new("services");
const APPLICATIONS: Table = TableDefinition::new("applications");

const IDENTITY_KEY: &str = "identity";
const PEERS_KEY: &str = "peers";
const SWARM_KEY: &str = "swarm";
const LEASE_EPOCH_KEY: &str = "lease_epoch";

/// The store's file name under `data_dir`.
pub const FILE_NAME: &str = "iarnet.redb";

/// The most writes one commit carries: enough for a storm of concurrent
/// deploys, small enough that one transaction stays short.
pub const MAX_WRITES_PER_COMMIT: usize = 512;

pub struct RedbStore {
    /// Reads go straight to it; the committer holds the other `Arc`.
    db: Arc<Database>,
    /// Dropping it joins its thread, which releases the file lock.
    committer: Committer,
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
        RedbStore::open_batching(path, MAX_WRITES_PER_COMMIT)
    }

    /// Opens with at most `max_writes` writes per commit; 1 commits every
    /// write on its own (the benchmark's baseline).
    pub fn open_batching(path: &Path, max_writes: usize) -> Result<RedbStore, StoreError> {
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
        // Every table exists from the first open on, so reads never meet
        // a missing one.
        let create = || -> Result<(), DbError> {
            let txn = db.begin_write()?;
            for table in [
                META,
                DEPLOYMENTS,
                PROVIDERS,
                QUEUE,
                LEASES,
                SERVICES,
                APPLICATIONS,
            ] {
                txn.open_table(table)?;
            }
            txn.commit()?;
            Ok(())
        };
        create().map_err(backend("create tables"))?;
        let db = Arc::new(db);
        let committer = Committer::start(db.clone(), max_writes).map_err(|e| StoreError::Open {
            path: shown.clone(),
            error: format!("cannot start the commit thread: {e}"),
        })?;
        Ok(RedbStore {
            db,
            committer,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits and writes so far: how well concurrent writes were batched.
    pub fn commit_stats(&self) -> &CommitStats {
        self.committer.stats()
    }

    fn write(&self, op: &'static str, changes: Vec<Change>) -> Result<(), StoreError> {
        self.committer.write(op, changes)
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let run = || -> Result<Option<Vec<u8>>, DbError> {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(table)?;
            Ok(t.get(key)?.map(|v| v.value().to_vec()))
        };
        run().map_err(backend("read"))
    }

    fn all(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
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

    fn put(&self, table: Table, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.write("write", vec![put(table, key, value)])
    }

    fn delete(&self, table: Table, key: &str) -> Result<(), StoreError> {
        self.write(
            "delete",
            vec![Change::Delete {
                table,
                key: key.to_string(),
            }],
        )
    }
}

fn put(table: Table, key: &str, value: Vec<u8>) -> Change {
    Change::Put {
        table,
        key: key.to_string(),
        value,
    }
}

impl Store for RedbStore {
    fn identity(&self) -> Result<Option<IdentityRecord>, StoreError> {
        self.get(META, IDENTITY_KEY)?
            .map(|b| decode(IDENTITY_KEY, &b))
            .transpose()
    }

    fn set_identity(&self, rec: &IdentityRecord) -> Result<(), StoreError> {
        self.put(META, IDENTITY_KEY, encode(rec))
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
        self.put(DEPLOYMENTS, &rec.id, encode(rec))
    }

    fn remove_deployment(&self, id: &str) -> Result<(), StoreError> {
        self.delete(DEPLOYMENTS, id)
    }

    fn queued(&self) -> Result<Vec<QueuedRecord>, StoreError> {
        self.all(QUEUE)?.iter().map(|(k, b)| decode(k, b)).collect()
    }

    fn put_queued(&self, q: &QueuedRecord, rec: &DeploymentRecord) -> Result<(), StoreError> {
        self.write(
            "enqueue",
            vec![
                put(QUEUE, &q.id, encode(q)),
                put(DEPLOYMENTS, &rec.id, encode(rec)),
            ],
        )
    }

    fn remove_queued(&self, id: &str, rec: &DeploymentRecord) -> Result<(), StoreError> {
        self.write(
            "dequeue",
            vec![
                Change::Delete {
                    table: QUEUE,
                    key: id.to_string(),
                },
                put(DEPLOYMENTS, &rec.id, encode(rec)),
            ],
        )
    }

    fn leases(&self) -> Result<Vec<LeaseRecord>, StoreError> {
        self.all(LEASES)?
            .iter()
            .map(|(k, b)| decode(k, b))
            .collect()
    }

    fn put_lease(&self, rec: &LeaseRecord, epoch: u64) -> Result<(), StoreError> {
        self.write(
            "lease",
            vec![
                put(LEASES, &rec.id, encode(rec)),
                Change::RaiseTo {
                    table: META,
                    key: LEASE_EPOCH_KEY,
                    value: epoch,
                },
            ],
        )
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
        self.put(SERVICES, &rec.id, encode(rec))
    }

    fn remove_service(&self, id: &str) -> Result<(), StoreError> {
        self.delete(SERVICES, id)
    }

    fn applications(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.all(APPLICATIONS)
    }

    fn put_application(&self, id: &str, doc: &[u8]) -> Result<(), StoreError> {
        self.put(APPLICATIONS, id, doc.to_vec())
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
        self.put(PROVIDERS, &rec.id, encode(rec))
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
        self.put(META, PEERS_KEY, encode(&addrs))
    }

    fn swarm(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(META, SWARM_KEY)
    }

    fn set_swarm(&self, doc: &[u8]) -> Result<(), StoreError> {
        self.put(META, SWARM_KEY, doc.to_vec())
    }
}
