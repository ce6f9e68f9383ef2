//! The dashboard's static files, built into the binary: htmx 2.0.10 and
//! its SSE extension (vendored unchanged from PyPI's django-htmx 1.29.0,
//! 0BSD, see `assets/ui/LICENSE-htmx`), and iarnet's own CSS and script.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

pub struct Asset {
    pub name: &'static str,
    pub mime: &'static str,
    pub body: &'static [u8],
}

pub const ASSETS: &[Asset] = &[
    Asset {
        name: "htmx.min.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/ui/htmx-2.0.10.min.js"),
    },
    Asset {
        name: "sse.min.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/ui/htmx-ext-sse-2.min.js"),
    },
    Asset {
        name: "ui.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/ui/ui.js"),
    },
    Asset {
        name: "favicon.svg",
        mime: "image/svg+xml",
        body: include_bytes!("../../assets/ui/favicon.svg"),
    },
    Asset {
        name: "ui.css",
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/ui/ui.css"),
    },
];

/// The build's version: an asset URL changes with every release, so
/// browsers may cache them for a long time.
const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn url(name: &str) -> String {
    format!("/ui/assets/{name}?v={VERSION}")
}

pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

pub fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(a) = find(name) else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    let etag = format!("\"{VERSION}-{}\"", a.body.len());
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    (
        [
            (header::CONTENT_TYPE, a.mime.to_string()),
            (header::CACHE_CONTROL, "public, max-age=86400".to_string()),
            (header::ETAG, etag),
        ],
        a.body,
    )
        .into_response()
}
