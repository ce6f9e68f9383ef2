//! Deployments: the mesh's list with its filters in the URL, one
//! deployment's detail (placement and reason, history, lease, place in
//! the queue) with stop / renew / release, and the deploy form.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};
use serde::{Deserialize, Serialize};

use super::{all_live, live, Page};
use crate::api::http::views::{DeploymentView, DeploymentsReport, QueueEntryView};
use crate::proto::resource as pb;
use crate::proto::resource::resource_service_server::ResourceService;
use crate::ui::charts::figure;
use crate::ui::layout::{self, Nav};
use crate::ui::{failure, request, respond, see_other, Ctx, Dashboard};

pub use super::deploy_form::{deploy, deploy_form};

/// Rows per page of the list.
pub const PAGE_SIZE: u32 = 50;

const STATES: &[&str] = &[
    "", "pending", "pulling", "starting", "running", "exited", "failed", "stopped",
];

/// The list's filters, as the URL carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Text in the id, request id, image or a label.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub q: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub page_token: String,
}

impl Filters {
    pub fn parse(query: &str) -> Result<Filters, serde_urlencoded::de::Error> {
        serde_urlencoded::from_str(query)
    }

    pub fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    fn matches(&self, d: &DeploymentView) -> bool {
        let q = self.q.trim().to_lowercase();
        q.is_empty()
            || [&d.id, &d.request_id, &d.image]
                .iter()
                .any(|s| s.to_lowercase().contains(&q))
            || d.labels
                .iter()
                .any(|(k, v)| format!("{k}={v}").to_lowercase().contains(&q))
    }
}

pub async fn list(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Query(f): Query<Filters>,
) -> Response {
    let page = Page::Deployments(f.clone());
    let body = html! {
        p { a href="/ui/deploy" { "Deploy a container" } }
        form.filters method="get" action="/ui/deployments" role="search" {
            (layout::select("state", "State", &STATES.iter().map(|s| (*s, if s.is_empty() { "any" } else { s })).collect::<Vec<_>>(), &f.state))
            (layout::field("provider", "Provider", &f.provider, None, ""))
            (layout::field("owner", "Owner node", &f.owner, None, ""))
            (layout::field("q", "Text", &f.q, None, ""))
            button type="submit" { "Filter" }
        }
        (all_live(list_fragments(&d, &ctx, &f).await))
    };
    let chrome = d.chrome(&ctx, Some(page.stream()));
    respond(
        StatusCode::OK,
        layout::page("Deployments", Nav::Deployments, &chrome, body),
    )
}

pub async fn list_fragments(d: &Dashboard, ctx: &Ctx, f: &Filters) -> Vec<(&'static str, Markup)> {
    let req = pb::ListDeploymentsRequest {
        scope: "mesh".into(),
        state: f.state.clone(),
        owner_id: f.owner.clone(),
        provider_id: f.provider.clone(),
        page_size: PAGE_SIZE,
        page_token: f.page_token.clone(),
        ..Default::default()
    };
    let list = d
        .resources
        .list_deployments(request(ctx, req))
        .await
        .map(|r| DeploymentsReport::from(&r.into_inner()));
    let queue = d
        .resources
        .list_queue(request(ctx, pb::ListQueueRequest {}))
        .await
        .map(|r| {
            r.into_inner()
                .entries
                .iter()
                .map(QueueEntryView::from)
                .collect::<Vec<_>>()
        });
    vec![
        (
            "dep-list",
            match list {
                Ok(r) => table(&r, f),
                Err(s) => layout::notice("error", s.message()),
            },
        ),
        (
            "dep-queue",
            match queue {
                Ok(q) => queue_table(&q),
                Err(s) => layout::notice("error", s.message()),
            },
        ),
    ]
}

fn table(r: &DeploymentsReport, f: &Filters) -> Markup {
    let rows: Vec<&DeploymentView> = r.deployments.iter().filter(|d| f.matches(d)).collect();
    let next = r.next_page_token.as_ref().map(|t| {
        Filters {
            page_token: t.clone(),
            ..f.clone()
        }
        .query()
    });
    html! {
        @if !r.missing_nodes.is_empty() {
            (layout::notice("info", &format!("Not answering in time: {}", r.missing_nodes.join(", "))))
        }
        table {
            caption.muted { (rows.len()) " shown · " (r.nodes_answered) " nodes answered" }
            thead { tr {
                th scope="col" { "Deployment" } th scope="col" { "Image" } th scope="col" { "State" }
                th scope="col" { "Provider" } th scope="col" { "Owner" } th scope="col" { "CPU" }
                th scope="col" { "Memory" } th scope="col" { "Priority" }
            } }
            tbody {
                @for d in rows {
                    tr {
                        td { a href={ "/ui/deployments/" (layout::seg(&d.id)) } { code { (d.id) } } }
                        td { code { (d.image) } }
                        td { (layout::badge(&d.state)) @if !d.reason.is_empty() { br; span.muted { (d.reason) } } }
                        td { code { (d.provider_id) } }
                        td { code { (d.owner_id) } }
                        td { (figure(d.resources.cpu)) }
                        td { (figure(d.resources.memory)) " GiB" }
                        td { (d.priority) }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p { a href={ "/ui/deployments?" (next) } { "Next page" } }
        }
    }
}

fn queue_table(q: &[QueueEntryView]) -> Markup {
    html! {
        h2 { "Waiting in this node's queue" }
        @if q.is_empty() {
            p.muted { "Nothing is waiting." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Place" } th scope="col" { "Request" } th scope="col" { "Image" }
                    th scope="col" { "Priority" } th scope="col" { "Waiting" } th scope="col" { "Why" }
                } }
                tbody {
                    @for e in q {
                        tr {
                            td { (e.position) }
                            td { a href={ "/ui/deployments/" (layout::seg(&e.request_id)) } { code { (e.request_id) } } }
                            td { code { (e.image) } }
                            td { (e.priority) " " (e.priority_value) }
                            td { (format!("{:.0} s", e.age_secs)) }
                            td { (e.reason) }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    /// Just deployed: not found yet means "being placed", not 404.
    #[serde(default)]
    new: bool,
    #[serde(default)]
    error: String,
}

pub async fn detail(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    let got = d
        .resources
        .get_deployment(request(&ctx, pb::GetDeploymentRequest { id: id.clone() }))
        .await;
    if let Err(s) = &got {
        if !(q.new && s.code() == tonic::Code::NotFound) {
            return failure(&d, &ctx, Nav::Deployments, s);
        }
    }
    let page = Page::Deployment(id.clone());
    let body = html! {
        @if !q.error.is_empty() { (layout::notice("error", &q.error)) }
        (live("dep-detail", detail_body(&d, &ctx, &id, got).await))
    };
    let chrome = d.chrome(&ctx, Some(page.stream()));
    respond(
        StatusCode::OK,
        layout::page(&format!("Deployment {id}"), Nav::Deployments, &chrome, body),
    )
}

pub async fn detail_fragments(d: &Dashboard, ctx: &Ctx, id: &str) -> Vec<(&'static str, Markup)> {
    let got = d
        .resources
        .get_deployment(request(
            ctx,
            pb::GetDeploymentRequest { id: id.to_string() },
        ))
        .await;
    vec![("dep-detail", detail_body(d, ctx, id, got).await)]
}

async fn detail_body(
    d: &Dashboard,
    ctx: &Ctx,
    id: &str,
    got: Result<tonic::Response<pb::Deployment>, tonic::Status>,
) -> Markup {
    let dep = match got {
        Ok(r) => DeploymentView::from(&r.into_inner()),
        Err(s) if s.code() == tonic::Code::NotFound => {
            return layout::notice(
                "info",
                &format!("{id} is being placed: this page shows it as soon as a node holds it."),
            );
        }
        Err(s) => return layout::notice("error", s.message()),
    };
    let queued = d
        .resources
        .list_queue(request(ctx, pb::ListQueueRequest {}))
        .await
        .ok()
        .and_then(|q| {
            q.into_inner()
                .entries
                .iter()
                .find(|e| e.request_id == dep.request_id || e.id == dep.id)
                .map(QueueEntryView::from)
        });
    html! {
        (actions(&dep, &ctx.session.csrf))
        (facts(&dep, queued.as_ref()))
    }
}

/// What can be done to it now: stop while it runs, lease actions while
/// it holds a lease.
pub fn actions(dep: &DeploymentView, csrf: &str) -> Markup {
    let at = layout::seg(&dep.request_id);
    let ended = matches!(dep.state.as_str(), "stopped" | "exited" | "failed");
    html! {
        div.actions {
            a href={ "/ui/deployments/" (at) "/logs" } { "Logs" }
            @if !ended {
                " " (layout::action(&format!("/ui/deployments/{at}/stop"), "Stop", csrf, true))
            }
            @if dep.lease.as_ref().is_some_and(|l| l.state != "released" && l.state != "expired") {
                " " (layout::action(&format!("/ui/deployments/{at}/renew"), "Renew lease", csrf, false))
                " " (layout::action(&format!("/ui/deployments/{at}/release"), "Release lease", csrf, false))
            }
        }
    }
}

pub fn facts(dep: &DeploymentView, queued: Option<&QueueEntryView>) -> Markup {
    html! {
        dl.facts {
            dt { "State" } dd { (layout::badge(&dep.state)) }
            dt { "Placement" } dd {
                @if dep.reason.is_empty() { "on " code { (dep.provider_id) } " of node " code { (dep.owner_id) } }
                @else { (dep.reason) }
            }
            dt { "Id" } dd { code { (dep.id) } }
            dt { "Request id" } dd { code { (dep.request_id) } }
            dt { "Image" } dd { code { (dep.image) } }
            dt { "Provider" } dd { code { (dep.provider_id) } }
            dt { "Owner node" } dd { code { (dep.owner_id) } }
            dt { "Home node" } dd { code { (dep.home_id) } }
            dt { "Resources" } dd { (figure(dep.resources.cpu)) " cores, " (figure(dep.resources.memory)) " GiB, " (dep.resources.gpu) " GPUs" }
            dt { "Priority" } dd { (if dep.priority.is_empty() { "interactive (default)" } else { &dep.priority }) @if dep.preemptible { " (preemptible)" } }
            dt { "Restarts" } dd { (dep.restarts) }
            dt { "Labels" } dd { @for (k, v) in &dep.labels { span.label-chip { (k) "=" (v) } } }
            @if let Some(q) = queued {
                dt { "Queue" } dd { "place " (q.position) " · " (q.reason) }
            }
        }
        @if let Some(l) = &dep.lease {
            h2 { "Lease" }
            dl.facts {
                dt { "State" } dd { (layout::badge(&l.state)) }
                dt { "Holder" } dd { code { (l.holder) } }
                dt { "Epoch" } dd { (l.epoch) }
                dt { "Expires in" } dd { (format!("{:.0} s", l.expires_in_secs)) }
                dt { "Renewals" } dd { (l.renewals) @if let Some(m) = l.max_renewals { " of " (m) } @if l.auto_renew { " (renewed by its owner)" } }
            }
        }
        h2 { "Placements" }
        @if dep.attempts.is_empty() { p.muted { "One placement, on " code { (dep.provider_id) } "." } }
        @else {
            table {
                thead { tr { th scope="col" { "Attempt" } th scope="col" { "Provider" } th scope="col" { "Owner" } th scope="col" { "Placed" } th scope="col" { "Ended" } } }
                tbody { @for a in &dep.attempts { tr {
                    td { (a.attempt) } td { code { (a.provider_id) } } td { code { (a.owner_id) } }
                    td { (layout::when(a.placed)) } td { (a.ended) }
                } } }
            }
        }
        h2 { "History" }
        table {
            thead { tr { th scope="col" { "When" } th scope="col" { "State" } th scope="col" { "Detail" } } }
            tbody { @for h in &dep.history { tr {
                td { (layout::when(h.at)) } td { (layout::badge(&h.state)) } td { (layout::visible(&h.detail)) }
            } } }
        }
    }
}

async fn act(d: &Dashboard, ctx: &Ctx, id: &str, what: &str) -> Response {
    let r = match what {
        "stop" => d
            .resources
            .stop(request(ctx, pb::StopRequest { id: id.to_string() }))
            .await
            .map(|_| ()),
        "renew" => d
            .resources
            .renew_lease(request(
                ctx,
                pb::RenewLeaseRequest {
                    id: id.to_string(),
                    epoch: 0,
                },
            ))
            .await
            .map(|_| ()),
        _ => d
            .resources
            .release_lease(request(
                ctx,
                pb::ReleaseLeaseRequest {
                    id: id.to_string(),
                    epoch: 0,
                },
            ))
            .await
            .map(|_| ()),
    };
    match r {
        Ok(()) => see_other(&format!("/ui/deployments/{}", layout::seg(id))),
        Err(s) => see_other(&format!(
            "/ui/deployments/{}?{}",
            layout::seg(id),
            serde_urlencoded::to_string([("error", format!("{what}: {}", s.message()))])
                .unwrap_or_default()
        )),
    }
}

pub async fn stop(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> Response {
    act(&d, &ctx, &id, "stop").await
}

pub async fn renew(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> Response {
    act(&d, &ctx, &id, "renew").await
}

pub async fn release(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> Response {
    act(&d, &ctx, &id, "release").await
}
