//! `iarnet <command>`: a client of a running node over gRPC, for operators
//! and scripts. Tables for people, `--output json` for scripts.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::render;
use crate::proto::admin::admin_client::AdminClient;
use crate::proto::admin::{GetNodeRequest, ListPeersRequest};
use crate::proto::resource as pb;
use crate::proto::resource::resource_service_client::ResourceServiceClient;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Members of the mesh as the node sees them.
    Peers {
        #[command(flatten)]
        target: Target,
        /// Include dead and departed members still remembered.
        #[arg(long)]
        all: bool,
    },
    /// Providers the node can place on: its own and those learned by gossip.
    Providers {
        #[command(flatten)]
        target: Target,
    },
    /// The node's and the mesh's capacity.
    Capacity {
        #[command(flatten)]
        target: Target,
    },
    /// Deploy a container somewhere in the mesh; shows image pull progress.
    Deploy(Box<super::deploy::DeployArgs>),
    /// Every deployment in the mesh (each once, all pages); --node for
    /// what this node placed or holds.
    Deployments(ListArgs),
    /// Deploys waiting in the node's queue: position, priority, age, reason.
    Queue {
        #[command(flatten)]
        target: Target,
    },
    /// One deployment, with its state history.
    Status {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// A deployment's output.
    Logs {
        #[command(flatten)]
        target: Target,
        id: String,
        /// Keep streaming new lines until the deployment ends.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
    },
    /// Stop a deployment and remove its container or pod.
    Stop {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Renew a deployment's lease: one more lease TTL from now, on its owner.
    Renew {
        #[command(flatten)]
        target: Target,
        id: String,
        /// Only if the lease is still this epoch (the one you were given).
        #[arg(long)]
        epoch: Option<u64>,
    },
    /// Release a deployment's lease now: its owner stops it and frees its resources.
    Release {
        #[command(flatten)]
        target: Target,
        id: String,
        /// Only if the lease is still this epoch (the one you were given).
        #[arg(long)]
        epoch: Option<u64>,
    },
    #[command(flatten)]
    Service(super::services::ServiceCommand),
    #[command(flatten)]
    Swarm(super::swarm::SwarmCommand),
    /// Applications from Git: create, analyse, deploy in order, browse.
    #[command(subcommand)]
    App(super::apps::AppCommand),
    /// Create the mesh's CA and node certificates for mutual TLS.
    #[command(subcommand)]
    Cert(super::cert::CertCommand),
    /// gRPC health check; exits 0 when the node is SERVING (for HEALTHCHECK
    /// and probes). With NODE: that member's status, response time, active
    /// allocations and load (the swarm's HealthCheck).
    Health {
        #[command(flatten)]
        target: Target,
        /// A service name ("" is the whole node).
        #[arg(long, default_value = "")]
        service: String,
        /// A member's id, for the swarm's health check of it.
        node: Option<String>,
    },
}

/// Which node to ask and how to print the answer.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The node's gRPC address, HOST:PORT or http://HOST:PORT. Default: this
    /// host, on the port of IARNET_PEER_LISTEN_ADDR or 50051.
    #[arg(long, env = "IARNET_ADDR")]
    pub addr: Option<String>,
    /// table or json.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
    /// Deadline of each call (streams: of connecting).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Bearer token for nodes that set auth.tokens (NAME:SECRET's SECRET).
    #[arg(long, env = "IARNET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The mesh CA (PEM): connect over TLS and verify the node with it.
    #[arg(long, env = "IARNET_TLS_CA_FILE", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) to present, e.g. a node's own.
    #[arg(
        long,
        env = "IARNET_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(
        long,
        env = "IARNET_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// The name the node's certificate carries (the node's tls.server_name).
    #[arg(long, default_value = "iarnet")]
    pub tls_server_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// `iarnet deployments`: the mesh by default, since any node is a door to
/// all of it and a user rarely knows which node placed what.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only what this node placed or holds.
    #[arg(long)]
    pub node: bool,
    /// Only deployments in this state (running, queued, stopped, ...).
    #[arg(long, default_value = "")]
    pub state: String,
    /// Only those on this node's providers.
    #[arg(long, default_value = "")]
    pub owner: String,
    /// Only those on this provider.
    #[arg(long, default_value = "")]
    pub provider: String,
    /// Only images containing this text.
    #[arg(long, default_value = "")]
    pub image: String,
    /// Only those carrying this label, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Deployments per request (the mesh listing pages by id); all pages are shown.
    #[arg(long, default_value_t = 500)]
    pub page_size: u32,
}

/// Why a client command failed; printed as one line, exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the iarnet node at {addr}: {why} (is it running? set --addr or IARNET_ADDR)"
    )]
    Unreachable { addr: String, why: String },
    #[error("{flag}: {why}")]
    Usage { flag: &'static str, why: String },
    #[error("the node answered {}: {}", crate::metrics::code_label(.0.code()), .0.message())]
    Rpc(Status),
    #[error("the node is not serving ({0})")]
    NotServing(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<Status> for ClientError {
    fn from(s: Status) -> Self {
        ClientError::Rpc(s)
    }
}

impl Target {
    /// The address to dial, with a scheme.
    pub fn url(&self) -> String {
        let raw = self.addr.clone().unwrap_or_else(|| {
            // The node's own listen address, on this host when it binds all interfaces.
            let listen = std::env::var("IARNET_PEER_LISTEN_ADDR").unwrap_or_default();
            let (host, port) = listen.rsplit_once(':').unwrap_or(("", "50051"));
            let port = port.parse::<u16>().unwrap_or(50051);
            let host = match host.trim_matches(|c| c == '[' || c == ']') {
                "" | "0.0.0.0" | "::" => "127.0.0.1",
                _ => host,
            };
            format!("{host}:{port}")
        });
        if raw.contains("://") {
            raw
        } else if self.tls_ca.is_some() {
            format!("https://{raw}")
        } else {
            format!("http://{raw}")
        }
    }

    fn tls(&self) -> Result<Option<ClientTlsConfig>, ClientError> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let read = |flag: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| ClientError::Usage {
                flag,
                why: format!("cannot read {}: {e}", path.display()),
            })
        };
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?))
            .domain_name(self.tls_server_name.clone());
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.identity(Identity::from_pem(
                read("--tls-cert", cert)?,
                read("--tls-key", key)?,
            ));
        }
        Ok(Some(tls))
    }

    pub(super) async fn connect(&self) -> Result<Channel, ClientError> {
        let url = self.url();
        let unreachable = |why: String| ClientError::Unreachable {
            addr: url.clone(),
            why,
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| unreachable(format!("not a valid address: {e}")))?
            .connect_timeout(self.timeout);
        if let Some(tls) = self.tls()? {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| unreachable(format!("TLS settings: {e}")))?;
        }
        endpoint.connect().await.map_err(|e| {
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                why = s.to_string();
                src = s.source();
            }
            unreachable(why)
        })
    }

    pub(super) fn request<T>(&self, body: T) -> Request<T> {
        let mut r = self.stream_request(body);
        r.set_timeout(self.timeout);
        r
    }

    /// A request without a deadline (streams that last as long as they must).
    pub(super) fn stream_request<T>(&self, body: T) -> Request<T> {
        let mut r = Request::new(body);
        if let Some(token) = &self.token {
            if let Ok(v) = format!("Bearer {token}").parse() {
                r.metadata_mut().insert("authorization", v);
            }
        }
        r
    }
}

/// A status that means "nobody answered" is reported as unreachable.
pub(super) fn rpc(target: &Target, s: Status) -> ClientError {
    if s.code() == Code::Unavailable && s.message().contains("connect") {
        ClientError::Unreachable {
            addr: target.url(),
            why: s.message().to_string(),
        }
    } else {
        ClientError::Rpc(s)
    }
}

/// Runs one client command, writing to stdout (and progress to stderr).
pub async fn run(command: Command) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Peers { target, all } => {
            let mut admin = AdminClient::new(target.connect().await?);
            let node = admin
                .get_node(target.request(GetNodeRequest {}))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            let peers = admin
                .list_peers(target.request(ListPeersRequest {
                    include_tombstones: all,
                }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            match target.output {
                Output::Json => json_line(&mut out, &peers)?,
                Output::Table => out.write_all(render::peers(&node, &peers).as_bytes())?,
            }
        }
        Command::Providers { target } => {
            let mut api = ResourceServiceClient::new(target.connect().await?);
            let list = api
                .list_providers(target.request(pb::ListProvidersRequest {}))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            match target.output {
                Output::Json => json_line(&mut out, &list)?,
                Output::Table => out.write_all(render::providers(&list).as_bytes())?,
            }
        }
        Command::Capacity { target } => {
            let mut api = ResourceServiceClient::new(target.connect().await?);
            let cap = api
                .get_capacity(target.request(pb::GetCapacityRequest {
                    count_deployments: true,
                }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            match target.output {
                Output::Json => json_line(&mut out, &cap)?,
                Output::Table => out.write_all(render::capacity(&cap).as_bytes())?,
            }
        }
        Command::Deploy(args) => super::deploy::deploy(*args, &mut out).await?,
        Command::Service(c) => super::services::run(c, &mut out).await?,
        Command::Swarm(c) => super::swarm::run(c, &mut out).await?,
        Command::App(c) => super::apps::run(c, &mut out).await?,
        Command::Deployments(args) => list_deployments(args, &mut out).await?,
        Command::Queue { target } => {
            let mut api = ResourceServiceClient::new(target.connect().await?);
            let list = api
                .list_queue(target.request(pb::ListQueueRequest {}))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            match target.output {
                Output::Json => json_line(&mut out, &list)?,
                Output::Table => out.write_all(render::queue(&list.entries).as_bytes())?,
            }
        }
        Command::Status { target, id } => {
            let mut api = ResourceServiceClient::new(target.connect().await?);
            let d = api
                .get_deployment(target.request(pb::GetDeploymentRequest { id }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            match target.output {
                Output::Json => json_line(&mut out, &d)?,
                Output::Table => out.write_all(render::deployment(&d).as_bytes())?,
            }
        }
        Command::Logs {
            target,
            id,
            follow,
            tail,
        } => {
            let mut api = ResourceServiceClient::new(target.connect().await?);
            // A followed stream has no deadline: it lasts as long as the deployment.
            let mut stream = api
                .logs(target.stream_request(pb::LogsRequest {
                    id,
                    tail: tail.unwrap_or(0),
                    follow,
                }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            let mut err = std::io::stderr().lock();
            while let Some(line) = stream.next().await {
                let line = line.map_err(|s| rpc(&target, s))?;
                match target.output {
                    Output::Json => json_line(&mut out, &line)?,
                    Output::Table if line.stderr => writeln!(err, "{}", line.text)?,
                    Output::Table => writeln!(out, "{}", line.text)?,
                }
                out.flush()?;
            }
        }
        Command::Stop { target, id } => {
            let mut api = ResourceServiceClient::new(target.connect().await?);
            let d = api
                .stop(target.request(pb::StopRequest { id }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            match target.output {
                Output::Json => json_line(&mut out, &d)?,
                Output::Table => writeln!(out, "stopped {} ({})", d.id, d.state)?,
            }
        }
        Command::Renew { target, id, epoch } => {
            let mut api = ResourceServiceClient::new(target.connect().await?);
            let req = pb::RenewLeaseRequest {
                id,
                epoch: epoch.unwrap_or(0),
            };
            let d = api
                .renew_lease(target.request(req))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            lease_answer(&mut out, &target, &d, "renewed")?;
        }
        Command::Release { target, id, epoch } => {
            let mut api = ResourceServiceClient::new(target.connect().await?);
            let req = pb::ReleaseLeaseRequest {
                id,
                epoch: epoch.unwrap_or(0),
            };
            let d = api
                .release_lease(target.request(req))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            lease_answer(&mut out, &target, &d, "released")?;
        }
        Command::Cert(cmd) => {
            let written = super::cert::run(cmd).map_err(|e| ClientError::Usage {
                flag: "cert",
                why: e,
            })?;
            for path in written {
                writeln!(out, "wrote {}", path.display())?;
            }
        }
        Command::Health {
            target,
            node: Some(node),
            ..
        } => super::swarm::health_of(target, node, &mut out).await?,
        Command::Health {
            target,
            service,
            node: None,
        } => {
            let mut health = HealthClient::new(target.connect().await?);
            let status = health
                .check(target.request(HealthCheckRequest { service }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner()
                .status();
            if status != ServingStatus::Serving {
                return Err(ClientError::NotServing(status.as_str_name().to_string()));
            }
            if target.output == Output::Json {
                writeln!(out, "{{\"status\":\"SERVING\"}}")?;
            } else {
                writeln!(out, "SERVING")?;
            }
        }
    }
    Ok(())
}

/// Every page of a listing; a table, or one JSON object per page.
async fn list_deployments(args: ListArgs, out: &mut impl Write) -> Result<(), ClientError> {
    let target = &args.target;
    let mut api = ResourceServiceClient::new(target.connect().await?);
    let mut req = pb::ListDeploymentsRequest {
        scope: if args.node { "node" } else { "mesh" }.into(),
        page_size: args.page_size,
        state: args.state.clone(),
        owner_id: args.owner.clone(),
        provider_id: args.provider.clone(),
        image: args.image.clone(),
        labels: super::deploy::pairs("--label", &args.labels)?
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let mut all = Vec::new();
    let mut missing = Vec::new();
    loop {
        let page = api
            .list_deployments(target.request(req.clone()))
            .await
            .map_err(|s| rpc(target, s))?
            .into_inner();
        if target.output == Output::Json {
            json_line(out, &page)?;
        }
        all.extend(page.deployments);
        missing.extend(page.missing_nodes);
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    if target.output == Output::Table {
        out.write_all(render::deployments(&all).as_bytes())?;
        missing.sort();
        missing.dedup();
        if !missing.is_empty() {
            writeln!(
                std::io::stderr(),
                "not answered in time (their deployments may be missing): {}",
                missing.join(", ")
            )?;
        }
    }
    Ok(())
}

/// What `renew` and `release` print: the deployment and its lease.
fn lease_answer(
    out: &mut impl Write,
    target: &Target,
    d: &pb::Deployment,
    done: &str,
) -> Result<(), ClientError> {
    match target.output {
        Output::Json => json_line(out, d),
        Output::Table => {
            writeln!(out, "{done} the lease of {} ({})", d.id, d.state)?;
            if let Some(l) = &d.lease {
                writeln!(out, "{}", render::lease_line(l))?;
            }
            Ok(())
        }
    }
}

pub(super) fn json_line(
    out: &mut impl Write,
    value: &impl serde::Serialize,
) -> Result<(), ClientError> {
    let text = serde_json::to_string(value).map_err(std::io::Error::other)?;
    writeln!(out, "{text}")?;
    Ok(())
}
