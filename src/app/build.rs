//! Images from source, built where they will run: the component's spec is
//! ranked as placement ranks it among the providers that build (this
//! node's own build in place; another node's receive the context through
//! their owner), the first that builds it runs it, and the build's output
//! shows in the application's view as it is written.

use std::collections::VecDeque;

use tracing::info;

use super::analyze::{Build, Component};
use super::manager::Applications;
use super::record::{AppRecord, BuildView};
use super::AppError;
use crate::placement::PlaceOptions;
use crate::resource::{BuildLog, DeploySpec};
use crate::sync::lock;

/// Providers tried for one build: the next is tried when one is out of
/// reach or refuses, not when the build itself fails.
const BUILD_TRIES: usize = 3;
/// Lines of build output a view keeps.
pub const BUILD_LOG_LINES: usize = 50;

/// A component's latest build as the view shows it.
#[derive(Debug, Clone, Default)]
pub(super) struct BuildState {
    status: &'static str,
    provider_id: String,
    owner_id: String,
    log: VecDeque<String>,
    error: Option<String>,
}

impl BuildState {
    pub(super) fn view(&self) -> BuildView {
        BuildView {
            status: self.status.to_string(),
            provider_id: self.provider_id.clone(),
            owner_id: self.owner_id.clone(),
            log: self.log.iter().cloned().collect(),
            error: self.error.clone(),
        }
    }
}

impl Applications {
    /// Builds `comp`'s image from the checkout on the best provider that
    /// builds and can run `spec`; returns the tag and that provider, which
    /// the component is then pinned to (the image exists on its engine).
    pub(super) async fn build(
        &self,
        rec: &AppRecord,
        comp: &Component,
        build: &Build,
        spec: &DeploySpec,
        opts: &PlaceOptions,
    ) -> Result<(String, String), AppError> {
        let builders = self.placement.builders_for(spec, opts, BUILD_TRIES, "");
        if builders.is_empty() {
            return Err(AppError::Conflict(format!(
                "component `{}` is built from source and no provider of the mesh that builds images (a Docker provider) fits it{}: give it an image, or add a Docker provider",
                comp.id,
                if comp.placement.is_empty() {
                    String::new()
                } else {
                    format!(" with labels {:?}", comp.placement)
                }
            )));
        }
        let dir = rec.local_path.join(&build.context);
        let dockerfile = build.dockerfile.clone();
        let ctx: bytes::Bytes = {
            let dir = dir.clone();
            let dockerfile = dockerfile.clone();
            tokio::task::spawn_blocking(move || super::context::pack(&dir, &dockerfile))
                .await
                .map_err(|e| AppError::Internal(format!("packing stopped: {e}")))??
                .into()
        };
        let short: String = rec.commit.sha.chars().take(12).collect();
        let tag = format!(
            "iarnet-app/{}-{}:{short}-g{}",
            rec.id, comp.id, rec.generation
        );
        let key = (rec.id.clone(), comp.id.clone());
        let mut refused = Vec::new();
        for (cand, builder) in builders {
            self.set_build(
                &key,
                BuildState {
                    status: "building",
                    provider_id: cand.id.clone(),
                    owner_id: cand.owner_id.clone(),
                    ..Default::default()
                },
            );
            let (log, mut lines) = BuildLog::channel();
            let run = builder.build_image(ctx.clone(), &dockerfile, &tag, &build.args, log);
            tokio::pin!(run);
            let result = loop {
                tokio::select! {
                    Some(line) = lines.recv() => self.build_line(&key, line),
                    r = &mut run => break r,
                }
            };
            while let Ok(line) = lines.try_recv() {
                self.build_line(&key, line);
            }
            match result {
                Ok(out) => {
                    self.end_build(&key, None);
                    info!(app = %rec.id, component = %comp.id, tag, provider = %cand.id, owner = %cand.owner_id, bytes = ctx.len(), lines = out.len(), "image built");
                    return Ok((tag.clone(), cand.id));
                }
                Err(e) if e.try_elsewhere() => {
                    self.end_build(&key, Some(e.to_string()));
                    refused.push(format!("{}: {e}", cand.id));
                }
                Err(e) => {
                    self.end_build(&key, Some(e.to_string()));
                    return Err(e.into());
                }
            }
        }
        Err(AppError::Unavailable(format!(
            "no provider could build component `{}`: {}",
            comp.id,
            refused.join("; ")
        )))
    }

    fn set_build(&self, key: &(String, String), state: BuildState) {
        lock(&self.builds).insert(key.clone(), state);
    }

    fn build_line(&self, key: &(String, String), line: String) {
        if let Some(b) = lock(&self.builds).get_mut(key) {
            if b.log.len() == BUILD_LOG_LINES {
                b.log.pop_front();
            }
            b.log.push_back(line);
        }
    }

    fn end_build(&self, key: &(String, String), error: Option<String>) {
        if let Some(b) = lock(&self.builds).get_mut(key) {
            b.status = if error.is_some() { "failed" } else { "built" };
            b.error = error;
        }
    }

    /// The latest build of `component` of application `app`, if any.
    pub(super) fn build_view(&self, app: &str, component: &str) -> Option<BuildView> {
        lock(&self.builds)
            .get(&(app.to_string(), component.to_string()))
            .map(BuildState::view)
    }
}
