//! A running node: binds the gRPC port, serves PeerService, Admin, health and
//! reflection, and drives the gossip core until it is shut down.

pub mod gossip;
mod identity;
mod peers;
mod registered;
pub mod resources;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::{info, warn, Instrument};

use crate::api::admin::AdminApi;
use crate::api::http::HttpApi;
use crate::api::peer::PeerApi;
use crate::api::resources::ResourceApi;
use crate::audit::Audit;
use crate::config::Config;
use crate::mesh::record::StableHasher;
use crate::mesh::{Identity, Mesh, MeshConfig, Status};
use crate::placement::Manager;
use crate::proto::admin::admin_server::AdminServer;
use crate::proto::peer::peer_service_server::PeerServiceServer;
use crate::proto::peer::{Member, ProviderInfo};
use crate::proto::resource::resource_service_server::ResourceServiceServer;
use crate::resource::Tier;
use crate::security::guard::GuardLayer;
use crate::security::http_tls::TlsListener;
use crate::security::tls::Tls;
use crate::store::{MemoryStore, RedbStore, Store, StoreError};
use gossip::{Shared, MAX_GRPC_MESSAGE};
pub use resources::ProviderSetup;
use stats::StatsSnapshot;

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

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberSnapshot {
    pub id: String,
    pub name: String,
    pub addr: String,
    pub generation: u64,
    pub incarnation: u64,
    pub status: Status,
    pub providers: Vec<String>,
    pub is_self: bool,
}

/// The names gRPC health reports on, besides the whole server ("").
const HEALTH_SERVICES: &[&str] = &[
    "peer.PeerService",
    "iarnet.admin.v1.Admin",
    "iarnet.resource.v1.ResourceService",
];

fn mesh_config(cfg: &Config) -> MeshConfig {
    let g = &cfg.gossip;
    MeshConfig {
        fanout: g.fanout,
        gossip_interval: g.interval.as_millis() as u64,
        suspicion_mult: g.suspicion_mult,
        suspicion_max_mult: g.suspicion_max_mult,
        tombstone_grace: g.tombstone_grace.as_millis() as u64,
        forget_after: (g.tombstone_grace * 10).as_millis() as u64,
        max_message_bytes: g.max_message_bytes,
        ..MeshConfig::default()
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
    mut config: Config,
    setup: ProviderSetup,
    store: Arc<dyn Store>,
) -> Result<NodeHandle, NodeError> {
    let listener = bind(config.peer_listen_addr, "peer_listen_addr").await?;
    let http_listener = bind(config.listen_addr, "listen_addr").await?;
    let local_addr = listener.local_addr().map_err(|e| NodeError::Bind {
        addr: config.peer_listen_addr,
        key: "peer_listen_addr",
        error: e.to_string(),
    })?;
    let http_addr = http_listener.local_addr().map_err(|e| NodeError::Bind {
        addr: config.listen_addr,
        key: "listen_addr",
        error: e.to_string(),
    })?;
    let tls = match &config.security.tls {
        Some(files) => Some(
            Tls::load(files, &config.security.server_name)
                .map_err(|e| NodeError::Tls(e.to_string()))?,
        ),
        None => None,
    };
    // With mutual TLS the certificate is the identity: peers check that
    // gossip from this node carries the id its certificate names.
    if let Some(t) = &tls {
        match &config.node_id {
            Some(id) if *id != t.node_id => {
                return Err(NodeError::Tls(format!(
                    "node_id is {id:?} but tls.cert_file names node {:?}: unset node_id, or issue a certificate for {id:?} with `iarnet cert node --id {id}`",
                    t.node_id
                )))
            }
            _ => config.node_id = Some(t.node_id.clone()),
        }
    }
    let (id, generation) = identity::identify(&config, &*store)?;
    config.initial_peers = peers::seeds(&config.initial_peers, &*store);
    let advertise = identity::advertise_addr(&config, local_addr);
    let rng_seed = StableHasher::new()
        .bytes(id.as_bytes())
        .u64(generation)
        .finish();
    let mesh = Mesh::new(
        Identity {
            id: id.clone(),
            name: config.node_name.clone(),
            addr: advertise.clone(),
            generation,
        },
        mesh_config(&config),
        rng_seed,
        0,
    );
    let span = tracing::info_span!("node", id = %id);
    info!(parent: &span, %local_addr, %advertise, generation, seeds = ?config.initial_peers, "iarnet node starting");
    if config.advertise_addr.is_none() && local_addr.ip().is_unspecified() {
        warn!(parent: &span, %advertise, "advertise_addr is unset; peers will dial the host name: set advertise_addr in containers");
    }

    if tls.is_none() {
        warn!(parent: &span, "mutual TLS is off: peers are not authenticated and gossip is plaintext; fine for local trials, otherwise set tls.* (see `iarnet cert`)");
        if !config.security.tokens.is_empty() {
            warn!(parent: &span, "auth tokens are set but TLS is off: tokens cross the network in clear text");
        }
    }
    let audit = Arc::new(match &config.security.audit_path {
        Some(path) => Audit::open(path, &id).map_err(|e| NodeError::DataDir {
            path: path.display().to_string(),
            error: format!("{e} (the audit log: set audit.path, or `off`)"),
        })?,
        None => Audit::off(),
    });
    audit.record(
        "config",
        "node",
        "loaded",
        serde_json::json!({
            "generation": generation,
            "set": config.sources.iter()
                .filter(|(_, s)| *s != crate::config::Source::Default)
                .map(|(k, s)| (k.clone(), s.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>(),
            "tls": tls.is_some(),
            "tokens": config.security.tokens.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        }),
    );
    let shared = Arc::new(Shared::new(mesh, config, tls.clone(), audit.clone()));
    let cancel = CancellationToken::new();

    let manager = Arc::new(
        Manager::open(
            &id,
            Arc::new(resources::NodeDiscovery {
                shared: shared.clone(),
            }),
            shared.config.resources.strategy,
            shared.config.resources.allow_remote_access,
            rng_seed ^ 0x9e37_79b9_7f4a_7c15,
            store.clone(),
        )
        .map_err(|e| NodeError::store(&shared.config, e))?,
    );
    let internal = match setup {
        ProviderSetup::Detect => resources::detect_internal(&shared.config, &id)
            .await
            .into_iter()
            .collect(),
        ProviderSetup::Given(list) => list,
    };
    for p in internal {
        if let Err(e) = manager.add_provider(p, Tier::Internal).await {
            warn!(parent: &span, error = %e, "internal provider left out");
        }
    }
    for ext in &shared.config.resources.external {
        let connected = resources::connect_external(&id, &ext.as_request()).await;
        let added = match connected {
            Ok(p) => manager.add_provider(p, Tier::External).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = added {
            warn!(parent: &span, name = %ext.name, error = %e, "external provider left out");
        }
    }
    registered::reconnect(&manager, &*store)
        .instrument(span.clone())
        .await;
    // Before serving: what the store says and what runs agree.
    let reconciled = manager.reconcile().await;
    info!(parent: &span, adopted = reconciled.adopted.len(), missing = reconciled.resolved_missing.len(), updated = reconciled.updated.len(), "deployments reconciled with the providers");

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in std::iter::once(&"").chain(HEALTH_SERVICES) {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| NodeError::Reflection(e.to_string()))?;
    // Older grpcurl releases only speak v1alpha.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| NodeError::Reflection(e.to_string()))?;

    let mut server = Server::builder();
    if let Some(t) = &tls {
        server = server
            .tls_config(t.server())
            .map_err(|e| NodeError::Tls(e.to_string()))?;
    }
    let router = server
        .layer(GuardLayer(shared.security.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            PeerServiceServer::new(PeerApi::new(shared.clone(), manager.clone()))
                .max_decoding_message_size(MAX_GRPC_MESSAGE)
                .max_encoding_message_size(MAX_GRPC_MESSAGE),
        )
        .add_service(AdminServer::new(AdminApi::new(shared.clone())))
        .add_service(ResourceServiceServer::new(ResourceApi::new(
            manager.clone(),
            audit.clone(),
        )));
    let server_stop = cancel.child_token();
    let server = tokio::spawn(
        async move {
            let incoming = TcpListenerStream::new(listener);
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, server_stop.cancelled_owned())
                .await
            {
                warn!(error = %e, "grpc server stopped with an error");
            }
        }
        .instrument(span.clone()),
    );
    let gossip = tokio::spawn(
        gossip::gossip_loop(shared.clone(), cancel.child_token())
            .instrument(tracing::info_span!(parent: &span, "gossip")),
    );
    let draining = CancellationToken::new();
    let http_api = Arc::new(HttpApi::new(
        shared.clone(),
        manager.clone(),
        draining.clone(),
    ));
    let http_stop = cancel.child_token();
    let router = http_api.clone().router();
    // With TLS on, the HTTP API uses the node's certificate too.
    let (http_plain, http_tls) = match &tls {
        Some(t) => {
            let acceptor = t.http_acceptor().map_err(NodeError::Tls)?;
            let l = TlsListener::new(http_listener, acceptor).map_err(|e| NodeError::Bind {
                addr: http_addr,
                key: "listen_addr",
                error: e.to_string(),
            })?;
            (None, Some(l))
        }
        None => (Some(http_listener), None),
    };
    let http = tokio::spawn(
        async move {
            let app = router.into_make_service_with_connect_info::<SocketAddr>();
            let stop = http_stop.cancelled_owned();
            let served = match (http_tls, http_plain) {
                (Some(l), _) => {
                    axum::serve(l.tap_io(|_| {}), app)
                        .with_graceful_shutdown(stop)
                        .await
                }
                (None, Some(l)) => axum::serve(l, app).with_graceful_shutdown(stop).await,
                (None, None) => Ok(()),
            };
            if let Err(e) = served {
                warn!(error = %e, "http server stopped with an error");
            }
        }
        .instrument(span.clone()),
    );
    info!(parent: &span, %http_addr, tls = tls.is_some(), "http api listening");
    let seeds = tokio::spawn(
        gossip::seed_loop(shared.clone(), cancel.child_token())
            .instrument(tracing::info_span!(parent: &span, "seeds")),
    );
    let saver = tokio::spawn(
        peers::save_loop(
            shared.clone(),
            store.clone(),
            (shared.config.gossip.interval * 25).max(Duration::from_secs(5)),
            cancel.child_token(),
        )
        .instrument(tracing::info_span!(parent: &span, "peers")),
    );
    let refresh = tokio::spawn(
        resources::refresh_loop(
            manager.clone(),
            (shared.config.gossip.interval * 5).max(Duration::from_secs(1)),
            cancel.child_token(),
        )
        .instrument(tracing::info_span!(parent: &span, "resources")),
    );
    Ok(NodeHandle {
        shared,
        manager,
        cancel,
        health,
        tasks: vec![gossip, seeds, refresh, http, saver],
        store,
        server: Some(server),
        local_addr,
        http_addr,
        http_api,
        draining,
    })
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr).await.map_err(|e| NodeError::Bind {
        addr,
        key,
        error: e.to_string(),
    })
}

/// Owns a running node's tasks; dropping it stops them.
pub struct NodeHandle {
    shared: Arc<Shared>,
    manager: Arc<Manager>,
    cancel: CancellationToken,
    health: HealthReporter,
    tasks: Vec<JoinHandle<()>>,
    server: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
    http_addr: SocketAddr,
    http_api: Arc<HttpApi>,
    draining: CancellationToken,
    store: Arc<dyn Store>,
}

impl NodeHandle {
    pub fn id(&self) -> String {
        self.shared.mesh().id().to_string()
    }

    pub fn generation(&self) -> u64 {
        self.shared.mesh().info().generation
    }

    /// The address peers dial.
    pub fn advertise_addr(&self) -> String {
        self.shared.mesh().info().addr.clone()
    }

    /// The address the gRPC server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the HTTP API is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// What `/metrics` would answer now.
    pub async fn metrics(&self) -> String {
        self.shared.metrics.render(&self.http_api.snapshot().await)
    }

    /// The resource manager: providers, placement, deployments.
    pub fn manager(&self) -> &Arc<Manager> {
        &self.manager
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Every member this node holds, tombstones included.
    pub fn members(&self) -> Vec<MemberSnapshot> {
        let mesh = self.shared.mesh();
        let me = mesh.id().to_string();
        let mut out: Vec<MemberSnapshot> = mesh
            .view()
            .iter()
            .map(|e| MemberSnapshot {
                id: e.info.id.to_string(),
                name: e.info.name.clone(),
                addr: e.info.addr.clone(),
                generation: e.info.generation,
                incarnation: e.incarnation,
                status: e.status,
                providers: e
                    .providers
                    .as_ref()
                    .map(|s| s.providers.iter().map(|p| p.id.clone()).collect())
                    .unwrap_or_default(),
                is_self: *e.info.id == *me,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Providers advertised by live members, this node's own included.
    pub fn providers(&self) -> Vec<ProviderInfo> {
        self.shared.mesh().providers()
    }

    /// Replaces the providers this node advertises to the mesh.
    pub fn set_providers(&self, providers: Vec<ProviderInfo>) {
        self.shared.mesh().set_providers(providers);
    }

    /// Contacts `addr` now (the operator's "add peer"); returns who answered.
    pub async fn add_peer(&self, addr: &str) -> Option<Member> {
        gossip::run_exchange(
            &self.shared,
            crate::mesh::Target {
                addr: addr.to_string(),
                id: None,
            },
        )
        .await
    }

    /// Graceful stop: health goes NOT_SERVING, peers are told we leave, the
    /// server drains; all within `shutdown_grace`.
    pub async fn shutdown(mut self) {
        let grace = self.shared.config.shutdown_grace;
        self.draining.cancel();
        for name in std::iter::once(&"").chain(HEALTH_SERVICES) {
            self.health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        peers::save(&self.shared, &self.store).await;
        let goodbye = tokio::time::timeout(grace / 2, gossip::say_goodbye(&self.shared));
        if goodbye.await.is_err() {
            warn!("goodbye to peers did not finish within the grace period");
        }
        self.cancel.cancel();
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut self.tasks)
            .into_iter()
            .chain(self.server.take())
            .collect();
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(grace / 2, futures_join(tasks.into_iter()))
            .await
            .is_err()
        {
            warn!(grace = ?grace, "tasks did not stop within the grace period; aborting them");
            for a in aborts {
                a.abort();
            }
        }
        self.shared.stop();
        info!("iarnet node stopped");
    }

    /// Stops at once without telling anyone, as a crash would.
    pub fn kill(mut self) {
        self.shared.stop();
        self.cancel.cancel();
        for t in self.tasks.drain(..).chain(self.server.take()) {
            t.abort();
        }
    }
}

async fn futures_join(tasks: impl Iterator<Item = JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
        for t in self.tasks.iter().chain(self.server.iter()) {
            t.abort();
        }
    }
}

/// How long a caller may wait for a whole graceful shutdown.
pub fn shutdown_bound(config: &Config) -> Duration {
    config.shutdown_grace + Duration::from_secs(1)
}
