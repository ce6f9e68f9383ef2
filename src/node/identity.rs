//! Who this node is: a stable id, a generation that changes on every start,
//! and the address peers dial.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

use super::NodeError;
use crate::config::{hostname, Config};

/// The configured id, else the one in `data_dir/node-id` (created on first start).
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
