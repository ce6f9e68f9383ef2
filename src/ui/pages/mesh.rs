//! Mesh: every member with its state, generation, incarnation, when it
//! was last heard, the round-trip time of this node's gossip to it, and
//! its providers; the swarm groups with their leaders and the pools with
//! their capacity; and a form to add a peer by address.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;

use super::forms::FieldErrors;
use super::{all_live, Page};
use crate::api::http::views::NodesReport;
use crate::proto::admin::admin_server::Admin;
use crate::proto::admin::AddPeerRequest;
use crate::proto::swarm as spb;
use crate::proto::swarm::swarm_server::Swarm;
use crate::ui::layout::{self, Nav};
use crate::ui::{request, respond, see_other, Ctx, Dashboard};

/// Providers named per member, at most (the resources page lists all).
const CHIPS: usize = 8;

#[derive(Debug, Default, Deserialize)]
pub struct Flash {
    #[serde(default)]
    added: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct PeerForm {
    #[serde(default)]
    address: String,
}

pub async fn page(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Query(flash): Query<Flash>,
) -> Response {
    render(&d, &ctx, &flash, "", &FieldErrors::default()).await
}

async fn render(
    d: &Dashboard,
    ctx: &Ctx,
    flash: &Flash,
    address: &str,
    e: &FieldErrors,
) -> Response {
    let status = if e.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = html! {
        @if !flash.added.is_empty() { (layout::notice("ok", &format!("Peer {} answered and was added.", flash.added))) }
        (all_live(fragments(d, ctx).await))
        h2 { "Add a peer" }
        form.panel method="post" action="/ui/mesh" novalidate {
            (layout::csrf(&ctx.session.csrf))
            (e.summary())
            (layout::field("address", "Address", address, e.get("address"), "host:port of the peer's gRPC listener (peer_listen_addr)."))
            button type="submit" { "Add peer" }
        }
    };
    let chrome = d.chrome(ctx, Some(Page::Mesh.stream()));
    respond(status, layout::page("Mesh", Nav::Mesh, &chrome, body))
}

pub async fn fragments(d: &Dashboard, ctx: &Ctx) -> Vec<(&'static str, Markup)> {
    let members = match crate::api::http::nodes_report(&d.admin, &d.manager).await {
        Ok(r) => members(&r),
        Err(s) => layout::notice("error", s.message()),
    };
    let groups = match d
        .swarm
        .list_groups(request(ctx, spb::ListGroupsRequest {}))
        .await
    {
        Ok(r) => groups(&r.into_inner().groups),
        Err(s) => layout::notice("error", s.message()),
    };
    let pools = match d
        .swarm
        .list_pools(request(ctx, spb::ListPoolsRequest {}))
        .await
    {
        Ok(r) => pools(&r.into_inner().pools),
        Err(s) => layout::notice("error", s.message()),
    };
    vec![("members", members), ("groups", groups), ("pools", pools)]
}

/// Swarm groups: members, leader with its term, or why there is none.
pub fn groups(list: &[spb::Group]) -> Markup {
    html! {
        h2 { "Swarm groups" }
        @if list.is_empty() {
            p.muted { "No groups. Create one with " code { "iarnet group create NAME" } "." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Group" } th scope="col" { "Members" }
                    th scope="col" { "Leader" } th scope="col" { "Term" }
                } }
                tbody {
                    @for g in list {
                        tr {
                            td { (g.name) }
                            td {
                                (g.members.len()) " of " (g.max_members) br;
                                @for m in &g.members {
                                    span.label-chip { (if m.name.is_empty() { &m.id } else { &m.name }) " " (layout::badge(&m.state)) }
                                }
                            }
                            td {
                                @if g.leader.is_empty() { span.muted { (g.reason) } }
                                @else { code { (g.leader) } }
                            }
                            td { (g.term) }
                        }
                    }
                }
            }
        }
    }
}

/// Pools with their members and capacity.
pub fn pools(list: &[spb::Pool]) -> Markup {
    html! {
        h2 { "Pools" }
        @if list.is_empty() {
            p.muted { "No pools. Create one with " code { "iarnet pool create NAME" } "." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Pool" } th scope="col" { "Nodes" } th scope="col" { "Providers" }
                    th scope="col" { "Free / total" } th scope="col" { "Description" }
                } }
                tbody {
                    @for p in list {
                        tr {
                            td { (p.name) }
                            td { (p.members.len()) }
                            td { (p.providers) }
                            td { (free_of_total(p)) }
                            td { (p.description) }
                        }
                    }
                }
            }
        }
    }
}

pub fn members(r: &NodesReport) -> Markup {
    html! {
        p { (r.alive) " alive · " (r.suspect) " suspect · " (r.dead) " dead · " (r.left) " left" }
        table {
            thead { tr {
                th scope="col" { "Name" } th scope="col" { "Address" } th scope="col" { "State" }
                th scope="col" { "Generation" } th scope="col" { "Incarnation" }
                th scope="col" { "Last heard" } th scope="col" { "Round trip" } th scope="col" { "Providers" }
            } }
            tbody {
                @for n in &r.nodes {
                    tr {
                        td { (n.name) @if n.is_self { " (this node)" } br; code.muted { (n.id) } }
                        td { code { (n.address) } }
                        td { (layout::badge(&n.state)) }
                        td { (n.generation) }
                        td { (n.incarnation) }
                        td { (n.last_seen.as_deref().unwrap_or("—")) }
                        td { @match n.rtt_ms { Some(ms) => (format!("{ms:.1} ms")), None => "—" } }
                        td {
                            @for p in n.providers.iter().take(CHIPS) {
                                span.label-chip { (p.kind) " " (p.id) " " (layout::badge(p.status)) }
                            }
                            @if n.providers.len() > CHIPS {
                                " and " (n.providers.len() - CHIPS) " more ("
                                a href={ "/ui/deployments?owner=" (layout::seg(&n.id)) } { "its deployments" } ")"
                            }
                        }
                    }
                }
            }
        }
    }
}

/// "CPU 3.5 / 8 · memory 6.0 / 16.0 GiB · GPUs 1 / 2" for a pool.
fn free_of_total(p: &spb::Pool) -> String {
    let c = p.capacity.unwrap_or_default();
    let (free, total) = (c.available.unwrap_or_default(), c.total.unwrap_or_default());
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    format!(
        "CPU {} / {} · memory {:.1} / {:.1} GiB · GPUs {} / {}",
        free.cpu_millis as f64 / 1000.0,
        total.cpu_millis as f64 / 1000.0,
        gib(free.memory_bytes),
        gib(total.memory_bytes),
        free.gpus,
        total.gpus
    )
}

pub async fn add_peer(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Form(f): Form<PeerForm>,
) -> Response {
    let address = f.address.trim().to_string();
    match d
        .admin
        .add_peer(request(
            &ctx,
            AddPeerRequest {
                address: address.clone(),
            },
        ))
        .await
    {
        Ok(_) => see_other(&format!(
            "/ui/mesh?{}",
            serde_urlencoded::to_string([("added", &address)]).unwrap_or_default()
        )),
        Err(s) => {
            let e = FieldErrors::from_status(&s, &["address"], Some("address"));
            let e = if e.fields.is_empty() {
                FieldErrors::one("address", s.message())
            } else {
                e
            };
            render(&d, &ctx, &Flash::default(), &address, &e).await
        }
    }
}
