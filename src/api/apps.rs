//! `iarnet.application.v1.ApplicationService`: applications from Git over
//! gRPC, the same calls the HTTP routes under `/application/apps` make.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tonic::{Request, Response, Status};

use crate::app::analyze::{Analysis, Component as Found, Edge as FoundEdge};
use crate::app::files::FileContent;
use crate::app::git::Credentials;
use crate::app::manager::NewApp;
use crate::app::rollout::{RolloutOptions, DEFAULT_WAIT};
use crate::app::{AppError, AppView, Applications, ComponentView};
use crate::audit::Audit;
use crate::proto::application as pb;
use crate::proto::application::application_service_server::ApplicationService;
use crate::security::who;

pub struct ApplicationApi {
    apps: Arc<Applications>,
    audit: Arc<Audit>,
}

impl ApplicationApi {
    pub fn new(apps: Arc<Applications>, audit: Arc<Audit>) -> Self {
        ApplicationApi { apps, audit }
    }

    fn record<T, R>(&self, req: &Request<T>, event: &str, app: &str, r: &Result<R, AppError>) {
        let (outcome, detail) = match r {
            Ok(_) => ("ok", json!({"app": app})),
            Err(e) => ("failed", json!({"app": app, "error": e.to_string()})),
        };
        self.audit.record(event, &who(req), outcome, detail);
    }
}

fn edge(e: &FoundEdge) -> pb::Edge {
    pb::Edge {
        from: e.from.clone(),
        to: e.to.clone(),
        r#type: e.kind.clone(),
    }
}

fn requirements(r: &crate::app::analyze::Requirements) -> pb::Requirements {
    pb::Requirements {
        cpu: r.cpu,
        memory: r.memory,
        gpu: r.gpu,
        storage: r.storage,
    }
}

fn found(c: &Found) -> pb::Component {
    pb::Component {
        id: c.id.clone(),
        name: c.name.clone(),
        r#type: c.kind.clone(),
        language: c.language.clone().unwrap_or_default(),
        framework: c.framework.clone().unwrap_or_default(),
        requirements: Some(requirements(&c.requirements)),
        depends_on: c.depends_on.iter().map(|d| d.on.clone()).collect(),
        image: c.image.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn component(c: &ComponentView) -> pb::Component {
    pb::Component {
        id: c.id.clone(),
        name: c.name.clone(),
        r#type: c.kind.clone(),
        language: c.language.clone().unwrap_or_default(),
        framework: c.framework.clone().unwrap_or_default(),
        requirements: Some(requirements(&c.resources)),
        depends_on: c.depends_on.clone(),
        status: c.status.clone(),
        health: c.health.clone().unwrap_or_default(),
        deployment_id: c.deployment_id.clone().unwrap_or_default(),
        provider_id: c.provider_id.clone().unwrap_or_default(),
        owner_id: c.owner_id.clone().unwrap_or_default(),
        restarts: c.restarts,
        exit_code: c.exit_code,
        image: c.image.clone().unwrap_or_default(),
        endpoints: c
            .endpoints
            .iter()
            .map(|(dep, e)| pb::Endpoint {
                dependency: dep.clone(),
                host: e.host.clone(),
                port: e.port.into(),
                via: e.via.clone(),
            })
            .collect(),
        build: c.build.as_ref().map(|b| pb::Build {
            status: b.status.clone(),
            provider_id: b.provider_id.clone(),
            owner_id: b.owner_id.clone(),
            log: b.log.clone(),
            error: b.error.clone().unwrap_or_default(),
        }),
        placement: c.placement.clone().into_iter().collect(),
    }
}

pub fn application(v: &AppView) -> pb::Application {
    pb::Application {
        id: v.id.clone(),
        name: v.name.clone(),
        git_url: v.git_url.clone(),
        branch: v.branch.clone(),
        local_path: v.local_path.clone(),
        commit: Some(pb::Commit {
            sha: v.commit.sha.clone(),
            message: v.commit.message.clone(),
            at_ms: v.commit.at_ms,
        }),
        modified_files: v.modified_files.clone(),
        status: v.status.clone(),
        components: v.components.iter().map(component).collect(),
        edges: v
            .dag
            .as_ref()
            .map(|d| d.edges.iter().map(edge).collect())
            .unwrap_or_default(),
        notes: v.analysis_notes.clone(),
        created_at_ms: v.created_at_ms,
        updated_at_ms: v.updated_at_ms,
        private: v.private,
    }
}

pub fn analysis(a: &Analysis) -> pb::Analysis {
    pb::Analysis {
        source: serde_json::to_value(a.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        file: a.file.clone(),
        components: a.components.iter().map(found).collect(),
        edges: a.dag.edges.iter().map(edge).collect(),
        notes: a.notes.clone(),
    }
}

fn file(f: FileContent) -> pb::File {
    pb::File {
        path: f.path,
        size: f.size,
        content: f.content,
    }
}

fn some(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

#[tonic::async_trait]
impl ApplicationService for ApplicationApi {
    async fn create_application(
        &self,
        req: Request<pb::CreateApplicationRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        let b = req.get_ref().clone();
        let r = self
            .apps
            .create(NewApp {
                name: b.name.clone(),
                git_url: b.git_url,
                branch: b.branch,
                credentials: Credentials {
                    token: some(b.token),
                    ssh_key_file: some(b.ssh_key_file).map(Into::into),
                },
            })
            .await;
        self.record(&req, "app.create", &b.name, &r);
        Ok(Response::new(application(&r?)))
    }

    async fn list_applications(
        &self,
        _req: Request<pb::ListApplicationsRequest>,
    ) -> Result<Response<pb::ListApplicationsResponse>, Status> {
        let apps = self.apps.list().await;
        Ok(Response::new(pb::ListApplicationsResponse {
            applications: apps.iter().map(application).collect(),
        }))
    }

    async fn get_application(
        &self,
        req: Request<pb::ApplicationRef>,
    ) -> Result<Response<pb::Application>, Status> {
        Ok(Response::new(application(
            &self.apps.view(&req.get_ref().id).await?,
        )))
    }

    async fn analyze_application(
        &self,
        req: Request<pb::ApplicationRef>,
    ) -> Result<Response<pb::Analysis>, Status> {
        let id = req.get_ref().id.clone();
        let r = self.apps.analyze(&id).await;
        self.record(&req, "app.analyze", &id, &r);
        Ok(Response::new(analysis(&r?)))
    }

    async fn deploy_components(
        &self,
        req: Request<pb::DeployComponentsRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        let b = req.get_ref().clone();
        let opts = RolloutOptions {
            rollback: b.rollback,
            wait: if b.wait_seconds == 0 {
                DEFAULT_WAIT
            } else {
                Duration::from_secs(b.wait_seconds)
            },
        };
        let r = self.apps.deploy(&b.id, &b.components, opts).await;
        self.record(&req, "app.deploy", &b.id, &r);
        Ok(Response::new(application(&r?)))
    }

    async fn stop_components(
        &self,
        req: Request<pb::StopComponentsRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        let b = req.get_ref().clone();
        let r = self.apps.stop(&b.id, &b.components).await;
        self.record(&req, "app.stop", &b.id, &r);
        Ok(Response::new(application(&r?)))
    }

    async fn pull_application(
        &self,
        req: Request<pb::PullApplicationRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        let b = req.get_ref().clone();
        let r = self.apps.pull(&b.id, b.force).await;
        self.record(&req, "app.pull", &b.id, &r);
        Ok(Response::new(application(&r?)))
    }

    async fn delete_application(
        &self,
        req: Request<pb::DeleteApplicationRequest>,
    ) -> Result<Response<pb::DeleteApplicationResponse>, Status> {
        let b = req.get_ref().clone();
        let r = self.apps.delete(&b.id, b.force).await;
        self.record(&req, "app.delete", &b.id, &r);
        r?;
        Ok(Response::new(pb::DeleteApplicationResponse { id: b.id }))
    }

    async fn list_files(
        &self,
        req: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        let b = req.into_inner();
        let t = self.apps.files(&b.id, &b.path)?;
        Ok(Response::new(pb::ListFilesResponse {
            entries: t
                .entries
                .into_iter()
                .map(|e| pb::FileEntry {
                    path: e.path,
                    r#type: e.kind,
                    size: e.size,
                })
                .collect(),
            truncated: t.truncated,
        }))
    }

    async fn read_file(
        &self,
        req: Request<pb::ReadFileRequest>,
    ) -> Result<Response<pb::File>, Status> {
        let b = req.into_inner();
        Ok(Response::new(file(self.apps.read_file(&b.id, &b.path)?)))
    }

    async fn write_file(
        &self,
        req: Request<pb::WriteFileRequest>,
    ) -> Result<Response<pb::File>, Status> {
        let b = req.get_ref().clone();
        let r = self.apps.write_file(&b.id, &b.path, &b.content).await;
        self.record(&req, "app.save_file", &b.id, &r);
        Ok(Response::new(file(r?)))
    }
}
