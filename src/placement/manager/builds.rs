//! Image builds where the image will run: the providers that can build a
//! deployment's image, ranked as placement ranks them (this node's own
//! build in place, other nodes' through their owner), and the owner's side
//! of a build another node sends.

use std::collections::HashSet;
use std::sync::Arc;

use tonic::Status;

use super::Manager;
use crate::placement::call::build::{Received, RemoteBuilder};
use crate::placement::PlaceOptions;
use crate::resource::{labels, BuildLog, Candidate, DeploySpec, ImageBuilder};
use crate::sync::lock;

impl Manager {
    /// Up to `k` providers that can build and run `spec`, best first, each
    /// with what builds on it. Builds made for `on_behalf_of` name it in
    /// the owner's audit log.
    pub fn builders_for(
        &self,
        spec: &DeploySpec,
        opts: &PlaceOptions,
        k: usize,
        on_behalf_of: &str,
    ) -> Vec<(Candidate, Arc<dyn ImageBuilder>)> {
        let index = self.registry.index();
        let need = opts.need(spec);
        let strategy = opts.strategy.unwrap_or(self.strategy);
        let ranked: Vec<Candidate> = {
            let mut rng = lock(&self.rng);
            index
                .rank(&need, strategy, index.len(), &HashSet::new(), &mut rng)
                .into_iter()
                .filter(|c| c.labels.get(labels::BUILDS).is_some_and(|v| v == "true"))
                .take(k)
                .cloned()
                .collect()
        };
        let remote = self.registry.discovery().builds();
        ranked
            .into_iter()
            .filter_map(|c| {
                let builder: Arc<dyn ImageBuilder> = if c.owner_id == self.node_id {
                    self.registry.local(&c.id)?.0.image_builder()?
                } else {
                    Arc::new(
                        RemoteBuilder::new(c.clone(), remote.clone()?, &self.node_id)
                            .on_behalf_of(on_behalf_of),
                    )
                };
                Some((c, builder))
            })
            .collect()
    }

    /// Builds a context another node sent on one of this node's providers.
    pub async fn serve_build(&self, got: Received, log: BuildLog) -> Result<Vec<String>, Status> {
        let me = &self.node_id;
        let h = &got.header;
        if !self.registry.allow_remote_access() {
            return Err(Status::permission_denied(format!(
                "node {me} has allow_remote_access off: its providers build only for itself"
            )));
        }
        let Some((p, _)) = self.registry.local(&h.provider_id) else {
            return Err(Status::not_found(format!(
                "provider {:?} is not owned by node {me}; send the build to its owner (see ListProviders)",
                h.provider_id
            )));
        };
        let Some(builder) = p.image_builder() else {
            return Err(Status::failed_precondition(format!(
                "provider {:?} does not build images (only Docker providers do): give the component an image",
                h.provider_id
            )));
        };
        let args = h.args.clone().into_iter().collect();
        Ok(builder
            .build_image(got.context, &h.dockerfile, &h.tag, &args, log)
            .await?)
    }
}
