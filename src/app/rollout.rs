//! Deploying an application's components in dependency order: each
//! component starts once every dependency reached the condition it asks
//! for (started, healthy, exited 0), independent ones in parallel; views,
//! status and stop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::analyze::{Analysis, Component, Condition};
use super::manager::Applications;
use super::record::{AppRecord, AppView, ComponentRun, ComponentView, Endpoint};
use super::AppError;
use crate::placement::PlaceOptions;
use crate::resource::docker::HOST_ALIAS;
use crate::resource::{
    DeploySpec, DeployState, Deployment, HealthSpec, PortSpec, ProgressSink, Resources,
    RestartPolicy,
};
use crate::store::now_ms;

/// The labels on a component's container: its application and component.
pub const APP_LABEL: &str = "iarnet-app";
pub const COMPONENT_LABEL: &str = "iarnet-component";

/// How long a dependent waits for a dependency's condition by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// How often a component's state is read while something waits on it.
const POLL: Duration = Duration::from_millis(250);

/// Choices for one rollout.
#[derive(Debug, Clone)]
pub struct RolloutOptions {
    /// Stop what this rollout started when a component fails; else keep it
    /// (as Compose does), so it can be inspected and the rest redeployed.
    pub rollback: bool,
    /// The bound on each wait for a dependency's condition.
    pub wait: Duration,
}

impl Default for RolloutOptions {
    fn default() -> Self {
        RolloutOptions {
            rollback: false,
            wait: DEFAULT_WAIT,
        }
    }
}

/// What a component has reached so far, as its dependents watch it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Reached {
    started: bool,
    healthy: bool,
    completed: bool,
    /// Why it can no longer reach what it has not reached.
    failed: Option<String>,
    deployment: Option<Deployment>,
}

impl Reached {
    fn satisfies(&self, c: Condition) -> bool {
        match c {
            Condition::ServiceStarted => self.started,
            Condition::ServiceHealthy => self.healthy,
            Condition::ServiceCompletedSuccessfully => self.completed,
        }
    }
}

/// The engine network of an application's components.
pub fn network_name(app: &str) -> String {
    format!("iarnet-app-{app}")
}

/// `<NAME>_HOST`'s prefix for a component: upper case, `_` for the rest.
pub fn env_prefix(component: &str) -> String {
    component
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl Applications {
    /// Deploys `wanted` (every component when empty) and the dependencies
    /// they need that do not run yet, in dependency order.
    pub async fn deploy(
        self: &Arc<Self>,
        id: &str,
        wanted: &[String],
        opts: RolloutOptions,
    ) -> Result<AppView, AppError> {
        let guard = self.locks.lock(id).await;
        let mut rec = self.record(id)?;
        let analysis = match rec.analysis.clone() {
            Some(a) => a,
            None => {
                let root = rec.local_path.clone();
                let name = rec.name.clone();
                let a = tokio::task::spawn_blocking(move || super::analyze::analyze(&root, &name))
                    .await
                    .map_err(|e| AppError::Internal(format!("analysis stopped: {e}")))??;
                rec.analysis = Some(a.clone());
                a
            }
        };
        for w in wanted {
            if analysis.component(w).is_none() {
                return Err(AppError::invalid(
                    "components",
                    format!(
                        "`{w}` is not a component of `{id}` (it has {})",
                        names(&analysis)
                    ),
                ));
            }
        }
        let wanted: BTreeSet<String> = if wanted.is_empty() {
            analysis.components.iter().map(|c| c.id.clone()).collect()
        } else {
            wanted.iter().cloned().collect()
        };
        // Dependencies not asked for are started too, unless they run.
        let mut plan = wanted.clone();
        let mut stack: Vec<String> = wanted.iter().cloned().collect();
        while let Some(c) = stack.pop() {
            for d in &analysis.component(&c).expect("checked above").depends_on {
                if plan.contains(&d.on) {
                    continue;
                }
                if !self.is_live(rec.runs.get(&d.on)).await {
                    plan.insert(d.on.clone());
                    stack.push(d.on.clone());
                }
            }
        }
        for c in &plan {
            let comp = analysis.component(c).expect("planned from the analysis");
            if comp.image.is_none() && comp.build.is_none() {
                return Err(AppError::invalid(
                    "components",
                    format!("component `{c}` has no image: give it one in a Compose file, or a Dockerfile"),
                ));
            }
        }
        // Replaced components stop first: their names and ports free up.
        for c in &plan {
            if let Some(run) = rec.runs.get(c) {
                let _ = self.placement.stop(&run.deployment_id).await;
            }
        }
        rec.generation += 1;
        rec.updated_ms = now_ms();
        self.save(rec.clone())?;
        info!(app = %id, components = ?plan, generation = rec.generation, "rolling out");

        let cancel = CancellationToken::new();
        let mut senders = BTreeMap::new();
        let mut watchers = BTreeMap::new();
        for c in &analysis.components {
            let (tx, rx) = watch::channel(Reached::default());
            if !plan.contains(&c.id) {
                // Already running: it satisfies whatever it reached.
                if let Some(run) = rec.runs.get(&c.id) {
                    let _ = tx.send(self.reached(&run.deployment_id).await);
                }
            }
            senders.insert(c.id.clone(), tx);
            watchers.insert(c.id.clone(), rx);
        }
        let tasks = plan.iter().map(|c| {
            let comp = analysis.component(c).expect("planned").clone();
            let tx = senders.remove(c).expect("one sender each");
            self.clone().start_component(
                rec.clone(),
                comp,
                watchers.clone(),
                tx,
                opts.clone(),
                cancel.clone(),
            )
        });
        let results = join_all(tasks).await;
        let mut failures = Vec::new();
        let mut rec = self.record(id)?;
        for r in results {
            match r {
                Ok((c, run)) => {
                    rec.runs.insert(c, run);
                }
                Err((c, run, why)) => {
                    if let Some(run) = run {
                        rec.runs.insert(c.clone(), run);
                    }
                    failures.push((c, why));
                }
            }
        }
        rec.analysis = Some(analysis);
        rec.updated_ms = now_ms();
        self.save(rec.clone())?;
        drop(guard);
        if failures.is_empty() {
            return self.view(id).await;
        }
        failures.sort_by_key(|(_, why)| why.starts_with("not started"));
        if opts.rollback {
            for c in &plan {
                if let Some(run) = rec.runs.get(c) {
                    let _ = self.placement.stop(&run.deployment_id).await;
                }
            }
        }
        let (first, why) = &failures[0];
        Err(AppError::Deploy(format!(
            "rollout of `{id}` stopped: component `{first}` {why}{}",
            if opts.rollback {
                "; the components it started were stopped (rollback)"
            } else {
                "; components already started keep running (deploy with rollback to stop them)"
            }
        )))
    }

    /// Waits for `comp`'s dependencies, deploys it, then follows it until
    /// nothing more can be waited for.
    async fn start_component(
        self: Arc<Self>,
        rec: AppRecord,
        comp: Component,
        watchers: BTreeMap<String, watch::Receiver<Reached>>,
        tx: watch::Sender<Reached>,
        opts: RolloutOptions,
        cancel: CancellationToken,
    ) -> Result<(String, ComponentRun), (String, Option<ComponentRun>, String)> {
        let id = comp.id.clone();
        let fail = |run: Option<ComponentRun>, why: String| {
            cancel.cancel();
            let _ = tx.send(Reached {
                failed: Some(why.clone()),
                ..Default::default()
            });
            (id.clone(), run, why)
        };
        let mut deps = Vec::new();
        for d in &comp.depends_on {
            let mut rx = watchers[&d.on].clone();
            let waited = tokio::select! {
                _ = cancel.cancelled() => Err("not started: another component failed".to_string()),
                r = tokio::time::timeout(opts.wait, rx.wait_for(|r| r.satisfies(d.condition) || r.failed.is_some())) => match r {
                    Err(_) => Err(format!("waited {}s for `{}` to reach {} (raise the wait, or check `{}`)", opts.wait.as_secs(), d.on, d.condition.as_str(), d.on)),
                    Ok(Err(_)) => Err(format!("lost `{}`", d.on)),
                    Ok(Ok(r)) => match &r.failed {
                        Some(why) if !r.satisfies(d.condition) => Err(format!("not started: its dependency `{}` did not reach {}: {why}", d.on, d.condition.as_str())),
                        _ => Ok(r.deployment.clone()),
                    },
                },
            };
            match waited {
                Ok(dep) => deps.push((d.on.clone(), dep)),
                Err(why) => return Err(fail(None, why)),
            }
        }
        let endpoints = self.endpoints(&deps);
        let mut spec = component_spec(&rec, &comp, comp.image.as_deref().unwrap_or(""), &endpoints);
        let mut opts_place = PlaceOptions {
            queue_timeout: opts.wait,
            ..Default::default()
        };
        let mut built_from = None;
        if let Some(build) = &comp.build {
            match self.build(&rec, &comp, build, &spec, &opts_place).await {
                Ok((tag, pid)) => {
                    spec.image = tag;
                    opts_place.provider_id = Some(pid);
                    built_from = Some(rec.commit.sha.clone());
                }
                Err(e) => return Err(fail(None, format!("could not be built: {e}"))),
            }
        }
        let deployment_id = crate::resource::validate::deployment_id(&spec.request_id);
        let run = ComponentRun {
            deployment_id: deployment_id.clone(),
            image: spec.image.clone(),
            built_from,
            started_ms: now_ms(),
            endpoints: endpoints.clone(),
        };
        if let Err(e) = self
            .placement
            .deploy(spec, opts_place, ProgressSink::none())
            .await
        {
            return Err(fail(Some(run), format!("could not be placed: {e}")));
        }
        // Follow it until it can reach nothing more a dependent may need.
        let deadline = tokio::time::Instant::now() + opts.wait;
        loop {
            let r = self.reached(&deployment_id).await;
            let _ = tx.send(r.clone());
            if let Some(why) = &r.failed {
                return Err(fail(Some(run), why.clone()));
            }
            let settled = r.completed
                || (r.started && (comp.healthcheck.is_none() || r.healthy) && !is_job(&comp));
            if settled {
                return Ok((id, run));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(fail(
                    Some(run),
                    format!(
                        "did not become {} within {}s",
                        if comp.healthcheck.is_some() {
                            "healthy"
                        } else {
                            "ready"
                        },
                        opts.wait.as_secs()
                    ),
                ));
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok((id, run)),
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// What deployment `id` has reached, from its status now.
    async fn reached(&self, id: &str) -> Reached {
        let d = match self.placement.status(id).await {
            Ok((d, _)) => d,
            Err(e) => {
                return Reached {
                    failed: Some(format!("cannot be read: {e}")),
                    ..Default::default()
                }
            }
        };
        let state = d.state();
        let ran = d
            .history
            .iter()
            .any(|c| matches!(c.state, DeployState::Running | DeployState::Exited(_)));
        let mut r = Reached {
            started: ran,
            healthy: d.health.as_deref() == Some("healthy"),
            completed: matches!(state, DeployState::Exited(0)),
            failed: None,
            deployment: Some(d.clone()),
        };
        r.failed = match &state {
            DeployState::Exited(0) => None,
            DeployState::Exited(code) => Some(format!("exited with code {code}")),
            DeployState::Failed(why) => Some(format!("failed: {why}")),
            DeployState::Stopped => Some("was stopped".into()),
            DeployState::Expired(why) => Some(format!("found no provider: {why}")),
            _ if d.health.as_deref() == Some("unhealthy") => {
                Some("is unhealthy: its healthcheck keeps failing".into())
            }
            _ => None,
        };
        r
    }

    /// Where each dependency is reached: its owner's host and published port.
    fn endpoints(&self, deps: &[(String, Option<Deployment>)]) -> BTreeMap<String, Endpoint> {
        let candidates = self.placement.candidates();
        let mut out = BTreeMap::new();
        for (name, d) in deps {
            let Some(d) = d else { continue };
            let Some(port) = d.ports.iter().find(|p| !p.udp && p.host != 0) else {
                continue;
            };
            let owner_host = candidates
                .iter()
                .find(|c| c.id == d.provider_id)
                .map(|c| host_of(&c.owner_addr))
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| self.advertise_host.clone());
            let host = if is_loopback(&owner_host) {
                HOST_ALIAS.to_string()
            } else {
                owner_host
            };
            out.insert(
                name.clone(),
                Endpoint {
                    host,
                    port: port.host,
                    via: "published".into(),
                },
            );
        }
        out
    }

    /// Stops `which` components (every one when empty) of application `id`.
    pub async fn stop(&self, id: &str, which: &[String]) -> Result<AppView, AppError> {
        let rec = self.record(id)?;
        for w in which {
            if !rec.runs.contains_key(w) {
                return Err(AppError::invalid(
                    "components",
                    format!("`{w}` of `{id}` was never deployed"),
                ));
            }
        }
        for (c, run) in &rec.runs {
            if which.is_empty() || which.contains(c) {
                if let Err(e) = self.placement.stop(&run.deployment_id).await {
                    warn!(app = %id, component = %c, error = %e, "cannot stop a component");
                }
            }
        }
        self.view(id).await
    }

    async fn is_live(&self, run: Option<&ComponentRun>) -> bool {
        match run {
            Some(run) => matches!(
                self.placement.status(&run.deployment_id).await,
                Ok((d, _)) if !d.state().is_final()
            ),
            None => false,
        }
    }

    pub(super) async fn running_components(&self, rec: &AppRecord) -> Vec<String> {
        let mut out = Vec::new();
        for (c, run) in &rec.runs {
            if self.is_live(Some(run)).await {
                out.push(c.clone());
            }
        }
        out
    }

    /// How many applications are in each status (for `/metrics`).
    pub async fn status_counts(&self) -> Vec<(String, u64)> {
        let mut counts: BTreeMap<String, u64> = [
            "created",
            "analyzed",
            "deploying",
            "running",
            "partial",
            "stopped",
            "failed",
        ]
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
        for v in self.list().await {
            *counts.entry(v.status).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// The components of application `id` and how each stands now.
    pub async fn components(&self, id: &str) -> Result<Vec<ComponentView>, AppError> {
        Ok(self.view(id).await?.components)
    }

    pub async fn view(&self, id: &str) -> Result<AppView, AppError> {
        let rec = self.record(id)?;
        let modified_files = if rec.local_path.is_dir() {
            super::git::changed(&rec.local_path)
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut components = Vec::new();
        if let Some(a) = &rec.analysis {
            for c in &a.components {
                components.push(self.component_view(&rec.id, c, rec.runs.get(&c.id)).await);
            }
        }
        let status = app_status(&rec, &components);
        Ok(AppView {
            id: rec.id.clone(),
            name: rec.name.clone(),
            git_url: rec.git_url.clone(),
            branch: rec.branch.clone(),
            local_path: rec.local_path.display().to_string(),
            commit: rec.commit.clone(),
            modified_files,
            status,
            components_count: components.len(),
            components,
            dag: rec.analysis.as_ref().map(|a| a.dag.clone()),
            analysis_notes: rec
                .analysis
                .as_ref()
                .map(|a| a.notes.clone())
                .unwrap_or_default(),
            created_at_ms: rec.created_ms,
            updated_at_ms: rec.updated_ms,
            private: rec.credentials.token.is_some() || rec.credentials.ssh_key_file.is_some(),
        })
    }

    async fn component_view(
        &self,
        app: &str,
        c: &Component,
        run: Option<&ComponentRun>,
    ) -> ComponentView {
        let mut v = ComponentView {
            id: c.id.clone(),
            name: c.name.clone(),
            kind: c.kind.clone(),
            language: c.language.clone(),
            framework: c.framework.clone(),
            resources: c.requirements,
            depends_on: c.depends_on.iter().map(|d| d.on.clone()).collect(),
            status: "not_deployed".into(),
            health: None,
            deployment_id: None,
            provider_id: None,
            owner_id: None,
            container_id: None,
            restarts: 0,
            exit_code: None,
            image: c.image.clone(),
            endpoints: BTreeMap::new(),
            build: self.build_view(app, &c.id),
            placement: c.placement.clone(),
        };
        let Some(run) = run else { return v };
        v.deployment_id = Some(run.deployment_id.clone());
        v.image = Some(run.image.clone());
        v.endpoints = run.endpoints.clone();
        match self.placement.status(&run.deployment_id).await {
            Ok((d, owner)) => {
                let state = d.state();
                v.status = state.name().to_string();
                if let DeployState::Exited(code) = state {
                    v.exit_code = Some(code);
                }
                v.health = d.health.clone();
                v.provider_id = Some(d.provider_id.clone()).filter(|p| !p.is_empty());
                v.owner_id = Some(owner);
                v.container_id = Some(d.id.clone());
                v.restarts = d.restarts;
            }
            Err(e) => v.status = format!("unknown: {e}"),
        }
        v
    }
}

fn names(a: &Analysis) -> String {
    a.components
        .iter()
        .map(|c| c.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_job(c: &Component) -> bool {
    c.kind == "job"
}

/// `running` only when every component that should run does (jobs count
/// when they exited 0); `partial` when some do.
fn app_status(rec: &AppRecord, components: &[ComponentView]) -> String {
    if rec.analysis.is_none() {
        return "created".into();
    }
    if rec.runs.is_empty() {
        return "analyzed".into();
    }
    let ok =
        |c: &ComponentView| c.status == "running" || (c.kind == "job" && c.exit_code == Some(0));
    let failed = components
        .iter()
        .any(|c| c.status == "failed" || (c.status == "exited" && c.exit_code != Some(0)));
    let up = components.iter().filter(|c| ok(c)).count();
    if up == components.len() {
        "running".into()
    } else if failed {
        "failed".into()
    } else if components
        .iter()
        .filter(|c| c.deployment_id.is_some())
        .all(|c| c.status == "stopped")
    {
        "stopped".into()
    } else if up > 0 {
        "partial".into()
    } else {
        "deploying".into()
    }
}

fn host_of(addr: &str) -> String {
    let h = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    };
    h.trim_start_matches('[').trim_end_matches(']').to_string()
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback() || ip.is_unspecified())
            .unwrap_or(false)
}

/// The deploy spec of one component of this rollout.
fn component_spec(
    rec: &AppRecord,
    c: &Component,
    image: &str,
    endpoints: &BTreeMap<String, Endpoint>,
) -> DeploySpec {
    let mut env = c.environment.clone();
    for (dep, e) in endpoints {
        let p = env_prefix(dep);
        env.insert(format!("{p}_HOST"), e.host.clone());
        env.insert(format!("{p}_PORT"), e.port.to_string());
        env.insert(format!("{p}_ADDR"), format!("{}:{}", e.host, e.port));
    }
    let mut labels = c.labels.clone();
    labels.insert(APP_LABEL.into(), rec.id.clone());
    labels.insert(COMPONENT_LABEL.into(), c.id.clone());
    let r = c.requirements;
    DeploySpec {
        request_id: format!("app.{}.{}.{}", rec.id, c.id, rec.generation),
        name: format!("{}-{}", rec.id, c.id).chars().take(63).collect(),
        image: image.to_string(),
        command: c.entrypoint.clone(),
        args: c.command.clone(),
        env,
        ports: c
            .ports
            .iter()
            .map(|p| PortSpec {
                container: p.container,
                host: p.host,
                udp: p.protocol == "udp",
            })
            .collect(),
        resources: Resources {
            cpu_millis: (r.cpu * 1000.0).round() as u64,
            memory_bytes: r.memory << 20,
            gpus: r.gpu,
            storage_bytes: r.storage << 20,
        },
        labels,
        restart: match c.restart.as_deref() {
            Some("always") | Some("unless-stopped") => RestartPolicy::Always,
            Some("on-failure") => RestartPolicy::OnFailure { max: 0 },
            _ => RestartPolicy::Never,
        },
        required_labels: c.placement.clone(),
        network: Some(network_name(&rec.id)),
        aliases: vec![c.id.clone()],
        healthcheck: c.healthcheck.as_ref().map(|h| HealthSpec {
            test: h.test.clone(),
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            retries: h.retries,
            start_period_ms: h.start_period_ms,
        }),
        ..Default::default()
    }
}
