//! A running node, composed in three phases: [`prepare`] (bind, TLS
//! identity, identity, the gossip core, audit), [`attach`] (the resource
//! manager and its providers, reconciled with the store), [`serve`] (gRPC,
//! HTTP and the node's loops, owned by one `JoinSet` under one token).
//! The [`NodeHandle`] owns the result.

mod attach;
pub mod discovery;
pub mod gossip;
mod handle;
mod identity;
pub mod mdns;
mod peers;
pub mod pool;
mod prepare;
pub mod providers;
mod registered;
mod serve;
pub mod shared;
pub mod swarm;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::{MemoryStore, RedbStore, Store, StoreError};
pub use handle::{MemberSnapshot, NodeHandle};
pub use providers::ProviderSetup;
pub use shared::Shared;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr}: {error} (is another process using the port? set {key})")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        error: String,
    },
    #[error("cannot write {path}: {error} (set data_dir to a writable directory, or set node_id)")]
    DataDir { path: String, error: String },
    #[error("mutual TLS: {0}")]
    Tls(String),
    #[error("cannot build the gRPC reflection service: {0}")]
    Reflection(String),
    #[error("data_dir {data_dir}: {error}")]
    Store { data_dir: String, error: StoreError },
}

impl NodeError {
    fn store(cfg: &Config, error: StoreError) -> NodeError {
        NodeError::Store {
            data_dir: cfg.data_dir.display().to_string(),
            error,
        }
    }
}

/// Starts a node from a validated configuration, with the internal
/// provider its `mode` finds and its store in `data_dir`.
pub async fn start(config: Config) -> Result<NodeHandle, NodeError> {
    start_with(config, ProviderSetup::Detect).await
}

/// Opens the node's durable store, `data_dir/iarnet.redb`.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, NodeError> {
    RedbStore::open_dir(&config.data_dir)
        .map(|s| Arc::new(s) as Arc<dyn Store>)
        .map_err(|e| NodeError::store(config, e))
}

/// Starts a node with the given provider setup. `Detect` keeps its state
/// in `data_dir`; `Given` (tests, embedding: many nodes in one process,
/// one shared `data_dir`) keeps it in memory; see `start_with_store`.
pub async fn start_with(config: Config, setup: ProviderSetup) -> Result<NodeHandle, NodeError> {
    let store: Arc<dyn Store> = match setup {
        ProviderSetup::Detect => open_store(&config)?,
        ProviderSetup::Given(_) => Arc::new(MemoryStore::new()),
    };
    start_with_store(config, setup, store).await
}

/// Starts a node with the given provider setup and store.
pub async fn start_with_store(
    config: Config,
    setup: ProviderSetup,
    store: Arc<dyn Store>,
) -> Result<NodeHandle, NodeError> {
    let prepared = prepare::prepare(config, &*store).await?;
    let manager = attach::attach(&prepared, setup, store.clone()).await?;
    let (shared, local_addr, http_addr) = (
        prepared.shared.clone(),
        prepared.local_addr,
        prepared.http_addr,
    );
    let cancel = CancellationToken::new();
    let draining = CancellationToken::new();
    let served = serve::serve(prepared, manager.clone(), store.clone(), &cancel, &draining).await?;
    Ok(NodeHandle {
        shared,
        manager,
        cancel,
        draining,
        health: served.health,
        tasks: served.tasks,
        deploys: served.deploys,
        local_addr,
        http_addr,
        http_api: served.http_api,
        store,
    })
}

/// How long a caller may wait for a whole graceful shutdown.
pub fn shutdown_bound(config: &Config) -> Duration {
    config.shutdown_grace + Duration::from_secs(1)
}
