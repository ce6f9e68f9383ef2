//! `iarnet deploy`: its flags, the spec they make, and the streamed
//! answer (pull progress, the placement and why, the deployment or service).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use futures::StreamExt;

use super::client::{json_line, rpc, ClientError, Output, Target};
use super::render;
use crate::proto::resource as pb;
use crate::proto::resource::deploy_event::Event;
use crate::proto::resource::resource_service_client::ResourceServiceClient;

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub target: Target,
    /// Container image, e.g. nginx:1.27 (pulled by the provider when absent).
    #[arg(long)]
    pub image: String,
    /// A name for people; the deployment id comes from the request id.
    #[arg(long, default_value = "")]
    pub name: String,
    /// CPU, e.g. 500m or 2 (reserved on the provider and enforced as a limit).
    #[arg(long)]
    pub cpu: String,
    /// Memory, e.g. 256Mi or 2Gi (reserved and enforced).
    #[arg(long)]
    pub memory: String,
    /// Whole GPUs.
    #[arg(long, default_value_t = 0)]
    pub gpu: u32,
    /// Only GPUs whose model contains this text, e.g. H100.
    #[arg(long, default_value = "")]
    pub gpu_model: String,
    /// Let other deployments share the GPUs.
    #[arg(long)]
    pub gpu_shared: bool,
    /// Only on the providers of this swarm group's members; its leader
    /// orders the group's deploys.
    #[arg(long, default_value = "")]
    pub group: String,
    /// Only on the providers of this resource pool.
    #[arg(long, default_value = "")]
    pub pool: String,
    /// Only on nodes that serve this AI model (their `models`).
    #[arg(long, default_value = "")]
    pub requires_model: String,
    /// Scratch storage, e.g. 10Gi.
    #[arg(long, default_value = "")]
    pub storage: String,
    /// Environment, KEY=VALUE (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Published port, CONTAINER or HOST:CONTAINER, with /udp for UDP (repeatable).
    #[arg(short, long = "port", value_name = "[HOST:]CONTAINER[/udp]")]
    pub ports: Vec<String>,
    /// Labels on the deployment, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Labels the provider must carry, KEY=VALUE (repeatable).
    #[arg(long = "require", value_name = "KEY=VALUE")]
    pub require: Vec<String>,
    /// spread, binpack, round-robin, weighted, random or geographic.
    #[arg(long, default_value = "")]
    pub strategy: String,
    /// Preferred region (geographic strategy).
    #[arg(long, default_value = "")]
    pub region: String,
    /// Place on this provider only.
    #[arg(long, default_value = "")]
    pub provider: String,
    /// Queue order when it must wait: interactive (default) or batch.
    #[arg(long, default_value = "")]
    pub priority: String,
    /// Finer order within the priority, higher first (-1000000000 to 1000000000).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority_value: i64,
    /// How long it may wait for capacity, e.g. 5m; 0 fails at once. Default: 10m.
    #[arg(long, default_value = "")]
    pub queue_timeout: String,
    /// Wait even when no provider in the mesh could ever hold it.
    #[arg(long)]
    pub wait_for_capacity: bool,
    /// A lease, e.g. 10m: the owner stops it and frees its resources when it
    /// runs out (renew with `iarnet renew`).
    #[arg(
        long,
        default_value = "",
        value_name = "TTL",
        allow_hyphen_values = true
    )]
    pub lease: String,
    /// The owner renews the lease by itself, up to --max-renewals.
    #[arg(long)]
    pub auto_renew: bool,
    /// Renewals allowed (by you or automatic); default: no limit.
    #[arg(long, value_name = "N")]
    pub max_renewals: Option<u32>,
    /// Who holds the lease; default: the node that accepts the deploy.
    #[arg(long, default_value = "")]
    pub lease_holder: String,
    /// never (default), on-failure (3 restarts), on-failure:N or always.
    #[arg(long, default_value = "")]
    pub restart: String,
    /// Place it again elsewhere when its owner node dies: "on" for the
    /// defaults, or KEY=VALUE pairs, e.g. after=10s,attempts=5,delay=5s,
    /// delay_function=exponential,max_delay=5m,interval=1h,unlimited=true.
    #[arg(long, value_name = "on|KEY=VALUE,...")]
    pub reschedule: Option<String>,
    /// Run N copies as a service (see `iarnet services`, `iarnet scale`);
    /// each is placed again when its owner dies.
    #[arg(long, value_name = "N")]
    pub replicas: Option<u32>,
    /// Keep the replicas apart: node, provider or a provider label key.
    #[arg(long, default_value = "", value_name = "node|provider|LABEL")]
    pub spread: String,
    /// Most replicas one spread value may hold above the emptiest (default 1).
    #[arg(long, value_name = "N")]
    pub max_skew: Option<u32>,
    /// schedule-anyway (default) or do-not-schedule (wait rather than break the skew).
    #[arg(long, default_value = "")]
    pub when_unsatisfiable: String,
    /// With --replicas: all start or none; each owner holds room for its
    /// replica until all agreed (a hold lapses after --gang-timeout).
    #[arg(long)]
    pub gang: bool,
    /// How long owners hold a gang's room (default 10s, 100ms to 5m).
    #[arg(long, default_value = "", value_name = "DURATION")]
    pub gang_timeout: String,
    /// Owners may evict it for work that outranks it (another class, or
    /// 10 points higher in its class); it then waits in the queue again.
    #[arg(long)]
    pub preemptible: bool,
    /// never (default) or lower-priority: when nothing has room, evict
    /// preemptible work this request outranks, no more than it needs.
    #[arg(long, default_value = "", value_name = "never|lower-priority")]
    pub preemption_policy: String,
    /// Its owner stops it once its home has been out of reach this long,
    /// e.g. 30s (a partition's minority gives up what the majority moved).
    #[arg(long, default_value = "", value_name = "DURATION")]
    pub stop_after_disconnect: String,
    /// Idempotency key: the same id never starts a second container. Default: random.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Command and arguments, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub(super) fn pairs(
    flag: &'static str,
    items: &[String],
) -> Result<BTreeMap<String, String>, ClientError> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(ClientError::Usage {
                flag,
                why: format!("{kv:?} is not KEY=VALUE"),
            }),
        })
        .collect()
}

fn port(spec: &str) -> Result<pb::Port, ClientError> {
    let bad = || ClientError::Usage {
        flag: "--port",
        why: format!("{spec:?} is not [HOST:]CONTAINER[/udp], e.g. 8080:80"),
    };
    let (ports, udp) = match spec.split_once('/') {
        Some((p, "udp")) => (p, true),
        Some((p, "tcp")) => (p, false),
        Some(_) => return Err(bad()),
        None => (spec, false),
    };
    let (host, container) = match ports.split_once(':') {
        Some((h, c)) => (h.parse().map_err(|_| bad())?, c),
        None => (0, ports),
    };
    Ok(pb::Port {
        container: container.parse().map_err(|_| bad())?,
        host,
        udp,
    })
}

/// `--reschedule on` or `after=10s,attempts=5,...`.
fn reschedule(text: &str) -> Result<pb::Reschedule, ClientError> {
    let mut r = pb::Reschedule::default();
    if text == "on" {
        return Ok(r);
    }
    for kv in text.split(',').filter(|s| !s.is_empty()) {
        let bad = |why: String| ClientError::Usage {
            flag: "--reschedule",
            why,
        };
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| bad(format!("{kv:?} is not KEY=VALUE (or give \"on\")")))?;
        match k {
            "attempts" => r.attempts = v.parse().map_err(|_| bad(format!("attempts={v:?} is not a number")))?,
            "interval" => r.interval = v.into(),
            "delay" => r.delay = v.into(),
            "delay_function" => r.delay_function = v.into(),
            "max_delay" => r.max_delay = v.into(),
            "after" => r.after = v.into(),
            "unlimited" => r.unlimited = v == "true",
            other => {
                return Err(bad(format!(
                    "unknown key {other:?}: use attempts, interval, delay, delay_function, max_delay, after or unlimited"
                )))
            }
        }
    }
    Ok(r)
}

/// A fresh idempotency key (128 random bits, hex).
fn request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl DeployArgs {
    fn spec(&self) -> Result<pb::DeploySpec, ClientError> {
        let (command, args) = match self.command.split_first() {
            Some((c, rest)) => (vec![c.clone()], rest.to_vec()),
            None => (vec![], vec![]),
        };
        Ok(pb::DeploySpec {
            request_id: self.request_id.clone().unwrap_or_else(request_id),
            name: self.name.clone(),
            image: self.image.clone(),
            command,
            args,
            env: pairs("--env", &self.env)?.into_iter().collect(),
            ports: self
                .ports
                .iter()
                .map(|p| port(p))
                .collect::<Result<_, _>>()?,
            cpu: self.cpu.clone(),
            memory: self.memory.clone(),
            gpu: self.gpu,
            gpu_model: self.gpu_model.clone(),
            gpu_shared: self.gpu_shared,
            group: self.group.clone(),
            pool: self.pool.clone(),
            requires_model: self.requires_model.clone(),
            storage: self.storage.clone(),
            labels: pairs("--label", &self.labels)?.into_iter().collect(),
            required_labels: pairs("--require", &self.require)?.into_iter().collect(),
            strategy: self.strategy.clone(),
            region: self.region.clone(),
            provider_id: self.provider.clone(),
            priority: self.priority.clone(),
            priority_value: self.priority_value,
            queue_timeout: self.queue_timeout.clone(),
            wait_for_capacity: self.wait_for_capacity,
            lease_ttl: self.lease.clone(),
            auto_renew: self.auto_renew,
            max_renewals: self.max_renewals,
            lease_holder: self.lease_holder.clone(),
            restart: self.restart.clone(),
            reschedule: self.reschedule.as_deref().map(reschedule).transpose()?,
            replicas: self.replicas.unwrap_or(0),
            spread: self.spread.clone(),
            max_skew: self.max_skew.unwrap_or(0),
            when_unsatisfiable: self.when_unsatisfiable.clone(),
            preemptible: self.preemptible,
            preemption_policy: self.preemption_policy.clone(),
            stop_after_disconnect: self.stop_after_disconnect.clone(),
            gang: self.gang,
            gang_timeout: self.gang_timeout.clone(),
            ..Default::default()
        })
    }
}

pub(super) async fn deploy(args: DeployArgs, out: &mut impl Write) -> Result<(), ClientError> {
    let spec = args.spec()?;
    let target = &args.target;
    let mut api = ResourceServiceClient::new(target.connect().await?);
    // No deadline: pulls can take minutes. The connect timeout bounds
    // reaching the node, and the node bounds each provider call.
    let mut events = api
        .deploy(target.stream_request(spec))
        .await
        .map_err(|s| rpc(target, s))?
        .into_inner();
    let mut progress = render::Progress::new(std::io::stderr().is_terminal());
    while let Some(event) = events.next().await {
        let event = event.map_err(|s| {
            progress.finish();
            rpc(target, s)
        })?;
        if target.output == Output::Json {
            json_line(out, &event)?;
            continue;
        }
        match event.event {
            Some(Event::Pull(p)) => progress.pull(&p),
            Some(Event::State(s)) => progress.state(&s),
            Some(Event::Placement(p)) if p.provider_id.is_empty() => {
                // Nothing admits it now: the reason says why it waits.
                progress.finish();
                writeln!(out, "{}", p.reason)?;
            }
            Some(Event::Placement(p)) => {
                progress.finish();
                writeln!(
                    out,
                    "placed on {} (node {}, {} tier, {}): {}",
                    p.provider_id, p.owner_id, p.tier, p.strategy, p.reason
                )?;
                for r in &p.refused {
                    writeln!(out, "  refused first: {r}")?;
                }
            }
            Some(Event::Service(s)) => out.write_all(super::services::service(&s).as_bytes())?,
            Some(Event::Deployment(d)) if d.state == "queued" => {
                writeln!(
                    out,
                    "deployment {} is queued at node {} (see `iarnet queue`)",
                    d.id, d.owner_id
                )?;
            }
            Some(Event::Deployment(d)) => {
                writeln!(out, "deployment {} is {}", d.id, d.state)?;
                if let Some(l) = &d.lease {
                    writeln!(out, "{}", render::lease_line(l))?;
                }
            }
            None => {}
        }
    }
    progress.finish();
    Ok(())
}
