//! `/resource/services`: the services kept at this node; one of them and
//! `POST /resource/services/{id}/scale` with `{"replicas": N}`, answered
//! by the service's home wherever it is.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tonic::Request;

use super::views::DeploymentView;
use super::{as_caller, body, ApiError, HttpApi};
use crate::proto::resource as pb;
use crate::proto::resource::resource_service_server::ResourceService;
use crate::security::Caller;

/// A service as the gRPC `Service` says it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceJson {
    pub id: String,
    pub name: String,
    pub image: String,
    pub replicas: u32,
    pub running: u32,
    /// node, provider or a label key; null when not spread.
    pub spread: Option<String>,
    pub max_skew: u32,
    pub when_unsatisfiable: Option<String>,
    pub per_domain: BTreeMap<String, u32>,
    pub skew: u32,
    pub home_id: String,
    pub created_at_ms: u64,
    pub deployments: Vec<DeploymentView>,
}

impl From<&pb::Service> for ServiceJson {
    fn from(s: &pb::Service) -> Self {
        let some = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
        ServiceJson {
            id: s.id.clone(),
            name: s.name.clone(),
            image: s.image.clone(),
            replicas: s.replicas,
            running: s.running,
            spread: some(&s.spread),
            max_skew: s.max_skew,
            when_unsatisfiable: some(&s.when_unsatisfiable),
            per_domain: s.per_domain.clone().into_iter().collect(),
            skew: s.skew,
            home_id: s.home_id.clone(),
            created_at_ms: s.created_at_ms,
            deployments: s.deployments.iter().map(DeploymentView::from).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ServicesReport {
    pub services: Vec<ServiceJson>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleBody {
    replicas: u32,
}

type Api = State<Arc<HttpApi>>;

pub(super) async fn services(State(api): Api) -> Result<Json<ServicesReport>, ApiError> {
    let list = api
        .resources
        .list_services(Request::new(pb::ListServicesRequest {}))
        .await?
        .into_inner();
    Ok(Json(ServicesReport {
        services: list.services.iter().map(ServiceJson::from).collect(),
    }))
}

pub(super) async fn service(
    State(api): Api,
    Path(id): Path<String>,
) -> Result<Json<ServiceJson>, ApiError> {
    let s = api
        .resources
        .get_service(Request::new(pb::GetServiceRequest { id }))
        .await?
        .into_inner();
    Ok(Json(ServiceJson::from(&s)))
}

pub(super) async fn scale(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
    parsed: Result<Json<ScaleBody>, JsonRejection>,
) -> Result<Json<ServiceJson>, ApiError> {
    let replicas = body(parsed)?.replicas;
    let s = api
        .resources
        .scale(as_caller(caller, pb::ScaleRequest { id, replicas }))
        .await?
        .into_inner();
    Ok(Json(ServiceJson::from(&s)))
}
