//! Start-up, phase three: serve gRPC (PeerService, Admin, ResourceService,
//! health, reflection, all behind the guard) and the HTTP API, and start
//! the node's loops. Every task goes into one `JoinSet` under one token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::{info, warn, Instrument};

use super::prepare::Prepared;
use super::{gossip, mdns, peers, providers, NodeError};
use crate::api::admin::AdminApi;
use crate::api::apps::ApplicationApi;
use crate::api::build::BuildApi;
use crate::api::directory::DirectoryApi;
use crate::api::http::HttpApi;
use crate::api::peer::PeerApi;
use crate::api::resources::ResourceApi;
use crate::api::swarm::SwarmApi;
use crate::app::Applications;
use crate::mesh::limits::MAX_MESSAGE;
use crate::placement::Manager;
use crate::proto::admin::admin_server::AdminServer;
use crate::proto::application::application_service_server::ApplicationServiceServer;
use crate::proto::build::image_build_server::ImageBuildServer;
use crate::proto::directory::directory_server::DirectoryServer;
use crate::proto::peer::peer_service_server::PeerServiceServer;
use crate::proto::resource::resource_service_server::ResourceServiceServer;
use crate::proto::swarm::swarm_peer_server::SwarmPeerServer;
use crate::proto::swarm::swarm_server::SwarmServer;
use crate::security::guard::GuardLayer;
use crate::security::http_tls::TlsListener;
use crate::store::Store;
use crate::ui::Dashboard;

/// The names gRPC health reports on, besides the whole server ("").
pub const HEALTH_SERVICES: &[&str] = &[
    "",
    "peer.PeerService",
    "iarnet.admin.v1.Admin",
    "iarnet.resource.v1.ResourceService",
    "iarnet.directory.v1.Directory",
    "iarnet.application.v1.ApplicationService",
    "iarnet.build.v1.ImageBuild",
    "iarnet.swarm.v1.Swarm",
];

/// Known peers are saved every this many gossip rounds, and at least this rarely.
const SAVE_PEERS_ROUNDS: u32 = 25;
const SAVE_PEERS_MIN: Duration = Duration::from_secs(5);
/// Local providers are re-read every this many rounds, at most once a second.
const REFRESH_ROUNDS: u32 = 5;
const REFRESH_MIN: Duration = Duration::from_secs(1);
/// The queue worker looks at the view this often per gossip round, so a
/// capacity change heard by gossip is tried within the round.
const QUEUE_TICKS_PER_ROUND: u32 = 4;
const QUEUE_TICK_MIN: Duration = Duration::from_millis(10);

/// What serving hands to the node's handle.
pub struct Served {
    pub tasks: JoinSet<()>,
    pub health: HealthReporter,
    pub http_api: Arc<HttpApi>,
    /// Deploys still streaming to their callers; they outlive no node.
    pub deploys: TaskTracker,
}

/// The HTTP API's listener: plain, or HTTPS with the node's certificate.
enum HttpListener {
    Plain(TcpListener),
    Tls(TlsListener),
}

pub async fn serve(
    p: Prepared,
    manager: Arc<Manager>,
    store: Arc<dyn Store>,
    cancel: &CancellationToken,
    draining: &CancellationToken,
) -> Result<Served, NodeError> {
    let Prepared {
        listener,
        http_listener,
        http_addr,
        tls,
        shared,
        span,
        ..
    } = p;
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in HEALTH_SERVICES {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let deploys = TaskTracker::new();
    let resources = || {
        ResourceApi::new(
            manager.clone(),
            shared.audit.clone(),
            deploys.clone(),
            cancel.clone(),
        )
        .with_shared(shared.clone())
    };

    let advertise_host = shared
        .config
        .advertise_addr
        .as_deref()
        .and_then(|a| a.rsplit_once(':').map(|(h, _)| h.to_string()))
        .unwrap_or_else(|| "127.0.0.1".into());
    let apps = Arc::new(
        Applications::open(
            shared.config.workspace_dir.clone(),
            store.clone(),
            manager.clone(),
            advertise_host,
        )
        .map_err(|e| NodeError::store(&shared.config, e))?
        .with_max_checkout_bytes(shared.config.max_checkout_bytes),
    );
    let mut server = Server::builder();
    if let Some(t) = &tls {
        server = server
            .tls_config(t.server())
            .map_err(|e| NodeError::Tls(e.to_string()))?;
    }
    let (reflection_v1, reflection_v1alpha) = reflection()?;
    let router = server
        .layer(GuardLayer(shared.security.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            PeerServiceServer::new(PeerApi::new(shared.clone(), manager.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            DirectoryServer::new(DirectoryApi::new(shared.clone(), manager.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ImageBuildServer::new(BuildApi::new(
                shared.clone(),
                manager.clone(),
                cancel.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(AdminServer::new(AdminApi::new(shared.clone())))
        .add_service(SwarmServer::new(SwarmApi::new(
            shared.clone(),
            manager.clone(),
        )))
        .add_service(SwarmPeerServer::new(SwarmApi::new(
            shared.clone(),
            manager.clone(),
        )))
        .add_service(ResourceServiceServer::new(resources()))
        .add_service(ApplicationServiceServer::new(ApplicationApi::new(
            apps.clone(),
            shared.audit.clone(),
        )));

    let dashboard = Arc::new(Dashboard::new(
        shared.clone(),
        manager.clone(),
        resources(),
        apps.clone(),
        cancel.clone(),
    ));
    let http_api = Arc::new(HttpApi::new(
        shared.clone(),
        manager.clone(),
        resources(),
        apps,
        draining.clone(),
    ));
    let http_listener = match &tls {
        Some(t) => {
            let acceptor = t.http_acceptor().map_err(NodeError::Tls)?;
            HttpListener::Tls(TlsListener::new(http_listener, acceptor).map_err(|e| {
                NodeError::Bind {
                    addr: http_addr,
                    key: "listen_addr",
                    error: e.to_string(),
                }
            })?)
        }
        None => HttpListener::Plain(http_listener),
    };

    let mut tasks = JoinSet::new();
    let stop = cancel.child_token();
    tasks.spawn(
        async move {
            // Small gRPC frames go out at once: with Nagle on, an answer's
            // trailing frame waits for the peer's delayed ACK (40 ms on Linux).
            let incoming = TcpListenerStream::new(listener).map(|s| {
                s.inspect(|s| {
                    if let Err(e) = s.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
                    }
                })
            });
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
            {
                warn!(error = %e, "grpc server stopped with an error");
            }
        }
        .instrument(span.clone()),
    );
    tasks.spawn(
        dashboard
            .recorder_loop()
            .instrument(tracing::info_span!(parent: &span, "dashboard")),
    );
    tasks.spawn(
        serve_http(
            http_listener,
            http_api.clone(),
            dashboard,
            cancel.child_token(),
        )
        .instrument(span.clone()),
    );
    info!(parent: &span, %http_addr, tls = tls.is_some(), "http api listening");
    let interval = shared.config.gossip.interval;
    tasks.spawn(
        gossip::gossip_loop(shared.clone(), cancel.child_token())
            .instrument(tracing::info_span!(parent: &span, "gossip")),
    );
    tasks.spawn(
        gossip::seed_loop(shared.clone(), cancel.child_token())
            .instrument(tracing::info_span!(parent: &span, "seeds")),
    );
    tasks.spawn(
        super::swarm::swarm_loop(shared.clone(), store.clone(), cancel.child_token())
            .instrument(tracing::info_span!(parent: &span, "swarm")),
    );
    tasks.spawn(
        mdns::mdns_loop(shared.clone(), cancel.child_token())
            .instrument(tracing::info_span!(parent: &span, "mdns")),
    );
    tasks.spawn(
        peers::save_loop(
            shared.clone(),
            store,
            (interval * SAVE_PEERS_ROUNDS).max(SAVE_PEERS_MIN),
            cancel.child_token(),
        )
        .instrument(tracing::info_span!(parent: &span, "peers")),
    );
    manager.set_audit(shared.audit.clone());
    tasks.spawn(
        manager
            .clone()
            .run_queue(
                (interval / QUEUE_TICKS_PER_ROUND).max(QUEUE_TICK_MIN),
                cancel.child_token(),
            )
            .instrument(tracing::info_span!(parent: &span, "queue")),
    );
    tasks.spawn(
        manager
            .clone()
            .run_directory(interval, cancel.child_token())
            .instrument(tracing::info_span!(parent: &span, "directory")),
    );
    tasks.spawn(
        manager
            .clone()
            .run_reschedule(interval, cancel.child_token())
            .instrument(tracing::info_span!(parent: &span, "reschedule")),
    );
    tasks.spawn(
        manager
            .clone()
            .run_fencing(interval, cancel.child_token())
            .instrument(tracing::info_span!(parent: &span, "fencing")),
    );
    tasks.spawn(
        manager
            .clone()
            .run_preemptions(interval, cancel.child_token())
            .instrument(tracing::info_span!(parent: &span, "preemption")),
    );
    tasks.spawn(
        manager
            .clone()
            .run_leases(cancel.child_token())
            .instrument(tracing::info_span!(parent: &span, "leases")),
    );
    tasks.spawn(
        providers::refresh_loop(
            manager,
            (interval * REFRESH_ROUNDS).max(REFRESH_MIN),
            cancel.child_token(),
        )
        .instrument(tracing::info_span!(parent: &span, "resources")),
    );
    Ok(Served {
        tasks,
        health,
        http_api,
        deploys,
    })
}

/// Reflection v1, and v1alpha for older grpcurl releases.
fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    NodeError,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let bad = |e: tonic_reflection::server::Error| NodeError::Reflection(e.to_string());
    Ok((
        builder().build_v1().map_err(bad)?,
        builder().build_v1alpha().map_err(bad)?,
    ))
}

async fn serve_http(
    listener: HttpListener,
    api: Arc<HttpApi>,
    dashboard: Arc<Dashboard>,
    stop: CancellationToken,
) {
    let app = api
        .router()
        .merge(dashboard.router())
        .into_make_service_with_connect_info::<SocketAddr>();
    let stop = stop.cancelled_owned();
    let served = match listener {
        HttpListener::Tls(l) => {
            axum::serve(l.tap_io(|_| {}), app)
                .with_graceful_shutdown(stop)
                .await
        }
        HttpListener::Plain(l) => axum::serve(l, app).with_graceful_shutdown(stop).await,
    };
    if let Err(e) = served {
        warn!(error = %e, "http server stopped with an error");
    }
}
