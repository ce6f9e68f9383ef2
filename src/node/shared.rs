//! The state a node's tasks and its gRPC and HTTP services share: the
//! gossip core behind one mutex, the node's clock, counters, metrics,
//! configuration, the peer channel pool, security, the audit log and the
//! peers found over mDNS.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tonic::Status;

use super::mdns::Discovered;
use super::pool::Pool;
use crate::audit::Audit;
use crate::config::Config;
use crate::mesh::{Mesh, Millis};
use crate::metrics::gossip::Stats;
use crate::metrics::Metrics;
use crate::proto::peer::NodeMeta;
use crate::security::tls::Tls;
use crate::security::Security;
use crate::swarm::Swarm;

/// State shared by the node's tasks and its gRPC services.
pub struct Shared {
    mesh: Mutex<Mesh>,
    start: tokio::time::Instant,
    pub stats: Stats,
    pub metrics: Metrics,
    stopped: AtomicBool,
    pub config: Config,
    pub pool: Pool,
    pub security: Arc<Security>,
    pub audit: Arc<Audit>,
    /// Groups, rosters and pools; lock it after the mesh, never before.
    pub swarm: Mutex<Swarm>,
    /// Peers found over mDNS: extra seeds, never members by themselves.
    pub discovered: Discovered,
}

impl Shared {
    pub fn new(mesh: Mesh, config: Config, tls: Option<Tls>, audit: Arc<Audit>) -> Shared {
        let metrics = Metrics::default();
        let security = Arc::new(Security::new(
            &config.security,
            tls.clone(),
            metrics.clone(),
            audit.clone(),
        ));
        let swarm = Swarm::new(
            mesh.id(),
            NodeMeta {
                allow_remote: config.resources.allow_remote_access,
                models: config.models.clone(),
                started_ms: crate::swarm::wall_ms(),
                tls: tls.is_some(),
                ..NodeMeta::default()
            },
        )
        .with_takeover_delay(config.gossip.interval.as_millis() as u64);
        Shared {
            swarm: Mutex::new(swarm),
            mesh: Mutex::new(mesh),
            start: tokio::time::Instant::now(),
            stats: Stats::default(),
            metrics,
            stopped: AtomicBool::new(false),
            pool: Pool::new(
                config.gossip.call_timeout,
                keep_alive(config.gossip.interval),
                tls,
            ),
            security,
            audit,
            discovered: Discovered::default(),
            config,
        }
    }

    /// The core, for one short synchronous step (never held across an await).
    pub fn mesh(&self) -> MutexGuard<'_, Mesh> {
        // The core has no invariants a panicking reader could break mid-way.
        self.mesh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The swarm groups this node is a member of, as it advertises them.
    pub fn own_groups(&self) -> Vec<String> {
        self.mesh()
            .own_meta()
            .map(|m| m.groups.iter().map(|g| g.group.clone()).collect())
            .unwrap_or_default()
    }

    /// Milliseconds on tokio's clock since the node started.
    pub fn now(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Refuses work once the node is stopped (a crashed node must look crashed).
    pub fn check_running(&self) -> Result<(), Status> {
        if self.stopped.load(Ordering::SeqCst) {
            Err(Status::unavailable(
                "this iarnet node is shutting down; try another peer",
            ))
        } else {
            Ok(())
        }
    }
}

/// How often pooled channels ping their peer: every five rounds, between
/// one second and a minute, so a silent connection is closed within a few
/// rounds at the cost of one small frame per peer and period.
fn keep_alive(interval: Duration) -> Duration {
    (interval * 5).clamp(Duration::from_secs(1), Duration::from_secs(60))
}
