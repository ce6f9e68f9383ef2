//! Image builds on the provider's engine with the legacy builder (`POST
//! /build` with a tar context): what an engine without BuildKit offers.

use std::collections::{BTreeMap, HashMap};

use bollard::query_parameters::BuildImageOptions;
use bollard::Docker;
use futures::stream::StreamExt;
use tracing::info;

use crate::resource::error::ResourceError;
use crate::resource::provider::{BuildLog, ImageBuilder};

/// Lines of build output kept in an error.
const TAIL: usize = 20;

pub(super) struct DockerBuilder {
    pub(super) docker: Docker,
    pub(super) provider: String,
}

#[async_trait::async_trait]
impl ImageBuilder for DockerBuilder {
    async fn build_image(
        &self,
        context: bytes::Bytes,
        dockerfile: &str,
        tag: &str,
        args: &BTreeMap<String, String>,
        log: BuildLog,
    ) -> Result<Vec<String>, ResourceError> {
        info!(provider = %self.provider, tag, bytes = context.len(), "building image");
        let opts = BuildImageOptions {
            dockerfile: dockerfile.to_string(),
            t: Some(tag.to_string()),
            rm: true,
            forcerm: true,
            buildargs: (!args.is_empty()).then(|| {
                args.iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>()
            }),
            labels: Some(HashMap::from([(
                crate::resource::labels::MANAGED.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        };
        let mut out: Vec<String> = Vec::new();
        let mut stream = self
            .docker
            .build_image(opts, None, Some(bollard::body_full(context)));
        let fail = |out: &[String], why: String| {
            let tail = out[out.len().saturating_sub(TAIL)..].join("\n");
            ResourceError::Backend(format!(
                "building {tag} on provider {} failed: {why}\n{tail}",
                self.provider
            ))
        };
        while let Some(step) = stream.next().await {
            match step {
                Ok(info) => {
                    if let Some(s) = info.stream {
                        for line in s.lines().filter(|l| !l.trim().is_empty()) {
                            log.line(line);
                            out.push(line.to_string());
                        }
                    }
                    if let Some(e) = info.error_detail.and_then(|d| d.message) {
                        return Err(fail(&out, e));
                    }
                }
                Err(e) => return Err(fail(&out, super::connect::chain(&e))),
            }
        }
        Ok(out)
    }
}
