//! The page shell every dashboard page shares (head, navigation, who is
//! logged in) and the small formatting helpers pages use. maud escapes
//! every interpolated value, so a hostile name or label renders as text.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::assets;

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Resources,
    Mesh,
    Deployments,
    Applications,
    Login,
}

const NAV: &[(Nav, &str, &str)] = &[
    (Nav::Overview, "/ui/", "Overview"),
    (Nav::Resources, "/ui/resources", "Resources"),
    (Nav::Mesh, "/ui/mesh", "Mesh"),
    (Nav::Deployments, "/ui/deployments", "Deployments"),
    (Nav::Applications, "/ui/apps", "Applications"),
];

/// What the shell needs to know about the request.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    /// The node serving the page.
    pub node: String,
    /// Who is logged in; None on a node without tokens.
    pub user: Option<String>,
    /// The session's CSRF token, echoed by every form.
    pub csrf: String,
    /// The page's live stream (`/ui/events?page=…`), if it has one.
    pub live: Option<String>,
}

/// A whole page. `htmx` settings go in a meta tag: no inline script, so
/// the Content-Security-Policy can forbid it.
pub fn page(title: &str, nav: Nav, chrome: &Chrome, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=(HTMX_CONFIG);
                title { (title) " · iarnet" }
                link rel="icon" type="image/svg+xml" href=(assets::url("favicon.svg"));
                link rel="stylesheet" href=(assets::url("ui.css"));
                script src=(assets::url("htmx.min.js")) defer {}
                script src=(assets::url("sse.min.js")) defer {}
                script src=(assets::url("ui.js")) defer {}
            }
            body hx-boost="true" {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "iarnet" }
                    nav aria-label="Sections" {
                        ul {
                            @for (n, href, label) in NAV {
                                li {
                                    @if *n == nav {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    span.node { "node " code { (chrome.node) } }
                    @if let Some(user) = &chrome.user {
                        form.logout method="post" action="/ui/logout" hx-boost="false" {
                            (csrf(&chrome.csrf))
                            span { "signed in as " strong { (user) } }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                @match &chrome.live {
                    Some(url) => main #main hx-ext="sse" sse-connect=(url) { h1 { (title) } (body) },
                    None => main #main { h1 { (title) } (body) },
                }
            }
        }
    }
}

/// htmx settings: no indicator `<style>` (the CSP forbids inline styles),
/// no eval, and form answers with field errors (400, 422) are shown, not
/// treated as failures.
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"historyCacheSize":0,"responseHandling":[{"code":"204","swap":false},{"code":"[23]..","swap":true},{"code":"(400|401|404|409|422|429)","swap":true,"error":false},{"code":"...","swap":false,"error":true}]}"#;

/// The hidden field every form carries.
pub fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="_csrf" value=(token); }
}

/// A notice above a form or table.
pub fn notice(kind: &str, text: &str) -> Markup {
    html! { p class={ "notice " (kind) } role=(if kind == "error" { "alert" } else { "status" }) { (text) } }
}

/// A labelled text field with its error, linked for screen readers.
pub fn field(name: &str, label: &str, value: &str, error: Option<&str>, hint: &str) -> Markup {
    field_typed(name, label, "text", value, error, hint)
}

pub fn field_typed(
    name: &str,
    label: &str,
    kind: &str,
    value: &str,
    error: Option<&str>,
    hint: &str,
) -> Markup {
    let id = format!("f-{name}");
    let err_id = format!("{id}-error");
    let hint_id = format!("{id}-hint");
    let described = match (error.is_some(), hint.is_empty()) {
        (true, _) => Some(err_id.clone()),
        (false, false) => Some(hint_id.clone()),
        (false, true) => None,
    };
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) name=(name) type=(kind) value=(value)
                aria-invalid=[error.map(|_| "true")] aria-describedby=[described];
            @if let Some(e) = error {
                p.field-error id=(err_id) { (e) }
            } @else if !hint.is_empty() {
                p.hint id=(hint_id) { (hint) }
            }
        }
    }
}

/// A select with the current value chosen.
pub fn select(name: &str, label: &str, options: &[(&str, &str)], current: &str) -> Markup {
    let id = format!("f-{name}");
    html! {
        div.field {
            label for=(id) { (label) }
            select id=(id) name=(name) {
                @for (value, text) in options {
                    option value=(value) selected[*value == current] { (text) }
                }
            }
        }
    }
}

/// A one-button form (stop, remove, refresh): POST with the CSRF token.
pub fn action(url: &str, label: &str, token: &str, danger: bool) -> Markup {
    html! {
        form.inline method="post" action=(url) {
            (csrf(token))
            button type="submit" class=[danger.then_some("danger")] { (label) }
        }
    }
}

/// A value as one URL path segment: a provider id's `/` becomes `%2F`
/// (the router decodes it back).
pub fn seg(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Text that may hold terminal control characters (a log line, a build
/// line): each becomes a visible escape such as `\x1b`, tabs stay.
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' && c != '\n' {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

pub fn bytes(b: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn cores(millis: u64) -> String {
    if millis % 1000 == 0 {
        format!("{}", millis / 1000)
    } else {
        format!("{:.2}", millis as f64 / 1000.0)
    }
}

/// "3 s ago", "5 min ago" from seconds.
pub fn ago(secs: f64) -> String {
    if secs < 0.0 {
        return "never".into();
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

/// A Unix time as RFC 3339 (seconds).
pub fn when(unix: f64) -> String {
    if unix <= 0.0 {
        return "—".into();
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(unix);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A state as a badge whose class the stylesheet colours.
pub fn badge(state: &str) -> Markup {
    let class = match state {
        "running" | "healthy" | "active" | "alive" | "built" => "ok",
        "pending" | "queued" | "pulling" | "starting" | "deploying" | "building" | "suspect"
        | "partial" | "analyzed" | "created" => "wait",
        "failed" | "unhealthy" | "dead" | "lost" => "bad",
        _ => "idle",
    };
    html! { span class={ "badge " (class) } { (state) } }
}

/// Markup already escaped (a rendered fragment), for SSE payloads.
pub fn raw(s: String) -> Markup {
    PreEscaped(s)
}
