//! Services over gRPC: a deploy with replicas, GetService, ListServices
//! and Scale, answered by the service's home node.

use serde_json::json;
use tokio::sync::mpsc;
use tonic::Status;

use crate::audit::Audit;
use crate::placement::manager::ServiceView;
use crate::placement::{Manager, PlaceOptions};
use crate::proto::resource as pb;
use crate::resource::wire::deployment_to_proto;
use crate::resource::wire::progress_to_proto;
use crate::resource::{DeploySpec, ProgressSink};

/// A service as the API answers it.
pub fn service_to_proto(v: &ServiceView, home: &str) -> pb::Service {
    let r = &v.record;
    let spread = r.spec.spread.as_ref();
    pb::Service {
        id: r.id.clone(),
        name: r.spec.name.clone(),
        image: r.spec.image.clone(),
        replicas: r.replicas,
        running: v.running,
        spread: spread.map(|s| s.key.to_string()).unwrap_or_default(),
        max_skew: spread.map_or(0, |s| s.max_skew),
        when_unsatisfiable: spread
            .map(|s| s.when_unsatisfiable().to_string())
            .unwrap_or_default(),
        per_domain: v.per_domain.clone().into_iter().collect(),
        skew: v.skew,
        deployments: v
            .replicas
            .iter()
            .map(|(_, d, owner)| {
                let mut p = deployment_to_proto(d, owner);
                if p.home_id.is_empty() {
                    p.home_id = home.to_string();
                }
                p
            })
            .collect(),
        home_id: home.to_string(),
        created_at_ms: r.created_ms,
    }
}

/// Runs a deploy with replicas, sending its events to `tx`: progress,
/// then each replica's placement, then the service.
pub async fn deploy_service(
    manager: &Manager,
    audit: &Audit,
    who: &str,
    spec: DeploySpec,
    opts: PlaceOptions,
    replicas: u32,
    tx: mpsc::Sender<Result<pb::DeployEvent, Status>>,
) {
    use pb::deploy_event::Event;
    let (sink, mut progress) = ProgressSink::channel();
    let id = spec.request_id.clone();
    let deploy = manager.deploy_service(spec, opts, replicas, sink);
    tokio::pin!(deploy);
    let result = loop {
        tokio::select! {
            biased;
            r = &mut deploy => break r,
            Some(p) = progress.recv() => {
                let _ = tx.send(Ok(progress_to_proto(p))).await;
            }
        }
    };
    while let Ok(p) = progress.try_recv() {
        let _ = tx.send(Ok(progress_to_proto(p))).await;
    }
    match result {
        Ok((view, placed)) => {
            audit.record(
                "service",
                who,
                "deployed",
                json!({"service": id, "replicas": replicas, "placed": placed.len()}),
            );
            for p in placed {
                let _ = tx
                    .send(Ok(pb::DeployEvent {
                        event: Some(Event::Placement(p.placement)),
                    }))
                    .await;
            }
            let _ = tx
                .send(Ok(pb::DeployEvent {
                    event: Some(Event::Service(service_to_proto(&view, manager.node_id()))),
                }))
                .await;
        }
        Err(e) => {
            audit.record(
                "service",
                who,
                "failed",
                json!({"service": id, "code": e.kind(), "error": e.to_string()}),
            );
            let _ = tx.send(Err(Status::from(e))).await;
        }
    }
}
