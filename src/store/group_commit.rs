//! Group commit: concurrent writers share one redb transaction and one fsync.
//!
//! A write is a list of changes that must land together (a queue entry and
//! its deployment record, say). Writers hand theirs to one committer thread
//! and block until the commit that holds them has returned. While one
//! commit's fsync runs, later writes queue up; the next commit takes all of
//! them (up to `max_writes`), so N concurrent writers pay about one fsync
//! per batch instead of N, and each caller is still answered only after its
//! own changes are durable. A failed commit fails every write in it: none of
//! them is acknowledged, and redb leaves the file as the last commit left it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use ::redb::{Database, ReadableTable, TableDefinition};

use super::StoreError;

pub(super) type Table = TableDefinition<'static, &'static str, &'static [u8]>;

/// One change inside a write.
pub(super) enum Change {
    Put {
        table: Table,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: String,
    },
    /// Raises a counter (a JSON u64) to at least `value`, read and written
    /// in the same transaction so two writers in one batch cannot lower it.
    RaiseTo {
        table: Table,
        key: &'static str,
        value: u64,
    },
}

struct Write {
    op: &'static str,
    changes: Vec<Change>,
    done: SyncSender<Result<(), String>>,
}

/// How many commits carried how many writes: `writes / commits` is the
/// mean batch size.
#[derive(Debug, Default)]
pub struct CommitStats {
    commits: AtomicU64,
    writes: AtomicU64,
}

impl CommitStats {
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

/// The committer thread and the way to it. Dropping it lets the thread
/// finish what was queued and joins it, so the database (and its file
/// lock) is released when the store is.
pub(super) struct Committer {
    tx: Option<Sender<Write>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
}

impl Committer {
    pub fn start(db: Arc<Database>, max_writes: usize) -> std::io::Result<Committer> {
        let (tx, rx) = mpsc::channel();
        Committer::start_with(db, max_writes, tx, rx)
    }

    /// Starts on a channel that may already hold writes (tests use this to
    /// make a batch deterministic).
    fn start_with(
        db: Arc<Database>,
        max_writes: usize,
        tx: Sender<Write>,
        rx: Receiver<Write>,
    ) -> std::io::Result<Committer> {
        let stats = Arc::new(CommitStats::default());
        let counted = stats.clone();
        let thread = std::thread::Builder::new()
            .name("iarnet-store-commit".into())
            .spawn(move || run(&db, &rx, max_writes.max(1), &counted))?;
        Ok(Committer {
            tx: Some(tx),
            thread: Some(thread),
            stats,
        })
    }

    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// Returns once `changes` are durable, or with why none of them is.
    pub fn write(&self, op: &'static str, changes: Vec<Change>) -> Result<(), StoreError> {
        let stopped = || StoreError::Backend {
            op,
            error: "the store's committer has stopped (restart the node)".into(),
        };
        let (done, answer) = mpsc::sync_channel(1);
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        tx.send(Write { op, changes, done })
            .map_err(|_| stopped())?;
        answer
            .recv()
            .map_err(|_| stopped())?
            .map_err(|error| StoreError::Backend { op, error })
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(db: &Database, rx: &Receiver<Write>, max_writes: usize, stats: &CommitStats) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < max_writes {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let result = commit(db, &batch).map_err(|e| e.to_string());
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if batch.len() > 1 {
            tracing::trace!(writes = batch.len(), "store group commit");
        }
        if let Err(e) = &result {
            let ops: Vec<&str> = batch.iter().map(|w| w.op).collect();
            tracing::warn!(error = %e, ?ops, "store commit failed; none of its writes is acknowledged");
        }
        for w in batch {
            let _ = w.done.send(result.clone());
        }
    }
}

type DbError = Box<dyn std::error::Error + Send + Sync>;

fn commit(db: &Database, batch: &[Write]) -> Result<(), DbError> {
    let txn = db.begin_write()?;
    for change in batch.iter().flat_map(|w| &w.changes) {
        match change {
            Change::Put { table, key, value } => {
                txn.open_table(*table)?
                    .insert(key.as_str(), value.as_slice())?;
            }
            Change::Delete { table, key } => {
                txn.open_table(*table)?.remove(key.as_str())?;
            }
            Change::RaiseTo { table, key, value } => {
                let mut t = txn.open_table(*table)?;
                let current: u64 = match t.get(*key)? {
                    Some(v) => serde_json::from_slice(v.value())?,
                    None => 0,
                };
                let raised = serde_json::to_vec(&current.max(*value))?;
                t.insert(*key, raised.as_slice())?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::redb::ReadableTableMetadata;

    const T: Table = TableDefinition::new("t");

    fn put(key: &str) -> Vec<Change> {
        vec![Change::Put {
            table: T,
            key: key.into(),
            value: key.as_bytes().to_vec(),
        }]
    }

    #[test]
    fn writes_queued_during_a_commit_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("t.redb")).unwrap());
        // 50 writes are waiting before the committer starts, as they would
        // be while an fsync runs: one commit carries them all.
        let (tx, rx) = mpsc::channel();
        let mut answers = Vec::new();
        for i in 0..50 {
            let (done, answer) = mpsc::sync_channel(1);
            tx.send(Write {
                op: "test",
                changes: put(&format!("k{i:02}")),
                done,
            })
            .unwrap();
            answers.push(answer);
        }
        let c = Committer::start_with(db.clone(), 32, tx, rx).unwrap();
        for a in answers {
            a.recv().unwrap().unwrap();
        }
        assert_eq!(c.stats().writes(), 50);
        assert_eq!(c.stats().commits(), 2, "at most 32 writes per commit");
        // One more write, alone, is its own commit.
        c.write("test", put("last")).unwrap();
        assert_eq!(c.stats().commits(), 3);
        drop(c);
        let read = db.begin_read().unwrap();
        let t = read.open_table(T).unwrap();
        assert_eq!(t.len().unwrap(), 51);
    }

    #[test]
    fn a_failed_commit_acknowledges_none_of_its_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("t.redb")).unwrap());
        let c = Committer::start(db.clone(), 64).unwrap();
        c.write("test", put("a")).unwrap();
        // A counter that is not a number fails the whole transaction,
        // the put beside it included.
        let bad = vec![
            Change::Put {
                table: T,
                key: "b".into(),
                value: b"b".to_vec(),
            },
            Change::RaiseTo {
                table: T,
                key: "a",
                value: 1,
            },
        ];
        let err = c.write("bad", bad).unwrap_err();
        assert!(err.to_string().contains("store bad failed"), "{err}");
        drop(c);
        let read = db.begin_read().unwrap();
        let t = read.open_table(T).unwrap();
        assert!(t.get("b").unwrap().is_none());
        assert_eq!(t.get("a").unwrap().unwrap().value(), b"a");
    }

    #[test]
    fn concurrent_writers_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let db = Arc::new(Database::create(&path).unwrap());
        let c = Arc::new(Committer::start(db.clone(), 256).unwrap());
        let threads: Vec<_> = (0..64)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || c.write("test", put(&format!("k{i}"))).unwrap())
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.stats().writes(), 64);
        drop(c);
        drop(db);
        let db = Database::create(&path).unwrap();
        let read = db.begin_read().unwrap();
        assert_eq!(read.open_table(T).unwrap().len().unwrap(), 64);
    }
}
