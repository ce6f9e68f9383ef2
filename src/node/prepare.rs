//! Start-up, phase one: bind both ports, load the TLS identity, settle who
//! this node is, and build the gossip core and the state the node's tasks
//! share. Nothing is served yet, so any failure here leaves nothing behind.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn};

use super::shared::Shared;
use super::{identity, peers, NodeError};
use crate::audit::Audit;
use crate::config::{Config, MdnsMode, Source};
use crate::mesh::record::StableHasher;
use crate::mesh::{Identity, Mesh, MeshConfig};
use crate::security::tls::Tls;
use crate::store::Store;

/// Members are forgotten for good this many tombstone graces after death,
/// long enough that no stale copy held by a peer can bring them back.
const FORGET_AFTER_GRACES: u32 = 10;

/// What the later phases start from.
pub struct Prepared {
    pub listener: TcpListener,
    pub http_listener: TcpListener,
    pub local_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub tls: Option<Tls>,
    pub shared: Arc<Shared>,
    /// Seeds every random choice of this start (the mesh's and placement's).
    pub rng_seed: u64,
    pub span: tracing::Span,
}

pub async fn prepare(mut config: Config, store: &dyn Store) -> Result<Prepared, NodeError> {
    let (listener, local_addr) = bind(config.peer_listen_addr, "peer_listen_addr").await?;
    let (http_listener, http_addr) = bind(config.listen_addr, "listen_addr").await?;
    let tls = load_tls(&mut config)?;
    let (id, generation) = identity::identify(&config, store)?;
    // `discovery.mdns: auto` is settled against the configured seeds, before
    // the saved peers join them: a node keeps finding its LAN after a restart.
    config.discovery.mdns = if config.discovery.mdns_enabled(&config.initial_peers) {
        MdnsMode::On
    } else {
        MdnsMode::Off
    };
    config.initial_peers = peers::seeds(&config.initial_peers, store);
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
    let audit = Arc::new(open_audit(&config, &id, generation, tls.is_some())?);
    let shared = Arc::new(Shared::new(mesh, config, tls.clone(), audit));
    // Groups and pools from the last run; published with the first step.
    super::swarm::restore(&shared, store);
    Ok(Prepared {
        listener,
        http_listener,
        local_addr,
        http_addr,
        tls,
        shared,
        rng_seed,
        span,
    })
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<(TcpListener, SocketAddr), NodeError> {
    let bind_error = |e: std::io::Error| NodeError::Bind {
        addr,
        key,
        error: e.to_string(),
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// With mutual TLS the certificate is the identity: peers check that
/// gossip from this node carries the id its certificate names.
fn load_tls(config: &mut Config) -> Result<Option<Tls>, NodeError> {
    let Some(files) = &config.security.tls else {
        return Ok(None);
    };
    let tls = Tls::load(files, &config.security.server_name)
        .map_err(|e| NodeError::Tls(e.to_string()))?;
    match &config.node_id {
        Some(id) if *id != tls.node_id => {
            return Err(NodeError::Tls(format!(
                "node_id is {id:?} but tls.cert_file names node {:?}: unset node_id, or issue a certificate for {id:?} with `iarnet cert node --id {id}`",
                tls.node_id
            )))
        }
        _ => config.node_id = Some(tls.node_id.clone()),
    }
    Ok(Some(tls))
}

/// The audit log, opened with its first record: the configuration loaded.
fn open_audit(config: &Config, id: &str, generation: u64, tls: bool) -> Result<Audit, NodeError> {
    let audit = match &config.security.audit_path {
        Some(path) => Audit::open(path, id).map_err(|e| NodeError::DataDir {
            path: path.display().to_string(),
            error: format!("{e} (the audit log: set audit.path, or `off`)"),
        })?,
        None => Audit::off(),
    };
    let set: BTreeMap<String, String> = config
        .sources
        .iter()
        .filter(|(_, s)| *s != Source::Default)
        .map(|(k, s)| (k.clone(), s.to_string()))
        .collect();
    audit.record(
        "config",
        "node",
        "loaded",
        serde_json::json!({
            "generation": generation,
            "set": set,
            "tls": tls,
            "tokens": config.security.tokens.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        }),
    );
    Ok(audit)
}

pub fn mesh_config(cfg: &Config) -> MeshConfig {
    let g = &cfg.gossip;
    MeshConfig {
        fanout: g.fanout,
        gossip_interval: g.interval.as_millis() as u64,
        suspicion_mult: g.suspicion_mult,
        suspicion_max_mult: g.suspicion_max_mult,
        tombstone_grace: g.tombstone_grace.as_millis() as u64,
        forget_after: (g.tombstone_grace * FORGET_AFTER_GRACES).as_millis() as u64,
        max_message_bytes: g.max_message_bytes,
        ..MeshConfig::default()
    }
}
