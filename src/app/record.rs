//! What a node keeps of an application (durable, in the store) and how the
//! API shows it: the record never shows its credentials.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::analyze::{Analysis, Requirements};
use super::git::{Commit, Credentials};

/// One application, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub id: String,
    pub name: String,
    pub git_url: String,
    pub branch: String,
    #[serde(default)]
    pub credentials: Credentials,
    pub local_path: PathBuf,
    pub commit: Commit,
    pub created_ms: u64,
    pub updated_ms: u64,
    #[serde(default)]
    pub analysis: Option<Analysis>,
    /// The deployment of each component deployed, by component id.
    #[serde(default)]
    pub runs: BTreeMap<String, ComponentRun>,
    /// Counts rollouts, so a redeploy makes new deployments.
    #[serde(default)]
    pub generation: u64,
}

/// A component's current deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRun {
    pub deployment_id: String,
    pub image: String,
    /// The commit its image was built from, when it was built.
    pub built_from: Option<String>,
    pub started_ms: u64,
    /// `<NAME>_HOST`-style variables it was given, by dependency.
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// How a dependent reaches a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `same-engine` (network alias) or `published` (owner's host, host port).
    pub via: String,
}

/// A component as the API shows it: what the analysis found and how its
/// deployment stands now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentView {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub language: Option<String>,
    pub framework: Option<String>,
    pub resources: Requirements,
    pub depends_on: Vec<String>,
    /// not_deployed, pending, starting, running, healthy, exited, failed, stopped...
    pub status: String,
    pub health: Option<String>,
    pub deployment_id: Option<String>,
    pub provider_id: Option<String>,
    pub owner_id: Option<String>,
    pub container_id: Option<String>,
    pub restarts: u32,
    pub exit_code: Option<i64>,
    pub image: Option<String>,
    pub endpoints: BTreeMap<String, Endpoint>,
    /// The latest image build from source, while it runs and after.
    pub build: Option<BuildView>,
    /// Provider labels it asked for.
    pub placement: BTreeMap<String, String>,
}

/// An image build as the API shows it: its output so far, streamed in as
/// the provider's engine writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildView {
    /// building, built or failed.
    pub status: String,
    pub provider_id: String,
    pub owner_id: String,
    /// The last lines of its output.
    pub log: Vec<String>,
    pub error: Option<String>,
}

/// An application as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppView {
    pub id: String,
    pub name: String,
    pub git_url: String,
    pub branch: String,
    pub local_path: String,
    pub commit: Commit,
    /// Files of the checkout changed since `commit` (edited in the browser).
    pub modified_files: Vec<String>,
    /// created, analyzed, deploying, running, partial, stopped, failed.
    pub status: String,
    pub components_count: usize,
    pub components: Vec<ComponentView>,
    pub dag: Option<super::analyze::Dag>,
    pub analysis_notes: Vec<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub private: bool,
}
