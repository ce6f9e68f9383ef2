//! Applications: cards, import from Git, and one application's page —
//! its components with status, endpoints and builds, their dependency
//! graph drawn as SVG, deploy and stop per component or for all.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;

use super::forms::FieldErrors;
use super::{all_live, live, Page};
use crate::app::analyze::Dag;
use crate::app::{AppView, ComponentView};
use crate::proto::application as pb;
use crate::proto::application::application_service_server::ApplicationService;
use crate::ui::layout::{self, Nav};
use crate::ui::{failure, request, respond, see_other, Ctx, Dashboard};

#[derive(Debug, Default, Clone, Deserialize)]
pub struct ImportForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    git_url: String,
    #[serde(default)]
    branch: String,
    #[serde(default)]
    token: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Flash {
    #[serde(default)]
    error: String,
    #[serde(default)]
    done: String,
}

pub async fn list(State(d): State<Arc<Dashboard>>, Extension(ctx): Extension<Ctx>) -> Response {
    render_list(&d, &ctx, &ImportForm::default(), &FieldErrors::default()).await
}

async fn render_list(d: &Dashboard, ctx: &Ctx, f: &ImportForm, e: &FieldErrors) -> Response {
    let status = if e.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = html! {
        (all_live(list_fragments(d, ctx).await))
        h2 { "Import from Git" }
        form.panel method="post" action="/ui/apps" novalidate {
            (layout::csrf(&ctx.session.csrf))
            (e.summary())
            div.grid2 {
                (layout::field("name", "Name", &f.name, e.get("name"), "Letters, digits and dashes."))
                (layout::field("git_url", "Git URL", &f.git_url, e.get("git_url"), "https://, git://, ssh://, file:// or user@host:path."))
                (layout::field("branch", "Branch", &f.branch, e.get("branch"), "Empty: the remote's default."))
                (layout::field_typed("token", "Token", "password", "", e.get("token"), "For a private repository over HTTPS; never shown again."))
            }
            button type="submit" { "Import" }
        }
    };
    let chrome = d.chrome(ctx, Some(Page::Apps.stream()));
    respond(
        status,
        layout::page("Applications", Nav::Applications, &chrome, body),
    )
}

pub async fn list_fragments(d: &Dashboard, _ctx: &Ctx) -> Vec<(&'static str, Markup)> {
    let apps = d.applications.list().await;
    vec![("app-cards", cards(&apps))]
}

pub fn cards(apps: &[AppView]) -> Markup {
    html! {
        @if apps.is_empty() { p.muted { "No application yet: import one from Git below." } }
        div.cards {
            @for a in apps {
                div.card {
                    div.label { (layout::badge(&a.status)) }
                    div.value { a href={ "/ui/apps/" (layout::seg(&a.id)) } { (a.name) } }
                    div.sub { code { (a.git_url) } }
                    div.sub { (a.components_count) " components · " code { (a.commit.sha.get(..10).unwrap_or(&a.commit.sha)) } }
                }
            }
        }
    }
}

pub async fn import(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Form(f): Form<ImportForm>,
) -> Response {
    let req = pb::CreateApplicationRequest {
        name: f.name.trim().to_string(),
        git_url: f.git_url.trim().to_string(),
        branch: f.branch.trim().to_string(),
        token: f.token.trim().to_string(),
        ssh_key_file: String::new(),
    };
    match d.apps.create_application(request(&ctx, req)).await {
        Ok(a) => {
            // Imported means analysed too: the page shows its components.
            let id = a.into_inner().id;
            let analysed = d
                .apps
                .analyze_application(request(&ctx, pb::ApplicationRef { id: id.clone() }))
                .await
                .map(|_| ());
            back(&id, analysed, "Imported and analysed.")
        }
        Err(s) => {
            let e = FieldErrors::from_status(
                &s,
                &["name", "git_url", "branch", "token"],
                Some("git_url"),
            );
            render_list(&d, &ctx, &f, &e).await
        }
    }
}

pub async fn detail(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    let app = match d.applications.view(&id).await {
        Ok(a) => a,
        Err(e) => return failure(&d, &ctx, Nav::Applications, &e.into()),
    };
    let csrf = &ctx.session.csrf;
    let base = format!("/ui/apps/{}", layout::seg(&id));
    let body = html! {
        @if !flash.error.is_empty() { (layout::notice("error", &flash.error)) }
        @if !flash.done.is_empty() { (layout::notice("ok", &flash.done)) }
        dl.facts {
            dt { "Git" } dd { code { (app.git_url) } " " (app.branch) }
            dt { "Commit" } dd { code { (app.commit.sha) } " " (app.commit.message) }
            @if !app.modified_files.is_empty() {
                dt { "Edited" } dd { (app.modified_files.join(", ")) }
            }
        }
        div.actions {
            (layout::action(&format!("{base}/deploy"), "Deploy all", csrf, false)) " "
            (layout::action(&format!("{base}/stop"), "Stop all", csrf, true)) " "
            (layout::action(&format!("{base}/analyze"), "Analyze again", csrf, false)) " "
            (layout::action(&format!("{base}/pull"), "Pull", csrf, false)) " "
            (layout::action(&format!("{base}/delete"), "Delete", csrf, true)) " · "
            a href={ (base) "/files" } { "Code" }
        }
        (live("app-detail", app_body(&app, csrf)))
    };
    let chrome = d.chrome(&ctx, Some(Page::App(id.clone()).stream()));
    respond(
        StatusCode::OK,
        layout::page(
            &format!("Application {}", app.name),
            Nav::Applications,
            &chrome,
            body,
        ),
    )
}

pub async fn detail_fragments(d: &Dashboard, ctx: &Ctx, id: &str) -> Vec<(&'static str, Markup)> {
    let body = match d.applications.view(id).await {
        Ok(a) => app_body(&a, &ctx.session.csrf),
        Err(e) => layout::notice("error", &e.to_string()),
    };
    vec![("app-detail", body)]
}

fn app_body(app: &AppView, csrf: &str) -> Markup {
    html! {
        p { "Status: " (layout::badge(&app.status)) }
        @for n in &app.analysis_notes { p.muted { (n) } }
        @if let Some(dag) = &app.dag {
            h2 { "Dependencies" }
            div.dag { (dag_svg(dag, &app.components)) }
        }
        h2 { "Components" }
        table {
            thead { tr {
                th scope="col" { "Component" } th scope="col" { "Type" } th scope="col" { "Status" }
                th scope="col" { "Depends on" } th scope="col" { "Endpoints" } th scope="col" { "Deployment" }
                th scope="col" { "Actions" }
            } }
            tbody {
                @for c in &app.components {
                    tr {
                        td { (c.name) }
                        td { (c.kind) @if let Some(l) = &c.language { " · " (l) } }
                        td {
                            (layout::badge(&c.status))
                            @if let Some(b) = &c.build {
                                br; span.muted { "build " (b.status) @if let Some(e) = &b.error { ": " (e) } }
                            }
                        }
                        td { (c.depends_on.join(", ")) }
                        td { @for (name, e) in &c.endpoints { div { (name) " " code { (e.host) ":" (e.port) } " (" (e.via) ")" } } }
                        td {
                            @if let Some(dep) = &c.deployment_id {
                                a href={ "/ui/deployments/" (layout::seg(dep)) } { code { (dep) } }
                            }
                        }
                        td {
                            (component_action(&app.id, "deploy", &c.name, "Deploy", csrf))
                            " "
                            (component_action(&app.id, "stop", &c.name, "Stop", csrf))
                        }
                    }
                }
            }
        }
    }
}

fn component_action(app: &str, what: &str, component: &str, label: &str, csrf: &str) -> Markup {
    html! {
        form.inline method="post" action={ "/ui/apps/" (layout::seg(app)) "/" (what) } {
            (layout::csrf(csrf))
            input type="hidden" name="component" value=(component);
            button type="submit" class=[(what == "stop").then_some("danger")] aria-label={ (label) " " (component) } { (label) }
        }
    }
}

/// The dependency graph: one column per start level, arrows from each
/// component to what it depends on.
pub fn dag_svg(dag: &Dag, components: &[ComponentView]) -> Markup {
    const BOX_W: usize = 150;
    const BOX_H: usize = 36;
    const GAP_X: usize = 60;
    const GAP_Y: usize = 18;
    let status: HashMap<&str, &str> = components
        .iter()
        .map(|c| (c.name.as_str(), c.status.as_str()))
        .collect();
    let mut at: HashMap<&str, (usize, usize)> = HashMap::new();
    for (col, level) in dag.levels.iter().enumerate() {
        for (row, name) in level.iter().enumerate() {
            at.insert(
                name.as_str(),
                (10 + col * (BOX_W + GAP_X), 10 + row * (BOX_H + GAP_Y)),
            );
        }
    }
    let width = 20 + dag.levels.len().max(1) * (BOX_W + GAP_X);
    let rows = dag.levels.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let height = 20 + rows * (BOX_H + GAP_Y);
    let fill = |s: &str| match s {
        "running" | "healthy" => "#e3f4e8",
        "failed" | "exited" => "#fde6e7",
        "pending" | "starting" | "building" => "#fff3d6",
        _ => "#eceff3",
    };
    let label = format!(
        "Dependency graph: {}",
        dag.edges
            .iter()
            .map(|e| format!("{} depends on {}", e.from, e.to))
            .collect::<Vec<_>>()
            .join("; ")
    );
    html! {
        svg width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) } role="img" aria-label=(label) {
            defs {
                marker #arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                    path d="M0,0L10,5L0,10Z" fill="#4a5260" {}
                }
            }
            @for e in &dag.edges {
                @if let (Some((fx, fy)), Some((tx, ty))) = (at.get(e.from.as_str()), at.get(e.to.as_str())) {
                    line x1=(fx) y1=(fy + BOX_H / 2) x2=(tx + BOX_W) y2=(ty + BOX_H / 2)
                        stroke="#4a5260" stroke-width="1.5" marker-end="url(#arrow)" {}
                }
            }
            @for (name, (x, y)) in &at {
                @let s = status.get(name).copied().unwrap_or("not_deployed");
                g {
                    rect x=(x) y=(y) width=(BOX_W) height=(BOX_H) rx="6" fill=(fill(s)) stroke="#4a5260" {}
                    text x=(x + 8) y=(y + 15) font-size="13" fill="#1b1f24" { (name) }
                    text x=(x + 8) y=(y + 30) font-size="11" fill="#3d4450" { (s) }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ComponentForm {
    #[serde(default)]
    component: String,
}

fn back(id: &str, r: Result<(), tonic::Status>, done: &str) -> Response {
    let q = match r {
        Ok(()) => ("done", done.to_string()),
        Err(s) => ("error", s.message().to_string()),
    };
    see_other(&format!(
        "/ui/apps/{}?{}",
        layout::seg(id),
        serde_urlencoded::to_string([q]).unwrap_or_default()
    ))
}

fn wanted(f: &ComponentForm) -> Vec<String> {
    Some(f.component.trim().to_string())
        .filter(|c| !c.is_empty())
        .into_iter()
        .collect()
}

pub async fn deploy(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    Form(f): Form<ComponentForm>,
) -> Response {
    let req = pb::DeployComponentsRequest {
        id: id.clone(),
        components: wanted(&f),
        rollback: false,
        wait_seconds: 0,
    };
    let r = d
        .apps
        .deploy_components(request(&ctx, req))
        .await
        .map(|_| ());
    back(&id, r, "Deploying in dependency order.")
}

pub async fn stop(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    Form(f): Form<ComponentForm>,
) -> Response {
    let req = pb::StopComponentsRequest {
        id: id.clone(),
        components: wanted(&f),
    };
    let r = d.apps.stop_components(request(&ctx, req)).await.map(|_| ());
    back(&id, r, "Stopped.")
}

pub async fn analyze(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> Response {
    let r = d
        .apps
        .analyze_application(request(&ctx, pb::ApplicationRef { id: id.clone() }))
        .await
        .map(|_| ());
    back(&id, r, "Analyzed.")
}

pub async fn pull(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> Response {
    let r = d
        .apps
        .pull_application(request(
            &ctx,
            pb::PullApplicationRequest {
                id: id.clone(),
                force: false,
            },
        ))
        .await
        .map(|_| ());
    back(&id, r, "Pulled the branch's newest commit.")
}

pub async fn delete(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> Response {
    match d
        .apps
        .delete_application(request(
            &ctx,
            pb::DeleteApplicationRequest {
                id: id.clone(),
                force: false,
            },
        ))
        .await
    {
        Ok(_) => see_other("/ui/apps"),
        Err(s) => back(&id, Err(s), ""),
    }
}
