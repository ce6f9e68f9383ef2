//! Overview: the mesh at a glance — members by state, providers by tier,
//! capacity and its use, the queue, charts and recent events.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};

use super::{all_live, Page};
use crate::proto::resource as pb;
use crate::proto::resource::resource_service_server::ResourceService;
use crate::ui::charts;
use crate::ui::layout::{self, Nav};
use crate::ui::{request, respond, Ctx, Dashboard};

pub async fn page(State(d): State<Arc<Dashboard>>, Extension(ctx): Extension<Ctx>) -> Response {
    let body = all_live(fragments(&d, &ctx).await);
    let chrome = d.chrome(&ctx, Some(Page::Overview.stream()));
    respond(
        StatusCode::OK,
        layout::page("Overview", Nav::Overview, &chrome, body),
    )
}

pub async fn fragments(d: &Dashboard, ctx: &Ctx) -> Vec<(&'static str, Markup)> {
    vec![
        ("cards", cards(d, ctx).await),
        ("charts", charts_now(d)),
        ("events", events(d)),
    ]
}

async fn cards(d: &Dashboard, ctx: &Ctx) -> Markup {
    let mut members: BTreeMap<String, u32> = BTreeMap::new();
    for e in d.shared.mesh().view().iter() {
        *members.entry(e.status.as_str().to_string()).or_default() += 1;
    }
    let mut tiers: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut unhealthy = 0;
    for c in d.manager.candidates() {
        *tiers.entry(c.tier.as_str()).or_default() += 1;
        unhealthy += u32::from(!c.healthy);
    }
    let capacity = d
        .resources
        .get_capacity(request(ctx, pb::GetCapacityRequest::default()))
        .await
        .map(|r| crate::api::http::views::CapacityReport::from(&r.into_inner()));
    let queued: usize = d.manager.queued_by_class().values().sum();
    html! {
        div.cards {
            div.card {
                div.label { "Members" }
                div.value { (members.get("alive").copied().unwrap_or(0)) " alive" }
                div.sub {
                    @for (state, n) in &members { @if state != "alive" { (n) " " (state) " " } }
                }
            }
            div.card {
                div.label { "Providers" }
                div.value { (tiers.values().sum::<u32>()) }
                div.sub {
                    @for (tier, n) in &tiers { (n) " " (tier) " " }
                    @if unhealthy > 0 { "· " (unhealthy) " unhealthy" }
                }
            }
            @match &capacity {
                Ok(c) => {
                    div.card {
                        div.label { "CPU (mesh)" }
                        div.value { (charts::figure(c.mesh.available.cpu)) " free" }
                        div.sub { "of " (charts::figure(c.mesh.total.cpu)) " cores" }
                    }
                    div.card {
                        div.label { "Memory (mesh)" }
                        div.value { (charts::figure(c.mesh.available.memory)) " GiB free" }
                        div.sub { "of " (charts::figure(c.mesh.total.memory)) " GiB" }
                    }
                    div.card {
                        div.label { "GPUs (mesh)" }
                        div.value { (c.mesh.available.gpu) " free" }
                        div.sub { "of " (c.mesh.total.gpu) }
                    }
                    div.card {
                        div.label { "Storage (mesh)" }
                        div.value {
                            @match c.mesh.total.storage {
                                Some(s) => { (charts::figure(s)) " GiB" }
                                None => "not limited",
                            }
                        }
                        div.sub { (c.mesh.deployments) " deployments hold reservations" }
                    }
                }
                Err(e) => { div.card { div.label { "Capacity" } div.sub { (e.message()) } } }
            }
            div.card {
                div.label { "Queue" }
                div.value { (queued) }
                div.sub { a href="/ui/deployments?state=pending" { "waiting deployments" } }
            }
        }
    }
}

fn charts_now(d: &Dashboard) -> Markup {
    let h = d.recorder.history.lock().expect("history lock");
    html! {
        h2 { "Use over time" }
        p.muted { "One point every 2 s, the last 500 (about 17 minutes)." }
        div.charts {
            (charts::usage("CPU", &h.mesh.cpu, "cores"))
            (charts::usage("Memory", &h.mesh.memory, "GiB"))
            (charts::usage("GPUs", &h.mesh.gpus, "GPUs"))
            (charts::spark("Queue length", &h.queue, "waiting"))
            (charts::spark("Placements", &h.placements_per_minute, "per minute"))
            (charts::spark("Gossip traffic", &h.gossip_bytes_per_second, "bytes/s"))
        }
    }
}

fn events(d: &Dashboard) -> Markup {
    let h = d.recorder.history.lock().expect("history lock");
    html! {
        h2 { "Recent events" }
        @if h.events.is_empty() {
            p.muted { "Nothing has changed since this node started watching." }
        } @else {
            table {
                thead { tr { th scope="col" { "Seconds after start" } th scope="col" { "Kind" } th scope="col" { "What happened" } } }
                tbody {
                    @for e in h.events.iter().rev() {
                        tr { td { (format!("{:.0}", e.at)) } td { (e.kind) } td { (e.text) } }
                    }
                }
            }
        }
    }
}
