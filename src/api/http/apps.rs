//! `/application/apps`: applications from Git, their analysis, rollout and
//! code browser. Errors carry the application layer's gRPC code, shown as
//! the matching HTTP status (a refusal while components run is 409).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{as_caller, body, ApiError, HttpApi};
use crate::app::analyze::Analysis;
use crate::app::files::{FileContent, Tree};
use crate::app::git::Credentials;
use crate::app::manager::NewApp;
use crate::app::rollout::RolloutOptions;
use crate::app::{AppError, AppView, ComponentView};
use crate::security::{who, Caller};

type Api = State<Arc<HttpApi>>;
type Who = Option<Extension<Caller>>;

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let http = matches!(e, AppError::Conflict(_)).then_some(StatusCode::CONFLICT);
        ApiError(e.into(), http)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    git_url: String,
    #[serde(default)]
    branch: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    ssh_key_file: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AppsReport {
    applications: Vec<AppView>,
}

#[derive(Debug, Serialize)]
pub struct ComponentsReport {
    components: Vec<ComponentView>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    #[serde(default)]
    components: Vec<String>,
    /// Stop what the rollout started when a component fails.
    #[serde(default)]
    rollback: bool,
    /// Seconds each wait for a dependency may take.
    #[serde(default)]
    wait_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StopBody {
    #[serde(default)]
    components: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ForceBody {
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Deserialize)]
pub struct ForceQuery {
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Deserialize)]
pub struct PathQuery {
    #[serde(default)]
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveBody {
    content: String,
}

/// Records who did what to which application, and how it went.
fn audit<T>(api: &HttpApi, caller: &Who, event: &str, app: &str, r: &Result<T, AppError>) {
    let who = who(&as_caller(caller.clone(), ()));
    let (outcome, detail) = match r {
        Ok(_) => ("ok", json!({"app": app})),
        Err(e) => ("failed", json!({"app": app, "error": e.to_string()})),
    };
    api.shared.audit.record(event, &who, outcome, detail);
}

/// An optional JSON body: absent or empty means the defaults.
fn optional<T: Default>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match parsed {
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(T::default()),
        Err(e) if e.body_text().contains("EOF while parsing") => Ok(T::default()),
        other => body(other),
    }
}

pub(super) async fn list(State(api): Api) -> Json<AppsReport> {
    Json(AppsReport {
        applications: api.apps.list().await,
    })
}

pub(super) async fn create(
    State(api): Api,
    caller: Who,
    parsed: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<AppView>), ApiError> {
    let b = body(parsed)?;
    let name = b.name.clone();
    let r = api
        .apps
        .create(NewApp {
            name: b.name,
            git_url: b.git_url,
            branch: b.branch,
            credentials: Credentials {
                token: b.token.filter(|t| !t.is_empty()),
                ssh_key_file: b.ssh_key_file.filter(|k| !k.is_empty()).map(Into::into),
            },
        })
        .await;
    audit(&api, &caller, "app.create", &name, &r);
    Ok((StatusCode::CREATED, Json(r?)))
}

pub(super) async fn get(
    State(api): Api,
    Path(id): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    Ok(Json(api.apps.view(&id).await?))
}

pub(super) async fn delete(
    State(api): Api,
    caller: Who,
    Path(id): Path<String>,
    Query(q): Query<ForceQuery>,
) -> Result<Json<Value>, ApiError> {
    let r = api.apps.delete(&id, q.force).await;
    audit(&api, &caller, "app.delete", &id, &r);
    r?;
    Ok(Json(json!({"deleted": id})))
}

pub(super) async fn components(
    State(api): Api,
    Path(id): Path<String>,
) -> Result<Json<ComponentsReport>, ApiError> {
    Ok(Json(ComponentsReport {
        components: api.apps.components(&id).await?,
    }))
}

pub(super) async fn analyze(
    State(api): Api,
    caller: Who,
    Path(id): Path<String>,
) -> Result<Json<Analysis>, ApiError> {
    let r = api.apps.analyze(&id).await;
    audit(&api, &caller, "app.analyze", &id, &r);
    Ok(Json(r?))
}

pub(super) async fn deploy(
    State(api): Api,
    caller: Who,
    Path(id): Path<String>,
    parsed: Result<Json<DeployBody>, JsonRejection>,
) -> Result<Json<AppView>, ApiError> {
    let b = optional(parsed)?;
    let opts = RolloutOptions {
        rollback: b.rollback,
        wait: b
            .wait_seconds
            .map(Duration::from_secs)
            .unwrap_or(crate::app::rollout::DEFAULT_WAIT),
    };
    let r = api.apps.deploy(&id, &b.components, opts).await;
    audit(&api, &caller, "app.deploy", &id, &r);
    Ok(Json(r?))
}

pub(super) async fn stop(
    State(api): Api,
    caller: Who,
    Path(id): Path<String>,
    parsed: Result<Json<StopBody>, JsonRejection>,
) -> Result<Json<AppView>, ApiError> {
    let b = optional(parsed)?;
    let r = api.apps.stop(&id, &b.components).await;
    audit(&api, &caller, "app.stop", &id, &r);
    Ok(Json(r?))
}

pub(super) async fn pull(
    State(api): Api,
    caller: Who,
    Path(id): Path<String>,
    parsed: Result<Json<ForceBody>, JsonRejection>,
) -> Result<Json<AppView>, ApiError> {
    let b = optional(parsed)?;
    let r = api.apps.pull(&id, b.force).await;
    audit(&api, &caller, "app.pull", &id, &r);
    Ok(Json(r?))
}

pub(super) async fn tree(
    State(api): Api,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> Result<Json<Tree>, ApiError> {
    Ok(Json(api.apps.files(&id, &q.path)?))
}

pub(super) async fn read(
    State(api): Api,
    Path((id, path)): Path<(String, String)>,
) -> Result<Json<FileContent>, ApiError> {
    Ok(Json(api.apps.read_file(&id, &path)?))
}

pub(super) async fn save(
    State(api): Api,
    caller: Who,
    Path((id, path)): Path<(String, String)>,
    parsed: Result<Json<SaveBody>, JsonRejection>,
) -> Result<Json<FileContent>, ApiError> {
    let b = body(parsed)?;
    let r = api.apps.write_file(&id, &path, &b.content).await;
    audit(&api, &caller, "app.save_file", &id, &r);
    Ok(Json(r?))
}
