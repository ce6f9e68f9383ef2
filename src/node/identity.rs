//! Who this node is: a stable id, a generation that changes on every start,
//! and the address peers dial.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

use super::NodeError;
use crate::config::{hostname, Config};
use crate::store::{IdentityRecord, Store};

/// This start's id and generation, recorded in `store`: the configured
/// id, else the stored one, else the one in `data_dir/node-id` (where
/// earlier releases kept it), else a new one. The generation is greater
/// than the stored one even if the clock went back.
pub fn identify(cfg: &Config, store: &dyn Store) -> Result<(String, u64), NodeError> {
    let stored = store.identity().map_err(|e| NodeError::store(cfg, e))?;
    let id = match (&cfg.node_id, &stored) {
        (Some(id), _) => id.clone(),
        (None, Some(rec)) => rec.node_id.clone(),
        (None, None) => node_id(cfg)?,
    };
    let generation = new_generation().max(stored.map_or(0, |r| r.generation + 1));
    store
        .set_identity(&IdentityRecord {
            node_id: id.clone(),
            generation,
        })
        .map_err(|e| NodeError::store(cfg, e))?;
    Ok((id, generation))
}

/// The configured id, else the one in `data_dir/node-id` (created on first
/// start and still written there for tools that read it).
pub fn node_id(cfg: &Config) -> Result<String, NodeError> {
    if let Some(id) = &cfg.node_id {
        return Ok(id.clone());
    }
    let path = cfg.data_dir.join("node-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id = format!("iarnet-{:08x}", rand::rng().random::<u32>());
    write_file(&cfg.data_dir, &path, &id)?;
    Ok(id)
}

fn write_file(dir: &Path, path: &Path, text: &str) -> Result<(), NodeError> {
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(path, text))
        .map_err(|e| NodeError::DataDir {
            path: path.display().to_string(),
            error: e.to_string(),
        })
}

/// Microseconds since the epoch, strictly increasing within this process so
/// two nodes started in one test never share a generation.
pub fn new_generation() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// The configured advertise address, else the bound one (with the host name
/// in place of an unspecified IP such as 0.0.0.0).
pub fn advertise_addr(cfg: &Config, bound: SocketAddr) -> String {
    if let Some(addr) = &cfg.advertise_addr {
        return addr.clone();
    }
    if bound.ip().is_unspecified() {
        let host = hostname().unwrap_or_else(|| "127.0.0.1".to_string());
        format!("{host}:{}", bound.port())
    } else {
        bound.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn the_id_is_kept_and_the_generation_grows_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::loopback("x");
        cfg.node_id = None;
        cfg.data_dir = dir.path().to_path_buf();
        let store = MemoryStore::new();
        let (id, g1) = identify(&cfg, &store).unwrap();
        assert!(id.starts_with("iarnet-"), "{id}");
        let (again, g2) = identify(&cfg, &store).unwrap();
        assert_eq!(again, id);
        assert!(g2 > g1);
        // A generation stored ahead of the clock still grows.
        store
            .set_identity(&IdentityRecord {
                node_id: id.clone(),
                generation: u64::MAX / 2,
            })
            .unwrap();
        assert_eq!(identify(&cfg, &store).unwrap().1, u64::MAX / 2 + 1);
    }

    #[test]
    fn an_id_from_the_old_node_id_file_moves_into_the_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node-id"), "iarnet-0000beef\n").unwrap();
        let mut cfg = Config::loopback("x");
        cfg.node_id = None;
        cfg.data_dir = dir.path().to_path_buf();
        let store = MemoryStore::new();
        assert_eq!(identify(&cfg, &store).unwrap().0, "iarnet-0000beef");
        assert_eq!(
            store.identity().unwrap().unwrap().node_id,
            "iarnet-0000beef"
        );
    }
}
