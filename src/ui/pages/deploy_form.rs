//! The deploy form: image, command, resources, strategy, priority,
//! lease. The deploy is the API's own (`ResourceService::Deploy`): its
//! first answer decides between the form again with the refusal by its
//! field, and the new deployment's page, which turns `running` live.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use futures::StreamExt;
use maud::{html, Markup};
use serde::Deserialize;

use super::forms::{pairs, FieldErrors};
use crate::proto::resource as pb;
use crate::proto::resource::resource_service_server::ResourceService;
use crate::ui::layout::{self, Nav};
use crate::ui::{request, respond, see_other, Ctx, Dashboard};

/// How long the form waits for the deploy's first answer before showing
/// the deployment's page (it goes on either way: the node owns it).
const FIRST_ANSWER: Duration = Duration::from_secs(2);

#[derive(Debug, Default, Clone, Deserialize)]
pub struct DeployForm {
    #[serde(default)]
    image: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    command: String,
    #[serde(default)]
    cpu: String,
    #[serde(default)]
    memory: String,
    #[serde(default)]
    gpu: String,
    #[serde(default)]
    strategy: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    priority_value: String,
    #[serde(default)]
    lease_ttl: String,
    #[serde(default)]
    restart: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    provider_id: String,
}

const FIELDS: &[&str] = &[
    "image",
    "name",
    "command",
    "cpu",
    "memory",
    "gpu",
    "strategy",
    "priority",
    "priority_value",
    "lease_ttl",
    "restart",
    "env",
    "labels",
    "provider_id",
];

const STRATEGIES: &[(&str, &str)] = &[
    ("", "the node's default"),
    ("spread", "spread"),
    ("binpack", "binpack"),
    ("round-robin", "round-robin"),
    ("weighted", "weighted"),
    ("random", "random"),
];

const PRIORITIES: &[(&str, &str)] = &[("interactive", "interactive"), ("batch", "batch")];

const RESTARTS: &[(&str, &str)] = &[
    ("never", "never"),
    ("on-failure", "on failure (3 times)"),
    ("always", "always"),
];

pub async fn deploy_form(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
) -> Response {
    render(&d, &ctx, &DeployForm::default(), &FieldErrors::default())
}

fn render(d: &Dashboard, ctx: &Ctx, f: &DeployForm, e: &FieldErrors) -> Response {
    let status = if e.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let chrome = d.chrome(ctx, None);
    respond(
        status,
        layout::page(
            "Deploy a container",
            Nav::Deployments,
            &chrome,
            form(&ctx.session.csrf, f, e),
        ),
    )
}

pub fn form(csrf: &str, f: &DeployForm, e: &FieldErrors) -> Markup {
    html! {
        form.panel method="post" action="/ui/deploy" novalidate {
            (layout::csrf(csrf))
            (e.summary())
            div.grid2 {
                (layout::field("image", "Image", &f.image, e.get("image"), "As the engine names it (nginx:1.27); no registry is needed for images it already holds."))
                (layout::field("name", "Name", &f.name, e.get("name"), "Optional; at most 63 characters."))
                (layout::field("command", "Command", &f.command, e.get("command"), "Words as a shell splits them: sh -c 'echo hi; sleep 60'. Empty: the image's own."))
                (layout::field("cpu", "CPU", &f.cpu, e.get("cpu"), "Cores as Kubernetes writes them: 500m, 2."))
                (layout::field("memory", "Memory", &f.memory, e.get("memory"), "256Mi, 2Gi."))
                (layout::field("gpu", "GPUs", &f.gpu, e.get("gpu"), "A whole number; empty is none."))
                (layout::select("strategy", "Strategy", STRATEGIES, &f.strategy))
                (layout::select("priority", "Priority class", PRIORITIES, &f.priority))
                (layout::field("priority_value", "Priority value", &f.priority_value, e.get("priority_value"), "Higher goes first within its class; -1e9 to 1e9."))
                (layout::field("lease_ttl", "Lease", &f.lease_ttl, e.get("lease_ttl"), "10m, 1h; empty is no lease."))
                (layout::select("restart", "Restart", RESTARTS, &f.restart))
                (layout::field("env", "Environment", &f.env, e.get("env"), "KEY=VALUE, comma-separated."))
                (layout::field("labels", "Labels", &f.labels, e.get("labels"), "KEY=VALUE, comma-separated."))
                (layout::field("provider_id", "Provider", &f.provider_id, e.get("provider_id"), "Place on this provider only; empty lets the mesh choose."))
            }
            button type="submit" { "Deploy" }
        }
    }
}

impl DeployForm {
    fn to_spec(&self) -> Result<pb::DeploySpec, FieldErrors> {
        let mut words = super::forms::words("command", &self.command)
            .map_err(|m| FieldErrors::one("command", m))?
            .into_iter();
        let command: Vec<String> = words.next().into_iter().collect();
        let args: Vec<String> = words.collect();
        let gpu = match self.gpu.trim() {
            "" => 0,
            g => g.parse().map_err(|_| {
                FieldErrors::one("gpu", format!("invalid gpu: {g:?} is not a whole number"))
            })?,
        };
        let priority_value = match self.priority_value.trim() {
            "" => 0,
            v => v.parse().map_err(|_| {
                FieldErrors::one(
                    "priority_value",
                    format!("invalid priority_value: {v:?} is not a whole number"),
                )
            })?,
        };
        let env = pairs("env", &self.env).map_err(|m| FieldErrors::one("env", m))?;
        let labels = pairs("labels", &self.labels).map_err(|m| FieldErrors::one("labels", m))?;
        let restart = if self.restart == "never" {
            ""
        } else {
            self.restart.as_str()
        };
        Ok(pb::DeploySpec {
            request_id: format!("{:032x}", rand::random::<u128>()),
            name: self.name.trim().to_string(),
            image: self.image.trim().to_string(),
            command,
            args,
            env: env.into_iter().collect(),
            cpu: self.cpu.trim().to_string(),
            memory: self.memory.trim().to_string(),
            gpu,
            labels: labels.into_iter().collect(),
            strategy: self.strategy.clone(),
            provider_id: self.provider_id.trim().to_string(),
            priority: self.priority.clone(),
            priority_value,
            lease_ttl: self.lease_ttl.trim().to_string(),
            restart: restart.to_string(),
            ..Default::default()
        })
    }
}

pub async fn deploy(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Form(f): Form<DeployForm>,
) -> Response {
    let spec = match f.to_spec() {
        Ok(s) => s,
        Err(e) => return render(&d, &ctx, &f, &e),
    };
    let rid = spec.request_id.clone();
    let refused = match d.resources.deploy(request(&ctx, spec)).await {
        Err(s) => Some(s),
        Ok(stream) => {
            // The deploy runs in a task the node owns; dropping the stream
            // after its first answer does not stop it.
            let mut stream = stream.into_inner();
            match tokio::time::timeout(FIRST_ANSWER, stream.next()).await {
                Ok(Some(Err(s))) => Some(s),
                _ => None,
            }
        }
    };
    match refused {
        Some(s) => {
            let e = FieldErrors::from_status(&s, FIELDS, None);
            render(&d, &ctx, &f, &e)
        }
        None => see_other(&format!("/ui/deployments/{}?new=true", layout::seg(&rid))),
    }
}
