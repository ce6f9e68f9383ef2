//! The code browser: an application's file tree, one file's text, and
//! saving an edit (through `ApplicationService::WriteFile`, with its
//! checks on paths and sizes).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;

use crate::proto::application as pb;
use crate::proto::application::application_service_server::ApplicationService;
use crate::ui::layout::{self, Nav};
use crate::ui::{failure, request, respond, see_other, Ctx, Dashboard};

#[derive(Debug, Default, Deserialize)]
pub struct BrowseQuery {
    #[serde(default)]
    file: String,
    #[serde(default)]
    saved: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct SaveForm {
    #[serde(default)]
    path: String,
    #[serde(default)]
    content: String,
}

pub async fn browse(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<BrowseQuery>,
) -> Response {
    let tree = match d
        .apps
        .list_files(request(
            &ctx,
            pb::ListFilesRequest {
                id: id.clone(),
                path: String::new(),
            },
        ))
        .await
    {
        Ok(t) => t.into_inner(),
        Err(s) => return failure(&d, &ctx, Nav::Applications, &s),
    };
    let file = if q.file.is_empty() {
        None
    } else {
        match d
            .apps
            .read_file(request(
                &ctx,
                pb::ReadFileRequest {
                    id: id.clone(),
                    path: q.file.clone(),
                },
            ))
            .await
        {
            Ok(f) => Some(f.into_inner()),
            Err(s) => return failure(&d, &ctx, Nav::Applications, &s),
        }
    };
    let body = html! {
        p { a href={ "/ui/apps/" (layout::seg(&id)) } { "Back to the application" } }
        @if q.saved { (layout::notice("ok", &format!("Saved {}.", q.file))) }
        @if let Some(f) = &file {
            (editor(&id, &ctx.session.csrf, &f.path, &f.content))
        }
        h2 { "Files" }
        ul.tree {
            @for e in &tree.entries {
                li {
                    @if e.r#type == "dir" {
                        span.muted { (e.path) "/" }
                    } @else {
                        a href={ "/ui/apps/" (layout::seg(&id)) "/files?" (serde_urlencoded::to_string([("file", &e.path)]).unwrap_or_default()) } { (e.path) }
                    }
                }
            }
        }
        @if tree.truncated { p.muted { "The listing stopped at its limit." } }
    };
    let chrome = d.chrome(&ctx, None);
    respond(
        StatusCode::OK,
        layout::page("Code", Nav::Applications, &chrome, body),
    )
}

fn editor(id: &str, csrf: &str, path: &str, content: &str) -> maud::Markup {
    html! {
        h2 { code { (path) } }
        form method="post" action={ "/ui/apps/" (layout::seg(id)) "/files" } {
            (layout::csrf(csrf))
            input type="hidden" name="path" value=(path);
            label for="f-content" { "Content of " (path) }
            textarea.code #f-content name="content" spellcheck="false" { (content) }
            button type="submit" { "Save" }
        }
    }
}

pub async fn save(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    Form(f): Form<SaveForm>,
) -> Response {
    let req = pb::WriteFileRequest {
        id: id.clone(),
        path: f.path.clone(),
        content: f.content.clone(),
    };
    match d.apps.write_file(request(&ctx, req)).await {
        Ok(_) => see_other(&format!(
            "/ui/apps/{}/files?{}&saved=true",
            layout::seg(&id),
            serde_urlencoded::to_string([("file", &f.path)]).unwrap_or_default()
        )),
        Err(s) => {
            let status = crate::api::http::http_status(s.code());
            let body = html! {
                (layout::notice("error", s.message()))
                (editor(&id, &ctx.session.csrf, &f.path, &f.content))
            };
            respond(
                status,
                layout::page("Code", Nav::Applications, &d.chrome(&ctx, None), body),
            )
        }
    }
}
