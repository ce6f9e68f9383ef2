//! The applications kept at this node: create (clone), analyse, pull,
//! delete, the code browser, and their views. One lock per application
//! orders what changes it; the record is written to the store after each
//! change, so a restarted node still knows its applications.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::warn;

use super::analyze::{self, Analysis};
use super::files::{self, FileContent, Tree};
use super::git::{self, Credentials};
use super::record::{AppRecord, AppView};
use super::AppError;
use crate::placement::Manager;
use crate::store::{now_ms, Store};
use crate::sync::{lock, KeyLocks};

/// Largest checkout kept by default: bigger repositories are refused.
pub const DEFAULT_MAX_CHECKOUT_BYTES: u64 = 1 << 30;

/// What `create` needs.
#[derive(Debug, Clone, Default)]
pub struct NewApp {
    pub name: String,
    pub git_url: String,
    pub branch: String,
    pub credentials: Credentials,
}

pub struct Applications {
    pub(super) workspace: PathBuf,
    pub(super) store: Arc<dyn Store>,
    pub(super) placement: Arc<Manager>,
    pub(super) apps: Mutex<BTreeMap<String, AppRecord>>,
    pub(super) locks: KeyLocks,
    max_checkout_bytes: u64,
    /// The host other nodes' containers reach this node's published ports on.
    pub(super) advertise_host: String,
    /// Each component's latest image build, by (application, component).
    pub(super) builds: Mutex<BTreeMap<(String, String), super::build::BuildState>>,
}

impl Applications {
    /// Loads the applications the store holds; one whose checkout is gone
    /// is kept (its record says where it was) and can be pulled again.
    pub fn open(
        workspace: PathBuf,
        store: Arc<dyn Store>,
        placement: Arc<Manager>,
        advertise_host: String,
    ) -> Result<Applications, crate::store::StoreError> {
        let mut apps = BTreeMap::new();
        let docs = store.applications()?;
        for (id, doc) in docs {
            match serde_json::from_slice::<AppRecord>(&doc) {
                Ok(rec) => {
                    apps.insert(id, rec);
                }
                Err(e) => warn!(app = %id, error = %e, "skipping an unreadable application record"),
            }
        }
        Ok(Applications {
            workspace,
            store,
            placement,
            apps: Mutex::new(apps),
            locks: KeyLocks::new(),
            max_checkout_bytes: DEFAULT_MAX_CHECKOUT_BYTES,
            advertise_host,
            builds: Mutex::default(),
        })
    }

    pub fn with_max_checkout_bytes(mut self, bytes: u64) -> Self {
        self.max_checkout_bytes = bytes;
        self
    }

    pub fn placement(&self) -> &Arc<Manager> {
        &self.placement
    }

    pub(super) fn record(&self, id: &str) -> Result<AppRecord, AppError> {
        lock(&self.apps).get(id).cloned().ok_or_else(|| {
            AppError::NotFound(format!(
                "no application `{id}` on this node (list them with GET /application/apps)"
            ))
        })
    }

    pub(super) fn save(&self, rec: AppRecord) -> Result<(), AppError> {
        let doc = serde_json::to_vec(&rec).expect("application records always serialize");
        self.store
            .put_application(&rec.id, &doc)
            .map_err(|e| AppError::Internal(format!("cannot save application {}: {e}", rec.id)))?;
        lock(&self.apps).insert(rec.id.clone(), rec);
        Ok(())
    }

    /// Clones the repository's branch (shallow) and keeps the application.
    /// Nothing is left behind when any step fails.
    pub async fn create(&self, req: NewApp) -> Result<AppView, AppError> {
        let name = req.name.trim().to_string();
        if name.is_empty() {
            return Err(AppError::invalid("name", "is empty: name the application"));
        }
        let id = analyze::slug(&name);
        if name.len() > 63 {
            return Err(AppError::invalid("name", "is longer than 63 characters"));
        }
        git::check_url(&req.git_url)?;
        let branch = if req.branch.trim().is_empty() {
            "main".to_string()
        } else {
            req.branch.trim().to_string()
        };
        git::check_branch(&branch)?;
        if let Some(k) = &req.credentials.ssh_key_file {
            if !k.is_file() {
                return Err(AppError::invalid(
                    "ssh_key_file",
                    format!("{} is not a file on this node", k.display()),
                ));
            }
        }
        let _guard = self.locks.lock(&id).await;
        if lock(&self.apps).contains_key(&id) {
            return Err(AppError::AlreadyExists(format!(
                "an application `{id}` exists already: choose another name, or pull it to update"
            )));
        }
        fs::create_dir_all(&self.workspace).map_err(|e| {
            AppError::Internal(format!(
                "cannot create workspace_dir {}: {e}",
                self.workspace.display()
            ))
        })?;
        let dest = self.workspace.join(&id);
        let tmp = self.workspace.join(format!(".clone-{id}-{}", now_ms()));
        let cleanup = Cleanup(tmp.clone());
        let commit = git::clone(&req.git_url, &branch, &req.credentials, &tmp).await?;
        let size = dir_size(&tmp);
        if size > self.max_checkout_bytes {
            return Err(AppError::invalid(
                "git_url",
                format!(
                    "the checkout of {} is {} MiB, over this node's limit of {} MiB",
                    req.git_url,
                    size >> 20,
                    self.max_checkout_bytes >> 20
                ),
            ));
        }
        if dest.exists() {
            // Left by an application deleted while the node was down.
            let _ = fs::remove_dir_all(&dest);
        }
        fs::rename(&tmp, &dest)
            .map_err(|e| AppError::Internal(format!("cannot move the checkout into place: {e}")))?;
        std::mem::forget(cleanup);
        let now = now_ms();
        let rec = AppRecord {
            id: id.clone(),
            name,
            git_url: req.git_url,
            branch,
            credentials: req.credentials,
            local_path: dest.clone(),
            commit,
            created_ms: now,
            updated_ms: now,
            analysis: None,
            runs: BTreeMap::new(),
            generation: 0,
        };
        if let Err(e) = self.save(rec) {
            let _ = fs::remove_dir_all(&dest);
            return Err(e);
        }
        self.view(&id).await
    }

    /// Every application, ids in order.
    pub async fn list(&self) -> Vec<AppView> {
        let ids: Vec<String> = lock(&self.apps).keys().cloned().collect();
        let mut out = Vec::new();
        for id in ids {
            if let Ok(v) = self.view(&id).await {
                out.push(v);
            }
        }
        out
    }

    /// Analyses the checkout as it is now (edits included) and keeps the result.
    pub async fn analyze(&self, id: &str) -> Result<Analysis, AppError> {
        let _guard = self.locks.lock(id).await;
        let mut rec = self.record(id)?;
        let root = rec.local_path.clone();
        let name = rec.name.clone();
        let analysis = tokio::task::spawn_blocking(move || analyze::analyze(&root, &name))
            .await
            .map_err(|e| AppError::Internal(format!("analysis stopped: {e}")))??;
        rec.analysis = Some(analysis.clone());
        rec.updated_ms = now_ms();
        self.save(rec)?;
        Ok(analysis)
    }

    /// Fetches the branch again and moves the checkout to its newest commit.
    /// Edits made in the browser are kept from being lost unless `force`.
    pub async fn pull(&self, id: &str, force: bool) -> Result<AppView, AppError> {
        let _guard = self.locks.lock(id).await;
        let mut rec = self.record(id)?;
        if !rec.local_path.is_dir() {
            return Err(AppError::Conflict(format!(
                "the checkout of `{id}` at {} is gone: delete the application and create it again",
                rec.local_path.display()
            )));
        }
        let changed = git::changed(&rec.local_path).await?;
        if !changed.is_empty() && !force {
            return Err(AppError::Conflict(format!(
                "`{id}` has edits not in its commit ({}): pull with force to discard them",
                changed.join(", ")
            )));
        }
        if force {
            let _ = git::clean(&rec.local_path).await;
        }
        rec.commit =
            git::pull(&rec.local_path, &rec.git_url, &rec.branch, &rec.credentials).await?;
        rec.analysis = None;
        rec.updated_ms = now_ms();
        self.save(rec)?;
        drop(_guard);
        self.view(id).await
    }

    /// Removes the application and its checkout. While a component runs it
    /// refuses, unless `force`, which stops them first.
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), AppError> {
        let rec = self.record(id)?;
        let running = self.running_components(&rec).await;
        if !running.is_empty() {
            if !force {
                return Err(AppError::Conflict(format!(
                    "`{id}` has running components ({}): stop them first, or delete with force",
                    running.join(", ")
                )));
            }
            self.stop(id, &[]).await?;
        }
        let _guard = self.locks.lock(id).await;
        self.store
            .remove_application(id)
            .map_err(|e| AppError::Internal(format!("cannot forget application {id}: {e}")))?;
        lock(&self.apps).remove(id);
        if rec.local_path.starts_with(&self.workspace) {
            if let Err(e) = fs::remove_dir_all(&rec.local_path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(app = %id, error = %e, "cannot remove the checkout");
                }
            }
        }
        Ok(())
    }

    pub fn files(&self, id: &str, path: &str) -> Result<Tree, AppError> {
        files::tree(&self.record(id)?.local_path, path)
    }

    pub fn read_file(&self, id: &str, path: &str) -> Result<FileContent, AppError> {
        files::read(&self.record(id)?.local_path, path)
    }

    pub async fn write_file(
        &self,
        id: &str,
        path: &str,
        content: &str,
    ) -> Result<FileContent, AppError> {
        let _guard = self.locks.lock(id).await;
        let root = self.record(id)?.local_path;
        files::write(&root, path, content)
    }
}

/// Removes a half-made checkout unless forgotten.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
