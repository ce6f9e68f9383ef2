//! The dashboard's middleware: find the session, pass its token through
//! the node's security checks (the same token list, rate limits and audit
//! names as the API), check every form's CSRF token, and send strict
//! security headers. Also the login and logout routes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::layout::{self, Chrome, Nav};
use super::session::{self, Session};
use super::{respond, see_other, Ctx, Dashboard};
use crate::security::{Caller, Surface};

/// Largest form accepted (a file saved from the code browser, escaped).
pub const MAX_FORM: usize = 3 * crate::app::files::MAX_FILE_BYTES as usize;

/// No inline script or style, nothing from elsewhere, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

type Ui = State<Arc<Dashboard>>;

pub async fn guard(State(d): Ui, req: Request, next: Next) -> Response {
    let mut resp = admit(&d, req, next).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

fn remote(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

fn session_of(d: &Dashboard, headers: &HeaderMap) -> Option<Session> {
    let cookie = headers.get(header::COOKIE)?.to_str().ok()?;
    d.sessions
        .get(session::cookie_value(cookie, &d.cookie)?, Instant::now())
}

async fn admit(d: &Dashboard, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/ui/assets/") || path == "/ui" {
        return next.run(req).await;
    }
    let existing = session_of(d, req.headers());
    if path == "/ui/login" {
        if let Some(s) = existing {
            req.extensions_mut().insert(s);
        }
        return next.run(req).await;
    }
    let needs_token = d.shared.security.requires_token();
    let (session, new_cookie) = match existing {
        Some(s) if s.token.is_some() || !needs_token => (s, None),
        _ if needs_token => return to_login(&req),
        _ => {
            let s = d.sessions.start(None, "anonymous".into(), Instant::now());
            let cookie = session::set_cookie(&d.cookie, &s, d.secure);
            (s, Some(cookie))
        }
    };
    let caller = match d.shared.security.admit_surface(
        Surface::Management,
        remote(&req),
        None,
        session.authorization().as_deref(),
    ) {
        Ok(c) => c,
        Err(s) if s.code() == tonic::Code::Unauthenticated => {
            // The token was taken off the node's list: log in again.
            d.sessions.end(&session.id);
            return to_login(&req);
        }
        Err(s) => return plain(crate::api::http::http_status(s.code()), s.message()),
    };
    if req.method() == Method::POST {
        req = match checked_form(&session, req).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
    }
    req.extensions_mut().insert(Ctx { caller, session });
    let mut resp = next.run(req).await;
    if let Some(c) = new_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// A page load goes to the login form; a form post or stream gets 401.
fn to_login(req: &Request) -> Response {
    if req.method() == Method::GET && req.uri().path() != "/ui/events" {
        let next = req.uri().path_and_query().map_or("/ui/", |p| p.as_str());
        let q = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
        return see_other(&format!("/ui/login?{q}"));
    }
    plain(
        StatusCode::UNAUTHORIZED,
        "log in first: open /ui/login and give a token from auth.tokens",
    )
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

/// Reads a form post whole (up to `MAX_FORM`), refuses one from another
/// site or without this session's CSRF token, and hands it on.
async fn checked_form(s: &Session, req: Request) -> Result<Request, Response> {
    let cross_site = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !matches!(v, "same-origin" | "none"));
    if cross_site {
        return Err(plain(
            StatusCode::FORBIDDEN,
            "forms are accepted only from this node's own pages",
        ));
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
        plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the form is over {MAX_FORM} bytes"),
        )
    })?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let token = fields
        .iter()
        .find(|(k, _)| k == "_csrf")
        .map_or("", |(_, v)| v.as_str());
    if !s.csrf_matches(token) {
        return Err(plain(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or stale: reload the page and send it again",
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

pub async fn asset(
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    super::assets::serve(&name, &headers)
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: String,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// Only a path of this dashboard: never another site.
fn safe_next(next: &str) -> &str {
    if next.starts_with("/ui/") && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/ui/"
    }
}

pub async fn login_page(
    State(d): Ui,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    if !d.shared.security.requires_token() {
        return see_other("/ui/");
    }
    respond(StatusCode::OK, login_markup(&d, safe_next(&q.next), None))
}

pub fn login_markup(d: &Dashboard, next: &str, error: Option<&str>) -> maud::Markup {
    let chrome = Chrome {
        node: d.shared.config.node_name.clone(),
        ..Default::default()
    };
    let body = html! {
        form.panel method="post" action="/ui/login" hx-boost="false" {
            p { "This node asks for a token (one of " code { "auth.tokens" } ")." }
            input type="hidden" name="next" value=(next);
            (layout::field_typed("token", "Token", "password", "", error, "Kept on the node for this session only; never shown again."))
            button type="submit" { "Log in" }
        }
    };
    layout::page("Log in", Nav::Login, &chrome, body)
}

pub async fn login(
    State(d): Ui,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(&f.next).to_string();
    if !d.shared.security.requires_token() {
        return see_other(&next);
    }
    let ip = addr.ip().to_string();
    if let Err(wait) = d.logins.take(&ip, Instant::now()) {
        let msg = format!("too many tries from {ip}: wait {} s", wait.as_secs().max(1));
        return respond(
            StatusCode::TOO_MANY_REQUESTS,
            login_markup(&d, &next, Some(&msg)),
        );
    }
    let bearer = format!("Bearer {}", f.token.trim());
    let checked = d.shared.security.admit_surface(
        Surface::Management,
        Some(addr),
        None,
        Some(bearer.as_bytes()),
    );
    match checked {
        Ok(Caller::Token { name, .. }) => {
            let s = d.sessions.start(
                Some(f.token.trim().to_string()),
                name.clone(),
                Instant::now(),
            );
            d.shared
                .audit
                .record("ui.login", &format!("token:{name}@{addr}"), "ok", json!({}));
            let mut resp = see_other(&next);
            if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&d.cookie, &s, d.secure)) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Ok(_) => see_other(&next),
        Err(s) => {
            d.shared.audit.record(
                "ui.login",
                &format!("anonymous@{addr}"),
                "failed",
                json!({"error": s.message()}),
            );
            let status = crate::api::http::http_status(s.code());
            respond(
                status,
                login_markup(&d, &next, Some("token: not accepted by this node")),
            )
        }
    }
}

pub async fn logout(State(d): Ui, Extension(ctx): Extension<Ctx>) -> Response {
    d.sessions.end(&ctx.session.id);
    d.shared
        .audit
        .record("ui.logout", &ctx.caller.to_string(), "ok", json!({}));
    let mut resp = see_other(if d.shared.security.requires_token() {
        "/ui/login"
    } else {
        "/ui/"
    });
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(&d.cookie, d.secure)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
