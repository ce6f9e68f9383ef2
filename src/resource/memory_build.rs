//! The in-memory twin of an image builder: reads the tar context the way
//! the engine does (the Dockerfile must be in it), reports one step per
//! instruction, and keeps what it built for tests to look at.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::error::ResourceError;
use super::provider::{BuildLog, ImageBuilder};

/// An image the twin built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    pub tag: String,
    pub dockerfile: String,
    /// The context's length in bytes, and the files in it.
    pub context_bytes: usize,
    pub files: Vec<String>,
    pub args: BTreeMap<String, String>,
}

#[derive(Default)]
pub(super) struct MemoryBuilder {
    pub(super) provider: String,
    pub(super) built: Arc<Mutex<Vec<BuiltImage>>>,
}

impl MemoryBuilder {
    pub(super) fn built(&self) -> Vec<BuiltImage> {
        self.built
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait::async_trait]
impl ImageBuilder for MemoryBuilder {
    async fn build_image(
        &self,
        context: bytes::Bytes,
        dockerfile: &str,
        tag: &str,
        args: &BTreeMap<String, String>,
        log: BuildLog,
    ) -> Result<Vec<String>, ResourceError> {
        let fail = |why: String| {
            ResourceError::Backend(format!(
                "building {tag} on provider {} failed: {why}",
                self.provider
            ))
        };
        let mut files = Vec::new();
        let mut instructions = None;
        let mut archive = tar::Archive::new(&context[..]);
        let entries = archive
            .entries()
            .map_err(|e| fail(format!("the context is not a tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| fail(format!("the context is not a tar: {e}")))?;
            let path = entry
                .path()
                .map_err(|e| fail(e.to_string()))?
                .to_string_lossy()
                .into_owned();
            if path == dockerfile {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text)
                    .map_err(|e| fail(e.to_string()))?;
                instructions = Some(text);
            }
            files.push(path);
        }
        let Some(text) = instructions else {
            return Err(fail(format!(
                "Cannot locate specified Dockerfile: {dockerfile}"
            )));
        };
        let steps: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let mut out = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            out.push(format!("Step {}/{} : {step}", i + 1, steps.len()));
        }
        out.push(format!("Successfully tagged {tag}"));
        for line in &out {
            log.line(line);
        }
        self.built
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(BuiltImage {
                tag: tag.to_string(),
                dockerfile: dockerfile.to_string(),
                context_bytes: context.len(),
                files,
                args: args.clone(),
            });
        Ok(out)
    }
}
