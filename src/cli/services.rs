//! `iarnet services [ID]` and `iarnet scale ID N`: the services (deploys
//! with `--replicas`) kept at a node; one of them, from any node.

use std::io::Write;

use super::client::{json_line, rpc, ClientError, Output, Target};
use crate::proto::resource as pb;
use crate::proto::resource::resource_service_client::ResourceServiceClient;

#[derive(Debug, clap::Subcommand)]
pub enum ServiceCommand {
    /// Services kept at the node (deploys with --replicas): wanted and
    /// running replicas, spread and skew; with an ID, its replicas too.
    Services {
        #[command(flatten)]
        target: Target,
        id: Option<String>,
    },
    /// Set a service's replica count: places the next replicas, or stops
    /// the highest ones (0 stops them all; the service stays).
    Scale {
        #[command(flatten)]
        target: Target,
        id: String,
        replicas: u32,
    },
}

pub async fn run(command: ServiceCommand, out: &mut impl Write) -> Result<(), ClientError> {
    match command {
        ServiceCommand::Services { target, id: None } => {
            let mut api = ResourceServiceClient::new(target.connect().await?);
            let list = api
                .list_services(target.request(pb::ListServicesRequest {}))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            match target.output {
                Output::Json => json_line(out, &list)?,
                Output::Table => out.write_all(table(&list.services).as_bytes())?,
            }
        }
        ServiceCommand::Services {
            target,
            id: Some(id),
        } => {
            let mut api = ResourceServiceClient::new(target.connect().await?);
            let s = api
                .get_service(target.request(pb::GetServiceRequest { id }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            print(out, &target, &s)?;
        }
        ServiceCommand::Scale {
            target,
            id,
            replicas,
        } => {
            let mut api = ResourceServiceClient::new(target.connect().await?);
            let s = api
                .scale(target.request(pb::ScaleRequest { id, replicas }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            print(out, &target, &s)?;
        }
    }
    Ok(())
}

fn print(out: &mut impl Write, target: &Target, s: &pb::Service) -> Result<(), ClientError> {
    match target.output {
        Output::Json => json_line(out, s)?,
        Output::Table => out.write_all(service(s).as_bytes())?,
    }
    Ok(())
}

fn spread_text(s: &pb::Service) -> String {
    if s.spread.is_empty() {
        "-".into()
    } else {
        format!(
            "{} (max skew {}, {})",
            s.spread, s.max_skew, s.when_unsatisfiable
        )
    }
}

fn table(list: &[pb::Service]) -> String {
    let rows = list
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.image.clone(),
                format!("{}/{}", s.running, s.replicas),
                spread_text(s),
                s.skew.to_string(),
            ]
        })
        .collect();
    super::render::table(&["SERVICE", "IMAGE", "RUNNING", "SPREAD", "SKEW"], rows)
}

/// One service with its replicas, as after a deploy or a scale.
pub fn service(s: &pb::Service) -> String {
    let mut out = format!(
        "service {} ({}): {}/{} running, home {}\nspread:  {}\n",
        s.id,
        s.image,
        s.running,
        s.replicas,
        s.home_id,
        spread_text(s)
    );
    if !s.per_domain.is_empty() {
        let per: Vec<String> = s
            .per_domain
            .iter()
            .map(|(d, n)| format!("{d}={n}"))
            .collect();
        out.push_str(&format!(
            "per {}: {} (skew {})\n",
            s.spread,
            per.join(", "),
            s.skew
        ));
    }
    out.push('\n');
    let rows = s
        .deployments
        .iter()
        .map(|d| {
            vec![
                d.request_id.clone(),
                d.id.clone(),
                d.state.clone(),
                d.attempt.to_string(),
                d.provider_id.clone(),
                d.owner_id.clone(),
            ]
        })
        .collect();
    out.push_str(&super::render::table(
        &["REPLICA", "ID", "STATE", "ATTEMPT", "PROVIDER", "OWNER"],
        rows,
    ));
    out
}
