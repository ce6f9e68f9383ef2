//! A deployment's log viewer: the last lines on load (readable without
//! JavaScript, searchable by `?q=`), then new lines over the page's
//! stream. It keeps at most 50,000 characters, as Nomad's viewer does,
//! and shows control characters as escapes rather than obeying them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use futures::StreamExt;
use maud::{html, Markup};
use serde::Deserialize;

use super::Page;
use crate::proto::resource as pb;
use crate::proto::resource::resource_service_server::ResourceService;
use crate::ui::layout::{self, Nav};
use crate::ui::{failure, request, respond, Ctx, Dashboard};

/// Characters a page keeps at most (the script trims the same).
pub const MAX_CHARS: usize = 50_000;
/// Lines read for a first look.
const TAIL: u32 = 500;
/// A first look waits for the provider this long at most.
const READ_FOR: Duration = Duration::from_secs(3);

#[derive(Debug, Default, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    q: String,
}

pub async fn page(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> Response {
    let req = request(
        &ctx,
        pb::LogsRequest {
            id: id.clone(),
            tail: TAIL,
            follow: false,
        },
    );
    let mut stream = match d.resources.logs(req).await {
        Ok(s) => s.into_inner(),
        Err(s) => return failure(&d, &ctx, Nav::Deployments, &s),
    };
    let mut entries = Vec::new();
    let _ = tokio::time::timeout(READ_FOR, async {
        while let Some(Ok(e)) = stream.next().await {
            entries.push(e);
        }
    })
    .await;
    let q = query.q.to_lowercase();
    entries.retain(|e| q.is_empty() || e.text.to_lowercase().contains(&q));
    let page = Page::Logs(id.clone());
    let body = html! {
        p { a href={ "/ui/deployments/" (layout::seg(&id)) } { "Back to the deployment" } }
        form.filters method="get" role="search" {
            div.field {
                label for="log-search" { "Search" }
                input #log-search type="search" name="q" value=(query.q);
            }
            div.field {
                label for="log-follow" { "Follow" }
                input #log-follow type="checkbox" checked;
            }
            button type="submit" { "Search" }
        }
        div.log-pane tabindex="0" role="log" aria-label="Log lines" {
            div #log-lines sse-swap="log-reset" { (lines(&entries)) }
        }
        div.hidden sse-swap="log" hx-target="#log-lines" hx-swap="beforeend" {}
    };
    let chrome = d.chrome(&ctx, Some(page.stream()));
    respond(
        StatusCode::OK,
        layout::page(&format!("Logs of {id}"), Nav::Deployments, &chrome, body),
    )
}

/// Lines as the viewer shows them, the newest last; at most `MAX_CHARS`.
pub fn lines(entries: &[pb::LogEntry]) -> Markup {
    let mut budget = MAX_CHARS;
    let mut start = entries.len();
    while start > 0 {
        let n = entries[start - 1].text.len();
        if n > budget {
            break;
        }
        budget -= n;
        start -= 1;
    }
    html! {
        @for e in &entries[start..] {
            div class=[e.stderr.then_some("err")] { (layout::visible(e.text.trim_end_matches('\n'))) }
        }
    }
}

/// What the viewer shows when the logs cannot be read.
pub fn ended(why: &str) -> Markup {
    html! { div.err { "[no logs: " (why) "]" } }
}
