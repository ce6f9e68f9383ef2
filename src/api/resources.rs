//! `iarnet.resource.v1.ResourceService`: capacity, providers, deployments.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::placement::manager::{provider_entry, PlaceOptions};
use crate::placement::{Manager, Strategy};
use crate::proto::resource as pb;
use crate::proto::resource::resource_service_server::ResourceService;
use crate::resource::wire::{deployment_to_proto, spec_from_proto};
use crate::resource::{Capacity, LogOptions, Progress, ProgressSink, Tier};

pub struct ResourceApi {
    manager: Arc<Manager>,
}

impl ResourceApi {
    pub fn new(manager: Arc<Manager>) -> ResourceApi {
        ResourceApi { manager }
    }
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn sum(caps: impl Iterator<Item = Capacity>) -> Capacity {
    caps.fold(Capacity::default(), |a, c| Capacity {
        total: a.total.saturating_add(&c.total),
        reserved: a.reserved.saturating_add(&c.reserved),
    })
}

fn progress_event(p: Progress) -> pb::DeployEvent {
    use pb::deploy_event::Event;
    pb::DeployEvent {
        event: Some(match p {
            Progress::State(s) => Event::State(s.name().to_string()),
            Progress::Pull {
                layer,
                status,
                current,
                total,
            } => Event::Pull(pb::PullProgress {
                layer,
                status,
                current,
                total,
            }),
        }),
    }
}

#[tonic::async_trait]
impl ResourceService for ResourceApi {
    async fn get_capacity(
        &self,
        _: Request<pb::GetCapacityRequest>,
    ) -> Result<Response<pb::GetCapacityResponse>, Status> {
        let all = self.manager.candidates();
        let own = all.iter().filter(|c| c.tier != Tier::Discovered);
        Ok(Response::new(pb::GetCapacityResponse {
            node: Some(sum(own.map(|c| c.capacity)).into()),
            mesh: Some(sum(all.iter().filter(|c| c.healthy).map(|c| c.capacity)).into()),
            providers: all.len() as u32,
        }))
    }

    async fn list_providers(
        &self,
        _: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        Ok(Response::new(pb::ListProvidersResponse {
            providers: self
                .manager
                .candidates()
                .iter()
                .map(provider_entry)
                .collect(),
        }))
    }

    async fn register_provider(
        &self,
        request: Request<pb::RegisterProviderRequest>,
    ) -> Result<Response<pb::ProviderEntry>, Status> {
        let req = request.into_inner();
        let provider = crate::node::resources::connect_external(self.manager.node_id(), &req)
            .await
            .map_err(Status::from)?;
        let desc = self
            .manager
            .add_provider(provider, Tier::External)
            .await
            .map_err(Status::from)?;
        let c = self
            .manager
            .candidates()
            .into_iter()
            .find(|c| c.id == desc.id)
            .ok_or_else(|| Status::internal("provider vanished right after registration"))?;
        Ok(Response::new(provider_entry(&c)))
    }

    async fn unregister_provider(
        &self,
        request: Request<pb::UnregisterProviderRequest>,
    ) -> Result<Response<pb::UnregisterProviderResponse>, Status> {
        self.manager.remove_provider(&request.into_inner().id)?;
        Ok(Response::new(pb::UnregisterProviderResponse {}))
    }

    type DeployStream = EventStream<pb::DeployEvent>;

    async fn deploy(
        &self,
        request: Request<pb::DeploySpec>,
    ) -> Result<Response<Self::DeployStream>, Status> {
        let raw = request.into_inner();
        let strategy = match raw.strategy.as_str() {
            "" => None,
            s => Some(
                Strategy::parse(s)
                    .map_err(|why| Status::invalid_argument(format!("invalid strategy: {why}")))?,
            ),
        };
        let opts = PlaceOptions {
            strategy,
            region: Some(raw.region.clone()).filter(|r| !r.is_empty()),
            provider_id: Some(raw.provider_id.clone()).filter(|p| !p.is_empty()),
        };
        let spec = spec_from_proto(raw)?;
        crate::resource::validate::validate(&spec)?;
        let (tx, rx) = mpsc::channel(64);
        let (sink, mut progress) = ProgressSink::channel();
        let manager = self.manager.clone();
        tokio::spawn(async move {
            let deploy = manager.deploy(spec, opts, sink);
            tokio::pin!(deploy);
            let result = loop {
                tokio::select! {
                    r = &mut deploy => break r,
                    Some(p) = progress.recv() => {
                        let _ = tx.send(Ok(progress_event(p))).await;
                    }
                }
            };
            while let Ok(p) = progress.try_recv() {
                let _ = tx.send(Ok(progress_event(p))).await;
            }
            use pb::deploy_event::Event;
            match result {
                Ok(placed) => {
                    let owner = placed.placement.owner_id.clone();
                    let _ = tx
                        .send(Ok(pb::DeployEvent {
                            event: Some(Event::Placement(placed.placement)),
                        }))
                        .await;
                    let _ = tx
                        .send(Ok(pb::DeployEvent {
                            event: Some(Event::Deployment(deployment_to_proto(
                                &placed.deployment,
                                &owner,
                            ))),
                        }))
                        .await;
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx).boxed()))
    }

    async fn get_deployment(
        &self,
        request: Request<pb::GetDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let id = request.into_inner().id;
        let (d, owner) = self.manager.status(&id).await?;
        Ok(Response::new(deployment_to_proto(&d, &owner)))
    }

    async fn list_deployments(
        &self,
        _: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        let all = self.manager.list().await;
        Ok(Response::new(pb::ListDeploymentsResponse {
            deployments: all
                .iter()
                .map(|(d, owner)| deployment_to_proto(d, owner))
                .collect(),
        }))
    }

    type LogsStream = EventStream<pb::LogEntry>;

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.into_inner();
        let opts = LogOptions {
            tail: Some(req.tail).filter(|t| *t > 0),
            follow: req.follow,
        };
        let lines = self.manager.logs(&req.id, opts).await?;
        Ok(Response::new(
            lines
                .map(|l| {
                    l.map(|l| pb::LogEntry {
                        stderr: l.stderr,
                        text: l.text,
                    })
                    .map_err(Status::from)
                })
                .boxed(),
        ))
    }

    async fn stop(
        &self,
        request: Request<pb::StopRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let (d, owner) = self.manager.stop(&request.into_inner().id).await?;
        Ok(Response::new(deployment_to_proto(&d, &owner)))
    }
}
