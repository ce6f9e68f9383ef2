//! `/swarm/…`: groups (list, create, join, leave), pools (list, create,
//! delete) and health checks, answered by the gRPC `Swarm` service.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use tonic::Request;

use super::{as_caller, body, ApiError, HttpApi};
use crate::proto::swarm as pb;
use crate::proto::swarm::swarm_server::Swarm;
use crate::security::Caller;

type Api = State<Arc<HttpApi>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    name: String,
    max_members: u32,
    #[serde(default)]
    node: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnNode {
    #[serde(default)]
    node: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leave {
    #[serde(default)]
    node: String,
    #[serde(default)]
    release: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePool {
    name: String,
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    selector: HashMap<String, String>,
    #[serde(default)]
    description: String,
}

pub(super) async fn groups(State(api): Api) -> Result<Json<pb::ListGroupsResponse>, ApiError> {
    let list = api
        .swarm
        .list_groups(Request::new(pb::ListGroupsRequest {}))
        .await?;
    Ok(Json(list.into_inner()))
}

pub(super) async fn create_group(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    parsed: Result<Json<CreateGroup>, JsonRejection>,
) -> Result<(StatusCode, Json<pb::Group>), ApiError> {
    let b = body(parsed)?;
    let g = api
        .swarm
        .create_group(as_caller(
            caller,
            pb::CreateGroupRequest {
                name: b.name,
                max_members: b.max_members,
                node: b.node,
            },
        ))
        .await?;
    Ok((StatusCode::CREATED, Json(g.into_inner())))
}

/// A JSON body, or an empty one for every field's default (the node called).
fn optional_body<T: Default + serde::de::DeserializeOwned>(
    raw: &[u8],
    hint: &str,
) -> Result<T, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<T>(raw).map_err(|e| {
        ApiError::from(tonic::Status::invalid_argument(format!(
            "invalid JSON body: {e}; send {hint} or nothing"
        )))
    })
}

pub(super) async fn join_group(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    Path(group): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<pb::Group>, ApiError> {
    let OnNode { node } = optional_body(&raw, r#"{"node": "ID"}"#)?;
    let g = api
        .swarm
        .join_group(as_caller(caller, pb::JoinGroupRequest { group, node }))
        .await?;
    Ok(Json(g.into_inner()))
}

pub(super) async fn leave_group(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    Path(group): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<pb::Group>, ApiError> {
    let Leave { node, release } = optional_body(&raw, r#"{"node": "ID", "release": true}"#)?;
    let g = api
        .swarm
        .leave_group(as_caller(
            caller,
            pb::LeaveGroupRequest {
                group,
                node,
                release,
            },
        ))
        .await?;
    Ok(Json(g.into_inner()))
}

pub(super) async fn pools(State(api): Api) -> Result<Json<pb::ListPoolsResponse>, ApiError> {
    let list = api
        .swarm
        .list_pools(Request::new(pb::ListPoolsRequest {}))
        .await?;
    Ok(Json(list.into_inner()))
}

pub(super) async fn create_pool(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    parsed: Result<Json<CreatePool>, JsonRejection>,
) -> Result<(StatusCode, Json<pb::Pool>), ApiError> {
    let b = body(parsed)?;
    let p = api
        .swarm
        .create_pool(as_caller(
            caller,
            pb::CreatePoolRequest {
                name: b.name,
                nodes: b.nodes,
                selector: b.selector,
                description: b.description,
            },
        ))
        .await?;
    Ok((StatusCode::CREATED, Json(p.into_inner())))
}

pub(super) async fn delete_pool(
    State(api): Api,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    api.swarm
        .delete_pool(as_caller(caller, pb::DeletePoolRequest { name }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn health_self(
    State(api): Api,
) -> Result<Json<pb::HealthCheckResponse>, ApiError> {
    health_of(&api, String::new()).await
}

pub(super) async fn health(
    State(api): Api,
    Path(node): Path<String>,
) -> Result<Json<pb::HealthCheckResponse>, ApiError> {
    health_of(&api, node).await
}

async fn health_of(api: &HttpApi, node: String) -> Result<Json<pb::HealthCheckResponse>, ApiError> {
    let h = api
        .swarm
        .health_check(Request::new(pb::HealthCheckRequest { node }))
        .await?;
    Ok(Json(h.into_inner()))
}
