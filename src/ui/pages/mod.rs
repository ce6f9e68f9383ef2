//! One module per page. Each renders its whole page for a load and the
//! fragments its live stream sends again; both come from the same
//! functions, so a refreshed fragment is exactly what a reload shows.

pub mod apps;
pub mod deploy_form;
pub mod deployments;
pub mod files;
pub mod forms;
pub mod logs;
pub mod mesh;
pub mod overview;
pub mod resources;

use maud::{html, Markup};

use super::{Ctx, Dashboard};
use deployments::Filters;

/// A page with a live stream, as its `page=` key names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    Overview,
    /// Which page of the provider table (from 1).
    Resources(usize),
    Mesh,
    Deployments(Filters),
    Deployment(String),
    Logs(String),
    Apps,
    App(String),
}

impl Page {
    pub fn parse(key: &str) -> Option<Page> {
        let (name, rest) = key.split_once(':').unwrap_or((key, ""));
        let id = || (!rest.is_empty()).then(|| rest.to_string());
        Some(match name {
            "overview" => Page::Overview,
            "resources" => Page::Resources(rest.parse().unwrap_or(1).max(1)),
            "mesh" => Page::Mesh,
            "deployments" => Page::Deployments(Filters::parse(rest).ok()?),
            "deployment" => Page::Deployment(id()?),
            "logs" => Page::Logs(id()?),
            "apps" => Page::Apps,
            "app" => Page::App(id()?),
            _ => return None,
        })
    }

    pub fn key(&self) -> String {
        match self {
            Page::Overview => "overview".into(),
            Page::Resources(n) => format!("resources:{n}"),
            Page::Mesh => "mesh".into(),
            Page::Deployments(f) => format!("deployments:{}", f.query()),
            Page::Deployment(id) => format!("deployment:{id}"),
            Page::Logs(id) => format!("logs:{id}"),
            Page::Apps => "apps".into(),
            Page::App(id) => format!("app:{id}"),
        }
    }

    /// The URL of its stream.
    pub fn stream(&self) -> String {
        let q = serde_urlencoded::to_string([("page", self.key())]).unwrap_or_default();
        format!("/ui/events?{q}")
    }
}

/// The fragments of a page, by the element id they replace.
pub async fn fragments(d: &Dashboard, ctx: &Ctx, page: &Page) -> Vec<(&'static str, Markup)> {
    match page {
        Page::Overview => overview::fragments(d, ctx).await,
        Page::Resources(n) => resources::fragments(d, ctx, *n).await,
        Page::Mesh => mesh::fragments(d, ctx).await,
        Page::Deployments(f) => deployments::list_fragments(d, ctx, f).await,
        Page::Deployment(id) => deployments::detail_fragments(d, ctx, id).await,
        Page::Logs(_) => Vec::new(),
        Page::Apps => apps::list_fragments(d, ctx).await,
        Page::App(id) => apps::detail_fragments(d, ctx, id).await,
    }
}

/// A fragment in place: the element its stream event replaces.
pub fn live(name: &str, body: Markup) -> Markup {
    html! { div id=(name) sse-swap=(name) { (body) } }
}

/// Every fragment of a page, in order, each in its place.
pub fn all_live(fragments: Vec<(&'static str, Markup)>) -> Markup {
    html! { @for (name, m) in fragments { (live(name, m)) } }
}
