//! The web dashboard every node serves under `/ui/` on `listen_addr`:
//! server-rendered HTML (maud), htmx for forms without reloads, one
//! Server-Sent Events stream per page for live updates, SVG charts from
//! ring buffers. It calls the same gRPC service code as the APIs (each
//! request carries the logged-in caller), so every rule, check and audit
//! record is the same one.
//!
//! # Layout
//! - `session`: login sessions and their CSRF tokens; `guard`: the
//!   middleware (session, token check, CSRF, security headers), login and
//!   logout.
//! - `history`: ring buffers and recent events; `charts`: SVG from them.
//! - `live`: the SSE stream of a page, with back-pressure.
//! - `layout`: the page shell and helpers; `assets`: built-in files.
//! - `pages`: one module per page, each rendering full pages and the
//!   fragments its stream refreshes.

pub mod assets;
pub mod charts;
mod guard;
pub mod history;
pub mod layout;
mod live;
pub mod pages;
pub mod session;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::Markup;
use tokio_util::sync::CancellationToken;

use crate::api::admin::AdminApi;
use crate::api::apps::ApplicationApi;
use crate::api::resources::ResourceApi;
use crate::api::swarm::SwarmApi;
use crate::app::Applications;
use crate::node::shared::Shared;
use crate::placement::Manager;
use crate::security::Caller;
use history::Recorder;
use layout::{Chrome, Nav};
use session::{Session, Sessions};

/// The dashboard of one node.
pub struct Dashboard {
    pub(crate) shared: Arc<Shared>,
    pub(crate) manager: Arc<Manager>,
    pub(crate) resources: ResourceApi,
    pub(crate) admin: AdminApi,
    pub(crate) swarm: SwarmApi,
    pub(crate) apps: ApplicationApi,
    pub(crate) applications: Arc<Applications>,
    pub(crate) sessions: Sessions,
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) live: live::Live,
    /// Failed logins per source address.
    logins: crate::security::limiter::Limiter,
    /// Cookies are Secure when the node serves HTTPS.
    secure: bool,
    /// This node's session cookie.
    cookie: String,
    stop: CancellationToken,
}

/// Who is asking, as the guard found them.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub caller: Caller,
    pub session: Session,
}

impl Dashboard {
    pub fn new(
        shared: Arc<Shared>,
        manager: Arc<Manager>,
        resources: ResourceApi,
        applications: Arc<Applications>,
        stop: CancellationToken,
    ) -> Dashboard {
        Dashboard {
            admin: AdminApi::new(shared.clone()),
            swarm: SwarmApi::new(shared.clone(), manager.clone()),
            apps: ApplicationApi::new(applications.clone(), shared.audit.clone()),
            secure: shared.security.tls.is_some(),
            cookie: session::cookie_name(manager.node_id()),
            shared,
            manager,
            resources,
            applications,
            sessions: Sessions::default(),
            recorder: Arc::default(),
            live: live::Live::default(),
            // Five tries, then one every 12 seconds.
            logins: crate::security::limiter::Limiter::new(1.0 / 12.0, 5.0),
            stop,
        }
    }

    /// The loop that fills the charts and events; it stops with the node.
    pub fn recorder_loop(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        history::run(
            self.recorder.clone(),
            self.shared.clone(),
            self.manager.clone(),
            self.stop.child_token(),
        )
    }

    pub fn router(self: Arc<Self>) -> Router {
        use pages::{apps, deployments, files, logs, mesh, overview, resources};
        Router::new()
            .route(
                "/ui",
                get(|| async { axum::response::Redirect::permanent("/ui/") }),
            )
            .route("/ui/", get(overview::page))
            .route("/ui/login", get(guard::login_page).post(guard::login))
            .route("/ui/logout", post(guard::logout))
            .route("/ui/assets/{name}", get(guard::asset))
            .route("/ui/events", get(live::events))
            .route("/ui/resources", get(resources::page).post(resources::add))
            .route("/ui/resources/{id}/remove", post(resources::remove))
            .route("/ui/resources/{id}/refresh", post(resources::refresh))
            .route("/ui/mesh", get(mesh::page).post(mesh::add_peer))
            .route("/ui/deployments", get(deployments::list))
            .route(
                "/ui/deploy",
                get(deployments::deploy_form).post(deployments::deploy),
            )
            .route("/ui/deployments/{id}", get(deployments::detail))
            .route("/ui/deployments/{id}/stop", post(deployments::stop))
            .route("/ui/deployments/{id}/renew", post(deployments::renew))
            .route("/ui/deployments/{id}/release", post(deployments::release))
            .route("/ui/deployments/{id}/logs", get(logs::page))
            .route("/ui/apps", get(apps::list).post(apps::import))
            .route("/ui/apps/{id}", get(apps::detail))
            .route("/ui/apps/{id}/deploy", post(apps::deploy))
            .route("/ui/apps/{id}/stop", post(apps::stop))
            .route("/ui/apps/{id}/analyze", post(apps::analyze))
            .route("/ui/apps/{id}/pull", post(apps::pull))
            .route("/ui/apps/{id}/delete", post(apps::delete))
            .route("/ui/apps/{id}/files", get(files::browse).post(files::save))
            // A saved file (1 MiB at most) percent-encoded in a form.
            .layer(axum::extract::DefaultBodyLimit::max(guard::MAX_FORM))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                guard::guard,
            ))
            .with_state(self)
    }

    /// Live pages open now (their streams).
    pub fn live_clients(&self) -> usize {
        self.live.clients()
    }

    /// The shell's facts for this request; `live` names the page's stream.
    pub(crate) fn chrome(&self, ctx: &Ctx, live: Option<String>) -> Chrome {
        Chrome {
            node: self.shared.config.node_name.clone(),
            user: ctx.session.token.as_ref().map(|_| ctx.session.name.clone()),
            csrf: ctx.session.csrf.clone(),
            live,
        }
    }
}

/// A gRPC request carrying the dashboard's caller, for the same checks
/// and audit records as the API.
pub(crate) fn request<T>(ctx: &Ctx, body: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.extensions_mut().insert(ctx.caller.clone());
    r
}

/// A rendered page with its status.
pub(crate) fn respond(status: StatusCode, m: Markup) -> Response {
    (status, Html(m.into_string())).into_response()
}

/// A page that says what went wrong, with the status the API would give.
pub(crate) fn failure(d: &Dashboard, ctx: &Ctx, nav: Nav, s: &tonic::Status) -> Response {
    let status = crate::api::http::http_status(s.code());
    let body = layout::notice("error", s.message());
    respond(
        status,
        layout::page(
            status.canonical_reason().unwrap_or("Error"),
            nav,
            &d.chrome(ctx, None),
            body,
        ),
    )
}

/// After a form: back to a page (303, so a reload does not post again).
pub(crate) fn see_other(to: &str) -> Response {
    axum::response::Redirect::to(to).into_response()
}

#[cfg(test)]
mod tests;
