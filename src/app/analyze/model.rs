//! What an analysis finds: components with their needs and how they depend
//! on each other. Serialized as the application API's JSON (`components`,
//! `dag.edges[{from, to, type}]`) and kept in the store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the components came from, in the order they are looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Compose,
    Dockerfile,
    Procfile,
}

/// CPU in cores, memory and storage in MiB (the shape users read), whole GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    pub cpu: f64,
    pub memory: u64,
    pub gpu: u32,
    #[serde(default)]
    pub storage: u64,
}

/// What a component gets when it declares nothing: a quarter core and
/// 256 MiB, what a small web process or worker needs to start.
pub const DEFAULT_REQUIREMENTS: Requirements = Requirements {
    cpu: 0.25,
    memory: 256,
    gpu: 0,
    storage: 0,
};

/// When a dependent may start, as Compose names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    #[default]
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

impl Condition {
    pub fn parse(s: &str) -> Option<Condition> {
        match s {
            "service_started" => Some(Condition::ServiceStarted),
            "service_healthy" => Some(Condition::ServiceHealthy),
            "service_completed_successfully" => Some(Condition::ServiceCompletedSuccessfully),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Condition::ServiceStarted => "service_started",
            Condition::ServiceHealthy => "service_healthy",
            Condition::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub on: String,
    pub condition: Condition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// Relative to the checkout's root.
    pub context: String,
    /// Relative to the context.
    pub dockerfile: String,
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub container: u16,
    /// 0: any free port on the host.
    pub host: u16,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// As the engine takes it: `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub id: String,
    pub name: String,
    /// web, worker, job, database, cache.
    #[serde(rename = "type")]
    pub kind: String,
    pub language: Option<String>,
    pub framework: Option<String>,
    pub requirements: Requirements,
    /// True when `requirements` came from the source, not the default.
    pub declared_requirements: bool,
    pub image: Option<String>,
    pub build: Option<Build>,
    /// Replaces the image's entrypoint.
    pub entrypoint: Vec<String>,
    /// Replaces the image's command.
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub ports: Vec<Port>,
    pub depends_on: Vec<Dependency>,
    pub healthcheck: Option<Healthcheck>,
    pub labels: BTreeMap<String, String>,
    /// Provider labels it must run on: Compose's `deploy.placement.constraints`
    /// (`node.labels.KEY==VALUE`), iarnet's providers standing for nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub placement: BTreeMap<String, String>,
    /// Compose's `restart`: no, always, on-failure, unless-stopped.
    pub restart: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    /// The dependent.
    pub from: String,
    /// What it depends on.
    pub to: String,
    /// http, grpc or tcp.
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Dag {
    pub edges: Vec<Edge>,
    /// Start order: each level depends only on earlier ones.
    pub levels: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub source: Source,
    /// The file the components came from, relative to the checkout.
    pub file: String,
    pub components: Vec<Component>,
    pub dag: Dag,
    /// Things accepted but not acted on (an obsolete `version`, say).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl Analysis {
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.id == id)
    }
}
