//! `iarnet groups`, `iarnet group create|join|leave`, `iarnet pools`,
//! `iarnet pool create|delete` and `iarnet health NODE`: the LAN swarm,
//! from any node.

use std::fmt::Write as _;
use std::io::Write;

use super::client::{json_line, rpc, ClientError, Output, Target};
use crate::proto::swarm as pb;
use crate::proto::swarm::swarm_client::SwarmClient;

#[derive(Debug, clap::Subcommand)]
pub enum SwarmCommand {
    /// Swarm groups: members, leader (term, since when), majority.
    Groups {
        #[command(flatten)]
        target: Target,
    },
    /// Create, join or leave a swarm group.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Resource pools and their aggregate capacity.
    Pools {
        #[command(flatten)]
        target: Target,
    },
    /// Create or delete a resource pool.
    #[command(subcommand)]
    Pool(PoolCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// Create a group with the node as its first member.
    Create {
        #[command(flatten)]
        target: Target,
        name: String,
        /// The most members it admits (1 to 1024).
        #[arg(long, default_value_t = 8)]
        max_members: u32,
        /// The node that creates it (default: the node called).
        #[arg(long)]
        node: Option<String>,
    },
    /// Join a group (refused when it is full).
    Join {
        #[command(flatten)]
        target: Target,
        group: String,
        #[arg(long)]
        node: Option<String>,
    },
    /// Leave a group; what the node runs for it keeps running unless
    /// --release.
    Leave {
        #[command(flatten)]
        target: Target,
        group: String,
        #[arg(long)]
        node: Option<String>,
        /// Also stop the group's deployments on the node's providers.
        #[arg(long)]
        release: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum PoolCommand {
    /// Create (or replace) a pool of explicit nodes or a label selector.
    Create {
        #[command(flatten)]
        target: Target,
        name: String,
        /// Node ids, comma-separated (empty: every node matching --selector).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        /// Provider labels KEY=VALUE, repeatable.
        #[arg(long = "selector", value_name = "KEY=VALUE")]
        selector: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a pool everywhere.
    Delete {
        #[command(flatten)]
        target: Target,
        name: String,
    },
}

pub async fn run(command: SwarmCommand, out: &mut impl Write) -> Result<(), ClientError> {
    match command {
        SwarmCommand::Groups { target } => {
            let mut api = SwarmClient::new(target.connect().await?);
            let list = api
                .list_groups(target.request(pb::ListGroupsRequest {}))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            match target.output {
                Output::Json => json_line(out, &list)?,
                Output::Table => out.write_all(groups(&list.groups).as_bytes())?,
            }
        }
        SwarmCommand::Group(c) => {
            let (target, call) = match c {
                GroupCommand::Create {
                    target,
                    name,
                    max_members,
                    node,
                } => {
                    let r = pb::CreateGroupRequest {
                        name,
                        max_members,
                        node: node.unwrap_or_default(),
                    };
                    (target, Call::Create(r))
                }
                GroupCommand::Join {
                    target,
                    group,
                    node,
                } => (
                    target,
                    Call::Join(pb::JoinGroupRequest {
                        group,
                        node: node.unwrap_or_default(),
                    }),
                ),
                GroupCommand::Leave {
                    target,
                    group,
                    node,
                    release,
                } => (
                    target,
                    Call::Leave(pb::LeaveGroupRequest {
                        group,
                        node: node.unwrap_or_default(),
                        release,
                    }),
                ),
            };
            let mut api = SwarmClient::new(target.connect().await?);
            let g = match call {
                Call::Create(r) => api.create_group(target.request(r)).await,
                Call::Join(r) => api.join_group(target.request(r)).await,
                Call::Leave(r) => api.leave_group(target.request(r)).await,
            }
            .map_err(|s| rpc(&target, s))?
            .into_inner();
            match target.output {
                Output::Json => json_line(out, &g)?,
                Output::Table => {
                    out.write_all(groups(std::slice::from_ref(&g)).as_bytes())?;
                    for id in &g.stopped {
                        writeln!(out, "stopped {id}")?;
                    }
                    for why in &g.not_stopped {
                        writeln!(out, "not stopped {why}")?;
                    }
                }
            }
        }
        SwarmCommand::Pools { target } => {
            let mut api = SwarmClient::new(target.connect().await?);
            let list = api
                .list_pools(target.request(pb::ListPoolsRequest {}))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            match target.output {
                Output::Json => json_line(out, &list)?,
                Output::Table => out.write_all(pools(&list.pools).as_bytes())?,
            }
        }
        SwarmCommand::Pool(PoolCommand::Create {
            target,
            name,
            nodes,
            selector,
            description,
        }) => {
            let mut labels = std::collections::HashMap::new();
            for pair in selector {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(ClientError::Usage {
                        flag: "--selector",
                        why: format!("{pair:?}: write KEY=VALUE, e.g. --selector rack=3"),
                    });
                };
                labels.insert(k.to_string(), v.to_string());
            }
            let mut api = SwarmClient::new(target.connect().await?);
            let p = api
                .create_pool(target.request(pb::CreatePoolRequest {
                    name,
                    nodes: nodes.into_iter().filter(|n| !n.is_empty()).collect(),
                    selector: labels,
                    description,
                }))
                .await
                .map_err(|s| rpc(&target, s))?
                .into_inner();
            match target.output {
                Output::Json => json_line(out, &p)?,
                Output::Table => out.write_all(pools(&[p]).as_bytes())?,
            }
        }
        SwarmCommand::Pool(PoolCommand::Delete { target, name }) => {
            let mut api = SwarmClient::new(target.connect().await?);
            api.delete_pool(target.request(pb::DeletePoolRequest { name: name.clone() }))
                .await
                .map_err(|s| rpc(&target, s))?;
            writeln!(out, "pool {name} deleted")?;
        }
    }
    Ok(())
}

/// `iarnet health NODE`: the swarm's health check of a member.
pub async fn health_of(
    target: Target,
    node: String,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let mut api = SwarmClient::new(target.connect().await?);
    let h = api
        .health_check(target.request(pb::HealthCheckRequest { node }))
        .await
        .map_err(|s| rpc(&target, s))?
        .into_inner();
    match target.output {
        Output::Json => json_line(out, &h)?,
        Output::Table => out.write_all(health(&h).as_bytes())?,
    }
    Ok(())
}

enum Call {
    Create(pb::CreateGroupRequest),
    Join(pb::JoinGroupRequest),
    Leave(pb::LeaveGroupRequest),
}

fn groups(list: &[pb::Group]) -> String {
    let mut s = String::new();
    if list.is_empty() {
        s.push_str("no groups\n");
    }
    for g in list {
        let leader = if g.leader.is_empty() {
            format!("none ({})", g.reason)
        } else {
            format!(
                "{} (term {}, since {})",
                g.leader,
                g.term,
                since(g.leader_since_ms)
            )
        };
        let _ = writeln!(
            s,
            "{}  {}/{} members  leader: {leader}",
            g.name,
            g.members.len(),
            g.max_members
        );
        for m in &g.members {
            let star = if m.is_leader { "*" } else { " " };
            let _ = writeln!(s, "  {star} {:<24} {:<16} {}", m.id, m.name, m.state);
        }
    }
    s
}

fn pools(list: &[pb::Pool]) -> String {
    let mut s = format!(
        "{:<16} {:>5} {:>9} {:>14} {:>14} {:>9}\n",
        "POOL", "NODES", "PROVIDERS", "CPU FREE/ALL", "MEM FREE/ALL", "GPU FREE"
    );
    for p in list {
        let c = p.capacity.unwrap_or_default();
        let (t, a) = (c.total.unwrap_or_default(), c.available.unwrap_or_default());
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let _ = writeln!(
            s,
            "{:<16} {:>5} {:>9} {:>14} {:>14} {:>9}",
            p.name,
            p.members.len(),
            p.providers,
            format!(
                "{:.1}/{:.1}",
                a.cpu_millis as f64 / 1000.0,
                t.cpu_millis as f64 / 1000.0
            ),
            format!("{:.1}/{:.1}Gi", gib(a.memory_bytes), gib(t.memory_bytes)),
            format!("{}/{}", a.gpus, t.gpus),
        );
    }
    s
}

fn health(h: &pb::HealthCheckResponse) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "node:               {} ({}) {}", h.node, h.name, h.addr);
    let _ = writeln!(s, "status:             {}", h.status);
    if !h.error.is_empty() {
        let _ = writeln!(s, "error:              {}", h.error);
    }
    let _ = writeln!(s, "response time:      {:.2} ms", h.response_ms);
    let _ = writeln!(
        s,
        "gossip rtt:         {:.2} ms (p99 {:.2} ms)",
        h.rtt_ms, h.rtt_p99_ms
    );
    let _ = writeln!(s, "active allocations: {}", h.active_allocations);
    let _ = writeln!(
        s,
        "load:               cpu {:.0}%  memory {:.0}%",
        h.cpu_load * 100.0,
        h.memory_load * 100.0
    );
    let _ = writeln!(s, "models:             {}", h.models.join(", "));
    let _ = writeln!(s, "groups:             {}", h.groups.join(", "));
    let _ = writeln!(s, "remote access:      {}", h.allow_remote);
    s
}

/// Wall-clock milliseconds as seconds ago.
fn since(ms: u64) -> String {
    let ago = crate::swarm::wall_ms().saturating_sub(ms) / 1000;
    format!("{ago}s ago")
}
