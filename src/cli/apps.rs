//! `iarnet app create|ls|analyze|deploy|status|stop|pull|rm|files`: the
//! applications from Git kept at a node, over `ApplicationService`.

use std::io::Write;

use super::client::{json_line, rpc, ClientError, Output, Target};
use crate::proto::application as pb;
use crate::proto::application::application_service_client::ApplicationServiceClient;

#[derive(Debug, clap::Subcommand)]
pub enum AppCommand {
    /// Clone a Git repository's branch (shallow) into the node's workspace.
    Create {
        #[command(flatten)]
        target: Target,
        name: String,
        /// https://, git://, ssh://, file:// or user@host:path.
        git_url: String,
        #[arg(long, default_value = "main")]
        branch: String,
        /// A token for a private repository over HTTPS.
        #[arg(long, env = "IARNET_GIT_TOKEN", hide_env_values = true)]
        git_token: Option<String>,
        /// A private key file on the node, for SSH.
        #[arg(long)]
        ssh_key_file: Option<String>,
    },
    /// The applications kept at the node.
    Ls {
        #[command(flatten)]
        target: Target,
    },
    /// Find the components and their dependency graph.
    Analyze {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Deploy components (all when none are named) in dependency order.
    Deploy {
        #[command(flatten)]
        target: Target,
        id: String,
        components: Vec<String>,
        /// Stop what this rollout started when a component fails.
        #[arg(long)]
        rollback: bool,
        /// Seconds each wait for a dependency may take (default 300).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// An application and each component's state, health and placement.
    Status {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Stop components (all when none are named).
    Stop {
        #[command(flatten)]
        target: Target,
        id: String,
        components: Vec<String>,
    },
    /// Move the checkout to the branch's newest commit.
    Pull {
        #[command(flatten)]
        target: Target,
        id: String,
        /// Discard edits made in the checkout.
        #[arg(long)]
        force: bool,
    },
    /// Delete an application and its checkout.
    Rm {
        #[command(flatten)]
        target: Target,
        id: String,
        /// Stop its running components first.
        #[arg(long)]
        force: bool,
    },
    /// List the checkout's files, or print one.
    Files {
        #[command(flatten)]
        target: Target,
        id: String,
        /// A file to print, or a directory to list.
        path: Option<String>,
    },
}

pub async fn run(command: AppCommand, out: &mut impl Write) -> Result<(), ClientError> {
    match command {
        AppCommand::Create {
            target,
            name,
            git_url,
            branch,
            git_token,
            ssh_key_file,
        } => {
            let mut api = ApplicationServiceClient::new(target.connect().await?);
            let req = pb::CreateApplicationRequest {
                name,
                git_url,
                branch,
                token: git_token.unwrap_or_default(),
                ssh_key_file: ssh_key_file.unwrap_or_default(),
            };
            let a = api
                .create_application(target.request(req))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            print(out, &target, &a)?;
        }
        AppCommand::Ls { target } => {
            let mut api = ApplicationServiceClient::new(target.connect().await?);
            let list = api
                .list_applications(target.request(pb::ListApplicationsRequest {}))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            match target.output {
                Output::Json => json_line(out, &list)?,
                Output::Table => {
                    writeln!(
                        out,
                        "{:<24} {:<10} {:<12} {:>10}  GIT",
                        "ID", "STATUS", "COMMIT", "COMPONENTS"
                    )?;
                    for a in &list.applications {
                        let sha = a
                            .commit
                            .as_ref()
                            .map(|c| &c.sha[..c.sha.len().min(12)])
                            .unwrap_or("");
                        writeln!(
                            out,
                            "{:<24} {:<10} {:<12} {:>10}  {}#{}",
                            a.id,
                            a.status,
                            sha,
                            a.components.len(),
                            a.git_url,
                            a.branch
                        )?;
                    }
                }
            }
        }
        AppCommand::Analyze { target, id } => {
            let mut api = ApplicationServiceClient::new(target.connect().await?);
            let a = api
                .analyze_application(target.request(pb::ApplicationRef { id }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            match target.output {
                Output::Json => json_line(out, &a)?,
                Output::Table => {
                    writeln!(out, "from {} ({})", a.file, a.source)?;
                    components(out, &a.components)?;
                    edges(out, &a.edges)?;
                    for n in &a.notes {
                        writeln!(out, "note: {n}")?;
                    }
                }
            }
        }
        AppCommand::Deploy {
            mut target,
            id,
            components,
            rollback,
            wait,
        } => {
            // A rollout waits on every level of the graph: the call's
            // deadline covers the waits unless --timeout says more.
            let waits = std::time::Duration::from_secs(if wait == 0 { 300 } else { wait } * 4);
            target.timeout = target.timeout.max(waits);
            let mut api = ApplicationServiceClient::new(target.connect().await?);
            let req = pb::DeployComponentsRequest {
                id,
                components,
                rollback,
                wait_seconds: wait,
            };
            let a = api
                .deploy_components(target.request(req))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            print(out, &target, &a)?;
        }
        AppCommand::Status { target, id } => {
            let mut api = ApplicationServiceClient::new(target.connect().await?);
            let a = api
                .get_application(target.request(pb::ApplicationRef { id }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            print(out, &target, &a)?;
        }
        AppCommand::Stop {
            target,
            id,
            components,
        } => {
            let mut api = ApplicationServiceClient::new(target.connect().await?);
            let a = api
                .stop_components(target.request(pb::StopComponentsRequest { id, components }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            print(out, &target, &a)?;
        }
        AppCommand::Pull { target, id, force } => {
            let mut api = ApplicationServiceClient::new(target.connect().await?);
            let a = api
                .pull_application(target.request(pb::PullApplicationRequest { id, force }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            print(out, &target, &a)?;
        }
        AppCommand::Rm { target, id, force } => {
            let mut api = ApplicationServiceClient::new(target.connect().await?);
            let r = api
                .delete_application(target.request(pb::DeleteApplicationRequest { id, force }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            match target.output {
                Output::Json => json_line(out, &r)?,
                Output::Table => writeln!(out, "deleted {}", r.id)?,
            }
        }
        AppCommand::Files { target, id, path } => {
            let mut api = ApplicationServiceClient::new(target.connect().await?);
            let path = path.unwrap_or_default();
            let list = api
                .list_files(target.request(pb::ListFilesRequest {
                    id: id.clone(),
                    path: path.clone(),
                }))
                .await;
            match list {
                Ok(list) => {
                    let list = list.into_inner();
                    match target.output {
                        Output::Json => json_line(out, &list)?,
                        Output::Table => {
                            for e in &list.entries {
                                writeln!(out, "{:<4} {:>9}  {}", e.r#type, e.size, e.path)?;
                            }
                        }
                    }
                }
                // Not a directory: print the file.
                Err(s) if s.code() == tonic::Code::NotFound && !path.is_empty() => {
                    let f = api
                        .read_file(target.request(pb::ReadFileRequest { id, path }))
                        .await
                        .map_err(|s| rpc(&target, s))?
                        .into_inner();
                    match target.output {
                        Output::Json => json_line(out, &f)?,
                        Output::Table => out.write_all(f.content.as_bytes())?,
                    }
                }
                Err(s) => return Err(rpc(&target, s)),
            }
        }
    }
    Ok(())
}

fn print(out: &mut impl Write, target: &Target, a: &pb::Application) -> Result<(), ClientError> {
    match target.output {
        Output::Json => json_line(out, a)?,
        Output::Table => {
            let sha = a.commit.as_ref().map(|c| c.sha.as_str()).unwrap_or("");
            writeln!(out, "{} ({}): {}", a.id, a.status, a.git_url)?;
            writeln!(out, "branch {} at {}", a.branch, sha)?;
            if !a.modified_files.is_empty() {
                writeln!(out, "modified: {}", a.modified_files.join(", "))?;
            }
            components(out, &a.components)?;
            edges(out, &a.edges)?;
        }
    }
    Ok(())
}

fn components(out: &mut impl Write, list: &[pb::Component]) -> std::io::Result<()> {
    if list.is_empty() {
        return writeln!(out, "no components yet: run `iarnet app analyze`");
    }
    writeln!(
        out,
        "{:<16} {:<9} {:<13} {:<9} {:<20} DEPENDS ON",
        "COMPONENT", "TYPE", "STATUS", "HEALTH", "PROVIDER"
    )?;
    for c in list {
        let status = if c.status.is_empty() { "-" } else { &c.status };
        let health = if c.health.is_empty() { "-" } else { &c.health };
        let provider = if c.provider_id.is_empty() {
            "-"
        } else {
            &c.provider_id
        };
        writeln!(
            out,
            "{:<16} {:<9} {:<13} {:<9} {:<20} {}",
            c.id,
            c.r#type,
            status,
            health,
            provider,
            c.depends_on.join(",")
        )?;
    }
    Ok(())
}

fn edges(out: &mut impl Write, list: &[pb::Edge]) -> std::io::Result<()> {
    for e in list {
        writeln!(out, "  {} -> {} ({})", e.from, e.to, e.r#type)?;
    }
    Ok(())
}
