//! Resources: the seed's summary cards and provider table (tier, owner,
//! status, CPU / memory / GPU as bars, labels; refresh and remove), the
//! "add resource" form with its inline errors and the live connection
//! test's result, and charts of this node's own providers.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::forms::{pairs, FieldErrors};
use super::{all_live, Page};
use crate::api::http::views::{ProviderView, ProvidersReport};
use crate::proto::resource as pb;
use crate::proto::resource::resource_service_server::ResourceService;
use crate::ui::charts::{self, figure};
use crate::ui::layout::{self, Nav};
use crate::ui::{request, respond, see_other, Ctx, Dashboard};

/// Providers with their own charts on this page, at most.
const CHARTED: usize = 4;
/// Rows of the provider table per page.
pub const ROWS: usize = 40;

#[derive(Debug, Default, Deserialize)]
pub struct Flash {
    #[serde(default)]
    added: String,
    #[serde(default)]
    removed: String,
    #[serde(default)]
    tested: String,
    #[serde(default)]
    error: String,
    /// The provider table's page, from 1.
    #[serde(default)]
    page: Option<usize>,
}

/// The seed's "add resource" form.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct AddForm {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    kubeconfig_path: String,
    #[serde(default)]
    tls_ca: String,
    #[serde(default)]
    tls_cert: String,
    #[serde(default)]
    tls_key: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    max_deployments: String,
}

const FIELDS: &[&str] = &[
    "name",
    "type",
    "endpoint",
    "token",
    "kubeconfig_path",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "labels",
    "description",
    "max_deployments",
];

pub async fn page(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Query(flash): Query<Flash>,
) -> Response {
    render(
        &d,
        &ctx,
        &flash,
        &AddForm::default(),
        &FieldErrors::default(),
    )
    .await
}

async fn render(
    d: &Dashboard,
    ctx: &Ctx,
    flash: &Flash,
    form: &AddForm,
    errors: &FieldErrors,
) -> Response {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = flash.page.unwrap_or(1).max(1);
    let body = html! {
        @if !flash.added.is_empty() { (layout::notice("ok", &format!("Provider {} added: its connection test passed.", flash.added))) }
        @if !flash.removed.is_empty() { (layout::notice("ok", &format!("Provider {} removed.", flash.removed))) }
        @if !flash.tested.is_empty() { (layout::notice("ok", &format!("Provider {} answered its test.", flash.tested))) }
        @if !flash.error.is_empty() { (layout::notice("error", &flash.error)) }
        (all_live(fragments(d, ctx, page).await))
        h2 #add { "Add a resource" }
        (add_form(&ctx.session.csrf, form, errors))
    };
    let chrome = d.chrome(ctx, Some(Page::Resources(page).stream()));
    respond(
        status,
        layout::page("Resources", Nav::Resources, &chrome, body),
    )
}

pub async fn fragments(d: &Dashboard, ctx: &Ctx, page: usize) -> Vec<(&'static str, Markup)> {
    let list = d
        .resources
        .list_providers(request(ctx, pb::ListProvidersRequest {}))
        .await
        .map(|r| ProvidersReport {
            providers: r
                .into_inner()
                .providers
                .iter()
                .map(ProviderView::from)
                .collect(),
        });
    match list {
        Ok(report) => vec![
            ("res-cards", cards(&report.providers)),
            (
                "res-table",
                table(d, &ctx.session.csrf, &report.providers, page),
            ),
            ("res-charts", provider_charts(d, &report.providers)),
        ],
        Err(s) => vec![("res-table", layout::notice("error", s.message()))],
    }
}

fn cards(list: &[ProviderView]) -> Markup {
    let online = list.iter().filter(|p| p.status == "active").count();
    let cpu: f64 = list.iter().map(|p| p.capacity.total.cpu).sum();
    let memory: f64 = list.iter().map(|p| p.capacity.total.memory).sum();
    let storage: Option<f64> = list.iter().map(|p| p.capacity.total.storage).sum();
    html! {
        div.cards {
            div.card { div.label { "Total resources" } div.value { (list.len()) } div.sub { "providers this node can use" } }
            div.card { div.label { "Online" } div.value { (online) } div.sub { (list.len() - online) " unhealthy" } }
            div.card { div.label { "CPU cores" } div.value { (figure(cpu)) } div.sub { (figure(memory)) " GiB memory" } }
            div.card {
                div.label { "Storage" }
                div.value { @match storage { Some(s) => { (figure(s)) " GiB" } None => "not limited" } }
                div.sub { "where providers account it" }
            }
        }
    }
}

fn usage_cell(used: f64, total: f64, unit: &str, what: &str) -> Markup {
    let label = format!(
        "{what}: {} of {} {unit} reserved",
        figure(used),
        figure(total)
    );
    html! {
        (charts::bar(used, total, &label))
        span.muted { (figure(used)) " / " (figure(total)) " " (unit) }
    }
}

fn table(d: &Dashboard, csrf: &str, all: &[ProviderView], page: usize) -> Markup {
    let me = d.manager.node_id();
    let pages = all.len().div_ceil(ROWS).max(1);
    let page = page.min(pages);
    let list = &all[(page - 1) * ROWS..(page * ROWS).min(all.len())];
    html! {
        table {
            caption.muted {
                (all.len()) " providers, best tier first"
                @if pages > 1 { " · page " (page) " of " (pages) }
            }
            thead { tr {
                th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "Tier" }
                th scope="col" { "Owner" } th scope="col" { "Status" } th scope="col" { "CPU" }
                th scope="col" { "Memory" } th scope="col" { "GPUs" } th scope="col" { "Labels" }
                th scope="col" { "Actions" }
            } }
            tbody {
                @for p in list {
                    tr {
                        td { (p.name) br; code.muted { (p.id) } }
                        td { (p.kind) }
                        td { (p.tier) }
                        td { code { (p.owner_id) } }
                        td { (layout::badge(p.status)) }
                        td { (usage_cell(p.capacity.reserved.cpu, p.capacity.total.cpu, "cores", "CPU")) }
                        td { (usage_cell(p.capacity.reserved.memory, p.capacity.total.memory, "GiB", "Memory")) }
                        td { (usage_cell(p.capacity.reserved.gpu as f64, p.capacity.total.gpu as f64, "", "GPUs")) }
                        td { @for (k, v) in &p.labels { span.label-chip { (k) "=" (v) } } }
                        td {
                            @if p.owner_id == me {
                                (layout::action(&format!("/ui/resources/{}/refresh", layout::seg(&p.id)), "Refresh", csrf, false))
                                @if p.tier == "external" {
                                    " " (layout::action(&format!("/ui/resources/{}/remove", layout::seg(&p.id)), "Remove", csrf, true))
                                }
                            } @else {
                                span.muted { "owned by another node" }
                            }
                        }
                    }
                }
            }
        }
        @if pages > 1 {
            nav.pager aria-label="Provider table pages" {
                @if page > 1 { a href={ "/ui/resources?page=" (page - 1) } { "Previous" } " " }
                @if page < pages { a href={ "/ui/resources?page=" (page + 1) } { "Next" } }
            }
        }
    }
}

fn provider_charts(d: &Dashboard, list: &[ProviderView]) -> Markup {
    let me = d.manager.node_id();
    let h = d.recorder.history.lock().expect("history lock");
    let mine: Vec<&ProviderView> = list
        .iter()
        .filter(|p| p.owner_id == me)
        .take(CHARTED)
        .collect();
    html! {
        h2 { "This node's providers over time" }
        @if mine.is_empty() { p.muted { "This node owns no provider." } }
        div.charts {
            @for p in mine {
                @if let Some(u) = h.providers.get(&p.id) {
                    (charts::usage(&format!("{} CPU", p.name), &u.cpu, "cores"))
                    (charts::usage(&format!("{} memory", p.name), &u.memory, "GiB"))
                }
            }
        }
    }
}

fn add_form(csrf: &str, f: &AddForm, e: &FieldErrors) -> Markup {
    let kind = if f.kind.is_empty() { "docker" } else { &f.kind };
    html! {
        form.panel method="post" action="/ui/resources" novalidate {
            (layout::csrf(csrf))
            (e.summary())
            div.grid2 {
                (layout::field("name", "Name", &f.name, e.get("name"), "Shown in lists; 1-63 characters."))
                (layout::select("type", "Type", &[("docker", "Docker engine"), ("k8s", "Kubernetes cluster")], kind))
                (layout::field("endpoint", "API server URL", &f.endpoint, e.get("endpoint"), "tcp://host:2375, https://host:2376 or unix:///var/run/docker.sock; a cluster's https:// address."))
                (layout::field_typed("token", "Token", "password", "", e.get("token"), "A bearer token for the API server; never shown again."))
                (layout::field("kubeconfig_path", "Kubeconfig path", &f.kubeconfig_path, e.get("kubeconfig_path"), "For Kubernetes: a file on this node."))
                (layout::field("tls_ca", "TLS CA file", &f.tls_ca, e.get("tls_ca"), "Files on this node, for https:// endpoints."))
                (layout::field("tls_cert", "TLS certificate file", &f.tls_cert, e.get("tls_cert"), ""))
                (layout::field("tls_key", "TLS key file", &f.tls_key, e.get("tls_key"), ""))
                (layout::field("labels", "Labels", &f.labels, e.get("labels"), "KEY=VALUE, comma-separated (zone=a, team=ml)."))
                (layout::field("description", "Description", &f.description, e.get("description"), "Kept as the label description."))
                (layout::field("max_deployments", "Max deployments", &f.max_deployments, e.get("max_deployments"), "Empty: no limit."))
            }
            button type="submit" { "Add and test connection" }
        }
    }
}

impl AddForm {
    fn to_request(&self) -> Result<pb::RegisterProviderRequest, FieldErrors> {
        let mut labels =
            pairs("labels", &self.labels).map_err(|m| FieldErrors::one("labels", m))?;
        if !self.description.trim().is_empty() {
            labels.insert("description".into(), self.description.trim().to_string());
        }
        let max_deployments = match self.max_deployments.trim() {
            "" => 0,
            n => match n.parse::<u32>() {
                Ok(v) if v > 0 => v,
                _ => {
                    return Err(FieldErrors::one(
                        "max_deployments",
                        format!("invalid max_deployments: {n:?} is not a whole number of at least 1 (leave it empty for no limit)"),
                    ))
                }
            },
        };
        Ok(pb::RegisterProviderRequest {
            r#type: self.kind.trim().to_string(),
            name: self.name.trim().to_string(),
            endpoint: self.endpoint.trim().to_string(),
            token: self.token.trim().to_string(),
            kubeconfig_path: self.kubeconfig_path.trim().to_string(),
            labels: labels.into_iter().collect(),
            tls_ca: self.tls_ca.trim().to_string(),
            tls_cert: self.tls_cert.trim().to_string(),
            tls_key: self.tls_key.trim().to_string(),
            max_deployments,
        })
    }
}

pub async fn add(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Form(f): Form<AddForm>,
) -> Response {
    let req = match f.to_request() {
        Ok(r) => r,
        Err(e) => return render(&d, &ctx, &Flash::default(), &f, &e).await,
    };
    match d.resources.register_provider(request(&ctx, req)).await {
        Ok(p) => {
            let q =
                serde_urlencoded::to_string([("added", p.into_inner().name)]).unwrap_or_default();
            see_other(&format!("/ui/resources?{q}"))
        }
        Err(s) => {
            let mut e = FieldErrors::from_status(&s, FIELDS, Some("endpoint"));
            // A label refusal names the label ("labels.description").
            if let Some(m) = e.fields.remove("labels") {
                let to = if m.contains("labels.description") {
                    "description"
                } else {
                    "labels"
                };
                e.fields.insert(to.into(), m);
            }
            render(&d, &ctx, &Flash::default(), &f, &e).await
        }
    }
}

pub async fn remove(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> Response {
    let r = d
        .resources
        .unregister_provider(request(
            &ctx,
            pb::UnregisterProviderRequest { id: id.clone() },
        ))
        .await;
    let q = match r {
        Ok(_) => [("removed", id)],
        Err(s) => [("error", s.message().to_string())],
    };
    see_other(&format!(
        "/ui/resources?{}",
        serde_urlencoded::to_string(q).unwrap_or_default()
    ))
}

pub async fn refresh(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> Response {
    let r = d.manager.retest(&id).await;
    let (outcome, q) = match &r {
        Some(Ok(())) => ("ok", ("tested", id.clone())),
        Some(Err(e)) => (
            "failed",
            ("error", format!("provider {id} failed its test: {e}")),
        ),
        None => (
            "failed",
            (
                "error",
                format!("provider {id} is not one of this node's own"),
            ),
        ),
    };
    d.shared.audit.record(
        "refresh_provider",
        &ctx.caller.to_string(),
        outcome,
        json!({"id": id, "error": r.and_then(|r| r.err())}),
    );
    see_other(&format!(
        "/ui/resources?{}",
        serde_urlencoded::to_string([q]).unwrap_or_default()
    ))
}
